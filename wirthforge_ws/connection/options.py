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

_RESUME_SEQ = re.compile(r"[0-9]{1,18}")  # lastSeq: ASCII digits, at most 18 (fits a signed 64-bit integer)


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
            epoch, last_seq = query.get("epoch", ""), query.get("lastSeq", "")
            # ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses.
            if epoch and len(epoch) <= 64 and _RESUME_SEQ.fullmatch(last_seq):
                options.resume = ResumeRequest(epoch, int(last_seq))
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


def parse_rate(raw: object, maximum: float) -> float | None:
    """An energy rate from 1 Hz to *maximum* (the frame rate), or None if *raw* is not one."""
    try:
        rate = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not (1.0 <= rate <= maximum):
        return None
    return rate
