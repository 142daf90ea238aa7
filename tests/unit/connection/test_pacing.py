"""EnergyPacer: the energy rate follows what the client shows it reads (heartbeat round-trips)."""

from __future__ import annotations

import math

from wirthforge_ws.connection.pacing import (
    EASE,
    INCREASE,
    LAG_HIGH,
    PROBE_INCREASE,
    PROBE_INTERVAL,
    PROBE_STEP_HZ,
    SILENT_AFTER,
    TARGET_SHARE,
    EnergyPacer,
)

NOMINAL = (60.0, 10.0)  # energy_update, energy_field


def pacer_at(now: float = 0.0) -> EnergyPacer:
    return EnergyPacer(60.0, nominal_rates=NOMINAL, now=now)


def send(pacer: EnergyPacer, seconds: float, *, energy_per_s: float, other_per_s: float) -> None:
    pacer.queued_energy += round(energy_per_s * seconds)
    pacer.queued += round((energy_per_s + other_per_s) * seconds)


def test_a_client_that_never_answers_is_not_paced() -> None:
    pacer = pacer_at()
    pacer.probe_sent(0, 0.25)
    assert not pacer.holding_at(10.0)
    assert pacer.effective_rate == 60.0


def test_the_rate_is_fitted_to_the_measured_read_rate() -> None:
    """A client reads 40 messages/s while 80/s are sent: after one heartbeat the stream fits its reading."""
    pacer = pacer_at(0.0)
    send(pacer, 0.25, energy_per_s=70, other_per_s=10)  # 20 messages before the first heartbeat
    pacer.queued += 1
    pacer.probe_sent(0, 0.25)
    # It reads 40/s, so it reads the heartbeat (message 21) at 21/40 s; meanwhile 80/s more were queued.
    send(pacer, 21 / 40 - 0.25, energy_per_s=70, other_per_s=10)
    round_trip = pacer.probe_answered(0, 21 / 40)
    assert round_trip is not None and round_trip > 0.1
    # The first slow answer might be a hiccup: at most half, and its read rate is not remembered.
    assert pacer.effective_rate == 30.0
    assert pacer.threshold == 60.0
    # One second later it is still behind, and reads 40/s: now the rate is fitted to that.
    send(pacer, 1.25 - 21 / 40, energy_per_s=40, other_per_s=10)
    pacer.probe_sent(1, 1.25)
    position = pacer.queued
    send(pacer, 0.5, energy_per_s=40, other_per_s=10)
    pacer.probe_answered(1, 21 / 40 + (position - 21) / 40)
    budget = TARGET_SHARE * 40 - 10  # messages/s left for energy
    assert abs(pacer.messages_at(pacer.effective_rate) - budget) < 3.0, pacer.effective_rate
    assert pacer.reductions == 2


def test_a_lagging_client_is_held_then_sped_up_again() -> None:
    pacer = pacer_at(0.0)
    pacer.probe_sent(0, 0.25)
    pacer.probe_answered(0, 0.26)  # keeps up
    assert pacer.effective_rate == 60.0
    pacer.probe_sent(1, 1.25)
    assert not pacer.holding_at(1.25 + LAG_HIGH / 2)
    assert pacer.holding_at(1.25 + LAG_HIGH * 2)  # the heartbeat waits unread behind a backlog: no energy
    assert pacer.effective_rate == 60.0
    pacer.probe_answered(1, 1.25 + LAG_HIGH * 3)  # a very slow answer halves the rate
    assert not pacer.holding_at(3.0)
    assert pacer.effective_rate == 30.0
    for sequence in range(2, 4):
        pacer.probe_sent(sequence, sequence + 0.25)
        pacer.probe_answered(sequence, sequence + 0.26)
    assert pacer.effective_rate == 30.0 * (1 + INCREASE) ** 2
    for sequence in range(4, 20):
        pacer.probe_sent(sequence, sequence + 0.25)
        pacer.probe_answered(sequence, sequence + 0.26)
    assert pacer.effective_rate == 60.0


def test_a_hiccup_without_a_growing_backlog_costs_little_and_heals() -> None:
    pacer = pacer_at(0.0)
    rates = []
    for sequence in range(4):
        send(pacer, 1.0, energy_per_s=70, other_per_s=10)
        pacer.probe_sent(sequence, sequence + 1.0)
        # Answered 0.2 s late once (the client was descheduled), then read it all.
        pacer.probe_answered(sequence, sequence + 1.0 + (0.2 if sequence == 1 else 0.01))
        rates.append(pacer.effective_rate)
    assert rates[1] == 60.0 * EASE
    assert rates[2:] == [60.0, 60.0]


