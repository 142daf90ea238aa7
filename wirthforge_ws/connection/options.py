"""What a 1.1 client asks for in its connect URL (PROTOCOL.md §6): channels, energy rate, resume.

A bad option never refuses the connection: the connection opens with the
default for that option and sends the error_event that
:attr:`ConnectOptions.errors` holds right after ``startup_complete``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol import messages
from ..protocol.codes import ALWAYS_ON_CHANNEL, CHANNELS, ErrorCode
from ..protocol.messages import Event
from ..settings import Settings
from ..stream.hub import ResumeRequest

MAX_SEQ = 2**63 - 1  # seqs are SQLite INTEGERs in the durable log: signed 64-bit
_SEQ_TEXT = re.compile(r"[0-9]{1,19}")  # ASCII digits only; 19 of them hold MAX_SEQ, the value is checked too
# A rate in a URL: plain ASCII decimal. float() alone would also take '1_0', ' 30 ', '٣', 'nan' and '1e1'.
_RATE_TEXT = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,9})?")


@dataclass
class ConnectOptions:
    """The parsed connect URL of one connection."""

    channels: set[str]
    energy_rate: float
    resume: ResumeRequest | None = None
    errors: list[Event] = field(default_factory=list)
    resume_invalid: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str], settings: Settings, version: str) -> ConnectOptions:
        options = cls(set(CHANNELS), settings.frame_rate)
        if version != "1.1":
            return options  # 1.0 knows no options; the query is ignored
        if "channels" in query:
            names = {name.strip() for name in query["channels"].split(",") if name.strip()}
            unknown = sorted(names - set(CHANNELS))
            if unknown:
                options.errors.append(
                    error(
                        ErrorCode.UNKNOWN_CHANNEL,
                        "Unknown channel in the connect URL.",
                        {"unknown": unknown[:10], "channels": list(CHANNELS)},
                    )
                )
            options.channels = (names & set(CHANNELS)) | {ALWAYS_ON_CHANNEL}
        if "energyRate" in query:
            rate = parse_rate(query["energyRate"], settings.frame_rate)
            if rate is None:
                options.errors.append(
                    error(
                        ErrorCode.INVALID_ENERGY_RATE, f"energyRate must be a number from 1 to {settings.frame_rate:g}."
                    )
                )
            else:
                options.energy_rate = rate
        if "epoch" in query or "lastSeq" in query:
            epoch, last_seq = query.get("epoch", ""), parse_seq(query.get("lastSeq", ""))
            if epoch and len(epoch) <= 64 and last_seq is not None:
                options.resume = ResumeRequest(epoch, last_seq)
            else:
                options.resume_invalid = True
                options.errors.append(
                    error(
                        ErrorCode.INVALID_RESUME,
                        "Resume needs both epoch and lastSeq (a non-negative integer); starting a fresh session.",
                    )
                )
        return options


def error(code: ErrorCode, text: str, details: dict[str, Any] | None = None) -> Event:
    """An error_event for this connection's client."""
    return messages.error_event(code, text, details=details)


def parse_seq(raw: str) -> int | None:
    """A lastSeq from the connect URL: ASCII digits for 0..MAX_SEQ, or None.

    ``str.isdigit()`` also accepts '²' and other digits ``int()`` refuses,
    and a value past MAX_SEQ could not be compared with the durable log's
    seqs: both are an invalid resume, never an error of the server.
    """
    if not _SEQ_TEXT.fullmatch(raw):
        return None
    seq = int(raw)
    return seq if seq <= MAX_SEQ else None


def parse_rate(raw: object, maximum: float) -> float | None:
    """An energy rate from 1 Hz to *maximum* (the frame rate), or None if *raw* is not one.

    *raw* is the connect URL's text (plain ASCII decimal) or a JSON number
    from a ``set_rate`` request (a boolean is not a number here).
    """
    if isinstance(raw, str):
        if not _RATE_TEXT.fullmatch(raw):
            return None
        rate = float(raw)
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        rate = float(raw)
    else:
        return None
    if not (1.0 <= rate <= maximum):  # also false for NaN
        return None
    return rate
