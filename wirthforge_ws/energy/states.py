"""The per-model session state machine (ENERGY.md section 3).

::

    IDLE      --start-->                                   CHARGING
    CHARGING  --first token-->                             FLOWING
    CHARGING  --end with no token (error, cancel)-->       IDLE
    FLOWING   --stall_tokens consecutive stalled tokens--> STALLING
    FLOWING   --every token for saturation_hold_ms had
                E >= saturation_level-->                   SATURATED
    STALLING  --a token with Δt <= stall_ms-->             FLOWING
    SATURATED --a token with E < saturation_exit-->        FLOWING
    FLOWING / STALLING / SATURATED --end-->                DRAINED
    DRAINED   --start-->                                   CHARGING

A stalled token is one whose Δt exceeds ``stall_ms``; the first token's Δt
(the time to first token) never counts as a stall. Tokens after ``end`` and
before ``start`` change nothing: only ``start`` leaves DRAINED or IDLE.
"""

from __future__ import annotations

from enum import StrEnum

from .profiles import EnergyProfile


class SessionState(StrEnum):
    """Where one model's answer is; the value is the name, as the wire carries it."""

    IDLE = "IDLE"
    CHARGING = "CHARGING"
    FLOWING = "FLOWING"
    STALLING = "STALLING"
    SATURATED = "SATURATED"
    DRAINED = "DRAINED"


OPEN_STATES = frozenset({SessionState.CHARGING, SessionState.FLOWING, SessionState.STALLING, SessionState.SATURATED})


class SessionMachine:
    """Applies start, token and end events to a :class:`SessionState`.

    Each token moves the state at most one step; the run counters (stalled
    tokens in a row, the start of the current run of high-E tokens) follow
    every token whatever the state, so a transition fires on the token that
    completes its condition.
    """

    __slots__ = ("_profile", "_state", "_stalled_in_row", "_high_since_ms")

    def __init__(self, profile: EnergyProfile) -> None:
        self._profile = profile
        self._state = SessionState.IDLE
        self._stalled_in_row = 0
        self._high_since_ms: float | None = None

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def is_open(self) -> bool:
        """True between ``start`` and ``end``."""
        return self._state in OPEN_STATES

    def start(self) -> SessionState:
        """A new answer begins (from any state): CHARGING, counters cleared."""
        self._state = SessionState.CHARGING
        self._stalled_in_row = 0
        self._high_since_ms = None
        return self._state

    def token(self, t_ms: float, stall: bool, energy: float) -> SessionState:
        """One token at *t_ms* (answer clock), *stall* its Δt > stall_ms (never for the first), *energy* E after it."""
        if not self.is_open:
            return self._state
        profile = self._profile
        self._stalled_in_row = self._stalled_in_row + 1 if stall else 0
        if energy >= profile.saturation_level:
            if self._high_since_ms is None:
                self._high_since_ms = t_ms
        else:
            self._high_since_ms = None

        state = self._state
        if state is SessionState.CHARGING:
            self._state = SessionState.FLOWING
        elif state is SessionState.STALLING:
            if not stall:
                self._state = SessionState.FLOWING
        elif state is SessionState.SATURATED:
            if energy < profile.saturation_exit:
                self._state = SessionState.FLOWING
        elif self._stalled_in_row >= profile.stall_tokens:
            self._state = SessionState.STALLING
        elif self._high_since_ms is not None and t_ms - self._high_since_ms >= profile.saturation_hold_ms:
            self._state = SessionState.SATURATED
        return self._state

    def end(self) -> SessionState:
        """The answer is over: DRAINED after tokens, IDLE when none came; no change when already closed."""
        if self._state is SessionState.CHARGING:
            self._state = SessionState.IDLE
        elif self._state in OPEN_STATES:
            self._state = SessionState.DRAINED
        return self._state
