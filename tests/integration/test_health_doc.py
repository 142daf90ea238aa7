"""docs/HEALTH.md lists exactly the fields a running server's ``GET /health`` sends.

A real server (persistence on, one WebSocket client, a slow replay playing, so
that every conditional part of the document is present) answers ``/health``;
its keys are flattened to paths (``connections.clients[].rttMs.last``) and
compared with the paths the doc's tables name. In the doc, each table lists the
fields of the object named in backticks above it (the "Top level" table those
of the document itself); a segment in angle brackets (``tasks.<name>``) stands
for every key of a map keyed by names, ids or codes; a field of type
``percentiles`` stands for its ``p50``, ``p99`` and ``max``.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server_process import ROOT, ServerProcess
from tests.timing import scaled
from tests.wsutil import open_client

DOC = ROOT / "docs" / "HEALTH.md"
PERCENTILES = ("p50", "p99", "max")

KeyPath = tuple[str, ...]

_OBJECT_LINE = re.compile(r"^`(?P<path>[^`]+)`[^|]*:\s*$")  # "`connections.admission`:" names the next table's object
_ROW = re.compile(r"^\|\s*`(?P<field>[^`]+)`\s*\|\s*(?P<type>[^|]+?)\s*\|")


def documented_paths(text: str) -> set[KeyPath]:
    """Every field path the doc's tables name (percentile triples expanded)."""
    paths: set[KeyPath] = set()
    prefix: KeyPath | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            prefix = () if line.strip("# ").lower() == "top level" else None
            continue
        if named := _OBJECT_LINE.match(line):
            prefix = tuple(named["path"].split("."))
            continue
        if row := _ROW.match(line):
            assert prefix is not None, f"HEALTH.md: a table row before the line naming its object: {line}"
            path = prefix + tuple(row["field"].split("."))
            paths.add(path)
            if row["type"] == "percentiles":
                paths.update(path + (key,) for key in PERCENTILES)
    return paths


def sent_paths(value: Any, path: KeyPath = ()) -> set[KeyPath]:
    """Every key path of a JSON value: objects by key, arrays of objects as one ``name[]`` level."""
    paths: set[KeyPath] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            paths.add(path + (key,))
            paths |= sent_paths(child, path + (key,))
    elif isinstance(value, list) and path and any(isinstance(item, dict) for item in value):
        items = path[:-1] + (path[-1] + "[]",)
        for item in value:
            paths |= sent_paths(item, items)
    return paths


def _is_wildcard(segment: str) -> bool:
    return segment.startswith("<") and segment.endswith(">")


def matches(pattern: KeyPath, path: KeyPath) -> bool:
    return len(pattern) == len(path) and all(_is_wildcard(p) or p == s for p, s in zip(pattern, path))


def undocumented(sent: set[KeyPath], documented: set[KeyPath]) -> list[str]:
    """Sent paths no documented field covers (an object is covered by any documented field inside it)."""
    return sorted(
        ".".join(path)
        for path in sent
        if not any(len(pattern) >= len(path) and matches(pattern[: len(path)], path) for pattern in documented)
    )


def stale(sent: set[KeyPath], documented: set[KeyPath]) -> list[str]:
    """Documented fields the server does not send; for a map (``x.<code>``) only the map itself must exist."""
    missing = []
    for pattern in documented:
        wanted = pattern[:-1] if _is_wildcard(pattern[-1]) else pattern
        if wanted and not any(matches(wanted, path) for path in sent):
            missing.append(".".join(pattern))
    return sorted(missing)


async def _start_slow_replay(http: httpx.AsyncClient, since_ms: float) -> None:
    """Replay what was recorded since *since_ms*, slowly enough to still play when /health is read."""
    deadline = time.monotonic() + scaled(20)
    answer: httpx.Response | None = None
    while time.monotonic() < deadline:
        answer = await http.post("/api/replay", json={"from": since_ms, "to": time.time() * 1000.0, "speed": 0.05})
        if answer.status_code == 202:
            return
        assert answer.status_code in (404, 429), answer.text  # nothing recorded yet; starts rate-limited
        await asyncio.sleep(0.25)
    raise AssertionError(f"no replay started: {None if answer is None else answer.text}")


def test_doc_parser_reads_objects_maps_and_percentiles() -> None:
    text = "\n".join(
        [
            "## Top level",
            "| field | type | meaning |",
            "| `a` | object | |",
            "## A",
            "`a.<name>`:",
            "| `lateMs` | percentiles | |",
        ]
    )
    assert documented_paths(text) == {
        ("a",),
        ("a", "<name>", "lateMs"),
        *(("a", "<name>", "lateMs", key) for key in PERCENTILES),
    }
    sent = sent_paths({"a": {"x": {"lateMs": {"p50": 1, "p99": 2, "max": 3}}, "y": {"lateMs": {}}}})
    assert undocumented(sent, documented_paths(text)) == []
    assert stale(sent, documented_paths(text)) == []
    assert undocumented(sent | {("a", "x", "new")}, documented_paths(text)) == ["a.x.new"]
    assert stale(sent_paths({"a": {}}), documented_paths(text)) == sorted(
        ["a.<name>.lateMs", *(f"a.<name>.lateMs.{key}" for key in PERCENTILES)]
    )


async def test_health_md_lists_exactly_the_fields_health_sends(tmp_path: Path) -> None:
    env = {"WF_PERSIST": "1", "WF_PERSIST_PATH": str(tmp_path / "events.sqlite3")}
    with ServerProcess(env=env) as server:
        since_ms = time.time() * 1000.0 - 1000.0
        ws = await open_client(server.ws_url)
        try:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=scaled(10)) as http:
                await _start_slow_replay(http, since_ms)
                health = (await http.get("/health")).json()
        finally:
            await ws.close()
    assert health["replay"]["active"], health["replay"]
    assert health["connections"]["clients"], health["connections"]
    assert health["persistence"]["status"] == "ok", health["persistence"]

    documented = documented_paths(DOC.read_text())
    sent = sent_paths(health)
    assert not undocumented(sent, documented), (
        f"/health sends fields HEALTH.md does not list: {undocumented(sent, documented)}"
    )
    assert not stale(sent, documented), f"HEALTH.md lists fields /health does not send: {stale(sent, documented)}"
