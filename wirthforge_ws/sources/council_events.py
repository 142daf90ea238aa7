"""The council's events, one rule for every source: interference from DI, resonance from agreement in rhythm.

Twice a second (:data:`EVERY_S`) while two or more models answer,
:func:`wirthforge_ws.energy.disagreement` gives the members' disagreement DI
(JSD of their rank-aligned top-K where they have it, the timing index of
their token intervals where not), and that becomes an ``interference_event``:
``coherenceScore`` = 1 - DI, ``intensity`` = DI (brighter with more
disagreement), pattern ``constructive`` below DI 0.2, ``destructive`` above
0.5. When the members agree (coherence >= 0.8) at one rhythm (slowest tps /
fastest tps >= 0.7), at most once per :data:`RESONANCE_GAP_S`, a
``resonance_event`` follows: frequency = their mean tps, amplitude = the
ensemble energy, phase = where the other members' latest tokens fall in the
primary's token period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..energy import MeterSnapshot, TokenReading, disagreement, ensemble_energy
from ..protocol import messages
from ..protocol.messages import Event

EVERY_S = 0.5
RETRY_S = 0.1  # too little evidence for a DI yet (the first tokens): look again this much later
CONSTRUCTIVE_BELOW = 0.2
DESTRUCTIVE_ABOVE = 0.5
RESONANCE_COHERENCE = 0.8
RESONANCE_RHYTHM = 0.7
RESONANCE_GAP_S = 2.0


@dataclass(frozen=True, slots=True)
class Voice:
    """One answering council member: its readings of this answer and its snapshot now."""

    readings: Sequence[TokenReading]
    snapshot: MeterSnapshot

    @property
    def model_id(self) -> str:
        return self.snapshot.model_id


def pattern_of(di: float) -> str:
    if di < CONSTRUCTIVE_BELOW:
        return "constructive"
    return "destructive" if di > DESTRUCTIVE_ABOVE else "neutral"


def resonance_kind(coherence: float) -> str:
    return "fundamental" if coherence > 0.95 else "harmonic" if coherence > 0.9 else "overtone"


def phase_degrees(voices: Sequence[Voice], frequency: float) -> float:
    """Circular mean of where each other member's latest token falls in the primary's token period."""
    if frequency <= 0 or not voices[0].readings:
        return 0.0
    period_ms = 1000.0 / frequency
    anchor = voices[0].readings[-1].t_ms
    x = y = 0.0
    for voice in voices[1:]:
        if voice.readings:
            angle = 2 * math.pi * ((voice.readings[-1].t_ms - anchor) % period_ms) / period_ms
            x += math.cos(angle)
            y += math.sin(angle)
    if x == 0.0 and y == 0.0:
        return 0.0
    return math.degrees(math.atan2(y, x)) % 360.0


class CouncilEvents:
    """Decides when the council's events are due and builds them (the cadence and the last resonance)."""

    def __init__(self, every_s: float = EVERY_S) -> None:
        self.every_s = every_s
        self._next_at = -math.inf
        self._last_resonance = -math.inf

    def due(self, now: float) -> bool:
        """Whether a council reading is due at *now*: call :meth:`events` only then."""
        return now >= self._next_at

    def events(self, frame_number: int, now: float, voices: Sequence[Voice]) -> list[Event]:
        """This reading's events; none with fewer than two voices or too little evidence for a DI."""
        if len(voices) < 2:
            return []
        di = disagreement([voice.readings for voice in voices])
        if di is None:
            self._next_at = now + RETRY_S
            return []
        self._next_at = now + self.every_s
        coherence = 1.0 - di.value
        models = [voice.model_id for voice in voices]
        events = [
            messages.interference_event(
                frame_number=frame_number,
                pattern_type=pattern_of(di.value),
                models=models,
                intensity=di.value,
                coherence=coherence,
                method=di.method,
                disagreement=di.value,
                window=di.window,
            )
        ]
        rates = [voice.snapshot.tps for voice in voices]
        ratio = min(rates) / max(rates) if max(rates) > 0 else 0.0
        agree = coherence >= RESONANCE_COHERENCE and ratio >= RESONANCE_RHYTHM
        if agree and now - self._last_resonance > RESONANCE_GAP_S:
            self._last_resonance = now
            frequency = sum(rates) / len(rates)
            events.append(
                messages.resonance_event(
                    frame_number=frame_number,
                    resonance_type=resonance_kind(coherence),
                    frequency=frequency,
                    amplitude=ensemble_energy([voice.snapshot for voice in voices]),
                    participants=models,
                    phase=phase_degrees(voices, frequency),
                    disagreement=di.value,
                    tps_ratio=ratio,
                )
            )
        return events