def test_a_client_that_stops_answering_falls_back_to_its_requested_rate() -> None:
    pacer = pacer_at(0.0)
    pacer.probe_sent(0, 0.25)
    pacer.probe_answered(0, 0.26)
    pacer.probe_sent(1, 1.25)
    assert pacer.holding_at(1.25 + LAG_HIGH * 2)
    assert not pacer.holding_at(1.25 + SILENT_AFTER + 1)
    assert pacer.effective_rate == 60.0


def test_an_unanswered_older_heartbeat_does_not_count_as_lag() -> None:
    pacer = pacer_at(0.0)
    pacer.probe_sent(0, 0.25)
    pacer.probe_sent(1, 1.25)
    pacer.probe_answered(1, 1.26)  # the client skipped answering 0
    assert not pacer.holding_at(2.0)


def test_the_requested_rate_is_a_ceiling() -> None:
    pacer = pacer_at()
    pacer.probe_sent(0, 0.25)
    pacer.probe_answered(0, 0.26)
    pacer.set_ceiling(10.0)
    assert pacer.effective_rate == 10.0
    pacer.probe_sent(1, 1.25)
    pacer.probe_answered(1, 1.26)
    assert pacer.effective_rate == 10.0


def fit_to_a_40_per_second_reader(pacer: EnergyPacer) -> None:
    """80 messages/s sent, 40/s read, two heartbeats answered late: the rate is fitted to the reading."""
    send(pacer, 0.25, energy_per_s=70, other_per_s=10)
    pacer.queued += 1
    pacer.probe_sent(0, 0.25)
    send(pacer, 21 / 40 - 0.25, energy_per_s=70, other_per_s=10)
    pacer.probe_answered(0, 21 / 40)
    send(pacer, 1.25 - 21 / 40, energy_per_s=40, other_per_s=10)
    pacer.probe_sent(1, 1.25)
    position = pacer.queued
    send(pacer, 0.5, energy_per_s=40, other_per_s=10)
    pacer.probe_answered(1, 21 / 40 + (position - 21) / 40)


def test_after_a_cut_the_rate_climbs_fast_to_the_threshold_then_slowly() -> None:
    pacer = pacer_at(0.0)
    fit_to_a_40_per_second_reader(pacer)
    cut, threshold = pacer.effective_rate, pacer.threshold
    # The threshold is the rate that fills the whole read rate: 40/s less the 10/s of other messages.
    assert abs(pacer.messages_at(threshold) - (40 - 10)) < 3.0, threshold
    assert cut < threshold
    rates = []
    for sequence in range(2, 30):  # fast answers from now on
        pacer.probe_sent(sequence, sequence + 1.0)
        pacer.probe_answered(sequence, sequence + 1.01)
        rates.append(pacer.effective_rate)
    reached = rates.index(threshold)  # capped there on the way up: never jumps past it
    assert reached <= 3, (cut, threshold, rates)
    above = rates[reached:]
    assert all(
        math.isclose(b, min(60.0, a + max(PROBE_STEP_HZ, a * PROBE_INCREASE)))
        for a, b in zip(above, above[1:], strict=False)
    ), rates
    assert rates[-1] == 60.0 and pacer.threshold == 60.0, "back at its ceiling, the old threshold is forgotten"


def test_heartbeats_come_every_probe_interval_while_the_client_is_paced() -> None:
    pacer = pacer_at(0.0)
    assert pacer.probe_due(0.1) == math.inf, "no extra heartbeats for a client that never answered"
    pacer.probe_sent(0, 0.1)
    pacer.probe_answered(0, 0.11)
    assert pacer.probe_due(0.1) == math.inf, "a client that keeps up gets the regular heartbeats"
    pacer.probe_sent(1, 1.1)
    assert pacer.holding_at(1.1 + LAG_HIGH * 1.5)
    assert pacer.probe_due(1.2) == 1.2 + PROBE_INTERVAL, "held: probe until it answers"
    pacer.probe_answered(1, 1.1 + LAG_HIGH * 2)  # halved
    assert pacer.probe_due(1.7) == 1.7 + PROBE_INTERVAL, "paced below its ceiling"
