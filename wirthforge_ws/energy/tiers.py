"""Hardware tiers (WF-UX-006): which energy profile and how large a council this machine gets.

- ``Low-Tier``: fewer than 2 logical cores or less than 3 GiB of memory: profile Lite, no council (limit 1).
- ``High-Tier``: a GPU (``/dev/nvidia0`` or ``/dev/kfd``) and at least 8 cores and 16 GiB: Studio, limit 8.
- ``Mid-Tier``: everything else: Dual, limit 3.

Detection reads ``os.cpu_count()``, the physical memory (``os.sysconf``, else
``/proc/meminfo``) and the GPU device files; the user's setting wins over it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .profiles import DUAL, LITE, STUDIO, EnergyProfile

GIB = 1024**3
LOW_MIN_CORES = 2
LOW_MIN_MEMORY = 3 * GIB
HIGH_MIN_CORES = 8
HIGH_MIN_MEMORY = 16 * GIB
GPU_DEVICES = ("/dev/nvidia0", "/dev/kfd")

TIERS: dict[str, tuple[EnergyProfile, int]] = {
    "Low-Tier": (LITE, 1),
    "Mid-Tier": (DUAL, 3),
    "High-Tier": (STUDIO, 8),
}


@dataclass(frozen=True, slots=True)
class TierChoice:
    """The tier in force, its profile and council limit, and why."""

    tier: str  # "Low-Tier" | "Mid-Tier" | "High-Tier"
    profile: EnergyProfile
    council_limit: int  # models one prompt may ask at once
    detected: bool  # False when the user's setting chose it
    reason: str  # e.g. "2 cores, 23.4 GiB, no GPU"


def system_memory_bytes() -> int | None:
    """Physical memory in bytes, or None when neither sysconf nor /proc/meminfo tells."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return pages * page_size
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def has_gpu(devices: tuple[str, ...] = GPU_DEVICES) -> bool:
    """True when one of the GPU compute device files exists."""
    return any(Path(device).exists() for device in devices)


def describe(cores: int | None, memory_bytes: int | None, gpu: bool) -> str:
    """The facts a tier rests on, for people: "2 cores, 23.4 GiB, no GPU"."""
    core_text = "unknown cores" if cores is None else f"{cores} core{'' if cores == 1 else 's'}"
    memory_text = "unknown memory" if memory_bytes is None else f"{memory_bytes / GIB:.1f} GiB"
    return f"{core_text}, {memory_text}, {'GPU' if gpu else 'no GPU'}"


def _tier_for(cores: int | None, memory_bytes: int | None, gpu: bool) -> str:
    if (cores is not None and cores < LOW_MIN_CORES) or (memory_bytes is not None and memory_bytes < LOW_MIN_MEMORY):
        return "Low-Tier"
    if (
        gpu
        and cores is not None
        and cores >= HIGH_MIN_CORES
        and memory_bytes is not None
        and memory_bytes >= HIGH_MIN_MEMORY
    ):
        return "High-Tier"
    return "Mid-Tier"


def _choice(tier: str, detected: bool, reason: str) -> TierChoice:
    profile, limit = TIERS[tier]
    return TierChoice(tier=tier, profile=profile, council_limit=limit, detected=detected, reason=reason)


def detect_tier(cores: int | None = None, memory_bytes: int | None = None, gpu: bool | None = None) -> TierChoice:
    """The tier of this machine; each argument given replaces what detection would read.

    Unknown facts never raise a tier: unknown cores or memory cannot make High.
    """
    cores = os.cpu_count() if cores is None else cores
    memory_bytes = system_memory_bytes() if memory_bytes is None else memory_bytes
    gpu = has_gpu() if gpu is None else gpu
    return _choice(_tier_for(cores, memory_bytes, gpu), detected=True, reason=describe(cores, memory_bytes, gpu))


def choose_tier(setting: str) -> TierChoice:
    """The tier for a setting: ``"auto"`` detects; a wire name (any case) is the user's override.

    Raises ValueError for anything else, naming the accepted values.
    """
    wanted = setting.strip()
    if wanted.lower() == "auto":
        return detect_tier()
    for tier in TIERS:
        if tier.lower() == wanted.lower():
            detected = detect_tier()
            return _choice(tier, detected=False, reason=f"set by the user (this machine: {detected.reason})")
    raise ValueError(f"tier must be 'auto' or one of {', '.join(TIERS)}, not {setting!r}")
