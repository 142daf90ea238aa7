"""Hardware tiers on a real server: what ``--tier auto`` picks and why, and the council limit it enforces.

- ``--tier auto`` (the default) detects this machine's tier; ``/health``
  names it with the facts it rests on, ``startup_complete`` announces it, the
  log says it once.
- ``--tier Low-Tier`` (the user's choice) wins over detection: its council
  limit of 1 refuses a council prompt with a 422 naming the tier and the
  limit, while a prompt to one model is answered. The fake Ollama server is
  both the model and the council member, so no embedded model is needed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fake_ollama import FakeOllama
from tests.server_process import ServerProcess
from tests.timing import scaled
from wirthforge_ws.energy import PROFILES, detect_tier
from wirthforge_ws.settings import Settings

WIRE_TIERS = {"Low-Tier": "Lite", "Mid-Tier": "Dual", "High-Tier": "Studio"}
LIMITS = {"Low-Tier": 1, "Mid-Tier": 3, "High-Tier": 8}


async def tier_and_profile(server: ServerProcess) -> tuple[str, str]:
    """startup_complete's tier, and the profile the first energy_update's evidence names (protocol 1.1)."""
    async with connect(server.ws_url, subprotocols=["wirthforge.1.1"], proxy=None, open_timeout=scaled(5)) as ws:
        first = json.loads(await ws.recv(decode=True))
        assert first["type"] == "startup_complete"
        deadline = time.monotonic() + scaled(5)
        while (message := json.loads(await ws.recv(decode=True)))["type"] != "energy_update":
            assert time.monotonic() < deadline, "no energy_update"
    return str(first["payload"]["tier"]), str(message["payload"]["evidence"]["profile"])


def post_prompt(server: ServerProcess, **body: Any) -> httpx.Response:
    return httpx.post(server.http_url + "/api/prompt", json=body, timeout=scaled(10), trust_env=False)


async def test_auto_detects_this_machines_tier_and_says_why() -> None:
    with ServerProcess(env={"WF_TIER": "auto"}) as server:  # the server's default (tests default to Mid-Tier)
        tier = server.health()["tier"]
        announced, profile = await tier_and_profile(server)  # the simulator's meters
        log = server.log_text()
    assert Settings().tier == "auto"  # what the server runs with unless told otherwise
    expected = detect_tier()  # the same machine, read by the test process
    assert tier == {
        "name": expected.tier,
        "detected": True,
        "reason": expected.reason,
        "profile": WIRE_TIERS[expected.tier],
        "councilLimit": LIMITS[expected.tier],
    }
    assert "core" in tier["reason"] and "GiB" in tier["reason"], tier
    assert announced == expected.tier
    assert profile == WIRE_TIERS[expected.tier]
    lines = [line for line in log.splitlines() if f"tier {expected.tier}, detected from {expected.reason}" in line]
    assert len(lines) == 1 and " INFO " in lines[0], log
    assert f"profile {PROFILES[WIRE_TIERS[expected.tier]].name}" in lines[0]


@pytest.fixture(scope="module")
def low_tier() -> Iterator[ServerProcess]:
    with FakeOllama() as fake:
        env = {
            "WF_SOURCE": "ollama",
            "WF_OLLAMA_URL": fake.url,
            "WF_OLLAMA_MODEL": "tiny",
            "WF_COUNCIL_WITH": "ollama/critic",
        }
        with ServerProcess(env=env, args=["--tier", "Low-Tier"]) as server:
            yield server


async def test_the_users_tier_wins_and_is_announced(low_tier: ServerProcess) -> None:
    tier = low_tier.health()["tier"]
    assert (tier["name"], tier["detected"], tier["profile"], tier["councilLimit"]) == ("Low-Tier", False, "Lite", 1)
    assert tier["reason"].startswith("set by the user (this machine: ")
    assert await tier_and_profile(low_tier) == ("Low-Tier", "Lite")  # the live source's meters
    assert "tier Low-Tier, set by the user (this machine: " in low_tier.log_text()


def test_low_tier_refuses_a_council_prompt_with_the_tier_and_its_limit(low_tier: ServerProcess) -> None:
    refused = post_prompt(low_tier, prompt="Hello", council=True)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert (body["tier"], body["councilLimit"], body["models"]) == ("Low-Tier", 1, 2)
    assert "Low-Tier" in body["error"] and "council limit" in body["error"]
    assert low_tier.health()["status"] == "ok"

    # one model is within the limit: that prompt is answered
    accepted = post_prompt(low_tier, prompt="Hello")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["models"] == ["tiny"]
