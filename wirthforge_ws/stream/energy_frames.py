"""A frame's energy messages, built from a source's :class:`~wirthforge_ws.sources.base.FrameActivity`.

- :func:`frame_evidence`: ``energy_update.evidence`` (protocol 1.1), the
  primary model's snapshot and its tokens of the frame; during a council
  every member and the ensemble energy.
- :func:`distribution`: ``energyDistribution``, the level split by the terms
  of the last token's E_base (speed, certainty, friction).
- :func:`token_stream`: one model's tokens of the frame, each with its dt and
  top-K.
- :class:`FieldBuilder`: ``energy_field``, from the primary's last 32 tokens,
  sent only when it changed (plus a refresh once a second for clients that
  joined since).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..energy import MeterSnapshot, TokenReading
from ..energy.profiles import EnergyProfile
from ..protocol import messages
from ..protocol.messages import Event, Payload
from ..sources.base import FrameActivity, TokenBatch

FIELD_TOKENS = 32
FIELD_REFRESH_S = 1.0


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def friction(dt_ms: float, profile: EnergyProfile) -> float:
    """f = 1 - s for one token's dt: 1 up to the stall time, 0 from the ceiling."""
    return 1.0 - _clamp((dt_ms - profile.stall_ms) / (profile.ceil_ms - profile.stall_ms))


def distribution(level: float, last: TokenReading | MeterSnapshot | None, profile: EnergyProfile) -> dict[str, float]:
    """Split *level* into generation (speed), attention (certainty) and reasoning (flow).

    The shares are those of the terms of E_base as the last token had them
    (0.5 v, 0.3 c, 0.2 f; or 0.7 v, 0.3 f without certainty).
    """
    if last is None or last.dt_ms is None or level <= 0:
        return {"generation": 0.0, "attention": 0.0, "reasoning": 0.0}
    v = _clamp((last.tps - profile.tps_min) / (profile.tps_max - profile.tps_min))
    f = friction(last.dt_ms, profile)
    if last.certainty is None:
        weights = (0.7 * v, 0.0, 0.3 * f)
    else:
        weights = (0.5 * v, 0.3 * last.certainty, 0.2 * f)
    total = sum(weights)
    if total <= 0:
        return {"generation": 0.0, "attention": 0.0, "reasoning": 0.0}
    share = level / total
    return {"generation": weights[0] * share, "attention": weights[1] * share, "reasoning": weights[2] * share}


def frame_evidence(activity: FrameActivity) -> Payload:
    """``energy_update.evidence`` of this frame (the fields of :func:`messages.energy_evidence`).

    Built directly rather than through the keyword builders: it runs every
    frame, and the meter's values are already in range (E and certainty in
    [0, 1], times and rates >= 0), so only the rounding is left to do.
    """
    snapshot = activity.primary
    readings = activity.readings
    kept = readings[-messages.EVIDENCE_TOKENS_MAX :] if len(readings) > messages.EVIDENCE_TOKENS_MAX else readings
    certainty = snapshot.certainty
    entropy = snapshot.entropy
    since = snapshot.since_token_ms
    ttft = snapshot.ttft_ms
    evidence: Payload = {
        "sessionId": activity.session_id,
        "state": snapshot.state.value,
        "profile": activity.profile.name,
        "tokens": [
            {
                "index": r.index,
                "dtMs": r.dt_ms,
                "certainty": None if r.certainty is None else round(r.certainty, 4),
                "energy": round(r.energy, 4),
            }
            for r in kept
        ],
        "tokensOmitted": len(readings) - len(kept),
        "tps": round(snapshot.tps, 2),
        "certainty": None if certainty is None else round(certainty, 4),
        "entropy": None if entropy is None else round(entropy, 4),
        "sinceTokenMs": None if since is None else round(since, 1),
        "stall": snapshot.stall,
        "burst": snapshot.burst,
        "ttftMs": None if ttft is None else round(ttft, 1),
        "energyUnits": round(snapshot.energy_units, 4),
    }
    council = activity.council
    if council:
        evidence["models"] = [
            {
                "modelId": member.model_id,
                "energy": round(member.energy, 4),
                "state": member.state.value,
                "tps": round(member.tps, 2),
                "certainty": None if member.certainty is None else round(member.certainty, 4),
                "dtMs": member.dt_ms,
                "tokens": member.tokens,
            }
            for member in council[: messages.COUNCIL_MODELS_MAX]
        ]
        evidence["ensembleEnergy"] = round(activity.total_energy, 4)
    return evidence


