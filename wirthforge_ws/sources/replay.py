"""Replay a recorded session through the live pipeline, beside the live source.

Four parts:

- :class:`ReplaySource` plays recorded messages back frame by frame, at the
  recording's own pace scaled by *speed*. Tokens, council and reward events
  come out in their recorded order, each in the first frame at or after its
  (scaled) recorded time; energy follows the recorded frames, interpolated
  in between. Frame numbers are the frame loop's own. It holds at most
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
  on time. While a replay plays, the frame's energy is the replay's and the
  live answer's tokens go out as their own ``token_stream`` (their own
  ``sessionId`` and ``modelId``). The simulator, a stand-in that takes no
  prompts, pauses during a replay instead (``live_during_replay=False``).
- :class:`Replayer` owns the one replay at a time: a second start while one
  plays or starts is refused (:class:`ReplayBusy`, HTTP 409), starts are
  rate-limited (:class:`ReplayRateLimited`, HTTP 429), and a stop closes
  the replayed answer with an ``isComplete`` in the next frame (so does a
  replay that ends with an answer still open).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..connection.limits import TokenBucket
from ..energy.meter import EnergyReading
from ..protocol import messages
from ..protocol.messages import Event
from ..storage.event_log import StoredMessage
from .simulated import EnergySource, FrameActivity

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
        self._frames: deque[tuple[float, float, object]] = deque()  # recorded energy: (time, level, shares)
        self._after = 0  # the last seq read
        self._horizon_ms = self._origin_ms  # the last timestamp read: the replay's clock never passes it
        self.exhausted = fetch is None or len(recorded) < PAGE_ROWS  # nothing more to read
        self._wanted = asyncio.Event() if fetch is not None else None
        self._feed(recorded)
        self._cursor_ms = self._origin_ms
        self._last_now: float | None = None
        self._previous: tuple[float, float, object] | None = None  # the last recorded frame played
        self._level = 0.0
        self.played = 0
        self.answer_open = False  # tokens went out since the last isComplete
        self.finished = False

    @property
    def progress(self) -> float:
        return min(self.played / self.total, 1.0) if self.total else 1.0

    @property
    def buffered(self) -> int:
        """Recorded rows held in memory."""
        return len(self._messages) + len(self._frames)

    def _feed(self, page: Sequence[StoredMessage]) -> None:
        for message in page:
            event = message.event
            if event.type == "energy_update":
                payload = event.payload
                self._frames.append(
                    (message.timestamp_ms, float(payload.get("totalEnergy", 0.0)), payload.get("energyDistribution"))
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
        events: list[Event] = []
        complete = False
        played = 0
        queue = self._messages
        allowance = self.pace.allowance() if queue and queue[0].timestamp_ms <= cursor_ms else 0
        while queue and queue[0].timestamp_ms <= cursor_ms and played < allowance:
            event = queue.popleft().event
            played += 1
            if event.type == "token_stream":
                tokens.extend(event.payload.get("tokens") or ())
                if event.payload.get("isComplete"):
                    complete = True
                    break  # the frame's token_stream ends that answer: the next one starts in the next frame
            elif event.frame_number is not None:
                events.append(Event(event.type, event.payload, frame_number))  # the loop's own frame numbers
            else:
                events.append(event)
        self.played += played
        if queue and queue[0].timestamp_ms < cursor_ms:
            # Behind what is due: hold the clock at the next message, so the replay slows down
            # instead of catching up in a burst once the readers or the budget allow more.
            self._cursor_ms = cursor_ms = queue[0].timestamp_ms
        if tokens:
            self.answer_open = True
        if complete:
            self.answer_open = False
        if self._wanted is not None and self.buffered < PAGE_ROWS * (PAGES_AHEAD - 1):
            self._wanted.set()
        reading = self._reading(cursor_ms)
        self.finished = self.exhausted and not queue and not self._frames
        return FrameActivity(tokens, reading, self.label, complete, events)

    def _reading(self, cursor_ms: float) -> EnergyReading:
        """The recorded energy at *cursor_ms*, linearly interpolated between recorded frames."""
        frames = self._frames
        while frames and frames[0][0] <= cursor_ms:
            self._previous = frames.popleft()
        previous, upcoming = self._previous, frames[0] if frames else None
        if previous is None and upcoming is None:
            level, shares = 0.0, None
        elif previous is None:
            assert upcoming is not None
            _, level, shares = upcoming
        elif upcoming is None:
            _, level, shares = previous
        else:
            t0, level0, shares = previous
            t1, level1, _ = upcoming
            w = (cursor_ms - t0) / (t1 - t0) if t1 > t0 else 1.0
            level = level0 * (1 - w) + level1 * w
        delta, self._level = level - self._level, level
        # Choose speed, certainty and friction so that EnergyReading.distribution()
        # gives back the recorded split: its weights are 0.5 s, 0.3 c and 0.2 f.
        gen, att, rea = (
            (shares.get("generation", 0.0), shares.get("attention", 0.0), shares.get("reasoning", 0.0))
            if isinstance(shares, dict)
            else (level, 0.0, 0.0)
        )
        scale = level / (gen + att + rea) if gen + att + rea > 0 else 0.0
        return EnergyReading(
            level=level,
            delta=delta,
            speed=gen * scale / 0.5,
            certainty=att * scale / 0.3,
            friction=rea * scale / 0.2,
            tokens_per_second=0.0,
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
        if replay is None:
            activity = self.live.step(frame_number, now)
            self._model_id = self.live.model_id
            if self._stopped:
                activity.events[:0] = [_closing(stopped) for stopped in self._stopped]
                self._stopped.clear()
            return activity
        events: list[Event] = [_closing(stopped) for stopped in self._stopped]
        self._stopped.clear()
        if self.live_during_replay:
            events += self._live_beside_replay(self.live.step(frame_number, now))
        played = replay.step(frame_number, now)
        events += played.events
        self._model_id = replay.model_id
        if replay.finished:
            self.replay = None
            if replay.answer_open:  # e.g. a time range that ends in the middle of an answer
                events.append(_closing(replay))
            log.info("replay %s ended", replay.label)
        return FrameActivity(played.tokens, played.energy, played.session_id, played.response_complete, events)

    def _live_beside_replay(self, activity: FrameActivity) -> list[Event]:
        """The live frame's messages while a replay plays: its tokens as their own token_stream, no energy."""
        events: list[Event] = []
        if activity.tokens or activity.response_complete:
            events.append(
                messages.token_stream(
                    tokens=activity.tokens,
                    is_complete=activity.response_complete,
                    session_id=activity.session_id,
                    model_id=self.live.model_id,
                    energy_cost=0.01 * len(activity.tokens),
                )
            )
        events += [event for event in activity.events if event.type != "energy_field"]  # the replay's field shows
        return events


def _closing(replay: ReplaySource) -> Event:
    """The isComplete that closes a stopped replay's open answer."""
    return messages.token_stream(
        tokens=[], is_complete=True, session_id=replay.label, model_id=replay.model_id, energy_cost=0.0
    )


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
