"""Builders for every outbound message, and the envelope of each protocol version.

A message starts as an :class:`Event` (type, payload, optional frame number).
The hub stamps it with a ``seq`` and a publish time and wraps it in the
envelope of each protocol version that needs it (:func:`envelope`). Payload
builders here return plain dicts that the schemas in ``schemas/`` accept.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .codes import CHANNEL_OF, ErrorCode

Payload = dict[str, Any]

ERROR_MESSAGE_MAX = 1000  # upstream maxLength of error_event.message


@dataclass(frozen=True, slots=True)
class Event:
    """A message before it is published: no timestamp, no seq yet."""

    type: str
    payload: Payload
    frame_number: int | None = None

    @property
    def channel(self) -> str:
        return CHANNEL_OF[self.type]


def now_ms() -> float:
    """Wall-clock time in epoch milliseconds, to the microsecond: exactly what 1.1 puts on the wire.

    Whole microseconds so that a time stored or compared on the server (the
    event log's ranges, recordings' start and end) equals the client's copy.
    """
    return time.time_ns() // 1_000 / 1_000


def envelope(version: str, event: Event, timestamp_ms: float, seq: int) -> dict[str, Any]:
    """Wrap *event* in the envelope of protocol *version* ("1.0" or "1.1").

    1.0 is the upstream contract: integer milliseconds and no ``seq``.
    1.1 adds ``seq`` and keeps microseconds in ``timestamp``.
    """
    message: dict[str, Any] = {"type": event.type, "channel": CHANNEL_OF[event.type]}
    if version == "1.0":
        message["timestamp"] = int(timestamp_ms)
    else:
        message["timestamp"] = round(timestamp_ms, 3)
        message["seq"] = seq
    if event.frame_number is not None:
        message["frameNumber"] = event.frame_number
    payload = event.payload
    if version == "1.0" and "textOmitted" in payload:  # a 1.1 field: 1.0 keeps the upstream shape
        payload = {key: value for key, value in payload.items() if key != "textOmitted"}
    message["payload"] = payload
    return message


# ---------------------------------------------------------------------------
# Payload builders


def startup_complete(
    *,
    model_id: str,
    tier: str,
    frame_rate: float,
    capabilities: Iterable[str] = ("visualization",),
    session: Mapping[str, Any] | None = None,
) -> Event:
    """First message on every connection. *session* holds the 1.1-only fields."""
    payload: Payload = {
        "model": model_id,
        "tier": tier,
        "version": __version__,
        "frameRate": _number(frame_rate),
        "capabilities": list(capabilities),
    }
    if session:
        payload.update(session)
    return Event("startup_complete", payload)


def heartbeat(*, sequence: int, frame_rate: float, connection_id: str) -> Event:
    return Event(
        "heartbeat",
        {
            "sequence": sequence,
            "serverTime": int(now_ms()),
            "frameRate": round(frame_rate, 3),
            "connectionId": connection_id,
        },
    )


def error_event(
    code: ErrorCode,
    message: str,
    *,
    severity: str = "warning",
    recoverable: bool = True,
    details: Mapping[str, Any] | None = None,
    component: str = "websocket",
) -> Event:
    """An error the transport (component ``websocket``) or a model source (``model``) reports.

    *message* and *details* must never carry token text: callers pass
    reasons produced by the validator, which never echoes values.
    """
    payload: Payload = {
        "severity": severity,
        "code": code.value,
        "message": message[:ERROR_MESSAGE_MAX],
        "component": component,
        "recoverable": recoverable,
    }
    if details:
        payload["details"] = dict(details)
    return Event("error_event", payload)


def energy_update(
    *,
    frame_number: int,
    total_energy: float,
    delta_energy: float,
    tokens_generated: int,
    processing_time_ms: float,
    model_id: str,
    distribution: Mapping[str, float] | None = None,
) -> Event:
    payload: Payload = {
        "totalEnergy": round(max(total_energy, 0.0), 6),
        "deltaEnergy": round(delta_energy, 6),
        "tokensGenerated": tokens_generated,
        # The upstream contract caps this at the frame budget; an overrun is
        # reported in /health, the wire value saturates.
        "processingTime": round(min(max(processing_time_ms, 0.0), 16.67), 4),
        "modelId": model_id,
    }
    if distribution is not None:
        payload["energyDistribution"] = {key: round(max(value, 0.0), 6) for key, value in distribution.items()}
    return Event("energy_update", payload, frame_number)


def energy_field(
    *, frame_number: int, field_type: str, intensity: float, coordinates: list[dict[str, float]], model_id: str
) -> Event:
    return Event(
        "energy_field",
        {
            "fieldType": field_type,
            "intensity": round(_unit(intensity), 6),
            "coordinates": coordinates,
            "modelId": model_id,
        },
        frame_number,
    )


def token_stream(
    *,
    tokens: list[str],
    is_complete: bool,
    session_id: str,
    model_id: str,
    energy_cost: float | None = None,
    text_omitted: bool = False,
) -> Event:
    """*text_omitted*: the tokens are placeholders from a recording kept without text (1.1 ``textOmitted``)."""
    payload: Payload = {"tokens": tokens, "isComplete": is_complete, "sessionId": session_id, "modelId": model_id}
    if energy_cost is not None:
        payload["energyCost"] = round(max(energy_cost, 0.0), 6)
    if text_omitted:
        payload["textOmitted"] = True
    return Event("token_stream", payload)


def interference_event(
    *, frame_number: int, pattern_type: str, models: list[str], intensity: float, coherence: float
) -> Event:
    return Event(
        "interference_event",
        {
            "patternType": pattern_type,
            "models": models,
            "intensity": round(_unit(intensity), 6),
            "coherenceScore": round(_unit(coherence), 6),
        },
        frame_number,
    )


def resonance_event(
    *,
    frame_number: int,
    resonance_type: str,
    frequency: float,
    amplitude: float,
    participants: list[str],
    phase: float | None = None,
) -> Event:
    payload: Payload = {
        "resonanceType": resonance_type,
        "frequency": round(max(frequency, 0.0), 4),
        "amplitude": round(_unit(amplitude), 6),
        "participants": participants,
    }
    if phase is not None:
        payload["phase"] = round(phase % 360.0, 3)
    return Event("resonance_event", payload, frame_number)


def reward_event(
    *,
    reward_type: str,
    title: str,
    points: int,
    description: str | None = None,
    level: int | None = None,
    energy_bonus: float | None = None,
) -> Event:
    payload: Payload = {"rewardType": reward_type, "title": title[:100], "points": points}
    if description is not None:
        payload["description"] = description[:500]
    if level is not None:
        payload["level"] = level
    if energy_bonus is not None:
        payload["energyBonus"] = round(max(energy_bonus, 0.0), 6)
    return Event("reward_event", payload)


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _number(value: float) -> float | int:
    """60.0 -> 60, so that JSON shows the rate as a person would write it."""
    return int(value) if float(value).is_integer() else value
