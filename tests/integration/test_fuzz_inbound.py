"""Property-based fuzzing of what clients send, against one real server (subprocess).

For each protocol variant (no subprotocol, wirthforge.1.0, wirthforge.1.1),
hypothesis sends arbitrary JSON values, near-valid messages built from the
inbound schemas in ``schemas/inbound/``, random text, invalid UTF-8 in text
frames and binary frames. Properties:

- the server never closes with 1011 (an internal error) and never drops the
  TCP connection without a close frame;
- a close, when there is one, has the documented code for what was sent
  (1003 binary, 1007 invalid UTF-8, 1009 too big) and a reason;
- every message the server sends is valid against its outbound schema
  (``SchemaSet.validate_outbound``).

The server's invalid-message and rate limits are raised so that the fuzzer
is not cut for being a fuzzer.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.server_process import ROOT, ServerProcess
from tests.timing import scaled
from wirthforge_ws.protocol.codes import CHANNELS
from wirthforge_ws.protocol.schemas import SchemaSet

SCHEMAS = SchemaSet()
MAX_EXAMPLES = 150
VARIANTS = {
    "none": (None, "1.0"),
    "wirthforge.1.0": ("wirthforge.1.0", "1.0"),
    "wirthforge.1.1": ("wirthforge.1.1", "1.1"),
}
PROBE = "\x00probe"  # invalid JSON: its INVALID_JSON answer shows the server has handled what came before


def inbound_schemas() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((ROOT / "schemas" / "inbound").glob("*.json"))}


INBOUND = inbound_schemas()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Values that a schema is likely to accept, so that near-valid messages get past the first check.
plausible = (
    st.integers(-5, 2**53)
    | st.floats(-1, 120, allow_nan=False)
    | st.sampled_from(CHANNELS)
    | st.lists(st.sampled_from((*CHANNELS, "nope")), max_size=6)
    | st.just({})
    | json_values
)


@st.composite
def near_valid(draw: st.DrawFn) -> Any:
    """A message shaped by one inbound schema, with some fields wrong, missing or extra."""
    name = draw(st.sampled_from(sorted(INBOUND)))
    schema = INBOUND[name]
    payload_schema = schema["properties"].get("payload", {})
    fields = sorted(payload_schema.get("properties", {}))
    payload = {key: draw(plausible) for key in draw(st.lists(st.sampled_from(fields), unique=True))} if fields else {}
    if draw(st.booleans()):
        payload[draw(st.text(max_size=8))] = draw(json_values)
    message: dict[str, Any] = {"type": draw(st.sampled_from([name, name.upper(), ""]) | json_values)}
    if draw(st.integers(0, 4)):
        message["payload"] = payload if draw(st.integers(0, 5)) else draw(json_values)
    if draw(st.booleans()):
        message["timestamp"] = draw(plausible)
    return message


invalid_utf8 = st.binary(min_size=1, max_size=64).filter(lambda data: not _is_utf8(data))
frames = st.one_of(
    json_values.map(lambda value: ("text", json.dumps(value))),
    near_valid().map(lambda value: ("text", json.dumps(value))),
    st.text(max_size=200).map(lambda text: ("text", text)),
    invalid_utf8.map(lambda data: ("utf8-invalid", data)),
    st.binary(max_size=64).map(lambda data: ("binary", data)),
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False


EXPECTED_CLOSE = {"utf8-invalid": 1007, "binary": 1003}


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    env = {"WF_MAX_INVALID_MESSAGES": "1000000", "WF_INBOUND_RATE": "100000", "WF_INBOUND_BURST": "100000"}
    with ServerProcess(env=env) as process:
        yield process


class Client:
    """One connection of a protocol variant, reopened whenever the server closes it."""

    def __init__(self, server: ServerProcess, variant: str) -> None:
        self.subprotocol, self.version = VARIANTS[variant]
        self.url = server.ws_url + ("?channels=system" if self.version == "1.1" else "")
        self.ws: ClientConnection | None = None
        self.validated = 0
        self._stack = contextlib.ExitStack()

    def connection(self) -> ClientConnection:
        if self.ws is None:
            self._stack.close()
            self.ws = self._stack.enter_context(
                connect(
                    self.url,
                    compression=None,
                    proxy=None,
                    open_timeout=scaled(5),
                    max_size=None,
                    subprotocols=[self.subprotocol] if self.subprotocol else None,
                )
            )  # type: ignore[list-item]
        return self.ws

    def check(self, text: str | bytes) -> dict[str, Any]:
        assert isinstance(text, str), "the server sent a binary frame"
        message: dict[str, Any] = json.loads(text)
        SCHEMAS.validate_outbound(self.version, message)  # raises MessageValidationError
        self.validated += 1
        return message

    def exchange(self, kind: str, data: str | bytes) -> None:
        """Send one frame then the probe; read until the probe is answered or the server closes."""
        ws = self.connection()
        # The server parses with orjson: text it cannot parse gets its own INVALID_JSON before the probe's.
        expected = 1 + (kind == "text" and not _parses(data))
        try:
            if kind == "text":
                ws.send(data)
            else:
                ws.send(data, text=(kind == "utf8-invalid"))
            ws.send(PROBE)
            while True:
                message = self.check(ws.recv(timeout=scaled(5)))
                if message["type"] == "error_event" and message["payload"]["code"] == "INVALID_JSON":
                    expected -= 1
                    if expected == 0:
                        return
        except ConnectionClosed as closed:
            self.ws = None
            received = closed.rcvd
            assert received is not None, f"dropped without a close frame after {kind} {data!r:.200}"
            assert received.code != 1011, f"1011 after {kind} {data!r:.200}: {received.reason}"
            assert received.code == EXPECTED_CLOSE.get(kind), f"closed {received.code} after {kind} {data!r:.200}"
            assert received.reason, "a close without a reason"

    def close(self) -> None:
        self._stack.close()


def _parses(text: str | bytes) -> bool:
    try:
        orjson.loads(text)
        return True
    except orjson.JSONDecodeError:
        return False


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fuzzed_inbound_never_breaks_the_server(fuzz_server: ServerProcess, variant: str) -> None:
    client = Client(fuzz_server, variant)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(frame=frames)
    def fuzz(frame: tuple[str, str | bytes]) -> None:
        client.exchange(*frame)

    try:
        fuzz()
    finally:
        client.close()
    assert client.validated >= MAX_EXAMPLES
    health = fuzz_server.health()
    assert "1011" not in health["messages"]["connectionsClosedByCode"]["sentByServer"]
    assert health["status"] == "ok"
