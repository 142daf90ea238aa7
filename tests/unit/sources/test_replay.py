"""Replay in process: pacing, paging, the source mix and the replayer's admission (no server, no sockets)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from wirthforge_ws.energy.profiles import PROFILES
from wirthforge_ws.energy.states import SessionState
from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.messages import Event
from wirthforge_ws.sources.base import FrameActivity, TokenBatch, idle_snapshot
from wirthforge_ws.sources.replay import (
    MESSAGES_PER_FRAME,
    PAGE_ROWS,
    PAGES_AHEAD,
    STARTS_BURST,
    ReplayBusy,
    Replayer,
    ReplayPace,
    ReplayRateLimited,
    ReplaySource,
    SourceMix,
)
from wirthforge_ws.storage.event_log import StoredMessage

FRAME_S = 1 / 60


def reward(seq: int, at_ms: float) -> StoredMessage:
    return StoredMessage(seq, messages.reward_event(reward_type="milestone", title="r", points=seq), at_ms)


def tokens(
    seq: int, at_ms: float, complete: bool = False, first_index: int | None = None, model_id: str = "m"
) -> StoredMessage:
    event = messages.token_stream(
        tokens=[f"t{seq}"],
        is_complete=complete,
        session_id="s",
        model_id=model_id,
        first_index=seq - 1 if first_index is None else first_index,
        token_evidence=[messages.token_evidence(dt_ms=50.0, top_k=[0.9, 0.1])],
    )
    return StoredMessage(seq, event, at_ms)


def dense(count: int, every_ms: float = 0.1) -> list[StoredMessage]:
    return [reward(seq, 1000.0 + seq * every_ms) for seq in range(1, count + 1)]


def play(source: ReplaySource, frames: int = 100_000) -> list[FrameActivity]:
    out: list[FrameActivity] = []
    frame = 0
    while not source.finished and frame < frames:
        out.append(source.step(frame, 50.0 + frame * FRAME_S))
        frame += 1
    return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- pacing -------------------------------------------------------------------


def test_a_dense_recording_at_speed_100_plays_a_bounded_number_a_frame_in_order() -> None:
    """6,000 messages within 0.6 s of recording, all due at once at 100x: MESSAGES_PER_FRAME a frame, in order."""
    source = ReplaySource(dense(6000), speed=100, model_id="m", label="replay-x")
    frames = play(source)
    counts = [len(a.events) for a in frames]
    assert max(counts) == MESSAGES_PER_FRAME
    assert [e.payload["points"] for a in frames for e in a.events] == list(range(1, 6001))
    assert len(frames) == pytest.approx(6000 / MESSAGES_PER_FRAME, abs=2)


def test_a_replay_behind_its_schedule_slows_down_instead_of_catching_up() -> None:
    """After a hold, the clock resumes at the next message: the recorded spacing is kept, no burst."""
    backlog = [0]
    clock = FakeClock()
    pace = ReplayPace(backlog=lambda: backlog[0], backlog_limit=10, hold_limit=60.0, clock=clock)
    recorded = [reward(seq, 1000.0 + seq * 100.0) for seq in range(1, 41)]  # one every 100 ms
    source = ReplaySource(recorded, speed=1, model_id="m", label="replay-x", pace=pace)
    played: list[int] = []
    for frame in range(600):
        backlog[0] = 11 if 60 <= frame < 240 else 0  # a reader behind for 3 s
        clock.now = 100.0 + frame * FRAME_S
        activity = source.step(frame, 50.0 + frame * FRAME_S)
        played += [frame] * len(activity.events)
    assert max(played.count(f) for f in set(played)) == 1, "a burst after the hold"
    after = [f for f in played if f >= 240]
    spacing = [b - a for a, b in zip(after, after[1:])]
    assert all(5 <= s <= 7 for s in spacing), spacing  # 100 ms = 6 frames, as recorded
    assert 174 <= pace.held_frames <= 180  # the frames of the hold in which a message was due


def test_a_reader_that_does_not_drain_holds_the_replay_for_at_most_the_hold_limit() -> None:
    clock = FakeClock()
    pace = ReplayPace(backlog=lambda: 1000, backlog_limit=10, hold_limit=3.0, clock=clock)
    assert pace.allowance() == 0
    clock.now += 2.9
    assert pace.allowance() == 0
    clock.now += 0.2
    assert pace.allowance() == MESSAGES_PER_FRAME  # then it gets the next messages and is closed as slow


def test_a_frame_over_half_its_budget_plays_a_quarter() -> None:
    cost: list[float | None] = [None]
    pace = ReplayPace(frame_cost=lambda: cost[0], budget=0.016)
    assert pace.allowance() == MESSAGES_PER_FRAME
    cost[0] = 0.009
    assert pace.allowance() == MESSAGES_PER_FRAME // 4
    cost[0] = 0.002
    assert pace.allowance() == MESSAGES_PER_FRAME


# -- paging -------------------------------------------------------------------


async def test_a_long_recording_is_read_page_by_page_in_a_worker_thread() -> None:
    recorded = dense(5 * PAGE_ROWS + 17)
    threads: set[int] = set()

    def fetch(after: int) -> list[StoredMessage]:
        threads.add(threading.get_ident())
        return [m for m in recorded if m.seq > after][:PAGE_ROWS]

    source = ReplaySource(fetch(0), speed=100, model_id="m", label="replay-x", fetch=fetch, total=len(recorded))
    threads.clear()
    reader = asyncio.create_task(source.read_ahead())
    played: list[int] = []
    most = 0
    frame = 0
    try:
        while not source.finished and frame < 10_000:
            activity = source.step(frame, 50.0 + frame * FRAME_S)
            played += [e.payload["points"] for e in activity.events]
            most = max(most, source.buffered)
            frame += 1
            await asyncio.sleep(0)
            await asyncio.sleep(0.001 if frame % 8 == 0 else 0)  # let the worker thread's page land
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert played == [m.seq for m in recorded]
    assert most <= PAGES_AHEAD * PAGE_ROWS, f"{most} rows held"
    assert threads and threading.get_ident() not in threads, "a page was read on the event loop"
    assert source.progress == 1.0


def test_the_clock_never_passes_what_has_been_read() -> None:
    """While the next page is not read yet, the replay waits for it: its messages keep their spacing."""
    first = [reward(seq, 1000.0 + seq) for seq in range(1, PAGE_ROWS + 1)]  # 1 s of recording
    source = ReplaySource(first, speed=1, model_id="m", label="replay-x", fetch=lambda after: [])
    frame = 0
    for frame in range(600):  # 10 s, and no read-ahead task: the next page does not come
        source.step(frame, 50.0 + frame * FRAME_S)
    assert not source.finished
    horizon = 1000.0 + PAGE_ROWS
    source._feed([reward(PAGE_ROWS + k, horizon + 100.0 * k) for k in range(1, 11)])  # then it does
    source.exhausted = True
    played: list[int] = []
    for frame in range(600, 700):
        played += [frame] * len(source.step(frame, 50.0 + frame * FRAME_S).events)
    assert len(played) == 10
    spacing = [b - a for a, b in zip(played, played[1:])]
    assert all(5 <= s <= 7 for s in spacing), f"caught up in a burst: {played}"


# -- the source mix -----------------------------------------------------------


class FakeLive:
    """A live source whose answer streams one token a frame; cancel() closes it in its next step.

    Its energy is 0.9 and its split all generation, so a frame that shows
    them shows the live energy; it also sends an energy_field and a reward
    event each frame.
    """

    model_id = "live-model"

    def __init__(self) -> None:
        self.steps = 0
        self.sent = 0
        self.cancelled = False
        self.closed = False

    def step(self, frame_number: int, now: float) -> FrameActivity:
        self.steps += 1
        wave = messages.energy_field(
            frame_number=frame_number, field_type="stream", intensity=0.9, coordinates=[], model_id=self.model_id
        )
        note = messages.reward_event(reward_type="milestone", title="live", points=self.steps)
        if self.closed:
            return self._frame("", [], False, [wave, note])
        if self.cancelled:
            self.closed = True
            return self._frame("prompt-1", [], True, [wave, note])
        return self._frame("prompt-1", [f"w{self.steps}"], False, [wave, note])

    def _frame(self, session_id: str, texts: list[str], complete: bool, events: list[Event]) -> FrameActivity:
        streams = (
            [TokenBatch(self.model_id, session_id, texts, [], first_index=self.sent, complete=complete)]
            if texts or complete
            else []
        )
        self.sent += len(texts)
        return FrameActivity(
            session_id=session_id,
            primary=idle_snapshot(self.model_id, 0.9, SessionState.FLOWING),
            profile=PROFILES["Dual"],
            tokens=texts,
            streams=streams,
            response_complete=complete,
            events=events,
            distribution={"generation": 0.9, "attention": 0.0, "reasoning": 0.0},
        )


def slow_replay() -> ReplaySource:
    recorded = [tokens(seq, 1000.0 + seq * 50.0, model_id="recorded-model") for seq in range(1, 200)]
    return ReplaySource(recorded, speed=1, model_id="recorded-model", label="replay-s")


def token_streams(activity: FrameActivity, session_id: str) -> list[TokenBatch]:
    """The frame's token batches (its token_streams) of one sessionId."""
    return [batch for batch in activity.streams if batch.session_id == session_id]


