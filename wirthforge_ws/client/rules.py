"""The client rules of docs/PROTOCOL.md §10, as constants and pure functions.

Every decision the protocol leaves to a client (reconnect or stop, how long
to wait, when a link is dead, what counts as a frame gap) is made here and
nowhere else in this package, so that the conformance vectors under
``tests/vectors/`` can hold this client to the document. The browser client
has the same rules in ``static/wirthforge/rules.js``; change both or neither.
"""

from __future__ import annotations

import math
from typing import Final, Literal

from ..protocol.codes import CloseCode

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEAD_LINK_INTERVALS",
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "RECONNECT_BASE_S",
    "RECONNECT_CAP_S",
    "STABLE_SESSION_S",
    "CloseAction",
    "close_action",
    "dead_after",
    "frames_missed",
    "handshake_action",
    "is_frame_gap",
    "session_was_stable",
]

CloseAction = Literal["reconnect", "stop"]

RECONNECT_BASE_S: Final = 0.1
"""First backoff ceiling: a single drop is retried within 100 ms."""
RECONNECT_CAP_S: Final = 1.0
"""Largest backoff ceiling: a client is back at most ~1 s after its server is."""
STABLE_SESSION_S: Final = 2.0
"""A session that lasted this long resets the backoff when it ends."""
CONNECT_TIMEOUT_S: Final = 5.0
"""An attempt that has not produced startup_complete by then is abandoned."""
DEAD_LINK_INTERVALS: Final = 3.0
"""Heartbeat intervals without any frame after which the link is dead."""
DEFAULT_HEARTBEAT_INTERVAL_S: Final = 1.0
"""The heartbeat interval assumed when startup_complete does not announce one (1.0)."""


def close_action(code: int) -> CloseAction:
    """What to do after the server (or the network) closed with *code*.

    Stop only when the server says this client is the problem (1002, 1003,
    1007, 1008, 1009): reconnecting would repeat it. Everything else, 1000 and 1001
    included, is retried: a live view that the user did not close should
    come back by itself, and this server never ends a session with 1000,
    so one comes from something in between (a proxy, a server going away).
    """
    return "stop" if code in CloseCode.POLICY_CLOSES else "reconnect"


def handshake_action(status: int) -> CloseAction:
    """What to do after an HTTP refusal of the handshake (non-browser clients see the status).

    A 4xx other than 408 and 429 (403 Origin/Host, 400 subprotocols) will not
    change by retrying; 5xx, 408 and 429 are transient.
    """
    return "stop" if 400 <= status < 500 and status not in (408, 429) else "reconnect"


def session_was_stable(duration_s: float) -> bool:
    """Whether a session that lasted *duration_s* resets the backoff when it ends.

    A server that accepts and then drops the client at once must not be
    hammered at the base delay forever, so only stable sessions start over.
    """
    return duration_s >= STABLE_SESSION_S


def dead_after(heartbeat_interval_s: float | None) -> float:
    """Seconds without any inbound frame after which an open session is dead."""
    interval = (
        heartbeat_interval_s if heartbeat_interval_s and heartbeat_interval_s > 0 else DEFAULT_HEARTBEAT_INTERVAL_S
    )
    return DEAD_LINK_INTERVALS * interval


def is_frame_gap(step: int, expected_step: float) -> bool:
    """Whether a ``frameNumber`` step between consecutive energy_update frames is a gap.

    *expected_step* is ``frame rate / energy rate`` (1 at full rate).
    Decimation legitimately produces steps of ``floor(e)`` and ``ceil(e)``;
    anything larger is a frame the viewer did not get, whether the server's
    clock skipped it or the connection coalesced it away, at every rate.
    """
    # The tolerance keeps 60 / 30.000000001 from turning 2 into 3.
    return step > math.ceil(max(expected_step, 1.0) - 1e-9)


def frames_missed(step: int, expected_step: float) -> int:
    """Frames (samples, when decimating) a gap of *step* lost: ``floor(step / e + 0.5) - 1``, at least 1.

    Rounds half up, as JavaScript's ``Math.round`` does, not half to even.
    """
    return max(1, math.floor(step / max(expected_step, 1.0) + 0.5) - 1)
