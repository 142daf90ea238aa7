"""Energy in ``/metrics``: per-model gauges, a token counter and the per-token inter-arrival histogram.

What the frame loop's source reports each frame (its ``FrameActivity``) is
read once per frame by :class:`MeteredSource`, a thin wrapper the frame
loop steps instead of the source itself:

- ``wirthforge_energy_level{model}`` (E, 0-1), ``wirthforge_token_rate{model}``
  (tokens per second in the profile's window) and
  ``wirthforge_token_certainty{model}`` (0-1, absent without top-K): each model
  of the latest frame (the primary, and every member during a council);
- ``wirthforge_tokens_total{model}``: tokens the models produced (each one an
  energy transfer);
- ``wirthforge_token_interarrival_seconds{model}``: each token's own Δt (the
  first token of an answer is its time to first token, not an inter-arrival,
  and is left out).

The ``model`` label takes the configured models only (the live source's
modelIds), or for a source without a fixed list (the simulator) the first
:data:`MAX_MODELS` seen, so the series stay a bounded set. Replayed tokens
carry no readings and are not counted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from ..energy import MeterSnapshot, TokenReading
from ..sources.base import EnergySource, FrameActivity

NAMESPACE = "wirthforge"
MAX_MODELS = 16
# Seconds between two tokens of one model: a fast local model is ~10 ms, a stall is > 0.35 s.
INTERARRIVAL_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 1.0, 2.5, 5.0)


class TokenBatchView(Protocol):
    """What is read of one ``token_stream`` of a frame (sources/base.py ``TokenBatch``)."""

    @property
    def model_id(self) -> str: ...

    @property
    def readings(self) -> Sequence[TokenReading]: ...


class FrameActivityView(Protocol):
    """What is read of a frame's ``FrameActivity`` (sources/base.py)."""

    @property
    def primary(self) -> MeterSnapshot: ...

    @property
    def council(self) -> Sequence[MeterSnapshot]: ...

    @property
    def streams(self) -> Sequence[TokenBatchView]: ...


class EnergyMetrics:
    """The energy series of one server's registry: fed per frame by :meth:`observe`, gauges read at scrape."""

    def __init__(self, registry: CollectorRegistry, models: Collection[str] | None = None) -> None:
        self._fixed = models is not None
        self._models: set[str] = set(models or ())
        self.tokens = Counter(
            "tokens",
            "Tokens the models produced (each one an energy transfer), by model.",
            ["model"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.interarrival = Histogram(
            "token_interarrival_seconds",
            "Time between two tokens of one model's answer (its first token, the TTFT, is not counted).",
            ["model"],
            namespace=NAMESPACE,
            buckets=INTERARRIVAL_BUCKETS,
            registry=registry,
        )
        self._latest: list[MeterSnapshot] = []
        self._series: dict[str, tuple[Counter, Histogram]] = {}
        registry.register(_GaugeCollector(self))

    def _known(self, model_id: str) -> bool:
        if model_id in self._models:
            return True
        if self._fixed or len(self._models) >= MAX_MODELS:
            return False
        self._models.add(model_id)
        return True

    def observe(self, activity: FrameActivityView) -> None:
        """One frame: the models' snapshots for the gauges, each new token for the counter and histogram."""
        self._latest = [s for s in (activity.council or (activity.primary,)) if self._known(s.model_id)]
        for batch in activity.streams:
            if not batch.readings or not self._known(batch.model_id):
                continue
            counter, histogram = self._children(batch.model_id)
            counter.inc(len(batch.readings))
            for reading in batch.readings:
                if reading.index > 0:
                    histogram.observe(reading.dt_ms / 1000.0)

    def _children(self, model_id: str) -> tuple[Counter, Histogram]:
        """The model's counter and histogram series (looked up once: ``labels()`` takes a lock each call)."""
        children = self._series.get(model_id)
        if children is None:
            children = self._series[model_id] = (self.tokens.labels(model_id), self.interarrival.labels(model_id))
        return children

    def gauges(self) -> Iterator[Metric]:
        """The latest frame's models: energy level, token rate and certainty."""
        level = GaugeMetricFamily(f"{NAMESPACE}_energy_level", "Energy E of the model (0-1).", labels=["model"])
        rate = GaugeMetricFamily(
            f"{NAMESPACE}_token_rate", "Tokens per second of the model (its profile's window).", labels=["model"]
        )
        certainty = GaugeMetricFamily(
            f"{NAMESPACE}_token_certainty",
            "Certainty 1 - H/ln K of the model's last token (0-1); absent without top-K.",
            labels=["model"],
        )
        for snapshot in self._latest:
            level.add_metric([snapshot.model_id], snapshot.energy)
            rate.add_metric([snapshot.model_id], snapshot.tps)
            if snapshot.certainty is not None:
                certainty.add_metric([snapshot.model_id], snapshot.certainty)
        yield from (level, rate, certainty)


class _GaugeCollector:
    def __init__(self, metrics: EnergyMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return self._metrics.gauges()


class MeteredSource:
    """A source as the frame loop steps it: the same activity, also handed to :class:`EnergyMetrics`.

    Every other attribute is the source's own, so the frame loop (and a
    replay that swaps the loop's source and puts it back) sees the source.
    """

    def __init__(self, source: EnergySource, metrics: EnergyMetrics) -> None:
        self.source = source
        self._metrics = metrics

    @property
    def model_id(self) -> str:
        return self.source.model_id

    def step(self, frame_number: int, now: float) -> FrameActivity:
        activity = self.source.step(frame_number, now)
        self._metrics.observe(activity)
        return activity

    def __getattr__(self, name: str) -> object:
        return getattr(self.source, name)
