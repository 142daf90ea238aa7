"""Schema compliance: every message the server sends matches the contract.

As a pytest suite it starts the real server on a free loopback port, makes
it emit all nine outbound types (the simulated model produces frames, tokens
and council events; a reward and an error are provoked), and validates every
message a 1.0 and a 1.1 client receive against:

- the project's compiled validators (what the server itself uses),
- the jsonschema reference validator over the same files,
- for 1.0, the upstream WF-TECH-003 file in ../shared/reference/ (skipped
  when that file is absent).

As a script it checks a running server and prints a report::

    python test_schema_compliance.py --url ws://127.0.0.1:8145/ws --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.server_process import ServerProcess
from wirthforge_ws.protocol.codes import CHANNEL_OF
from wirthforge_ws.protocol.schemas import MessageValidationError, SchemaSet, reference_validator

ALL_TYPES = frozenset(CHANNEL_OF)
UPSTREAM_SCHEMA = Path(__file__).resolve().parent.parent / "shared" / "reference" / "WF-TECH-003-event-schemas.json"


def upstream_validator() -> Any | None:
    """The upstream contract as one Draft-07 validator, or None when the file is absent."""
    if not UPSTREAM_SCHEMA.is_file():
        return None
    import jsonschema

    return jsonschema.Draft7Validator(json.loads(UPSTREAM_SCHEMA.read_text()))


@dataclass
class ComplianceReport:
    """What one client received and which checks each message failed."""

    version: str
    received: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    upstream_checked: bool = False

    @property
    def total(self) -> int:
        return sum(self.received.values())

    def missing_types(self) -> set[str]:
        return set(ALL_TYPES - set(self.received))

    def lines(self) -> list[str]:
        out = [
            f"protocol {self.version}: {self.total} messages, {len(self.failures)} failures"
            + ("" if self.upstream_checked or self.version != "1.0" else " (upstream file absent: not checked)")
        ]
        out += [f"  {kind:20s} {count:6d}" for kind, count in sorted(self.received.items())]
        if self.missing_types():
            out.append(f"  never received: {', '.join(sorted(self.missing_types()))}")
        out += [f"  FAIL {failure}" for failure in self.failures[:20]]
        return out


class ComplianceChecker:
    """Validates wire messages three ways; keeps the failures as readable strings."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.schemas = SchemaSet()
        self.references = {kind: reference_validator(version, kind) for kind in ALL_TYPES}
        self.upstream = upstream_validator() if version == "1.0" else None

    def check(self, text: str, report: ComplianceReport) -> dict[str, Any]:
        message = json.loads(text)
        kind = message.get("type", "?")
        report.received[kind] += 1
        try:
            self.schemas.validate_outbound(self.version, message)
        except MessageValidationError as error:
            report.failures.append(f"{kind}: compiled validator: {error.reason}")
        reference = self.references.get(kind)
        if reference is None:
            report.failures.append(f"{kind}: not a contract type")
        else:
            for error in reference.iter_errors(message):
                report.failures.append(f"{kind}: jsonschema: {error.message[:200]}")
        if self.upstream is not None:
            report.upstream_checked = True
            for error in self.upstream.iter_errors(message):
                report.failures.append(f"{kind}: upstream: {error.message[:200]}")
        return message