def test_the_live_answer_streams_and_its_cancel_closes_within_a_frame_during_a_replay() -> None:
    live = FakeLive()
    mix = SourceMix(live, live_during_replay=True)
    mix.play(slow_replay())
    seen: list[str] = []
    for frame in range(30):
        activity = mix.step(frame, 50.0 + frame * FRAME_S)
        assert activity.session_id == "replay-s" and mix.model_id == "recorded-model"
        (own,) = token_streams(activity, "prompt-1")
        assert own.model_id == "live-model"
        seen += own.texts
        assert not [e for e in activity.events if e.type == "energy_field"], "the live field shows during a replay"
        assert [e.payload["points"] for e in activity.events if e.type == "reward_event"] == [frame + 1]
        assert activity.primary.energy != 0.9, "the frame's energy is the live one, not the replay's"
        assert activity.primary.model_id == "recorded-model"
        assert activity.distribution != {"generation": 0.9, "attention": 0.0, "reasoning": 0.0}
    assert len(seen) == 30 and live.steps == 30
    live.cancelled = True
    closing = token_streams(mix.step(30, 50.5), "prompt-1")
    assert [(b.texts, b.complete, b.first_index) for b in closing] == [([], True, 30)]
    assert mix.replay is not None, "the cancel stopped the replay"


