"""The live source: real models' tokens become frames (the default energy source).

:class:`LiveSource` implements the frame loop's ``EnergySource``. A prompt
(``start()``, from ``POST /api/prompt``) starts one asyncio task per model
(one, or a council of several answering the same prompt concurrently). Each
task iterates its backend's stream and appends what arrives, stamped with
its arrival time, to that model's deque; ``step()`` only drains those
deques, so the frame loop never waits on a model. Between prompts, and
when a model fails, no token arrives and the energy decays as for silence.

Per frame, for the answer of the primary (first) model: its tokens feed the
energy meter with their real top-K probabilities (certainty) and go out as
the frame's ``token_stream``; council members' tokens go out as their own
``token_stream`` messages. Twice a second, while two or more models answer,
the Jensen-Shannon divergence of their latest top-K distributions (ranked)
gives an ``interference_event``; agreement at a shared
rhythm gives a ``resonance_event``. A failure becomes one ``error_event``
(component ``model``) and ends that model's answer.

Only one generation runs at a time: ``start()`` refuses a second one with
:class:`Busy` (the API answers 409).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..energy.meter import EnergyMeter, EnergyReading, jensen_shannon
from ..protocol import messages
from ..protocol.codes import ErrorCode
from ..protocol.messages import Event
from .backends.adapters import ModelBackend, Piece, SourceError
from .simulated import FrameActivity, energy_field_wave

log = logging.getLogger("wirthforge.live")

COUNCIL_EVERY_S = 0.5
RESONANCE_COHERENCE = 0.8
RESONANCE_RHYTHM = 0.7  # slower/faster token rate at least this close
RESONANCE_GAP_S = 2.0


class Busy(Exception):
    """A generation is already running."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id


@dataclass(slots=True)
class _End:
    """Marks the end of one model's answer in its deque."""

    reason: str  # "stop", "cancelled", "error"
    error: SourceError | None = None


