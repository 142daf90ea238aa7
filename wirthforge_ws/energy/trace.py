"""WVMP v0.1 traces: one session's per-token evidence and E, for export and golden tests.

A trace keeps, per model and token, the rounded Δt and top-K probabilities
the meter computed from, so :func:`recompute` reproduces every E exactly.
Candidate texts of a top-K are never kept; a token's own text only when the
caller passes it (keeping text is the user's explicit choice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .council import disagreement, disagreement_by_token
from .meter import ModelMeter, TokenReading
from .profiles import PROFILES, EnergyProfile

WVMP_VERSION = "0.1"

TraceToken = tuple[float, Sequence[float] | None, str | None]  # (dt_ms, top_k, text)


class TraceError(ValueError):
    """A trace that cannot be recomputed; the message names the first bad field."""


@dataclass(frozen=True, slots=True)
class TraceModel:
    """One model's answer as it arrived: backend kind and (dt_ms, top_k or None, text or None) per token."""

    name: str
    backend: str  # "llama.cpp" | "ollama" | "openai"
    tokens: Sequence[TraceToken] = field(default_factory=tuple)


def _meter_for(name: str, profile: EnergyProfile) -> ModelMeter:
    meter = ModelMeter(name, profile)
    meter.start(0.0)
    return meter


def _token_entry(reading: TokenReading, text: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"t_ms": reading.t_ms}
    if text is not None:
        entry["token"] = text
    entry["delta_ms"] = reading.dt_ms
    entry["tps"] = reading.tps
    if reading.top_k is not None:
        entry["topk"] = [{"p": p} for p in reading.top_k]
    if reading.entropy is not None:
        entry["entropy"] = reading.entropy
    if reading.certainty is not None:
        entry["certainty"] = reading.certainty
    entry["stall"] = reading.stall
    entry["E"] = reading.energy
    return entry


def build_trace(session_id: str, models: Sequence[TraceModel], profile: EnergyProfile) -> dict[str, Any]:
    """The WVMP v0.1 document of a session, E computed by :class:`ModelMeter` under *profile*."""
    out_models: list[dict[str, Any]] = []
    all_readings: list[list[TokenReading]] = []
    for model in models:
        meter = _meter_for(model.name, profile)
        entries = []
        for dt_ms, top_k, text in model.tokens:
            entries.append(_token_entry(meter.add_token(dt_ms, top_k), text))
        all_readings.append(meter.readings)
        out_models.append({"name": model.name, "backend": model.backend, "tokens": entries})

    derived: list[dict[str, Any]] = []
    if len(models) > 1:
        di = disagreement(all_readings)
        name = "DI_jsd" if di is not None and di.method == "jsd" else "DI_timing"
        derived.append({"name": name, "by_token": disagreement_by_token(all_readings)})
    return {
        "session_id": session_id,
        "models": out_models,
        "derived": derived,
        "meta": {
            "version": WVMP_VERSION,
            "window_ms": profile.window_ms,
            "stall_ms": profile.stall_ms,
            "burst_tps": profile.burst_tps,
            "profile": profile.name,
        },
    }


def _top_k_of(token: Mapping[str, Any], where: str) -> list[float] | None:
    top_k = token.get("topk")
    if top_k is None:
        return None
    if not isinstance(top_k, list):
        raise TraceError(f"{where}.topk: a list of {{'p': number}}")
    probabilities = []
    for k, candidate in enumerate(top_k):
        p = candidate.get("p") if isinstance(candidate, Mapping) else None
        if not isinstance(p, int | float) or isinstance(p, bool):
            raise TraceError(f"{where}.topk[{k}].p: a number")
        probabilities.append(float(p))
    return probabilities


def recompute(trace: Mapping[str, Any], profile: EnergyProfile | None = None) -> list[list[float]]:
    """E per token per model, recomputed by :class:`ModelMeter` from each token's ``delta_ms`` and ``topk``.

    *profile* defaults to the one named in the trace's ``meta``. Raises
    :class:`TraceError` for a trace without the fields the formula needs.
    """
    if profile is None:
        name = trace.get("meta", {}).get("profile") if isinstance(trace.get("meta"), Mapping) else None
        if name not in PROFILES:
            raise TraceError(f"meta.profile: one of {', '.join(PROFILES)}, not {name!r}")
        profile = PROFILES[name]
    models = trace.get("models")
    if not isinstance(models, list):
        raise TraceError("models: a list")
    energies: list[list[float]] = []
    for m, model in enumerate(models):
        tokens = model.get("tokens") if isinstance(model, Mapping) else None
        if not isinstance(tokens, list):
            raise TraceError(f"models[{m}].tokens: a list")
        meter = _meter_for(str(model.get("name", m)), profile)
        for i, token in enumerate(tokens):
            where = f"models[{m}].tokens[{i}]"
            dt = token.get("delta_ms") if isinstance(token, Mapping) else None
            if not isinstance(dt, int | float) or isinstance(dt, bool) or dt < 0:
                raise TraceError(f"{where}.delta_ms: a number >= 0")
            meter.add_token(float(dt), _top_k_of(token, where))
        energies.append([reading.energy for reading in meter.readings])
    return energies