def test_the_simulator_pauses_during_a_replay() -> None:
    live = FakeLive()
    mix = SourceMix(live, live_during_replay=False)
    mix.play(slow_replay())
    for frame in range(10):
        mix.step(frame, 50.0 + frame * FRAME_S)
    assert live.steps == 0
    mix.stop()
    mix.step(10, 51.0)
    assert live.steps == 1


def test_a_stopped_replay_closes_its_answer_in_the_next_frame() -> None:
    live = FakeLive()
    mix = SourceMix(live, live_during_replay=True)
    mix.play(slow_replay())
    replayed = 0
    for frame in range(20):
        replayed += sum(len(b.texts) for b in token_streams(mix.step(frame, 50.0 + frame * FRAME_S), "replay-s"))
    assert replayed > 0
    mix.stop()
    activity = mix.step(20, 50.0 + 20 * FRAME_S)
    closing = token_streams(activity, "replay-s")
    assert [(b.texts, b.complete, b.model_id) for b in closing] == [([], True, "recorded-model")]
    assert closing[0].first_index == replayed, "the closing firstIndex is the answer's length"
    assert mix.model_id == "live-model" and activity.tokens == ["w21"]
    assert not token_streams(mix.step(21, 50.4), "replay-s"), "closed twice"


def test_a_replayed_token_stream_keeps_its_recorded_evidence_under_the_replays_session_id() -> None:
    recorded = [tokens(1, 1000.0, first_index=5, model_id="recorded-model")]
    (activity,) = play(ReplaySource(recorded, speed=1, model_id="recorded-model", label="replay-s"))
    (batch,) = activity.streams
    assert (batch.session_id, batch.model_id, batch.first_index) == ("replay-s", "recorded-model", 5)
    assert batch.recorded_evidence == [{"dtMs": 50.0, "topK": [0.9, 0.1]}]
    assert activity.tokens == ["t1"]


