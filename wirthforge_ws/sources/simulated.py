"""Sources of tokens and energy behind a small interface.

The frame loop asks its source for one :class:`FrameActivity` per frame.
Real models drive :class:`wirthforge_ws.sources.live.LiveSource` (the default); this
module keeps the interface and :class:`SimulatedModel`, a stand-in for a
local model for demos and deterministic tests (``--source sim``): it writes
responses token by token with realistic bursts, steady flow and stalls,
feeds them through the energy meter, and plays a small council of peer
models so that council and reward events happen too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Protocol

from ..energy.meter import EnergyMeter, EnergyReading, jensen_shannon
from ..protocol import messages
from ..protocol.messages import Event

TOP_K = 5


@dataclass(slots=True)
class FrameActivity:
    """What a source did during one frame."""

    tokens: list[str]
    energy: EnergyReading
    session_id: str
    response_complete: bool = False
    events: list[Event] = field(default_factory=list)  # energy_field, council and reward events


class EnergySource(Protocol):
    """Anything that can tell the frame loop what happened during a frame."""

    @property
    def model_id(self) -> str:
        """The modelId announced in startup_complete (read-only: a source names its own model)."""
        ...

    def step(self, frame_number: int, now: float) -> FrameActivity:
        """Advance to monotonic time *now* (seconds) and report this frame."""
        ...


def energy_field_wave(frame_number: int, reading: EnergyReading, model_id: str) -> Event:
    """An energy_field: a wave whose height follows the energy (shared by every source)."""
    phase = frame_number / 20.0
    points = []
    for i in range(12):
        x = i / 11
        wave = math.sin(2 * math.pi * x + phase)
        points.append(
            {
                "x": round(x, 4),
                "y": round(0.5 + 0.4 * reading.level * wave, 4),
                "energy": round(reading.level * (0.6 + 0.4 * abs(wave)), 4),
            }
        )
    kind = "lightning" if reading.is_burst else "stream"
    return messages.energy_field(
        frame_number=frame_number, field_type=kind, intensity=reading.level, coordinates=points, model_id=model_id
    )


# A small vocabulary, Unicode included, so clients see realistic token text.
_WORDS = (
    " the",
    " energy",
    " flows",
    " through",
    " a",
    " local",
    " model",
    ",",
    " and",
    " every",
    " token",
    " lights",
    " up",
    " the",
    " field",
    ".",
    " Resonance",
    " builds",
    " when",
    " minds",
    " agree",
    ";",
    " interference",
    " when",
    " they",
    " don't",
    " —",
    " café",
    " naïve",
    " 東京",
    " → ",
    " ✨",
    " λ",
    " of",
    " thought",
    " in",
    " real",
    " time",
    "\n",
)


class SimulatedModel:
    """A simulated local model with bursts and stalls, plus a council of peers.

    Deterministic for a given *seed*. All timing is driven by the *now* the
    frame loop passes in, so the simulation follows the frame clock exactly.
    """

    def __init__(
        self,
        model_id: str = "wirthforge-sim",
        *,
        council: bool = True,
        seed: int | None = None,
        frame_rate: float = 60.0,
        field_every_frames: int = 6,
    ) -> None:
        self.model_id = model_id
        self._random = random.Random(seed)
        self._meter = EnergyMeter()
        self._field_every = max(field_every_frames, 1)
        self._council_every = max(int(frame_rate / 2), 1)  # council reading twice a second
        self._peers = ["council_analyst", "council_critic"] if council else []
        self._responses = 0
        self._session_id = ""
        self._remaining = 0
        self._next_token_at: float | None = None
        self._next_prompt_at = 0.0
        self._mode = "flow"
        self._tokens_total = 0
        self._top_k: list[float] = [1.0 / TOP_K] * TOP_K
        self._last_resonance = -math.inf
        self._level = 1

    # -- EnergySource -------------------------------------------------------

    def step(self, frame_number: int, now: float) -> FrameActivity:
        tokens: list[str] = []
        complete = False
        if self._next_token_at is None and now >= self._next_prompt_at:
            self._start_response(now)
        while self._next_token_at is not None and self._next_token_at <= now:
            tokens.append(self._emit_token(self._next_token_at))
            if self._remaining == 0:
                complete = True
                self._next_token_at = None
                self._next_prompt_at = now + self._random.uniform(1.0, 3.0)
        reading = self._meter.update(now, len(tokens))
        wave = self._energy_field(frame_number, reading)
        events = ([wave] if wave else []) + self._council_events(frame_number, reading)
        events += self._reward_events(tokens, complete)
        return FrameActivity(tokens, reading, self._session_id, complete, events)

    def _energy_field(self, frame_number: int, reading: EnergyReading) -> Event | None:
        """An energy_field every few frames."""
        if frame_number % self._field_every:
            return None
        return energy_field_wave(frame_number, reading, self.model_id)

    # -- token generation ---------------------------------------------------

    def _start_response(self, now: float) -> None:
        self._responses += 1
        self._session_id = f"session-{self._responses:05d}"
        self._remaining = self._random.randint(40, 160)
        self._mode = "flow"
        # Time to first token: the model loads the prompt.
        self._next_token_at = now + self._random.uniform(0.15, 0.5)

    def _emit_token(self, when: float) -> str:
        self._remaining -= 1
        self._tokens_total += 1
        self._top_k = self._sample_top_k()
        self._meter.on_token(when, self._top_k)
        self._next_token_at = when + self._next_interval()
        return self._random.choice(_WORDS)

    def _next_interval(self) -> float:
        roll = self._random.random()
        if self._mode == "stall":
            self._mode = "flow"
        elif roll < 0.04:
            self._mode = "stall"
            return self._random.uniform(0.45, 1.6)
        elif roll < 0.12:
            self._mode = "burst" if self._mode == "flow" else "flow"
        tps = self._random.uniform(18, 32) if self._mode == "burst" else self._random.uniform(7, 15)
        return 1.0 / tps

    def _sample_top_k(self) -> list[float]:
        sharpness = self._random.uniform(0.5, 3.0)
        raw = [math.exp(-sharpness * i) * self._random.uniform(0.8, 1.2) for i in range(TOP_K)]
        total = sum(raw)
        return [p / total for p in raw]

    # -- council and rewards ------------------------------------------------

    def _council_events(self, frame_number: int, reading: EnergyReading) -> list[Event]:
        if not self._peers or frame_number % self._council_every or self._next_token_at is None:
            return []
        peers = [self._perturb(self._top_k) for _ in self._peers]
        divergence = jensen_shannon([self._top_k, *peers])
        coherence = 1.0 - divergence
        models = [self.model_id, *self._peers]
        pattern = "constructive" if divergence < 0.05 else "destructive" if divergence > 0.15 else "neutral"
        events = [
            messages.interference_event(
                frame_number=frame_number,
                pattern_type=pattern,
                models=models,
                intensity=reading.level * coherence,
                coherence=coherence,
            )
        ]
        if coherence > 0.9 and frame_number / 60.0 - self._last_resonance > 2.0:
            self._last_resonance = frame_number / 60.0
            kind = "fundamental" if coherence > 0.97 else "harmonic" if coherence > 0.94 else "overtone"
            events.append(
                messages.resonance_event(
                    frame_number=frame_number,
                    resonance_type=kind,
                    frequency=reading.tokens_per_second,
                    amplitude=reading.level,
                    participants=models,
                    phase=(frame_number * 6.0) % 360.0,
                )
            )
        return events

    def _perturb(self, distribution: list[float]) -> list[float]:
        raw = [p * self._random.uniform(0.3, 1.7) for p in distribution]
        total = sum(raw)
        return [p / total for p in raw]

    def _reward_events(self, tokens: list[str], complete: bool) -> list[Event]:
        events: list[Event] = []
        before = self._tokens_total - len(tokens)
        if tokens and self._tokens_total // 100 > before // 100:
            count = (self._tokens_total // 100) * 100
            events.append(
                messages.reward_event(
                    reward_type="milestone",
                    title=f"{count} tokens",
                    points=10,
                    energy_bonus=0.05,
                    description=f"The model has produced {count} tokens in this run.",
                )
            )
        if tokens and self._tokens_total // 500 > before // 500 and self._level < 5:
            self._level += 1
            events.append(
                messages.reward_event(
                    reward_type="level_up", title=f"Level {self._level}", points=50, level=self._level
                )
            )
        if complete and self._responses == 1:
            events.append(
                messages.reward_event(
                    reward_type="achievement",
                    title="First response",
                    points=5,
                    description="A full response flowed through the field.",
                )
            )
        return events
