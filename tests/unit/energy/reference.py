"""An independent reference implementation of the energy formulas, and the golden trace generator.

It re-derives E, tps, certainty, the council's DI and the frame values from
the written formulas (docs/ENERGY.md) with its own code: exact decimal time
arithmetic, its own entropy and Jensen-Shannon divergence. It imports nothing
from ``wirthforge_ws.energy``, so the golden tests compare two separate
implementations of one specification.

Regenerate the golden files (inputs and expected values) with::

    python -m tests.unit.energy.reference
"""

from __future__ import annotations

import json
import math
import random
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "golden"

# name: (tps_max, stall_ms, alpha); shared by all: tps_min 0, ceil 1500, half-life 700, window 1000
PROFILE_CONSTANTS = {"Lite": (10.0, 500.0, 0.30), "Dual": (14.0, 400.0, 0.35), "Studio": (20.0, 350.0, 0.40)}
TPS_MIN = 0.0
CEIL_MS = 1500.0
HALF_LIFE_MS = 700.0
WINDOW_MS = Decimal(1000)
DI_WINDOW = 8
TENTH = Decimal("0.1")


def tenth(value: float) -> Decimal:
    """A time in ms on the 0.1 ms grid, exactly."""
    return Decimal(repr(value)).quantize(TENTH, rounding=ROUND_HALF_EVEN)


