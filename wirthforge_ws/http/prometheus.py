"""``GET /metrics``: the server's counters in the Prometheus text format.

Almost everything is read at scrape time from the counters the server keeps
anyway (:class:`~.hub.HubStats`, the frame clock, the connections), by a
custom collector: nothing is added to the per-message or per-client path.
Only the two histograms (tick lateness and frame processing time) observe
on the hot path, once per frame, which costs about a microsecond at 60 Hz;
the energy series (energy_metrics.py) read each frame's activity once and
observe once per token.

Labels are bounded sets (message types, protocol versions, reasons, close
codes), never connection ids, so a thousand clients do not make a thousand
series. Each server has its own registry, so two servers in one process
(tests) do not collide.

Example::

    metrics = ServerMetrics(server.metric_counters)
    metrics.observe_frame(lateness_s=0.0004, processing_s=0.00009)
    body, content_type = metrics.exposition()
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from .energy_metrics import EnergyMetrics

if TYPE_CHECKING:
    from ..stream.hub import HubStats

NAMESPACE = "wirthforge"

# Seconds. Tick lateness is sub-millisecond when healthy; a frame is 16.7 ms.
LATENESS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.0167, 0.05, 0.1, 0.5)
PROCESSING_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.0167, 0.05)


@dataclass(frozen=True, slots=True)
class MetricCounters:
    """A snapshot of the server's own counters, taken at scrape time (``Server.metric_counters``)."""

    stats: HubStats
    connections_by_protocol: Mapping[str, int]
    queued_messages: Sequence[int]
    refused_requests: int
    frames_built: int
    frames_skipped: int
    budget_overruns: int
    closed_by_code: Mapping[int, int]  # WebSocket close codes, whichever side sent the close frame (1006: none)


class ServerMetrics:
    """A per-server Prometheus registry: scrape-time counters plus two frame histograms."""

    def __init__(self, snapshot: Callable[[], MetricCounters], models: Collection[str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        # energy per model (energy_metrics.py); *models* bounds its model label
        self.energy = EnergyMetrics(self.registry, models)
        self.tick_lateness = Histogram(
            "tick_lateness_seconds",
            "How late each frame tick fired after its deadline (skipped time included).",
            namespace=NAMESPACE,
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.frame_processing = Histogram(
            "frame_processing_seconds",
            "Time to build, validate, serialise and fan out one frame.",
            namespace=NAMESPACE,
            buckets=PROCESSING_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ServerCollector(snapshot))

    def observe_frame(self, lateness_s: float, processing_s: float) -> None:
        """Called once per frame by the frame loop."""
        self.tick_lateness.observe(max(lateness_s, 0.0))
        self.frame_processing.observe(processing_s)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class _ServerCollector:
    """Turns the server's counters into metric families when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], MetricCounters]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # names are only known at collect time; nothing to check at register time

    def collect(self) -> Iterator[Metric]:
        counters = self._snapshot()
        stats = counters.stats
        yield _gauge("connections", "Open WebSocket connections.", "protocol", counters.connections_by_protocol)
        yield _counter("messages_published", "Messages published by the hub, by type.", "type", stats.published)
        yield _counter(
            "messages_coalesced",
            "Energy frames replaced by a newer one in a client's queue.",
            "reason",
            stats.coalesced,
        )
        yield _counter("messages_dropped", "Messages not sent, by reason.", "reason", stats.dropped)
        yield _counter("connections_closed", "Connections closed by the server, by reason.", "reason", stats.closed)
        yield _counter(
            "connections_closed_by_code",
            "Connections closed, by WebSocket close code (1006: without a close frame).",
            "code",
            {str(code): n for code, n in counters.closed_by_code.items()},
        )
        for name, documentation, value in (
            ("validation_failures", "Outbound messages that failed schema validation.", stats.validation_failures),
            (
                "refused_requests",
                "HTTP requests and WebSocket handshakes refused by the Origin/Host guard.",
                counters.refused_requests,
            ),
            ("frames_built", "Energy frames built.", counters.frames_built),
            ("frames_skipped", "Frame ticks skipped when the loop fell 2+ periods behind.", counters.frames_skipped),
            ("frame_budget_overruns", "Frames whose processing exceeded the frame budget.", counters.budget_overruns),
        ):
            yield _counter(name, documentation, None, {"": value})
        depths = counters.queued_messages
        queue = GaugeMetricFamily(
            f"{NAMESPACE}_send_queue_messages",
            "Messages waiting in client send queues: total and the deepest one.",
            labels=["aggregate"],
        )
        queue.add_metric(["total"], sum(depths))
        queue.add_metric(["max"], max(depths, default=0))
        yield queue


def _counter(name: str, documentation: str, label: str | None, values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(f"{NAMESPACE}_{name}", documentation, labels=[label] if label else None)
    for key, value in sorted(values.items()):
        family.add_metric([key] if label else [], value)
    return family


def _gauge(name: str, documentation: str, label: str, values: Mapping[str, int]) -> Metric:
    family = GaugeMetricFamily(f"{NAMESPACE}_{name}", documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
