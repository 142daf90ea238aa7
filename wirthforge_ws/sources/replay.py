"""Replay a recorded session through the live pipeline, beside the live source.

Four parts:

- :class:`ReplaySource` plays recorded messages back frame by frame, at the
  recording's own pace scaled by *speed*. Tokens, council and reward events
  come out in their recorded order, each in the first frame at or after its
  (scaled) recorded time. Each recorded token_stream keeps its model, its
  ``firstIndex`` and its ``tokenEvidence`` (``textOmitted`` when the
  recording kept no text) under the replay's own ``sessionId``. Energy
  follows the recorded frames, interpolated in between, with the recorded
  evidence of the latest one. The primary's tokens are metered again from
  their recorded Δt and top-K (:meth:`ModelMeter.add_token`, the same
  rounded inputs the live meter used), so each replayed frame lists its
  tokens with the E they had live and the page draws the same strikes.
  Frame numbers are the frame loop's own. It holds at most
  :data:`PAGES_AHEAD` pages of the recording: the rest is read page by page
  in a worker thread (:meth:`ReplaySource.read_ahead`), never on the event
  loop.
- :class:`ReplayPace` says how many recorded messages the next frame may
  play: at most :data:`MESSAGES_PER_FRAME`, a quarter of that when the last
  frame used more than half the frame budget, and none while an open
  client's send queue holds more than a quarter of its limit (for at most
  the send timeout: a reader that does not drain by then gets the next
  messages anyway and is closed as a slow consumer, as with ``POST
  /publish``). When a frame cannot play everything due, the replay's clock
  holds at the next unplayed message: the replay slows down, keeps its
  order and relative timing, and never catches up in a burst.
- :class:`SourceMix` is the frame loop's source. It steps the live source
  in every frame, so a real model's answer keeps streaming during a replay,
  its cancel closes it in the next frame, and its ``isComplete`` goes out
  on time. While a replay plays, the frame's energy (its primary snapshot,
  evidence and split) is the replay's, and both sources' token batches and
  events go out: the live answer's as their own ``token_stream`` (their own
  ``sessionId`` and ``modelId``). The simulator, a stand-in that takes no
  prompts, pauses during a replay instead (``live_during_replay=False``).
- :class:`Replayer` owns the one replay at a time: a second start while one
  plays or starts is refused (:class:`ReplayBusy`, HTTP 409), starts are
  rate-limited (:class:`ReplayRateLimited`, HTTP 429), and a stop closes
  each replayed answer still open (one per model) with an ``isComplete`` in
  the next frame (so does a replay that ends with an answer still open).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..connection.limits import TokenBucket
from ..energy import MeterSnapshot, ModelMeter
from ..energy.meter import TokenReading
from ..energy.profiles import PROFILES, EnergyProfile
from ..energy.states import SessionState
from ..protocol.messages import Event
from ..storage.event_log import StoredMessage
from .base import EnergySource, FrameActivity, TokenBatch, idle_snapshot

log = logging.getLogger("wirthforge.replay")

MAX_SPEED = 100.0
PAGE_ROWS = 1000  # rows per read of the event log
PAGES_AHEAD = 2  # pages a replay holds in memory at most (the one playing and the next)
MESSAGES_PER_FRAME = 32  # recorded messages one frame may play (1,920 a second at 60 Hz)
SLOW_FRAME_SHARE = 4  # after a frame over half the budget, play a quarter of MESSAGES_PER_FRAME
STARTS_PER_SECOND = 0.5  # replay starts, sustained
STARTS_BURST = 3  # replay starts in a burst

Fetch = Callable[[int], list[StoredMessage]]  # rows after a seq, at most PAGE_ROWS; [] at the end (a thread)


class ReplayBusy(Exception):
    """A replay is playing or starting: one at a time."""

    def __init__(self, status: dict[str, object]) -> None:
        super().__init__("a replay is playing")
        self.status = status


class ReplayRateLimited(Exception):
    """Too many replay starts; *retry_after* seconds until the next one is allowed."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many replay starts")
        self.retry_after = retry_after