def clip(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def prepare_top_k(top_k: list[float] | None) -> list[float] | None:
    if top_k is None:
        return None
    kept = sorted((p for p in top_k if p >= 0), reverse=True)[:8]
    return [round(p, 4) for p in kept] or None


def certainty_of(top_k: list[float] | None) -> float | None:
    if top_k is None or len(top_k) < 2 or sum(top_k) <= 0:
        return None
    total = sum(top_k)
    h = 0.0
    for p in top_k:
        if p > 0:
            q = p / total
            h -= q * math.log(q)
    return clip(1.0 - h / math.log(len(top_k)))


def token_values(profile: str, timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per token: t_ms (Decimal), dt_ms, tps, top_k, certainty, E, stall."""
    tps_max, stall_ms, alpha = PROFILE_CONSTANTS[profile]
    out: list[dict[str, Any]] = []
    clock = Decimal(0)
    times: list[Decimal] = []
    energy = 0.0
    for i, token in enumerate(timeline):
        dt = tenth(token["dt_ms"])
        clock += dt
        times.append(clock)
        tps = sum(1 for t in times if clock - WINDOW_MS < t <= clock) * 1000.0 / float(WINDOW_MS)
        top_k = prepare_top_k(token["top_k"])
        c = certainty_of(top_k)
        v = clip((tps - TPS_MIN) / (tps_max - TPS_MIN))
        f = 1.0 - clip((float(dt) - stall_ms) / (CEIL_MS - stall_ms))
        e_base = 0.7 * v + 0.3 * f if c is None else 0.5 * v + 0.3 * c + 0.2 * f
        energy = alpha * e_base + (1.0 - alpha) * energy
        out.append(
            {
                "t": clock,
                "dt_ms": float(dt),
                "tps": tps,
                "top_k": top_k,
                "certainty": c,
                "E": energy,
                "stall": i > 0 and float(dt) > stall_ms,
            }
        )
    return out


def energy_at(tokens: list[dict[str, Any]], frame: Decimal) -> float:
    seen = [t for t in tokens if t["t"] <= frame]
    if not seen:
        return 0.0
    return seen[-1]["E"] * 0.5 ** (float(frame - seen[-1]["t"]) / HALF_LIFE_MS)


def tps_at(tokens: list[dict[str, Any]], frame: Decimal) -> float:
    return sum(1 for t in tokens if frame - WINDOW_MS < t["t"] <= frame) * 1000.0 / float(WINDOW_MS)


def jsd(distributions: list[list[float]]) -> float:
    """Generalised JSD, base 2, divided by log2 n, as the mean KL divergence to the mixture."""
    n = len(distributions)
    width = max(len(d) for d in distributions)
    rows = []
    for d in distributions:
        ordered = sorted(d, reverse=True)
        s = sum(ordered)
        rows.append([p / s for p in ordered] + [0.0] * (width - len(ordered)))
    mixture = [sum(row[k] for row in rows) / n for k in range(width)]
    total = 0.0
    for row in rows:
        for k, p in enumerate(row):
            if p > 0:
                total += p * math.log2(p / mixture[k]) / n
    return clip(total / math.log2(n))


def jsd_by_index(members: list[list[dict[str, Any]]]) -> list[float | None]:
    longest = max(len(m) for m in members)
    out: list[float | None] = []
    for i in range(longest):
        ds = [m[i]["top_k"] for m in members if i < len(m) and m[i]["top_k"] is not None and sum(m[i]["top_k"]) > 0]
        out.append(jsd(ds) if len(ds) >= 2 else None)
    return out


def timing_index(members: list[list[dict[str, Any]]]) -> tuple[float, int] | None:
    gaps = [[t["dt_ms"] for t in m[1:]][-DI_WINDOW:] for m in members]
    if any(len(g) < 2 for g in gaps):
        return None
    means = [sum(g) / len(g) for g in gaps]
    cvs = []
    for g, mean in zip(gaps, means):
        sd = math.sqrt(sum((x - mean) ** 2 for x in g) / len(g))
        cvs.append(sd / mean if mean > 0 else 0.0)
    ratio = min(means) / max(means) if max(means) > 0 else 1.0
    return clip(0.5 * (1 - ratio) + 0.5 * min(1.0, max(cvs) - min(cvs))), min(len(g) for g in gaps)


def council_di(members: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
    shared = [v for v in jsd_by_index(members) if v is not None] if any(members) else []
    if shared:
        used = shared[-DI_WINDOW:]
        return {"value": sum(used) / len(used), "method": "jsd", "window": len(used)}
    timing = timing_index(members)
    if timing is None:
        return None
    return {"value": timing[0], "method": "timing", "window": timing[1]}


def di_by_token(members: list[list[dict[str, Any]]]) -> list[float | None]:
    series = jsd_by_index(members)
    if any(v is not None for v in series):
        return series
    out: list[float | None] = []
    for i in range(len(series)):
        timing = timing_index([m[: i + 1] for m in members])
        out.append(None if timing is None else timing[0])
    return out


def expected_values(trace: dict[str, Any]) -> dict[str, Any]:
    """The expected block of a golden file, from its inputs."""
    profile = trace["profile"]
    members = [token_values(profile, model["tokens"]) for model in trace["models"]]
    expected: dict[str, Any] = {
        "tokens": [
            [{"t_ms": float(t["t"]), "tps": t["tps"], "certainty": t["certainty"], "E": t["E"]} for t in m]
            for m in members
        ],
        "frames": [],
    }
    council = len(members) > 1
    for frame_ms in trace["frames_ms"]:
        frame = tenth(frame_ms)
        row: dict[str, Any] = {
            "t_ms": frame_ms,
            "E": [energy_at(m, frame) for m in members],
            "tps": [tps_at(m, frame) for m in members],
        }
        if council:
            row["ensemble"] = sum(row["E"]) / len(row["E"])
            row["DI"] = council_di([[t for t in m if t["t"] <= frame] for m in members])
        expected["frames"].append(row)
    if council:
        expected["DI_by_token"] = di_by_token(members)
    return expected


# ---------------------------------------------------------------------------
# The scenarios behind tests/golden/*.json


def _top_k(rng: random.Random, peak: float, k: int = 5) -> list[float]:
    """A descending synthetic top-K with the first probability near *peak*, rounded to 4 decimals."""
    first = min(max(peak + rng.uniform(-0.08, 0.08), 0.05), 0.99)
    rest = sorted((rng.random() for _ in range(k - 1)), reverse=True)
    scale = (1.0 - first) * rng.uniform(0.6, 0.95) / sum(rest)
    return [round(first, 4)] + [round(r * scale, 4) for r in rest]


def _jitter(rng: random.Random, base: float, spread: float) -> float:
    return round(base + rng.uniform(-spread, spread), 1)


def _frames(end_ms: float, after_ms: float = 1500.0) -> list[float]:
    frames = [round(33.3 + 100.0 * k, 1) for k in range(int((end_ms + after_ms) // 100) + 1)]
    return frames + [round(end_ms + 5000.0, 1)]


def _scenario(name: str, description: str, profile: str, models: list[tuple[str, str, list[dict[str, Any]]]]) -> dict:
    end_ms = max(sum(t["dt_ms"] for t in tokens) for _, _, tokens in models)
    trace: dict[str, Any] = {
        "name": name,
        "description": description,
        "profile": profile,
        "models": [{"name": n, "backend": b, "tokens": tokens} for n, b, tokens in models],
        "frames_ms": _frames(end_ms),
    }
    trace["expected"] = expected_values(trace)
    return trace


def scenarios() -> list[dict[str, Any]]:
    rng = random.Random(20260)

    def flow(count: int, dt: float, spread: float, peak: float | None) -> list[dict[str, Any]]:
        return [
            {"dt_ms": _jitter(rng, dt, spread), "top_k": None if peak is None else _top_k(rng, peak)}
            for _ in range(count)
        ]

    steady = [{"dt_ms": 240.0, "top_k": _top_k(rng, 0.7)}] + flow(40, 70.0, 6.0, 0.7)
    stall = [{"dt_ms": 320.0, "top_k": _top_k(rng, 0.6)}] + flow(15, 110.0, 8.0, 0.6)
    stall += [{"dt_ms": 1200.0, "top_k": _top_k(rng, 0.6)}] + flow(10, 110.0, 8.0, 0.6)
    burst = [{"dt_ms": 180.0, "top_k": _top_k(rng, 0.8)}] + flow(10, 120.0, 5.0, 0.8) + flow(30, 40.0, 3.0, 0.85)
    no_top_k = [{"dt_ms": 410.0, "top_k": None}] + flow(20, 90.0, 30.0, None) + flow(2, 650.0, 100.0, None)
    no_top_k += flow(12, 90.0, 30.0, None)
    council_a = [{"dt_ms": 260.0, "top_k": _top_k(rng, 0.75)}] + flow(24, 75.0, 8.0, 0.75)
    council_b = [{"dt_ms": 520.0, "top_k": _top_k(rng, 0.4)}] + flow(19, 110.0, 25.0, 0.4)
    timing_a = [{"dt_ms": 300.0, "top_k": None}] + flow(24, 70.0, 5.0, None)
    timing_b = [{"dt_ms": 450.0, "top_k": None}] + flow(18, 130.0, 60.0, None)
    return [
        _scenario(
            "steady_flow", "One model at about 14 tokens/s with steady top-K.", "Dual", [("m1", "llama.cpp", steady)]
        ),
        _scenario(
            "stall_ends",
            "Steady tokens, a 1.2 s stall ended by one token, steady again.",
            "Lite",
            [("m1", "llama.cpp", stall)],
        ),
        _scenario("burst", "About 8 tokens/s, then about 25 tokens/s (burst).", "Studio", [("m1", "llama.cpp", burst)]),
        _scenario(
            "no_top_k", "A backend without top-K: E from speed and friction only.", "Dual", [("m1", "ollama", no_top_k)]
        ),
        _scenario(
            "council_top_k",
            "Two models with top-K: DI by Jensen-Shannon divergence.",
            "Dual",
            [("m1", "llama.cpp", council_a), ("m2", "llama.cpp", council_b)],
        ),
        _scenario(
            "council_timing",
            "Two models without top-K: DI by the timing index.",
            "Dual",
            [("m1", "ollama", timing_a), ("m2", "ollama", timing_b)],
        ),
    ]


def main() -> None:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for trace in scenarios():
        path = GOLDEN_DIR / f"{trace['name']}.json"
        path.write_text(json.dumps(trace, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
