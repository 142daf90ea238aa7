"""Energy from token activity (WF-FND-002): per-model E, session states, the council's DI, tiers."""

from .council import Disagreement, disagreement, disagreement_by_token, ensemble_energy
from .meter import (
    AnswerClosedError,
    MeterSnapshot,
    ModelMeter,
    TokenReading,
    certainty,
    entropy,
    round_dt_ms,
    round_top_k,
)
from .profiles import PROFILES, EnergyProfile
from .states import SessionMachine, SessionState
from .tiers import TierChoice, choose_tier, detect_tier
from .trace import TraceError, TraceModel, build_trace, recompute

__all__ = [
    "PROFILES",
    "AnswerClosedError",
    "Disagreement",
    "EnergyProfile",
    "MeterSnapshot",
    "ModelMeter",
    "SessionMachine",
    "SessionState",
    "TierChoice",
    "TokenReading",
    "TraceError",
    "TraceModel",
    "build_trace",
    "certainty",
    "choose_tier",
    "detect_tier",
    "disagreement",
    "disagreement_by_token",
    "ensemble_energy",
    "entropy",
    "recompute",
    "round_dt_ms",
    "round_top_k",
]
