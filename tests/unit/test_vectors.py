"""The conformance vectors (``tests/vectors/*.json``, PROTOCOL.md §10) against the Python client.

Each vector file states one client rule as data; this module is the driver
that feeds it to :class:`~wirthforge_ws.client.WirthforgeClient` and its
rule functions, without sockets or sleeps. ``tests/js/vectors.test.mjs`` is
the same driver for the browser client; a third-party client needs one too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from wirthforge_ws.client import Backoff, WirthforgeClient, rules
from wirthforge_ws.stream.rolling import percentile

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def case_ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


CLOSE = load("close_codes.json")
BACKOFF = load("backoff.json")
DEAD_LINK = load("dead_link.json")
RESUME = load("resume.json")
GAPS = load("frame_gaps.json")
PERCENTILES = load("percentiles.json")


# -- §10.1 close codes ----------------------------------------------------------


@pytest.mark.parametrize("case", CLOSE["close"], ids=lambda c: str(c["code"]))
def test_close_code_policy(case: dict[str, Any]) -> None:
    client = WirthforgeClient()
    retry = client._after_close(case["code"], "vector")  # what the connection task decides
    assert ("reconnect" if retry else "stop") == case["action"]
    assert client.state == ("refused" if case["action"] == "stop" else "idle")


@pytest.mark.parametrize("case", CLOSE["handshake"], ids=lambda c: str(c["status"]))
def test_handshake_refusal_policy(case: dict[str, Any]) -> None:
    assert rules.handshake_action(case["status"]) == case["action"]


# -- §10.2 backoff ----------------------------------------------------------------


class FixedRandom(random.Random):
    """A random source that always draws *value*."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_defaults_are_the_protocol_constants() -> None:
    backoff = Backoff()
    assert (backoff.base * 1000, backoff.cap * 1000) == (BACKOFF["base_ms"], BACKOFF["cap_ms"])
    assert rules.STABLE_SESSION_S * 1000 == BACKOFF["stable_session_ms"]


@pytest.mark.parametrize("case", BACKOFF["ceilings"], ids=lambda c: f"attempt {c['attempt']}")
def test_backoff_ceiling(case: dict[str, Any]) -> None:
    assert Backoff().ceiling(case["attempt"]) * 1000 == pytest.approx(case["ceiling_ms"])


@pytest.mark.parametrize("case", BACKOFF["draws"], ids=lambda c: f"attempt {c['attempt']} random {c['random']}")
def test_backoff_draw(case: dict[str, Any]) -> None:
    backoff = Backoff(rng=FixedRandom(case["random"]))
    backoff.attempt = case["attempt"]
    assert backoff.next_delay() * 1000 == pytest.approx(case["delay_ms"])


@pytest.mark.parametrize("case", BACKOFF["stable"], ids=lambda c: f"{c['session_ms']} ms")
def test_backoff_resets_after_a_stable_session(case: dict[str, Any]) -> None:
    assert rules.session_was_stable(case["session_ms"] / 1000) is case["resets"]


# -- §10.3 dead link --------------------------------------------------------------


def test_connect_timeout_is_the_protocol_constant() -> None:
    assert WirthforgeClient().open_timeout * 1000 == DEAD_LINK["connect_timeout_ms"]


@pytest.mark.parametrize("case", DEAD_LINK["cases"], ids=case_ids(DEAD_LINK["cases"]))
def test_dead_link(case: dict[str, Any]) -> None:
    interval_ms = case["heartbeat_interval_ms"]
    limit_ms = rules.dead_after(None if interval_ms is None else interval_ms / 1000) * 1000
    for check in case["checks"]:
        # The client's watchdog clock restarts at every frame of any type.
        last_frame = max([0] + [f["at_ms"] for f in case["frames"] if f["at_ms"] <= check["at_ms"]])
        assert (check["at_ms"] - last_frame >= limit_ms - 1e-9) is check["dead"], check


# -- §10.4 resume and de-duplication ----------------------------------------------


@pytest.mark.parametrize("case", RESUME["cases"], ids=case_ids(RESUME["cases"]))
async def test_resume_and_dedupe(case: dict[str, Any]) -> None:
    delivered: list[int | None] = []
    client = WirthforgeClient(on_message=lambda message: delivered.append(message.get("seq")))
    for step in case["steps"]:
        if "recv" in step:
            await client.handle_raw(orjson.dumps(step["recv"]))
            continue
        query = parse_qs(urlsplit(client.build_url()).query)
        resume = None if "epoch" not in query else {"epoch": query["epoch"][0], "lastSeq": int(query["lastSeq"][0])}
        assert resume == step["drop"]["resume"], f"reconnect URL {client.build_url()}"
    assert delivered == case["delivered"]
    assert client.stats.duplicates == case["duplicates"]


# -- §10.5 frame gaps -------------------------------------------------------------


def _startup(frame_rate: float, energy_rate: float, seq: int) -> bytes:
    payload = {
        "protocol": "1.1",
        "epoch": "e1",
        "frameRate": frame_rate,
        "energyRateHz": energy_rate,
        "heartbeatIntervalMs": 1000,
        "resume": {"status": "none"},
    }
    return orjson.dumps(
        {"type": "startup_complete", "channel": "system", "timestamp": 0.0, "seq": seq, "payload": payload}
    )


@pytest.mark.parametrize("case", GAPS["cases"], ids=case_ids(GAPS["cases"]))
async def test_frame_gaps(case: dict[str, Any]) -> None:
    client = WirthforgeClient()
    seq = 1
    await client.handle_raw(_startup(case["frame_rate"], case["energy_rate"], seq))
    for frame in case["frames"]:
        seq += 1
        if frame == "startup":
            await client.handle_raw(_startup(case["frame_rate"], case["energy_rate"], seq))
            continue
        message = {
            "type": "energy_update",
            "channel": "energy",
            "timestamp": 0.0,
            "seq": seq,
            "frameNumber": frame,
            "payload": {},
        }
        await client.handle_raw(orjson.dumps(message))
    assert (client.stats.gaps.gaps, client.stats.gaps.frames_missed) == (case["gaps"], case["missed"])


# -- §10.6 percentiles --------------------------------------------------------------


@pytest.mark.parametrize("case", PERCENTILES["cases"], ids=lambda c: f"p{c['p']} of {len(c['values'])}")
def test_percentile(case: dict[str, Any]) -> None:
    assert percentile(case["values"], case["p"]) == case["expect"]
