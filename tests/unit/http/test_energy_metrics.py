"""The energy series of /metrics, fed with real meters' readings and snapshots (no server)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wirthforge_ws.energy import PROFILES, MeterSnapshot, ModelMeter, TokenReading
from wirthforge_ws.http.energy_metrics import MAX_MODELS, EnergyMetrics, MeteredSource


@dataclass
class Batch:
    model_id: str
    readings: list[TokenReading]


@dataclass
class Activity:
    primary: MeterSnapshot
    council: list[MeterSnapshot] = field(default_factory=list)
    streams: list[Batch] = field(default_factory=list)


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """(sample name, model label) -> value, parsed back from the text format a scrape gets."""
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels.get("model", "") + ("|" + s.labels["le"] if "le" in s.labels else "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def answer(model_id: str, dts: list[float], top_k: list[float] | None) -> tuple[ModelMeter, list[TokenReading]]:
    meter = ModelMeter(model_id, PROFILES["Dual"])
    meter.start(0.0)
    return meter, [meter.add_token(dt, top_k) for dt in dts]


def test_tokens_interarrival_and_gauges_per_model() -> None:
    registry = CollectorRegistry()
    metrics = EnergyMetrics(registry, models=["alpha", "beta"])
    alpha, first = answer("alpha", [300.0, 40.0, 60.0], [0.7, 0.2, 0.1])
    beta, other = answer("beta", [200.0, 80.0], None)
    metrics.observe(
        Activity(
            primary=alpha.snapshot(0.4),
            council=[alpha.snapshot(0.4), beta.snapshot(0.4)],
            streams=[Batch("alpha", first[:2]), Batch("beta", other), Batch("gamma", first)],
        )
    )
    metrics.observe(Activity(primary=alpha.snapshot(0.41), streams=[Batch("alpha", first[2:])]))
    got = samples(registry)
    assert got[("wirthforge_tokens_total", "alpha")] == 3
    assert got[("wirthforge_tokens_total", "beta")] == 2
    assert ("wirthforge_tokens_total", "gamma") not in got  # not a configured model
    # the first token of each answer is its TTFT, not an inter-arrival
    assert got[("wirthforge_token_interarrival_seconds_count", "alpha")] == 2
    assert got[("wirthforge_token_interarrival_seconds_sum", "alpha")] == pytest.approx(0.1)
    assert got[("wirthforge_token_interarrival_seconds_bucket", "alpha|0.05")] == 1
    assert got[("wirthforge_token_interarrival_seconds_count", "beta")] == 1
    # the gauges show the latest frame's models: the council has ended, beta is gone
    snapshot = alpha.snapshot(0.41)
    assert got[("wirthforge_energy_level", "alpha")] == snapshot.energy > 0
    assert got[("wirthforge_token_rate", "alpha")] == snapshot.tps == 3
    assert got[("wirthforge_token_certainty", "alpha")] == snapshot.certainty
    assert ("wirthforge_energy_level", "beta") not in got


def test_without_top_k_there_is_no_certainty_and_unknown_models_stay_bounded() -> None:
    registry = CollectorRegistry()
    metrics = EnergyMetrics(registry)  # no fixed list (the simulator): the first MAX_MODELS seen
    for n in range(MAX_MODELS + 5):
        meter, readings = answer(f"m{n}", [100.0], None)
        metrics.observe(Activity(primary=meter.snapshot(0.1), streams=[Batch(f"m{n}", readings)]))
    got = samples(registry)
    assert sum(1 for name, _ in got if name == "wirthforge_tokens_total") == MAX_MODELS
    assert ("wirthforge_token_certainty", "m0") not in got
    assert ("wirthforge_energy_level", f"m{MAX_MODELS + 4}") not in got


class Source:
    model_id = "alpha"
    backends = ("kept",)

    def __init__(self) -> None:
        self.meter, self.readings = answer("alpha", [100.0, 50.0], None)

    def step(self, frame_number: int, now: float) -> Activity:
        return Activity(primary=self.meter.snapshot(now), streams=[Batch("alpha", self.readings)])


def test_the_wrapper_steps_the_source_and_forwards_everything_else() -> None:
    registry = CollectorRegistry()
    source = Source()
    wrapped = MeteredSource(source, EnergyMetrics(registry, models=["alpha"]))
    activity = wrapped.step(1, 0.2)
    assert activity.streams[0].readings == source.readings
    assert (wrapped.model_id, wrapped.backends, wrapped.source) == ("alpha", ("kept",), source)
    assert samples(registry)[("wirthforge_tokens_total", "alpha")] == 2
