"""The simulated model: a stand-in for a local model, for demos and deterministic tests (``--source sim``).

:class:`SimulatedModel` writes answers token by token with realistic bursts,
steady flow and stalls, each with a sampled top-K, and plays a small council
of peer models that answer alongside it (their own token timing, top-K near
the primary's). Every model has its own
:class:`~wirthforge_ws.energy.ModelMeter`, exactly as the live source does,
and the council's events come from the same rules (:mod:`.council_events`).
The peers' tokens are not sent as token_stream: they have no text of their
own; their energy is in the frame's evidence. Its rewards come from the
same progress rules as a real model's (``http/progress_feed.py``).
"""

from __future__ import annotations

import math
import random

from ..energy import ModelMeter, TokenReading
from ..energy.profiles import PROFILES, EnergyProfile
from ..protocol.messages import Event
from .base import EnergySource, FrameActivity, TokenBatch
from .council_events import CouncilEvents, Voice

__all__ = ["EnergySource", "FrameActivity", "SimulatedModel"]

TOP_K = 5


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


class _Voice:
    """One simulated model's answer: its schedule, its meter and its readings."""

    def __init__(self, model_id: str, profile: EnergyProfile, rng: random.Random) -> None:
        self.model_id = model_id
        self.meter = ModelMeter(model_id, profile)
        self.random = rng
        self.readings: list[TokenReading] = []
        self.remaining = 0
        self.next_token_at: float | None = None
        self.mode = "flow"

    def start(self, now: float, tokens: int) -> None:
        if self.meter.is_open:  # a peer still answering the previous prompt stops there
            self.meter.end(now)
        self.meter.start(now)
        self.readings = []
        self.remaining = tokens
        self.mode = "flow"
        # Time to first token: the model loads the prompt.
        self.next_token_at = now + self.random.uniform(0.15, 0.5)

    @property
    def answering(self) -> bool:
        """Whether this voice has a token to come in its current answer."""
        return self.next_token_at is not None

    def token(self, top_k: list[float]) -> TokenReading:
        assert self.next_token_at is not None
        when = self.next_token_at
        reading = self.meter.on_token(when, top_k)
        self.readings.append(reading)
        self.remaining -= 1
        if self.remaining <= 0:
            self.meter.end(when)
            self.next_token_at = None
        else:
            self.next_token_at = when + self._next_interval()
        return reading

    def _next_interval(self) -> float:
        roll = self.random.random()
        if self.mode == "stall":
            self.mode = "flow"
        elif roll < 0.04:
            self.mode = "stall"
            return self.random.uniform(0.45, 1.6)
        elif roll < 0.12:
            self.mode = "burst" if self.mode == "flow" else "flow"
        tps = self.random.uniform(18, 32) if self.mode == "burst" else self.random.uniform(7, 15)
        return 1.0 / tps


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
        profile: EnergyProfile = PROFILES["Dual"],
    ) -> None:
        self.model_id = model_id
        self.profile = profile
        self._random = random.Random(seed)
        self._voice = _Voice(model_id, profile, self._random)
        peers = ["council_analyst", "council_critic"] if council else []
        self._peers = [_Voice(peer, profile, random.Random(self._random.random())) for peer in peers]
        self._council = CouncilEvents()
        self._responses = 0
        self._session_id = ""
        self._next_prompt_at = 0.0
        self._top_k: list[float] = [1.0 / TOP_K] * TOP_K

    # -- EnergySource -------------------------------------------------------

    def step(self, frame_number: int, now: float) -> FrameActivity:
        voice = self._voice
        if voice.next_token_at is None and now >= self._next_prompt_at:
            self._start_response(now)
        batch = TokenBatch(self.model_id, self._session_id, [], [], len(voice.readings))
        while voice.next_token_at is not None and voice.next_token_at <= now:
            self._top_k = self._sample_top_k()
            batch.readings.append(voice.token(self._top_k))
            batch.texts.append(self._random.choice(_WORDS))
            if not voice.answering:  # that was its last token
                batch.complete = True
                self._next_prompt_at = now + self._random.uniform(1.0, 3.0)
        for peer in self._peers:
            while peer.next_token_at is not None and peer.next_token_at <= now:
                peer.token(self._perturb(self._top_k, peer.random))
        snapshot = voice.meter.snapshot(now)
        council = [snapshot, *(peer.meter.snapshot(now) for peer in self._peers)] if self._peers else []
        events: list[Event] = []
        answering = [v for v in (voice, *self._peers) if v.next_token_at is not None]
        if len(answering) > 1 and self._council.due(now):
            by_id = {s.model_id: s for s in council}
            events += self._council.events(frame_number, now, [Voice(v.readings, by_id[v.model_id]) for v in answering])
        return FrameActivity(
            session_id=self._session_id,
            primary=snapshot,
            profile=self.profile,
            tokens=batch.texts,
            readings=batch.readings,
            history=voice.readings,
            council=council,
            streams=[batch] if batch.texts or batch.complete else [],
            response_complete=batch.complete,
            events=events,
        )

    # -- token generation ---------------------------------------------------

    def _start_response(self, now: float) -> None:
        self._responses += 1
        self._session_id = f"session-{self._responses:05d}"
        count = self._random.randint(40, 160)
        self._voice.start(now, count)
        for peer in self._peers:
            peer.start(now, max(int(count * peer.random.uniform(0.7, 1.3)), 1))

    def _sample_top_k(self) -> list[float]:
        sharpness = self._random.uniform(0.5, 3.0)
        raw = [math.exp(-sharpness * i) * self._random.uniform(0.8, 1.2) for i in range(TOP_K)]
        total = sum(raw)
        return [p / total for p in raw]

    @staticmethod
    def _perturb(distribution: list[float], rng: random.Random) -> list[float]:
        raw = [p * rng.uniform(0.3, 1.7) for p in distribution]
        total = sum(raw)
        return [p / total for p in raw]