@dataclass(slots=True)
class _RecordedFrame:
    """One recorded energy_update: when, its level, its split and its evidence."""

    time_ms: float
    level: float
    shares: object
    evidence: object


@dataclass(slots=True)
class _OpenAnswer:
    """A replayed answer of one model that has had tokens and no isComplete yet."""

    next_index: int  # firstIndex of the token after the last one played
    text_omitted: bool


class ReplayPace:
    """How many recorded messages the next frame may play: paced by what clients read and by the frame budget.

    *backlog* gives the deepest reliable send queue of the open connections;
    *frame_cost* the processing time of the last frame (seconds, None before
    the first). While the backlog is over *backlog_limit* the replay waits,
    for at most *hold_limit* seconds at a time.
    """

    def __init__(
        self,
        *,
        backlog: Callable[[], int] = lambda: 0,
        backlog_limit: int = 256,
        hold_limit: float = 3.0,
        frame_cost: Callable[[], float | None] = lambda: None,
        budget: float = 1 / 60,
        per_frame: int = MESSAGES_PER_FRAME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backlog = backlog
        self._backlog_limit = backlog_limit
        self._hold_limit = hold_limit
        self._frame_cost = frame_cost
        self._budget = budget
        self.per_frame = per_frame
        self._clock = clock
        self._held_since: float | None = None
        self.held_frames = 0  # frames that played nothing because a reader was behind

    def allowance(self) -> int:
        """Recorded messages the next frame may play."""
        if self._backlog() > self._backlog_limit:
            now = self._clock()
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since < self._hold_limit:
                self.held_frames += 1
                return 0
        else:
            self._held_since = None
        cost = self._frame_cost()
        if cost is not None and cost > self._budget / 2:
            return max(self.per_frame // SLOW_FRAME_SHARE, 1)
        return self.per_frame


class ReplaySource:
    """Plays recorded messages back frame by frame (an EnergySource); see the module docstring.

    *recorded* is the first page of the recording; *fetch* reads the pages
    after it (None: *recorded* is all of it). *end_ms* is the last recorded
    timestamp (for the duration; default the first page's last) and *total*
    the number of recorded messages (for the progress).
    """

    def __init__(
        self,
        recorded: Sequence[StoredMessage],
        *,
        speed: float,
        model_id: str,
        label: str,
        fetch: Fetch | None = None,
        pace: ReplayPace | None = None,
        end_ms: float | None = None,
        total: int | None = None,
    ) -> None:
        if not recorded:
            raise ValueError("nothing to replay")
        if not 0 < speed <= MAX_SPEED:
            raise ValueError(f"speed must be > 0 and <= {MAX_SPEED:g}")
        self.model_id = model_id
        self.speed = speed
        self.label = label
        self.pace = pace or ReplayPace()
        self._fetch = fetch
        self._origin_ms = recorded[0].timestamp_ms
        last_ms = recorded[-1].timestamp_ms if end_ms is None else max(end_ms, recorded[-1].timestamp_ms)
        self.duration = (last_ms - self._origin_ms) / 1000.0 / speed  # seconds of replay at the requested speed
        self.total = total if total is not None else len(recorded)
        self._messages: deque[StoredMessage] = deque()  # what the frames play (energy frames aside)
        self._frames: deque[_RecordedFrame] = deque()  # the recorded energy_updates not yet passed
        self._after = 0  # the last seq read
        self._horizon_ms = self._origin_ms  # the last timestamp read: the replay's clock never passes it
        self.exhausted = fetch is None or len(recorded) < PAGE_ROWS  # nothing more to read
        self._wanted = asyncio.Event() if fetch is not None else None
        self._cursor_ms = self._origin_ms
        self._last_now: float | None = None
        self._previous: _RecordedFrame | None = None  # the last recorded frame passed
        self.profile: EnergyProfile = PROFILES["Dual"]  # the recording's, from its first frame with evidence
        self._profile_known = False
        self._feed(recorded)
        self._meter = ModelMeter(model_id, self.profile)  # the primary's tokens, metered again
        self.played = 0
        self.open_answers: dict[str, _OpenAnswer] = {}  # by modelId: tokens went out since its last isComplete
        self.finished = False

    @property
    def progress(self) -> float:
        return min(self.played / self.total, 1.0) if self.total else 1.0

    @property
    def buffered(self) -> int:
        """Recorded rows held in memory."""
        return len(self._messages) + len(self._frames)

    @property
    def answer_open(self) -> bool:
        """Some replayed answer has had tokens and no isComplete yet."""
        return bool(self.open_answers)

    def _feed(self, page: Sequence[StoredMessage]) -> None:
        for message in page:
            event = message.event
            if event.type == "energy_update":
                payload = event.payload
                evidence = payload.get("evidence")
                if not self._profile_known and isinstance(evidence, dict) and "profile" in evidence:
                    self.profile = PROFILES.get(str(evidence["profile"]), self.profile)
                    self._profile_known = True
                self._frames.append(
                    _RecordedFrame(
                        message.timestamp_ms,
                        float(payload.get("totalEnergy", 0.0)),
                        payload.get("energyDistribution"),
                        evidence,
                    )
                )
            else:
                self._messages.append(message)
        if page:
            self._after = page[-1].seq
            self._horizon_ms = max(self._horizon_ms, page[-1].timestamp_ms)

    async def read_ahead(self) -> None:
        """Task: read the next page in a worker thread whenever less than one page is left in memory."""
        if self._fetch is None or self._wanted is None:
            return
        fetch = self._fetch
        try:
            while not self.exhausted:
                if self.buffered >= PAGE_ROWS * (PAGES_AHEAD - 1):
                    self._wanted.clear()
                    await self._wanted.wait()
                    continue
                try:
                    page = await asyncio.to_thread(fetch, self._after)
                except Exception as error:  # noqa: BLE001 - a failed read ends the replay early, not the server
                    log.warning("replay: reading the recording failed (%s); it ends early", type(error).__name__)
                    page = []
                self._feed(page)
                self.exhausted = len(page) < PAGE_ROWS
        finally:
            self.exhausted = True  # however this task ends, the replay can finish with what it has read

    def step(self, frame_number: int, now: float) -> FrameActivity:
        if self._last_now is not None:
            self._cursor_ms += (now - self._last_now) * self.speed * 1000.0
        self._last_now = now
        if not self.exhausted:
            self._cursor_ms = min(self._cursor_ms, self._horizon_ms)  # not past what has been read
        cursor_ms = self._cursor_ms
        tokens: list[str] = []
        streams: list[TokenBatch] = []
        events: list[Event] = []
        readings: list[TokenReading] = []
        complete = False
        played = 0
        queue = self._messages
        allowance = self.pace.allowance() if queue and queue[0].timestamp_ms <= cursor_ms else 0
        while queue and queue[0].timestamp_ms <= cursor_ms and played < allowance:
            event = queue.popleft().event
            played += 1
            if event.type == "token_stream":
                batch = self._batch(event.payload)
                streams.append(batch)
                self._track(batch)
                if batch.model_id == self.model_id:
                    tokens.extend(batch.texts)
                    complete = complete or batch.complete
                    readings += self._metered(batch, now)
                if batch.complete:
                    break  # an answer ended: the next one starts in the next frame
            elif event.frame_number is not None:
                events.append(Event(event.type, event.payload, frame_number))  # the loop's own frame numbers
            else:
                events.append(event)
        self.played += played
        if queue and queue[0].timestamp_ms < cursor_ms:
            # Behind what is due: hold the clock at the next message, so the replay slows down
            # instead of catching up in a burst once the readers or the budget allow more.
            self._cursor_ms = cursor_ms = queue[0].timestamp_ms
        if self._wanted is not None and self.buffered < PAGE_ROWS * (PAGES_AHEAD - 1):
            self._wanted.set()
        level, shares, evidence = self._recorded(cursor_ms)
        self.finished = self.exhausted and not queue and not self._frames
        return FrameActivity(
            session_id=self.label,
            primary=self._snapshot(level, evidence),
            profile=self.profile,
            tokens=tokens,
            readings=readings,
            streams=streams,
            response_complete=complete,
            events=events,
            distribution=shares if isinstance(shares, Mapping) else {"generation": level},
        )

    def closing(self) -> list[TokenBatch]:
        """An empty isComplete batch for each answer still open (a stop, or a range cut mid-answer); forgets them."""
        batches = [
            TokenBatch(
                model_id=model_id,
                session_id=self.label,
                texts=[],
                readings=[],
                first_index=answer.next_index,
                complete=True,
                text_omitted=answer.text_omitted,
            )
            for model_id, answer in self.open_answers.items()
        ]
        self.open_answers.clear()
        return batches

    def _batch(self, payload: Mapping[str, Any]) -> TokenBatch:
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

    def _track(self, batch: TokenBatch) -> None:
        """Which model's answers are open after *batch*: an answer opens with tokens and closes with isComplete."""
        if batch.complete:
            self.open_answers.pop(batch.model_id, None)
        elif batch.texts:
            self.open_answers[batch.model_id] = _OpenAnswer(batch.first_index + len(batch.texts), batch.text_omitted)

    def _recorded(self, cursor_ms: float) -> tuple[float, object, object]:
        """The recorded energy at *cursor_ms* (linear between frames), with the latest frame's split and evidence."""
        frames = self._frames
        while frames and frames[0].time_ms <= cursor_ms:
            self._previous = frames.popleft()
        previous, upcoming = self._previous, frames[0] if frames else None
        if previous is None:
            if upcoming is None:
                return 0.0, None, None
            return upcoming.level, upcoming.shares, upcoming.evidence
        if upcoming is None:
            return previous.level, previous.shares, previous.evidence
        t0, t1 = previous.time_ms, upcoming.time_ms
        w = (cursor_ms - t0) / (t1 - t0) if t1 > t0 else 1.0
        level = previous.level * (1 - w) + upcoming.level * w
        return level, previous.shares, previous.evidence

    def _snapshot(self, level: float, evidence: object) -> MeterSnapshot:
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


class SourceMix:
    """The frame loop's source: the live source in every frame, and a replay beside it while one plays.

    See the module docstring for what a frame holds while both play.
    """

    def __init__(self, live: EnergySource, *, live_during_replay: bool = True) -> None:
        self.live = live
        self.live_during_replay = live_during_replay
        self.replay: ReplaySource | None = None
        self._stopped: list[ReplaySource] = []  # stopped with an answer open: closed in the next frame
        self._model_id = live.model_id

    @property
    def model_id(self) -> str:
        """modelId of the frame just stepped: the replay's while it plays, else the live source's."""
        return self._model_id

    def play(self, replay: ReplaySource) -> None:
        self.replay = replay

    def stop(self) -> ReplaySource | None:
        """End the replay now: the next frame plays nothing of it and closes its answer, if one is open."""
        replay, self.replay = self.replay, None
        if replay is not None and replay.answer_open:
            self._stopped.append(replay)
        return replay

    def step(self, frame_number: int, now: float) -> FrameActivity:
        replay = self.replay
        closing = [batch for stopped in self._stopped for batch in stopped.closing()]
        self._stopped.clear()
        if replay is None:
            activity = self.live.step(frame_number, now)
            self._model_id = self.live.model_id
            activity.streams[:0] = closing
            return activity
        live = self.live.step(frame_number, now) if self.live_during_replay else None
        played = replay.step(frame_number, now)
        self._model_id = replay.model_id
        if replay.finished:
            self.replay = None
            closing += replay.closing()  # e.g. a time range that ends in the middle of an answer
            log.info("replay %s ended", replay.label)
        return _beside(played, live, closing)


def _beside(played: FrameActivity, live: FrameActivity | None, closing: list[TokenBatch]) -> FrameActivity:
    """One frame of a replay with the live source beside it.

    The energy (primary snapshot, evidence, split) is the replay's; the
    frame's token_streams are the closing batches, the replay's and the live
    source's (each under its own sessionId and modelId), and its events both
    sources' (the live one's energy_field aside: the replay's field shows).
    """
    played.streams[:0] = closing
    if live is not None:
        played.streams += live.streams
        played.events[:0] = [event for event in live.events if event.type != "energy_field"]
    return played


class Replayer:
    """Owns the one replay at a time: admission, rate limit, its read-ahead task, stop."""

    def __init__(
        self,
        mix: SourceMix,
        *,
        pace: ReplayPace | None = None,
        starts_per_second: float = STARTS_PER_SECOND,
        starts_burst: int = STARTS_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mix = mix
        self.pace = pace or ReplayPace()  # shared by the replays, one at a time
        self.recording_id: str | None = None
        self._clock = clock
        self._starts = TokenBucket(starts_per_second, starts_burst, clock())
        self._starting = False  # admitted, reading its first page
        self._stop_requested = False  # a stop came while starting
        self._task: asyncio.Task[None] | None = None
        self.refused_busy = 0  # starts refused with 409
        self.refused_rate = 0  # starts refused with 429

    @property
    def current(self) -> ReplaySource | None:
        return self.mix.replay

    def admit(self) -> None:
        """Reserve the replay slot for a start; raises ReplayBusy or ReplayRateLimited.

        Call :meth:`start` or :meth:`release` after it (the caller's ``finally``).
        """
        if self._starting or self.mix.replay is not None:
            self.refused_busy += 1
            raise ReplayBusy(self.status() if self.mix.replay is not None else {"active": False, "starting": True})
        now = self._clock()
        if not self._starts.take(now):
            self.refused_rate += 1
            raise ReplayRateLimited(self._starts.seconds_until(1.0))
        self._starting, self._stop_requested = True, False

    def release(self) -> None:
        """Free the slot :meth:`admit` reserved (nothing happens when :meth:`start` took it)."""
        self._starting = False

    def start(self, source: ReplaySource, recording_id: str) -> bool:
        """Play *source* from the next frame on; False when a stop came while it was starting."""
        if not self._starting or self._stop_requested:
            self._starting = False
            return False
        self._starting = False
        self._cancel_task()
        self.recording_id = recording_id
        self.mix.play(source)
        self._task = asyncio.create_task(source.read_ahead(), name="replay-read-ahead")
        log.info("replay of recording %s started at %gx (%.1f s)", recording_id, source.speed, source.duration)
        return True

    def stop(self) -> bool:
        """End the replay now (and any start under way); True when one was playing."""
        if self._starting:
            self._stop_requested = True
        stopped = self.mix.stop()
        self._cancel_task()
        if stopped is not None:
            log.info("replay of recording %s stopped", self.recording_id)
        return stopped is not None

    def _cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Stop, and wait for the read-ahead task to end (server shutdown)."""
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def health(self) -> dict[str, object]:
        """``/health``'s ``replay``: the status, and the starts refused so far."""
        return {
            **self.status(),
            "refused": {"busy": self.refused_busy, "rateLimited": self.refused_rate},
            "heldFrames": self.pace.held_frames,
        }

    def status(self) -> dict[str, object]:
        source = self.mix.replay
        if source is None:
            return {"active": False}
        return {
            "active": True,
            "recording": self.recording_id,
            "speed": source.speed,
            "durationSeconds": round(source.duration, 3),
            "messages": source.total,
            "progress": round(source.progress, 4),
        }
