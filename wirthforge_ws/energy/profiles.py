"""Energy profiles: the per-hardware constants of the energy formula (ENERGY.md section 2).

A profile fixes how fast "full speed" is (``tps_max``), when a pause becomes a
stall (``stall_ms``) and how quickly E follows each token (``alpha``). The
tier detection (:mod:`.tiers`) picks one; a user may choose another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EnergyProfile:
    """The constants of E for one class of hardware."""

    name: str  # "Lite" | "Dual" | "Studio"
    tps_max: float  # tokens/s that count as full speed (v = 1)
    stall_ms: float  # a token's Δt above this is a stall; friction starts here
    alpha: float  # weight of each token's E_base in E_t
    tps_min: float = 0.0
    ceil_ms: float = 1500.0  # Δt at which friction is total (f = 0)
    half_life_ms: float = 700.0  # decay of E between tokens and after the answer
    window_ms: float = 1000.0  # the tps window
    burst_tps: float = 12.0
    saturation_level: float = 0.85  # SATURATED once every token for saturation_hold_ms had E >= this
    saturation_hold_ms: float = 800.0
    saturation_exit: float = 0.7  # SATURATED -> FLOWING on a token with E below this
    stall_tokens: int = 2  # consecutive stalled tokens that make FLOWING -> STALLING


LITE = EnergyProfile(name="Lite", tps_max=10.0, stall_ms=500.0, alpha=0.30)
DUAL = EnergyProfile(name="Dual", tps_max=14.0, stall_ms=400.0, alpha=0.35)
STUDIO = EnergyProfile(name="Studio", tps_max=20.0, stall_ms=350.0, alpha=0.40)

PROFILES: dict[str, EnergyProfile] = {profile.name: profile for profile in (LITE, DUAL, STUDIO)}