async def collect(
    url: str, version: str, duration: float, *, provoke_error: bool = True, until_all_types: bool = False
) -> ComplianceReport:
    """Receive for *duration* seconds (or until all nine types arrived) and check every message."""
    checker = ComplianceChecker(version)
    report = ComplianceReport(version)
    subprotocols = ["wirthforge.1.1"] if version == "1.1" else None
    async with connect(url, subprotocols=subprotocols, compression=None, max_size=2**20) as websocket:
        first = checker.check(await asyncio.wait_for(websocket.recv(), 5), report)
        if first.get("type") != "startup_complete":
            report.failures.append(f"first message was {first.get('type')}, not startup_complete")
        if provoke_error:
            await websocket.send("{not json")  # answered with error_event INVALID_JSON
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                text = await asyncio.wait_for(websocket.recv(), max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                break
            checker.check(text, report)
            if until_all_types and not report.missing_types():
                break
    return report


# ---------------------------------------------------------------------------
# pytest


@pytest.fixture(scope="module")
def server():
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1", "WF_SEED": "7"}) as running:
        yield running


def _publish_rare_events(server: ServerProcess) -> None:
    """Reward and resonance events are rare in the simulation; an orchestrator publishes them here."""
    server.publish(
        [
            {
                "type": "reward_event",
                "payload": {
                    "rewardType": "achievement",
                    "title": "Compliance",
                    "points": 1,
                    "level": 2,
                    "energyBonus": 0.5,
                    "description": "test",
                },
            },
            {
                "type": "resonance_event",
                "payload": {
                    "resonanceType": "harmonic",
                    "frequency": 12.5,
                    "amplitude": 0.4,
                    "participants": ["a_model", "b-model"],
                    "phase": 90,
                },
            },
            {
                "type": "interference_event",
                "payload": {
                    "patternType": "neutral",
                    "models": ["a_model", "b-model"],
                    "intensity": 0.3,
                    "coherenceScore": 0.7,
                },
            },
        ]
    )


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_every_message_type_is_emitted_and_valid(server: ServerProcess, version: str) -> None:
    async def run() -> ComplianceReport:
        task = asyncio.create_task(collect(server.ws_url, version, 12.0, until_all_types=True))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(_publish_rare_events, server)
        return await task

    report = asyncio.run(run())
    print("\n".join(report.lines()))
    assert report.failures == []
    assert report.missing_types() == set(), "\n".join(report.lines())
    assert report.received["startup_complete"] == 1


def test_upstream_contract_accepts_what_a_1_0_client_receives(server: ServerProcess) -> None:
    if not UPSTREAM_SCHEMA.is_file():
        pytest.skip("../shared/reference is absent: the upstream contract cannot be checked here")
    report = asyncio.run(collect(server.ws_url, "1.0", 2.0))
    assert report.upstream_checked
    assert report.total > 60 and report.failures == []


def test_1_0_messages_carry_no_1_1_fields(server: ServerProcess) -> None:
    async def run() -> list[dict[str, Any]]:
        async with connect(server.ws_url, compression=None) as websocket:
            return [json.loads(await asyncio.wait_for(websocket.recv(), 5)) for _ in range(90)]

    received = asyncio.run(run())
    assert all("seq" not in m and isinstance(m["timestamp"], int) for m in received)
    assert received[0]["payload"].keys() <= {"model", "tier", "version", "frameRate", "capabilities"}


def test_invalid_outbound_message_is_never_sent() -> None:
    """A message that fails validation is counted, reported as error_event, and not delivered."""
    from wirthforge_ws.protocol.messages import Event
    from wirthforge_ws.stream.hub import Hub

    class Recorder:
        version = "1.0"

        def __init__(self) -> None:
            self.delivered: list[str] = []

        def deliver(self, outbound: Any) -> None:
            text = hub.render(outbound, self.version)
            if text is not None:
                self.delivered.append(text)

    hub = Hub(SchemaSet(), history_messages=10, history_seconds=10)
    recorder = Recorder()
    hub.attach(recorder, hub.plan_resume(["system", "reward"], None))
    secret = "PRIVATE-TOKEN-TEXT"
    hub.publish(Event("reward_event", {"rewardType": "bogus", "title": secret, "points": 1}))
    assert hub.stats.validation_failures == 1
    kinds = [json.loads(text)["type"] for text in recorder.delivered]
    assert kinds == ["error_event"]
    error = json.loads(recorder.delivered[0])
    assert error["payload"]["code"] == "OUTBOUND_VALIDATION_FAILED"
    assert error["payload"]["component"] == "websocket"
    assert secret not in recorder.delivered[0]


# ---------------------------------------------------------------------------
# script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate everything a running WIRTHFORGE server sends.")
    parser.add_argument("--url", default="ws://127.0.0.1:8145/ws")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per protocol version")
    parser.add_argument("--protocol", choices=["1.0", "1.1", "both"], default="both")
    args = parser.parse_args(argv)
    versions = ["1.0", "1.1"] if args.protocol == "both" else [args.protocol]
    ok = True
    for version in versions:
        report = asyncio.run(collect(args.url, version, args.duration))
        print("\n".join(report.lines()))
        ok = ok and not report.failures
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
