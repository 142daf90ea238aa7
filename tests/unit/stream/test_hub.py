"""Hub resume planning (``Hub.plan_resume`` / ``Hub.attach``) in process, with a fake subscriber.

No sockets, no sleeps: the hub module's ``time`` is replaced by a clock the
test moves (only the hub's view of it: the event loop keeps the real one).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from wirthforge_ws.protocol import messages
from wirthforge_ws.protocol.schemas import SchemaSet
from wirthforge_ws.stream import hub as hub_module
from wirthforge_ws.stream.hub import Hub, Outbound, ResumeRequest

ALL_CHANNELS = ("energy", "experience", "council", "reward", "system")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSubscriber:
    """Records what the hub delivers."""

    def __init__(self, version: str = "1.1") -> None:
        self.version = version
        self.received: list[Outbound] = []

    def deliver(self, outbound: Outbound) -> None:
        self.received.append(outbound)

    def seqs(self) -> list[int]:
        return [o.seq for o in self.received]


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(hub_module, "time", SimpleNamespace(monotonic=fake))
    yield fake


def make_hub(schemas: SchemaSet, *, history_messages: int = 100, history_seconds: float = 120.0) -> Hub:
    return Hub(schemas, history_messages=history_messages, history_seconds=history_seconds)


def reward(points: int = 1) -> messages.Event:
    return messages.reward_event(reward_type="milestone", title="t", points=points)


def tokens() -> messages.Event:
    return messages.token_stream(tokens=["x"], is_complete=False, session_id="s", model_id="m")


def frame(number: int) -> messages.Event:
    return messages.energy_update(
        frame_number=number,
        total_energy=0.5,
        delta_energy=0.0,
        tokens_generated=0,
        processing_time_ms=0.05,
        model_id="m",
        evidence=messages.energy_evidence(profile="Dual"),
    )


async def test_no_resume_request_plans_nothing(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    hub.publish(reward())
    plan = hub.plan_resume(ALL_CHANNELS, None)
    assert plan.result.as_payload() == {"status": "none"}
    assert plan.replay == [] and plan.newest_frames == []


async def test_complete_resume_replays_reliable_messages_after_last_seq(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    published = [hub.publish(reward(i)) for i in range(5)]
    last_seen = published[1]
    assert last_seen is not None
    plan = hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, last_seen.seq))
    assert plan.result.as_payload() == {"status": "complete", "replayed": 3}
    assert [o.seq for o in plan.replay] == [o.seq for o in published[2:] if o is not None]


async def test_replay_only_holds_subscribed_channels(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    hub.publish(reward())
    token = hub.publish(tokens())
    hub.publish(reward())
    plan = hub.plan_resume(["experience", "system"], ResumeRequest(hub.epoch, 0))
    assert token is not None
    assert [o.seq for o in plan.replay] == [token.seq]
    assert plan.result.replayed == 1


async def test_another_epoch_is_incomplete_and_replays_nothing(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    hub.publish(reward())
    plan = hub.plan_resume(ALL_CHANNELS, ResumeRequest("not-" + hub.epoch, 0))
    assert plan.result.as_payload() == {"status": "incomplete", "replayed": 0, "reason": "epoch_changed"}
    assert plan.replay == []


async def test_last_seq_beyond_the_stream_is_invalid(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    hub.publish(reward())
    plan = hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, 10_000))
    assert plan.result.as_payload() == {"status": "incomplete", "replayed": 0, "reason": "invalid_request"}


async def test_history_exceeded_by_count_replays_what_is_left(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas, history_messages=3)
    published = [hub.publish(reward(i)) for i in range(6)]
    plan = hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, published[0].seq))  # type: ignore[union-attr]
    assert plan.result.as_payload() == {"status": "incomplete", "replayed": 3, "reason": "history_exceeded"}
    assert [o.seq for o in plan.replay] == [o.seq for o in published[3:]]  # type: ignore[union-attr]


async def test_history_exceeded_by_age(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas, history_seconds=10.0)
    old = hub.publish(reward(1))
    clock.now += 5
    kept = hub.publish(reward(2))
    clock.now += 6  # the first message is now 11 s old
    assert old is not None and kept is not None
    plan = hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, old.seq - 1))
    assert plan.result.status == "incomplete" and plan.result.reason == "history_exceeded"
    assert [o.seq for o in plan.replay] == [kept.seq]


async def test_newest_frame_is_handed_over_only_if_newer_than_last_seq(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    watcher = FakeSubscriber()
    hub.attach(watcher, hub.plan_resume(ALL_CHANNELS, None))  # frames are only stamped while someone listens
    first = hub.publish(frame(1))
    r = hub.publish(reward())
    newest = hub.publish(frame(2))
    assert first is not None and r is not None and newest is not None
    plan = hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, r.seq))
    assert [o.seq for o in plan.newest_frames] == [newest.seq]  # only the newest of its type
    assert hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, newest.seq)).newest_frames == []


async def test_a_stale_frame_is_not_handed_over(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    hub.attach(FakeSubscriber(), hub.plan_resume(ALL_CHANNELS, None))
    hub.publish(frame(1))
    clock.now += 0.6  # frames stop being built while nobody is connected: this one is old
    assert hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, 0)).newest_frames == []


async def test_attach_delivers_replay_and_hand_over_in_seq_order_then_live(
    schemas: SchemaSet, clock: FakeClock
) -> None:
    hub = make_hub(schemas)
    watcher = FakeSubscriber()
    hub.attach(watcher, hub.plan_resume(ALL_CHANNELS, None))
    r1 = hub.publish(reward(1))
    f1 = hub.publish(frame(1))
    r2 = hub.publish(reward(2))
    assert r1 is not None and f1 is not None and r2 is not None
    resumer = FakeSubscriber()
    plan = hub.plan_resume(ALL_CHANNELS, ResumeRequest(hub.epoch, 0))
    hub.attach(resumer, plan)
    assert resumer.seqs() == [r1.seq, f1.seq, r2.seq]  # the frame between the two replayed messages
    live = hub.publish(reward(3))
    assert live is not None
    assert resumer.seqs()[-1] == live.seq
    assert resumer.seqs() == sorted(set(resumer.seqs())), "no duplicate, no reordering"


async def test_attach_wakes_the_frame_clock(schemas: SchemaSet, clock: FakeClock) -> None:
    hub = make_hub(schemas)
    woken: list[bool] = []
    hub.on_attach = lambda: woken.append(True)
    hub.attach(FakeSubscriber(), hub.plan_resume(ALL_CHANNELS, None))
    assert woken == [True]
