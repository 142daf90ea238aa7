"""Replay a recorded session through the live pipeline.

:class:`ReplaySource` is an :class:`~.sources.EnergySource` like the
simulator: the frame loop asks it what happened during each frame, and it
answers from the recording, at the recording's own pace scaled by *speed*.
Tokens, council and reward events come out in their recorded order, each
in the first frame at or after its (scaled) recorded time, so the relative
timing holds to within one frame; each recorded token_stream keeps its
model, its ``firstIndex`` and its ``tokenEvidence`` (``textOmitted`` when
the recording kept no text). Energy follows the recorded frames,
interpolated in between, with the recorded evidence of the latest one.
The primary's tokens are metered again from their recorded Δt and top-K
(:meth:`ModelMeter.add_token`, the same rounded inputs the live meter
used), so each replayed frame lists its tokens with the E they had live
and the page draws the same strikes.
Frame numbers are the frame loop's own.

:class:`Replayer` swaps the frame loop's source for a replay and puts the
previous source back when the replay ends or is stopped.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Sequence
from typing import Any

from ..energy import MeterSnapshot, ModelMeter
from ..energy.meter import TokenReading
from ..energy.profiles import PROFILES, EnergyProfile
from ..energy.states import SessionState
from ..protocol.messages import Event
from ..storage.event_log import StoredMessage
from ..stream.frame_loop import FrameLoop
from .base import EnergySource, FrameActivity, TokenBatch, idle_snapshot

log = logging.getLogger("wirthforge.replay")

MAX_SPEED = 100.0
_POLL = 0.05  # seconds between checks whether the replay has finished


class ReplaySource:
    """Plays recorded messages back frame by frame (implements EnergySource)."""

    def __init__(self, recorded: Sequence[StoredMessage], *, speed: float, model_id: str, label: str) -> None:
        if not recorded:
            raise ValueError("nothing to replay")
        if not 0 < speed <= MAX_SPEED:
            raise ValueError(f"speed must be > 0 and <= {MAX_SPEED:g}")
        self.model_id = model_id
        self.speed = speed
        self.label = label
        self._messages = [m for m in recorded if m.event.type != "energy_update"]
        frames = [m for m in recorded if m.event.type == "energy_update"]
        self._frame_times = [m.timestamp_ms for m in frames]
        self._frame_levels = [float(m.event.payload.get("totalEnergy", 0.0)) for m in frames]
        self._frame_shares = [m.event.payload.get("energyDistribution") for m in frames]
        self._frame_evidence = [m.event.payload.get("evidence") for m in frames]
        profiles = [e.get("profile") for e in self._frame_evidence if isinstance(e, dict)]
        self.profile: EnergyProfile = PROFILES.get(str(profiles[-1]) if profiles else "Dual", PROFILES["Dual"])
        self._origin_ms = recorded[0].timestamp_ms
        self.duration = (recorded[-1].timestamp_ms - self._origin_ms) / 1000.0 / speed  # seconds of replay
        self._started: float | None = None
        self._next = 0
        self._meter = ModelMeter(model_id, self.profile)  # the primary's tokens, metered again
        self._level = 0.0
        self.finished = False

    @property
    def progress(self) -> float:
        return self._next / len(self._messages) if self._messages else 1.0

    def step(self, frame_number: int, now: float) -> FrameActivity:
        if self._started is None:
            self._started = now
        cursor_ms = self._origin_ms + (now - self._started) * self.speed * 1000.0
        tokens: list[str] = []
        streams: list[TokenBatch] = []
        events: list[Event] = []
        readings: list[TokenReading] = []
        complete = False
        messages = self._messages
        while self._next < len(messages) and messages[self._next].timestamp_ms <= cursor_ms:
            event = messages[self._next].event
            self._next += 1
            if event.type == "token_stream":
                batch = self._batch(event.payload)
                streams.append(batch)
                if batch.model_id == self.model_id:
                    tokens.extend(batch.texts)
                    complete = complete or batch.complete
                    readings += self._metered(batch, now)
            elif event.frame_number is not None:
                events.append(Event(event.type, event.payload, frame_number))  # the loop's own frame numbers
            else:
                events.append(event)
        self.finished = self._next >= len(messages) and cursor_ms >= (
            self._frame_times[-1] if self._frame_times else self._origin_ms
        )
        level, shares, evidence = self._recorded(cursor_ms)
        return FrameActivity(
            session_id=self.label,
            primary=self._snapshot(level, evidence),
            profile=self.profile,
            tokens=tokens,
            readings=readings,
            streams=streams,
            response_complete=complete,
            events=events,
            distribution=shares if isinstance(shares, dict) else {"generation": level},
        )

    def _batch(self, payload: dict[str, Any]) -> TokenBatch:
        """A recorded token_stream as this replay's: same model, tokens and evidence, the replay's sessionId."""
        texts = list(payload.get("tokens") or ())
        evidence = payload.get("tokenEvidence")
        return TokenBatch(
            model_id=str(payload.get("modelId", self.model_id)),
            session_id=self.label,
            texts=texts,
            readings=[],
            first_index=int(payload.get("firstIndex", 0)),
            complete=bool(payload.get("isComplete")),
            text_omitted=bool(payload.get("textOmitted")),
            recorded_evidence=list(evidence) if isinstance(evidence, list) else None,
        )

    def _metered(self, batch: TokenBatch, now: float) -> list[TokenReading]:
        """The primary's readings of one recorded token_stream, from its recorded Δt and top-K.

        A batch starting at index 0 starts a new answer; a batch whose
        evidence is missing, malformed or out of step gives no readings.
        """
        evidence = batch.recorded_evidence
        if evidence is None or len(evidence) != len(batch.texts):
            return []
        meter = self._meter
        if batch.first_index == 0 and batch.texts:
            meter.start(now)
        if not meter.is_open or len(meter.readings) != batch.first_index:
            return []
        readings: list[TokenReading] = []
        for item in evidence:
            dt_ms = item.get("dtMs") if isinstance(item, dict) else None
            top_k = item.get("topK") if isinstance(item, dict) else None
            if not isinstance(dt_ms, int | float):
                return readings
            known = [float(p) for p in top_k if isinstance(p, int | float)] if isinstance(top_k, list) else None
            readings.append(meter.add_token(float(dt_ms), known))
        if batch.complete:
            meter.end(now)
        return readings

    def _recorded(self, cursor_ms: float) -> tuple[float, Any, Any]:
        """The recorded energy at *cursor_ms* (linear between frames), with the latest frame's split and evidence."""
        times = self._frame_times
        if not times:
            return 0.0, None, None
        i = bisect.bisect_right(times, cursor_ms)
        if i == 0:
            return self._frame_levels[0], self._frame_shares[0], self._frame_evidence[0]
        if i == len(times):
            return self._frame_levels[-1], self._frame_shares[-1], self._frame_evidence[-1]
        t0, t1 = times[i - 1], times[i]
        w = (cursor_ms - t0) / (t1 - t0) if t1 > t0 else 1.0
        level = self._frame_levels[i - 1] * (1 - w) + self._frame_levels[i] * w
        return level, self._frame_shares[i - 1], self._frame_evidence[i - 1]

    def _snapshot(self, level: float, evidence: Any) -> MeterSnapshot:
        """The primary as the recorded evidence showed it, at the interpolated level."""
        if not isinstance(evidence, dict):
            return idle_snapshot(self.model_id, level, SessionState.FLOWING if level > 0 else SessionState.IDLE)
        try:
            state = SessionState(evidence.get("state", "IDLE"))
        except ValueError:
            state = SessionState.IDLE
        return MeterSnapshot(
            model_id=self.model_id,
            energy=min(max(level, 0.0), 1.0),
            state=state,
            tps=float(evidence.get("tps") or 0.0),
            certainty=evidence.get("certainty"),
            entropy=evidence.get("entropy"),
            since_token_ms=evidence.get("sinceTokenMs"),
            stall=bool(evidence.get("stall")),
            burst=bool(evidence.get("burst")),
            ttft_ms=evidence.get("ttftMs"),
            energy_units=float(evidence.get("energyUnits") or 0.0),
            tokens=0,
            dt_ms=None,
        )