def frame_distribution(activity: FrameActivity, level: float) -> Mapping[str, float]:
    if activity.distribution is not None:
        return activity.distribution
    last: TokenReading | MeterSnapshot | None = activity.history[-1] if activity.history else None
    return distribution(level, last, activity.profile)


def token_stream(batch: TokenBatch) -> Event:
    """One model's ``token_stream`` of this frame, with each token's evidence (1.1)."""
    evidence: list[Payload] | None = batch.recorded_evidence
    if evidence is None and len(batch.readings) == len(batch.texts):
        evidence = [messages.token_evidence(dt_ms=r.dt_ms, top_k=r.top_k) for r in batch.readings]
    if evidence is not None and len(evidence) != len(batch.texts):
        evidence = None  # a recording without evidence for every token: send none rather than a wrong one
    return messages.token_stream(
        tokens=batch.texts,
        is_complete=batch.complete,
        session_id=batch.session_id,
        model_id=batch.model_id,
        energy_cost=0.01 * len(batch.texts),
        first_index=batch.first_index,
        token_evidence=evidence,
        text_omitted=batch.text_omitted,
    )


class FieldBuilder:
    """Builds ``energy_field`` from the primary's last :data:`FIELD_TOKENS` tokens, only when it changed.

    Each point is one token, oldest to newest: ``x`` its position in 0..1,
    ``y`` its certainty (its friction 1 - s when it had no top-K), ``energy``
    E after it. ``intensity`` is the model's E now. Considered every
    *every_frames* frames; sent when that differs from the last one sent, or
    :data:`FIELD_REFRESH_S` after it (the same field again, for clients that
    joined since). A still model gives identical fields, once a second.
    """

    def __init__(self, every_frames: int = 6, refresh_s: float = FIELD_REFRESH_S) -> None:
        self.every_frames = max(every_frames, 1)
        self.refresh_s = refresh_s
        self._points_key: tuple[int, TokenReading | None, str] | None = None
        self._points: list[dict[str, float]] = []
        self._sent: tuple[object, ...] | None = None  # fieldType, intensity, modelId, the points' key
        self._sent_at = float("-inf")

    def build(self, frame_number: int, now: float, activity: FrameActivity) -> Event | None:
        if frame_number % self.every_frames:
            return None
        snapshot = activity.primary
        points = self._coordinates(activity)
        kind = "lightning" if snapshot.burst else "stream"
        intensity = round(_clamp(snapshot.energy), 4)
        key = (kind, intensity, snapshot.model_id, self._points_key)
        if key == self._sent and now - self._sent_at < self.refresh_s:
            return None
        self._sent, self._sent_at = key, now
        return messages.energy_field(
            frame_number=frame_number,
            field_type=kind,
            intensity=intensity,
            coordinates=points,
            model_id=snapshot.model_id,
        )

    def _coordinates(self, activity: FrameActivity) -> list[dict[str, float]]:
        """The points of the last tokens, rebuilt only when a token came (or a new answer began)."""
        history = activity.history
        last = history[-1] if history else None
        key = (len(history), last, activity.profile.name)
        if key == self._points_key:
            return self._points
        recent = list(history[-FIELD_TOKENS:])
        count = len(recent)
        profile = activity.profile
        self._points = [
            {
                "x": round(i / (count - 1), 4) if count > 1 else 1.0,
                "y": round(r.certainty if r.certainty is not None else friction(r.dt_ms, profile), 4),
                "energy": round(_clamp(r.energy), 4),
            }
            for i, r in enumerate(recent)
        ]
        self._points_key = key
        return self._points
