"""Builders for every outbound message, and the envelope of each protocol version.

A message starts as an :class:`Event` (type, payload, optional frame number).
The hub stamps it with a ``seq`` and a publish time and wraps it in the
envelope of each protocol version that needs it (:func:`envelope`). Payload
builders here return plain dicts that the schemas in ``schemas/`` accept.

An event's payload holds the protocol 1.1 fields too (the energy evidence,
each token's evidence, the council's disagreement): one event is built per
message, and the 1.0 envelope leaves out the keys of :data:`ONLY_1_1`, so a
1.0 client gets the upstream contract exactly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .codes import CHANNEL_OF, ErrorCode

Payload = dict[str, Any]

ERROR_MESSAGE_MAX = 1000  # upstream maxLength of error_event.message
EVIDENCE_TOKENS_MAX = 8  # energy_update evidence.tokens: the latest 8 of the frame
COUNCIL_MODELS_MAX = 8  # energy_update evidence.models
TOP_K_MAX = 8  # token_stream tokenEvidence[].topK

ONLY_1_1: dict[str, frozenset[str]] = {
    "energy_update": frozenset({"evidence"}),
    "token_stream": frozenset({"firstIndex", "tokenEvidence", "textOmitted"}),
    "interference_event": frozenset({"evidence"}),
    "resonance_event": frozenset({"evidence"}),
}
"""Payload keys of each type that exist in protocol 1.1 only; the 1.0 envelope drops them."""


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

    1.0 is the upstream contract: integer milliseconds, no ``seq``, and none
    of the payload keys of :data:`ONLY_1_1`. 1.1 adds ``seq``, keeps
    microseconds in ``timestamp`` and the whole payload.
    """
    message: dict[str, Any] = {"type": event.type, "channel": CHANNEL_OF[event.type]}
    payload = event.payload
    if version == "1.0":
        message["timestamp"] = int(timestamp_ms)
        only_1_1 = ONLY_1_1.get(event.type)
        if only_1_1 is not None and isinstance(payload, dict) and not only_1_1.isdisjoint(payload):
            payload = {key: value for key, value in payload.items() if key not in only_1_1}
    else:
        message["timestamp"] = round(timestamp_ms, 3)
        message["seq"] = seq
    if event.frame_number is not None:
        message["frameNumber"] = event.frame_number
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
    evidence: Payload | None = None,
) -> Event:
    """One frame's energy; *evidence* (:func:`energy_evidence`) is the 1.1 part, required there."""
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
    if evidence is not None:
        payload["evidence"] = evidence
    return Event("energy_update", payload, frame_number)


def evidence_token(*, index: int, dt_ms: float, certainty: float | None, energy: float) -> Payload:
    """One token of ``energy_update.evidence.tokens``: index in the answer, its own dt, certainty, E after it."""
    return {
        "index": index,
        "dtMs": round(max(dt_ms, 0.0), 1),
        "certainty": None if certainty is None else round(_unit(certainty), 4),
        "energy": round(_unit(energy), 4),
    }


def council_member(
    *,
    model_id: str,
    energy: float,
    state: str,
    tps: float,
    certainty: float | None,
    dt_ms: float | None,
    tokens: int,
) -> Payload:
    """One member of ``energy_update.evidence.models`` at the frame's time."""
    return {
        "modelId": model_id,
        "energy": round(_unit(energy), 4),
        "state": state,
        "tps": round(max(tps, 0.0), 2),
        "certainty": None if certainty is None else round(_unit(certainty), 4),
        "dtMs": None if dt_ms is None else round(max(dt_ms, 0.0), 1),
        "tokens": tokens,
    }