class Replayer:
    """Owns at most one running replay: swaps the frame loop's source and restores it."""

    def __init__(self, frame_loop: FrameLoop) -> None:
        self.frame_loop = frame_loop
        self.current: ReplaySource | None = None
        self.recording_id: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, source: ReplaySource, recording_id: str) -> None:
        """Stop any running replay, then play *source* until it finishes."""
        await self.stop()
        self.current, self.recording_id = source, recording_id
        self._task = asyncio.create_task(self._run(source), name="replay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self, source: ReplaySource) -> None:
        live: EnergySource = self.frame_loop.source
        self.frame_loop.source = source
        log.info("replay of recording %s started at %gx (%.1f s)", self.recording_id, source.speed, source.duration)
        try:
            while not source.finished:
                await asyncio.sleep(_POLL)
        finally:
            # The live source was not stepped meanwhile: what it produced in the
            # pause (queued tokens of a real model; the simulator's schedule)
            # comes in its next frame, late rather than lost.
            self.frame_loop.source = live
            self.current = None
            log.info("replay of recording %s ended", self.recording_id)

    def status(self) -> dict[str, object]:
        source = self.current
        if source is None:
            return {"active": False}
        return {
            "active": True,
            "recording": self.recording_id,
            "speed": source.speed,
            "durationSeconds": round(source.duration, 3),
            "progress": round(source.progress, 4),
        }
