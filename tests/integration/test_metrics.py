"""GET /metrics: Prometheus text format that parses and moves with traffic."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.server_process import ServerProcess
from tests.timing import scaled


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}, parsed by prometheus_client."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=scaled(5)) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_parse_and_move_with_traffic(server: ServerProcess) -> None:
    before = scrape(server)
    assert ("wirthforge_connections", (("protocol", "1.1"),)) not in before
    async with connect(server.ws_url, subprotocols=["wirthforge.1.1"], origin=server.origin) as ws:
        deadline = asyncio.get_running_loop().time() + scaled(5.0)
        frames = 0
        while frames < 30 and asyncio.get_running_loop().time() < deadline:
            if '"energy_update"' in await asyncio.wait_for(ws.recv(), scaled(2.0)):
                frames += 1
        server.publish({"type": "reward_event", "payload": {"rewardType": "milestone", "title": "m", "points": 1}})
        during = scrape(server)
    assert during[("wirthforge_connections", (("protocol", "1.1"),))] == 1
    published = ("wirthforge_messages_published_total", (("type", "energy_update"),))
    assert during[published] >= before.get(published, 0) + 30
    reward = ("wirthforge_messages_published_total", (("type", "reward_event"),))
    assert during[reward] == before.get(reward, 0) + 1
    ticks = during[("wirthforge_tick_lateness_seconds_count", ())]
    assert ticks >= 30
    assert during[("wirthforge_frame_processing_seconds_count", ())] == ticks
    # The histogram's buckets are cumulative and end in +Inf = count.
    assert during[("wirthforge_tick_lateness_seconds_bucket", (("le", "+Inf"),))] == ticks
    assert during[("wirthforge_send_queue_messages", (("aggregate", "max"),))] >= 0


async def test_metrics_count_refused_handshakes(server: ServerProcess) -> None:
    before = scrape(server)[("wirthforge_refused_requests_total", ())]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws_url, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    assert scrape(server)[("wirthforge_refused_requests_total", ())] == before + 1
