"""Energy in a real server's ``/metrics``: per-model gauges, the tokens counter and the inter-arrival histogram.

- a council answer from the fake Ollama server (14 tokens per model, 30 ms
  apart): exactly 14 tokens and 13 inter-arrivals per model, their sum near
  13 x 30 ms, and the gauges of both models within 0..1;
- the simulator (``--source sim``) runs its meters without any model: its
  series appear, labelled with its own models only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_ollama import TOKEN_INTERVAL_S, TOKENS, FakeOllama
from tests.integration.test_models import Recorder
from tests.server_process import ServerProcess
from tests.timing import scaled

Samples = dict[tuple[str, str], float]


def scrape(server: ServerProcess) -> Samples:
    """(sample name, model label) -> value of every sample with a model label."""
    text = httpx.get(server.http_url + "/metrics", timeout=scaled(10), trust_env=False).text
    return {
        (sample.name, sample.labels["model"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "model" in sample.labels and "le" not in sample.labels
    }


def models_of(samples: Samples, name: str) -> set[str]:
    return {model for sample, model in samples if sample == name}


@pytest.fixture(scope="module")
def ollama() -> Iterator[ServerProcess]:
    with FakeOllama() as fake:
        env = {
            "WF_SOURCE": "ollama",
            "WF_OLLAMA_URL": fake.url,
            "WF_OLLAMA_MODEL": "tiny",
            "WF_COUNCIL_WITH": "ollama/critic",
        }
        with ServerProcess(env=env) as server:
            yield server


async def test_a_council_answer_counts_every_token_and_interarrival_per_model(ollama: ServerProcess) -> None:
    before = scrape(ollama)
    assert not models_of(before, "wirthforge_tokens_total")  # no answer yet, no token
    async with Recorder(ollama.ws_url) as client, httpx.AsyncClient(base_url=ollama.http_url, timeout=10) as http:
        started = await http.post("/api/prompt", json={"prompt": "Tell me about the sea.", "council": True})
        assert started.status_code == 202, started.text
        session_id, models = started.json()["sessionId"], started.json()["models"]
        assert models == ["tiny", "tiny-critic"]

        def done() -> bool:
            ended = {m["payload"]["modelId"] for m in client.streams(session_id) if m["payload"]["isComplete"]}
            return ended == set(models)

        during: Samples = {}
        deadline = time.monotonic() + scaled(30)
        while not done():
            assert time.monotonic() < deadline, "the answer did not complete"
            scraped = await asyncio.to_thread(scrape, ollama)
            if models_of(scraped, "wirthforge_energy_level") == set(models):
                during = scraped  # both members' gauges, while the council runs
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)

    after = scrape(ollama)
    for model in models:
        assert after[("wirthforge_tokens_total", model)] == len(TOKENS), model
        assert after[("wirthforge_token_interarrival_seconds_count", model)] == len(TOKENS) - 1, model
        total = after[("wirthforge_token_interarrival_seconds_sum", model)]
        assert (len(TOKENS) - 1) * TOKEN_INTERVAL_S * 0.8 <= total <= (len(TOKENS) - 1) * scaled(0.25), total
    assert models_of(after, "wirthforge_tokens_total") == set(models)  # the label is the configured models
    assert during, "no scrape saw both council members' gauges"
    for model in models:
        assert 0.0 < during[("wirthforge_energy_level", model)] <= 1.0
        assert 0.0 < during[("wirthforge_token_rate", model)] <= 1 / TOKEN_INTERVAL_S + 5
        assert 0.0 <= during[("wirthforge_token_certainty", model)] <= 1.0  # the fake server sends top-K


def test_the_simulator_feeds_the_same_series_with_its_own_models() -> None:
    with ServerProcess(env={"WF_SOURCE": "sim", "WF_SEED": "5"}) as server:
        deadline = time.monotonic() + scaled(20)
        samples = scrape(server)
        while samples.get(("wirthforge_token_interarrival_seconds_count", "wirthforge-sim"), 0) < 5:
            assert time.monotonic() < deadline, f"no simulated tokens in /metrics: {samples}"
            time.sleep(0.2)
            samples = scrape(server)
    assert samples[("wirthforge_tokens_total", "wirthforge-sim")] >= 6
    assert 0.0 <= samples[("wirthforge_energy_level", "wirthforge-sim")] <= 1.0
    assert models_of(samples, "wirthforge_energy_level") <= {"wirthforge-sim", "council_analyst", "council_critic"}
