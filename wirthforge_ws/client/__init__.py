"""Asyncio client for the WIRTHFORGE real-time protocol (docs/PROTOCOL.md).

:class:`WirthforgeClient` owns one background task that connects, reads,
answers heartbeats and reconnects with backoff; it resumes the reliable
channels after a drop (protocol 1.1) and keeps live statistics::

    async with WirthforgeClient("ws://127.0.0.1:8145/ws", channels=["energy", "reward"]) as client:
        await client.wait_connected(timeout=5)
        reward = await client.wait_for(lambda m: m["type"] == "reward_event", timeout=10)
        print(client.stats.snapshot())

Run ``python -m wirthforge_ws.client --help`` for the command-line monitor.

Building blocks, one job each, one module each:

- :mod:`.core`        :class:`WirthforgeClient`, the connection task
- :mod:`.exceptions`  the errors it raises
- :mod:`.rules`       the client rules of PROTOCOL.md §10 (close codes,
  backoff bounds, dead link, frame gaps), one function each
- :mod:`.backoff`     :class:`Backoff` (reconnect delays)
- :mod:`.session`     :class:`ResumeCursor` (epoch, last ``seq``, dedupe),
  :class:`SessionOptions` (channels, energy rate, pause; re-applied on
  reconnect) and :func:`build_url`
- :mod:`.stats`       :func:`percentile`, :class:`LatencyWindow`,
  :class:`ArrivalRate` and :class:`FrameGapCounter`, gathered in
  :class:`ClientStats`
- :mod:`.cli`         :class:`StatsPrinter` and :func:`main` for the command line
- :mod:`.utils`       number checks shared by the modules above

Everything public is importable from this package.
"""

from __future__ import annotations

from . import rules
from .backoff import Backoff
from .cli import StatsPrinter, build_arg_parser, main
from .core import ABNORMAL_CLOSURE, DEFAULT_URL, Message, MessageCallback, Predicate, WirthforgeClient
from .exceptions import ClientClosedError, PolicyCloseError, UnsupportedByProtocolError, WirthforgeClientError
from .session import ResumeCursor, SeqVerdict, SessionOptions, build_url
from .stats import ArrivalRate, ClientState, ClientStats, FrameGapCounter, LatencyWindow, percentile

__all__ = [
    "ABNORMAL_CLOSURE",
    "DEFAULT_URL",
    "ArrivalRate",
    "Backoff",
    "ClientClosedError",
    "ClientState",
    "ClientStats",
    "FrameGapCounter",
    "LatencyWindow",
    "Message",
    "MessageCallback",
    "PolicyCloseError",
    "Predicate",
    "ResumeCursor",
    "SeqVerdict",
    "SessionOptions",
    "StatsPrinter",
    "UnsupportedByProtocolError",
    "WirthforgeClient",
    "WirthforgeClientError",
    "build_arg_parser",
    "build_url",
    "main",
    "percentile",
    "rules",
]
