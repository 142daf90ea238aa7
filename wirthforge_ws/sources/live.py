"""The live source: real models' tokens become frames (the default energy source).

:class:`LiveSource` implements the frame loop's ``EnergySource``. A prompt
(``start()``, from ``POST /api/prompt``) starts one asyncio task per model
(one, or a council of several answering the same prompt concurrently). Each
task iterates its backend's stream and appends what arrives, stamped with
its arrival time, to that model's deque; ``step()`` only drains those
deques, so the frame loop never waits on a model. Between prompts, and
when a model fails, no token arrives and the energy decays as for silence.

Every model has its own :class:`~wirthforge_ws.energy.ModelMeter`: started
when the prompt is accepted, fed each token with the token's own arrival
time and top-K probabilities, ended with the answer. Per frame, the source
reports each meter's snapshot, and each model's tokens of the frame with
their readings (one ``token_stream`` each, the primary's first); the
council's events come from :mod:`.council_events` (one rule for every
source). A failure becomes one ``error_event`` (component ``model``) and
ends that model's answer.

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

from ..energy import ModelMeter, TokenReading
from ..energy.profiles import PROFILES, EnergyProfile
from ..protocol import messages
from ..protocol.codes import ErrorCode
from ..protocol.messages import Event
from .backends.adapters import ModelBackend, Piece, SourceError
from .base import FrameActivity, TokenBatch
from .council_events import CouncilEvents, Voice

log = logging.getLogger("wirthforge.live")


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
    meter: ModelMeter
    arrived: deque[tuple[float, Piece | _End]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    readings: list[TokenReading] = field(default_factory=list)  # this answer's, as the meter read them
    ended: bool = False

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
        profile: EnergyProfile = PROFILES["Dual"],
    ) -> None:
        self.backends = [primary, *council]
        self.max_tokens = max_tokens
        self.top_k = top_k
        self.profile = profile
        self._meters = {backend.model_id: ModelMeter(backend.model_id, profile) for backend in self.backends}
        self._council = CouncilEvents()
        self._current: Generation | None = None
        self._last: Generation | None = None  # the running one, or the one whose energy is decaying
        self._closing: list[Generation] = []  # cancelled, their isComplete not sent yet
        self._primary_id = primary.model_id
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
        accepted = time.monotonic()
        members = [Member(backend, self._meters[backend.model_id]) for backend in backends]
        generation = Generation(session_id, members, accepted)
        self._primary_id = members[0].model_id
        for member in members:
            member.meter.start(accepted)
            member.task = asyncio.create_task(self._run(member, prompt), name=f"generate-{member.model_id}")
        self._current = self._last = generation
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
        now = time.monotonic()
        for member in generation.members:
            if member.task is not None:
                member.task.cancel()
            if not member.ended:
                member.meter.end(now)  # now, not when the closing frame drains it: a new prompt may start first
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
        events: list[Event] = []
        streams: list[TokenBatch] = []
        for closing in self._closing:  # cancelled ones: only their closing isComplete
            for member in closing.members:
                batch = self._drain(member, now, events, closing.session_id)
                if batch is not None and batch.complete:
                    streams.append(batch)
        self._closing = [g for g in self._closing if not all(member.ended for member in g.members)]
        generation = self._current
        primary: TokenBatch | None = None
        if generation is not None:
            for index, member in enumerate(generation.members):
                batch = self._drain(member, now, events, generation.session_id)
                if batch is None:
                    continue
                if index == 0:
                    primary = batch
                    streams.insert(0, batch)
                else:
                    streams.append(batch)
            voices = [member for member in generation.members if not member.ended]
            if len(voices) > 1 and self._council.due(now):
                events += self._council.events(
                    frame_number, now, [Voice(m.readings, m.meter.snapshot(now)) for m in voices]
                )
            if all(member.ended for member in generation.members):
                self._current = None
        last = self._last
        tokens = primary.texts if primary else []
        complete = primary.complete if primary else False
        members = last.members if last is not None else []
        head = members[0] if members else None
        snapshot = (head.meter if head else self._meters[self._primary_id]).snapshot(now)
        return FrameActivity(
            session_id=last.session_id if last else "",
            primary=snapshot,
            profile=self.profile,
            tokens=tokens,
            readings=primary.readings if primary else [],
            history=head.readings if head else (),
            council=[snapshot, *(m.meter.snapshot(now) for m in members[1:])] if len(members) > 1 else [],
            streams=streams,
            response_complete=complete,
            events=events,
        )

    def _drain(self, member: Member, now: float, events: list[Event], session_id: str) -> TokenBatch | None:
        """This frame's tokens of *member* (arrived by *now*) and whether its answer ended; None if nothing."""
        arrived = member.arrived
        if member.ended or not arrived or arrived[0][0] > now:
            return None  # nothing new (its isComplete went out in an earlier frame)
        batch = TokenBatch(member.model_id, session_id, [], [], len(member.readings))
        while arrived and arrived[0][0] <= now:
            when, item = arrived.popleft()
            if isinstance(item, _End):
                member.ended = batch.complete = True
                if item.reason != "cancelled":  # cancel() ended the meter; it may hold a new answer now
                    member.meter.end(when)
                if item.error is not None:
                    events.append(self._error_event(member, item.error, session_id))
                break
            top_k = list(item.top_k.values()) if item.top_k else None
            reading = member.meter.on_token(when, top_k)
            member.readings.append(reading)
            batch.texts.append(item.text)
            batch.readings.append(reading)
        return batch

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
