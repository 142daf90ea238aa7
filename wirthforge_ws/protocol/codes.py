"""Protocol constants shared by the server and the clients (see docs/PROTOCOL.md)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Final

# Subprotocol names, newest first: the server picks the first one the client offers.
SUBPROTOCOL_1_1: Final = "wirthforge.1.1"
SUBPROTOCOL_1_0: Final = "wirthforge.1.0"
SUBPROTOCOLS: Final = {SUBPROTOCOL_1_1: "1.1", SUBPROTOCOL_1_0: "1.0"}

CHANNELS: Final = ("energy", "experience", "council", "reward", "system")
ALWAYS_ON_CHANNEL: Final = "system"

# Each outbound type lives on exactly one channel.
CHANNEL_OF: Final[dict[str, str]] = {
    "startup_complete": "system",
    "heartbeat": "system",
    "error_event": "system",
    "energy_update": "energy",
    "energy_field": "energy",
    "token_stream": "experience",
    "interference_event": "council",
    "resonance_event": "council",
    "reward_event": "reward",
}

# Types that carry a top-level frameNumber.
FRAME_BOUND_TYPES: Final = frozenset({"energy_update", "energy_field", "interference_event", "resonance_event"})

# Energy frames are latest-wins; everything else is ordered and reliable.
LATEST_WINS_CHANNEL: Final = "energy"

# Client requests that only protocol 1.1 understands.
REQUESTS_1_1: Final = frozenset({"subscribe", "unsubscribe", "set_energy_rate", "pause_energy", "resume_energy"})


class CloseCode:
    """WebSocket close codes the server sends, and what a client should do."""

    NORMAL = 1000
    PROTOCOL_ERROR = 1002  # malformed frames: do not reconnect
    UNSUPPORTED_DATA = 1003  # binary frame: do not reconnect
    INVALID_DATA = 1007  # a text message that is not UTF-8: do not reconnect
    POLICY_VIOLATION = 1008  # rate limit / abuse: do not reconnect
    MESSAGE_TOO_BIG = 1009  # do not reconnect
    INTERNAL_ERROR = 1011  # reconnect with backoff
    SERVICE_RESTART = 1012  # shutdown or restart: reconnect with backoff
    TRY_AGAIN_LATER = 1013  # slow consumer: reconnect with backoff and resume

    # A client must not reconnect on its own after these.
    POLICY_CLOSES: Final = frozenset({1002, 1003, 1007, 1008, 1009})


class ErrorCode(str, Enum):
    """``error_event.payload.code`` values the transport sends."""

    INVALID_JSON = "INVALID_JSON"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    UNSUPPORTED_BY_PROTOCOL = "UNSUPPORTED_BY_PROTOCOL"
    UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
    INVALID_SUBSCRIPTION = "INVALID_SUBSCRIPTION"
    INVALID_ENERGY_RATE = "INVALID_ENERGY_RATE"
    INVALID_RESUME = "INVALID_RESUME"
    OUTBOUND_VALIDATION_FAILED = "OUTBOUND_VALIDATION_FAILED"
    PERSISTENCE_DEGRADED = "PERSISTENCE_DEGRADED"
    FRAME_OVERRUN = "FRAME_OVERRUN"  # the frame loop fell behind and skipped frames
    # A model source failed (component "model"; details.source names it).
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"  # not running / connection refused
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"  # the server does not know the model
    MODEL_STREAM_CUT = "MODEL_STREAM_CUT"  # the stream ended before the answer did
    MODEL_TIMEOUT = "MODEL_TIMEOUT"  # silent for longer than source_timeout
    MODEL_FAILED = "MODEL_FAILED"  # any other failure of the source


def negotiate(offered: Sequence[str]) -> tuple[str, str | None] | None:
    """Pick (protocol version, subprotocol to answer) for the offered subprotocols.

    Nothing offered means 1.0 without a subprotocol header. Only unknown
    offers give None: the caller refuses the upgrade (PROTOCOL.md §1).
    """
    if not offered:
        return "1.0", None
    for name in SUBPROTOCOLS:  # newest first
        if name in offered:
            return SUBPROTOCOLS[name], name
    return None