def energy_evidence(
    *,
    profile: str,
    session_id: str = "",
    state: str = "IDLE",
    tokens: Sequence[Payload] = (),
    tokens_omitted: int = 0,
    tps: float = 0.0,
    certainty: float | None = None,
    entropy: float | None = None,
    since_token_ms: float | None = None,
    stall: bool = False,
    burst: bool = False,
    ttft_ms: float | None = None,
    energy_units: float = 0.0,
    models: Sequence[Payload] | None = None,
    ensemble_energy: float | None = None,
) -> Payload:
    """``energy_update.evidence`` (protocol 1.1): the primary model's signals at the frame's time.

    The defaults describe a model that has not answered yet (IDLE). *tokens*
    (:func:`evidence_token`) keeps the latest :data:`EVIDENCE_TOKENS_MAX`;
    the rest are counted in ``tokensOmitted``. *models*
    (:func:`council_member`) and *ensemble_energy* are given during a
    council only, both or neither.
    """
    kept = list(tokens[-EVIDENCE_TOKENS_MAX:])
    evidence: Payload = {
        "sessionId": session_id,
        "state": state,
        "profile": profile,
        "tokens": kept,
        "tokensOmitted": max(tokens_omitted, 0) + len(tokens) - len(kept),
        "tps": round(max(tps, 0.0), 2),
        "certainty": None if certainty is None else round(_unit(certainty), 4),
        "entropy": None if entropy is None else round(max(entropy, 0.0), 4),
        "sinceTokenMs": None if since_token_ms is None else round(max(since_token_ms, 0.0), 1),
        "stall": stall,
        "burst": burst,
        "ttftMs": None if ttft_ms is None else round(max(ttft_ms, 0.0), 1),
        "energyUnits": round(max(energy_units, 0.0), 4),
    }
    if models is not None and ensemble_energy is not None:
        evidence["models"] = list(models[:COUNCIL_MODELS_MAX])
        evidence["ensembleEnergy"] = round(_unit(ensemble_energy), 4)
    return evidence


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
    first_index: int | None = None,
    token_evidence: list[Payload] | None = None,
    text_omitted: bool = False,
) -> Event:
    """Tokens of one model since its previous token_stream.

    The 1.1 part: *first_index* (index of ``tokens[0]`` in the answer) and
    *token_evidence* (one :func:`token_evidence` per token); *text_omitted*
    when the texts are "" because a recording kept none.
    """
    payload: Payload = {"tokens": tokens, "isComplete": is_complete, "sessionId": session_id, "modelId": model_id}
    if energy_cost is not None:
        payload["energyCost"] = round(max(energy_cost, 0.0), 6)
    if token_evidence is not None:
        if len(token_evidence) != len(tokens):
            raise ValueError("token_stream needs one tokenEvidence per token")
        payload["firstIndex"] = max(first_index or 0, 0)
        payload["tokenEvidence"] = token_evidence
    if text_omitted:
        payload["textOmitted"] = True
    return Event("token_stream", payload)


def token_evidence(*, dt_ms: float, top_k: Sequence[float] | None) -> Payload:
    """One token's ``tokenEvidence``: its dt (0.1 ms) and its top-K probabilities, largest first (4 decimals)."""
    ranked = None
    if top_k:
        ranked = sorted((round(_unit(p), 4) for p in top_k), reverse=True)[:TOP_K_MAX]
    return {"dtMs": round(max(dt_ms, 0.0), 1), "topK": ranked}


def interference_event(
    *,
    frame_number: int,
    pattern_type: str,
    models: list[str],
    intensity: float,
    coherence: float,
    method: str | None = None,
    disagreement: float | None = None,
    window: int | None = None,
) -> Event:
    """Interference of a council; *method*, *disagreement* and *window* are the 1.1 ``evidence``."""
    payload: Payload = {
        "patternType": pattern_type,
        "models": models,
        "intensity": round(_unit(intensity), 6),
        "coherenceScore": round(_unit(coherence), 6),
    }
    if method is not None and disagreement is not None and window is not None:
        payload["evidence"] = {
            "method": method,
            "disagreement": round(_unit(disagreement), 6),
            "window": min(max(window, 1), 64),
        }
    return Event("interference_event", payload, frame_number)


def resonance_event(
    *,
    frame_number: int,
    resonance_type: str,
    frequency: float,
    amplitude: float,
    participants: list[str],
    phase: float | None = None,
    disagreement: float | None = None,
    tps_ratio: float | None = None,
) -> Event:
    """Resonance of a council; *disagreement* and *tps_ratio* are the 1.1 ``evidence``."""
    payload: Payload = {
        "resonanceType": resonance_type,
        "frequency": round(max(frequency, 0.0), 4),
        "amplitude": round(_unit(amplitude), 6),
        "participants": participants,
    }
    if phase is not None:
        payload["phase"] = round(phase % 360.0, 3)
    if disagreement is not None and tps_ratio is not None:
        payload["evidence"] = {"disagreement": round(_unit(disagreement), 6), "tpsRatio": round(_unit(tps_ratio), 4)}
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