@dataclass(slots=True)
class Member:
    """One model's part in the current generation."""

    backend: ModelBackend
    meter: EnergyMeter
    arrived: deque[tuple[float, Piece | _End]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    latest_top_k: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    ended: bool = False
    recent: deque[float] = field(default_factory=deque)  # arrival times of the last second's tokens

    def tokens_per_second(self, now: float) -> float:
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        return float(len(self.recent))

    @property
    def model_id(self) -> str:
        return self.backend.model_id


@dataclass(slots=True)
class Generation:
    session_id: str
    members: list[Member]
    started: float
    cancelled: bool = False


class LiveSource:
    """Real models behind the frame loop's ``step()``; see the module docstring."""

    def __init__(
        self,
        primary: ModelBackend,
        council: Sequence[ModelBackend] = (),
        *,
        max_tokens: int = 256,
        top_k: int = 5,
        frame_rate: float = 60.0,
        field_every_frames: int = 6,
    ) -> None:
        self.backends = [primary, *council]
        self.max_tokens = max_tokens
        self.top_k = top_k
        self._meters = {backend.model_id: EnergyMeter() for backend in self.backends}
        self._field_every = max(field_every_frames, 1)
        self._council_every = max(int(frame_rate * COUNCIL_EVERY_S), 1)
        self._current: Generation | None = None
        self._closing: list[Generation] = []  # cancelled, their isComplete not sent yet
        self._primary_id = primary.model_id
        self._last_resonance = -float("inf")
        self._sessions = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """modelId of this frame's energy: the primary model of the running (or last) generation."""
        return self._primary_id

    @property
    def model_ids(self) -> list[str]:
        return [backend.model_id for backend in self.backends]

    @property
    def running(self) -> str | None:
        """sessionId of the running generation, if any."""
        return self._current.session_id if self._current else None

    async def start_backends(self) -> None:
        """Start the primary model now (its first answer should not wait for loading).

        Council members start with their first council prompt: an embedded
        worker holds about 300 MB, which a server never asked for a council
        should not pay.
        """
        try:
            await self.backends[0].start()
        except Exception as error:  # noqa: BLE001 - a model that cannot start fails its prompts, not the server
            log.error("model %s did not start: %s", self.backends[0].model_id, error)

    async def stop(self) -> None:
        """Cancel what runs, wait for those tasks to end, stop the backends (server shutdown)."""
        if self._current is not None:
            self.cancel(self._current.session_id)
        tasks = [member.task for generation in self._closing for member in generation.members if member.task]
        await asyncio.gather(*tasks, return_exceptions=True)
        for backend in self.backends:
            await backend.stop()

    # -- prompts --------------------------------------------------------------

    def start(self, prompt: str, *, council: bool = False, model: str | None = None) -> tuple[str, list[str]]:
        """Start answering *prompt*; returns (sessionId, modelIds). Raises Busy, or KeyError for an unknown model."""
        if model is not None:
            chosen = [backend for backend in self.backends if backend.model_id == model]
            if not chosen:
                raise KeyError(model)
            backends = chosen + ([b for b in self.backends if b is not chosen[0]] if council else [])
        else:
            backends = self.backends if council else self.backends[:1]
        if self._current is not None:
            raise Busy(self._current.session_id)
        session_id = f"prompt-{next(self._sessions):04d}-{secrets.token_hex(4)}"
        members = [Member(backend, self._meters[backend.model_id]) for backend in backends]
        generation = Generation(session_id, members, time.monotonic())
        self._primary_id = members[0].model_id
        for member in members:
            member.task = asyncio.create_task(self._run(member, prompt), name=f"generate-{member.model_id}")
        self._current = generation
        return session_id, [member.model_id for member in members]

    def cancel(self, session_id: str) -> bool:
        """Stop the generation *session_id* now: no token of it is sent after this returns.

        The tasks are cancelled (an HTTP stream is closed, the worker is told
        to stop), what had arrived but was not yet sent is dropped, and the
        next frame closes each answer with ``isComplete: true``.
        """
        generation = self._current
        if generation is None or generation.session_id != session_id:
            return False
        generation.cancelled = True
        # It is over for start() at once; step() still closes its answers next frame.
        self._current = None
        self._closing.append(generation)
        for member in generation.members:
            if member.task is not None:
                member.task.cancel()
            member.arrived.clear()
            member.arrived.append((0.0, _End("cancelled")))  # due at once, whatever the next frame's time
        return True

    async def _run(self, member: Member, prompt: str) -> None:
        """Task: one model's stream -> its deque, stamped with arrival times."""
        arrived = member.arrived
        end = _End("stop")
        try:
            async for piece in member.backend.generate(prompt, max_tokens=self.max_tokens, top_k=self.top_k):
                arrived.append((time.monotonic(), piece))
        except SourceError as error:
            end = _End("error", error)
        except asyncio.CancelledError:
            return  # cancel() already queued the end
        except Exception as error:  # noqa: BLE001 - any other failure is the source's, reported as such
            # The type only: a message or traceback might quote what the model was sent.
            log.error("model %s failed: %s", member.model_id, type(error).__name__)
            end = _End("error", SourceError(ErrorCode.MODEL_FAILED, f"{type(error).__name__}"))
        arrived.append((time.monotonic(), end))

    # -- EnergySource ---------------------------------------------------------

    def step(self, frame_number: int, now: float) -> FrameActivity:
        tokens: list[str] = []
        complete = False
        events: list[Event] = []
        session_id = self._current.session_id if self._current else ""
        for closing in self._closing:  # cancelled ones: only their closing isComplete
            for member in closing.members:
                _, ended = self._drain(member, now, events, closing.session_id)
                if ended:
                    events.append(
                        messages.token_stream(
                            tokens=[],
                            is_complete=True,
                            session_id=closing.session_id,
                            model_id=member.model_id,
                            energy_cost=0.0,
                        )
                    )
        self._closing = [g for g in self._closing if not all(member.ended for member in g.members)]
        generation = self._current
        if generation is not None:
            for index, member in enumerate(generation.members):
                texts, ended = self._drain(member, now, events, session_id)
                if index == 0:
                    tokens, complete = texts, ended
                elif texts or ended:
                    events.append(
                        messages.token_stream(
                            tokens=texts,
                            is_complete=ended,
                            session_id=session_id,
                            model_id=member.model_id,
                            energy_cost=0.01 * len(texts),
                        )
                    )
            if all(member.ended for member in generation.members):
                self._current = None
        reading = self._meters[self._primary_id].update(now, len(tokens))
        wave = (
            energy_field_wave(frame_number, reading, self._primary_id)
            if frame_number % self._field_every == 0
            else None
        )
        if generation is not None and len(generation.members) > 1 and frame_number % self._council_every == 0:
            events += self._council_events(frame_number, now, generation, reading)
        return FrameActivity(tokens, reading, session_id, complete, ([wave] if wave else []) + events)

    def _drain(self, member: Member, now: float, events: list[Event], session_id: str) -> tuple[list[str], bool]:
        """This frame's tokens of *member* (arrived by *now*), and whether its answer ended."""
        texts: list[str] = []
        arrived = member.arrived
        if member.ended:
            return texts, False  # its isComplete went out in an earlier frame
        while arrived and arrived[0][0] <= now and not member.ended:
            when, item = arrived.popleft()
            if isinstance(item, _End):
                member.ended = True
                if item.error is not None:
                    events.append(self._error_event(member, item.error, session_id))
                break
            texts.append(item.text)
            member.tokens += 1
            member.recent.append(when)
            if item.top_k:
                member.latest_top_k = item.top_k
            member.meter.on_token(when, list(item.top_k.values()) if len(item.top_k) > 1 else None)
        return texts, member.ended

    @staticmethod
    def _error_event(member: Member, error: SourceError, session_id: str) -> Event:
        log.warning("model source %s (%s) failed: %s", member.backend.kind, member.model_id, error.code.value)
        return messages.error_event(
            error.code,
            error.message,
            severity="error",
            recoverable=True,
            component="model",
            details={"source": member.backend.kind, "modelId": member.model_id, "sessionId": session_id},
        )

    def _council_events(
        self, frame_number: int, now: float, generation: Generation, reading: EnergyReading
    ) -> list[Event]:
        """Interference from the members' real disagreement; resonance when they agree at one rhythm."""
        voices = [member for member in generation.members if member.latest_top_k and not member.ended]
        if len(voices) < 2:
            return []
        # Rank-aligned: models a few tokens apart in their answers rarely share
        # candidate tokens, so aligning by token text would read as total
        # disagreement. The ranked top-K says how sure each model is and how
        # it spreads the rest; their JS divergence is the disagreement.
        distributions = [sorted(member.latest_top_k.values(), reverse=True) for member in voices]
        divergence = jensen_shannon(distributions)
        coherence = 1.0 - divergence
        models = [member.model_id for member in voices]
        pattern = "constructive" if divergence < 0.2 else "destructive" if divergence > 0.5 else "neutral"
        events = [
            messages.interference_event(
                frame_number=frame_number,
                pattern_type=pattern,
                models=models,
                intensity=reading.level * coherence,
                coherence=coherence,
            )
        ]
        rates = [member.tokens_per_second(now) for member in voices]
        in_rhythm = min(rates) > 0 and min(rates) / max(rates) >= RESONANCE_RHYTHM
        if coherence >= RESONANCE_COHERENCE and in_rhythm and now - self._last_resonance > RESONANCE_GAP_S:
            self._last_resonance = now
            kind = "fundamental" if coherence > 0.95 else "harmonic" if coherence > 0.9 else "overtone"
            events.append(
                messages.resonance_event(
                    frame_number=frame_number,
                    resonance_type=kind,
                    frequency=sum(rates) / len(rates),
                    amplitude=reading.level,
                    participants=models,
                    phase=(frame_number * 6.0) % 360.0,
                )
            )
        return events