def test_a_replay_that_ends_keeps_its_model_id_for_its_last_frame() -> None:
    mix = SourceMix(FakeLive(), live_during_replay=False)
    mix.play(
        ReplaySource(
            [tokens(1, 1000.0, complete=True, model_id="recorded-model")],
            speed=1,
            model_id="recorded-model",
            label="replay-s",
        )
    )
    activity = mix.step(0, 50.0)
    assert activity.response_complete and mix.model_id == "recorded-model"
    assert mix.replay is None
    mix.step(1, 50.1)
    assert mix.model_id == "live-model"


# -- the replayer ---------------------------------------------------------------


async def test_one_replay_at_a_time_and_starts_are_rate_limited() -> None:
    clock = FakeClock()
    replayer = Replayer(SourceMix(FakeLive()), starts_per_second=0.5, starts_burst=STARTS_BURST, clock=clock)
    replayer.admit()
    with pytest.raises(ReplayBusy):
        replayer.admit()  # while the first one is still starting
    assert replayer.start(slow_replay(), "1")
    with pytest.raises(ReplayBusy) as busy:
        replayer.admit()
    assert busy.value.status["active"] is True and busy.value.status["recording"] == "1"
    for _ in range(STARTS_BURST - 1):
        assert replayer.stop()
        replayer.admit()
        assert replayer.start(slow_replay(), "1")
    replayer.stop()
    with pytest.raises(ReplayRateLimited) as limited:
        replayer.admit()
    assert limited.value.retry_after == pytest.approx(2.0)
    clock.now += 2.0
    replayer.admit()
    replayer.release()
    assert replayer.status() == {"active": False}
    await replayer.close()


async def test_a_stop_while_a_replay_starts_wins() -> None:
    replayer = Replayer(SourceMix(FakeLive()))
    replayer.admit()
    assert replayer.stop() is False
    assert replayer.start(slow_replay(), "1") is False
    replayer.release()
    assert replayer.status() == {"active": False}
    replayer.admit()  # the slot is free again
    replayer.release()


def test_a_replay_that_ends_in_the_middle_of_an_answer_closes_it() -> None:
    mix = SourceMix(FakeLive(), live_during_replay=False)
    mix.play(ReplaySource([tokens(1, 1000.0), tokens(2, 1010.0)], speed=1, model_id="recorded-model", label="replay-s"))
    closing: list[TokenBatch] = []
    for frame in range(5):
        closing += [b for b in token_streams(mix.step(frame, 50.0 + frame * FRAME_S), "replay-s") if b.complete]
    assert mix.replay is None
    assert [(b.texts, b.model_id, b.first_index) for b in closing] == [([], "m", 2)]


def test_an_answer_that_ends_is_not_merged_with_the_next_one() -> None:
    """Two recorded answers due in one frame: the first closes in it, the second comes in the next frame."""
    recorded = [tokens(1, 1000.0, complete=True), tokens(2, 1001.0), tokens(3, 1002.0, complete=True)]
    source = ReplaySource(recorded, speed=100, model_id="m", label="replay-s")
    frames = [(a.tokens, a.response_complete) for a in play(source) if a.tokens]
    assert frames == [(["t1"], True), (["t2", "t3"], True)]
