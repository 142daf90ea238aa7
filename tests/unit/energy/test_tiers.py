"""Hardware tiers: detection from cores, memory and GPU, and the user's override."""

from __future__ import annotations

import os

import pytest

from wirthforge_ws.energy import PROFILES, choose_tier, detect_tier

GIB = 1024**3


@pytest.mark.parametrize(
    ("cores", "memory", "gpu", "tier", "profile", "limit", "reason"),
    [
        (1, 8 * GIB, False, "Low-Tier", "Lite", 1, "1 core, 8.0 GiB, no GPU"),
        (4, int(2.5 * GIB), True, "Low-Tier", "Lite", 1, "4 cores, 2.5 GiB, GPU"),
        (2, int(23.4 * GIB), False, "Mid-Tier", "Dual", 3, "2 cores, 23.4 GiB, no GPU"),
        (16, 64 * GIB, False, "Mid-Tier", "Dual", 3, "16 cores, 64.0 GiB, no GPU"),
        (4, 32 * GIB, True, "Mid-Tier", "Dual", 3, "4 cores, 32.0 GiB, GPU"),
        (8, 16 * GIB, True, "High-Tier", "Studio", 8, "8 cores, 16.0 GiB, GPU"),
    ],
)
def test_detect_tier_from_given_facts(cores, memory, gpu, tier, profile, limit, reason) -> None:
    choice = detect_tier(cores=cores, memory_bytes=memory, gpu=gpu)
    assert (choice.tier, choice.profile, choice.council_limit) == (tier, PROFILES[profile], limit)
    assert choice.detected and choice.reason == reason


def test_detect_tier_reads_this_machine() -> None:
    choice = detect_tier()
    cores = os.cpu_count()
    assert choice.detected and choice.reason.startswith(f"{cores} core")
    assert "GiB" in choice.reason
    if cores is not None and cores < 2:
        assert choice.tier == "Low-Tier"


def test_the_users_setting_wins() -> None:
    for tier, profile in (("Low-Tier", "Lite"), ("mid-tier", "Dual"), ("High-Tier", "Studio")):
        choice = choose_tier(tier)
        assert choice.tier.lower() == tier.lower() and choice.profile.name == profile and not choice.detected
        assert choice.reason.startswith("set by the user")
    assert choose_tier("auto") == detect_tier()
    with pytest.raises(ValueError, match="Low-Tier"):
        choose_tier("Hybrid")
