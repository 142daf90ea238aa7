"""ServerMetrics in process: the scrape-time counters as Prometheus samples, parsed back."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from wirthforge_ws.connection.uvicorn_protocols import WireStats
from wirthforge_ws.http.prometheus import MetricCounters, ServerMetrics
from wirthforge_ws.stream.hub import HubStats


def samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.exposition()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def counters(**changes: object) -> MetricCounters:
    values: dict[str, object] = {
        "stats": HubStats(published=Counter({"energy_update": 120}), validation_failures=2),
        "connections_by_protocol": {"1.1": 3},
        "queued_messages": [0, 4, 1],
        "refused_requests": 5,
        "frames_built": 120,
        "frames_skipped": 7,
        "budget_overruns": 1,
        "closed_by_code": {},
    }
    values.update(changes)
    return MetricCounters(**values)


def test_scrape_time_counters_become_samples() -> None:
    got = samples(ServerMetrics(counters))
    assert got[("wirthforge_connections", (("protocol", "1.1"),))] == 3
    assert got[("wirthforge_messages_published_total", (("type", "energy_update"),))] == 120
    assert got[("wirthforge_validation_failures_total", ())] == 2
    assert got[("wirthforge_refused_requests_total", ())] == 5
    assert got[("wirthforge_frames_built_total", ())] == 120
    assert got[("wirthforge_frames_skipped_total", ())] == 7
    assert got[("wirthforge_frame_budget_overruns_total", ())] == 1
    assert got[("wirthforge_send_queue_messages", (("aggregate", "total"),))] == 5
    assert got[("wirthforge_send_queue_messages", (("aggregate", "max"),))] == 4


def test_close_codes_count_both_sides_and_closes_without_a_frame() -> None:
    wire = WireStats(closed_by_server=Counter({1013: 2, 1008: 1}), closed_by_client=Counter({1000: 4, 1008: 1}))
    wire.closed_without_frame = 3
    got = samples(ServerMetrics(lambda: counters(closed_by_code=wire.closed_by_code())))
    by_code = {
        dict(labels)["code"]: value
        for (name, labels), value in got.items()
        if name == "wirthforge_connections_closed_by_code_total"
    }
    assert by_code == {"1000": 4, "1006": 3, "1008": 2, "1013": 2}
