"""EnergyPacer: the energy rate follows what the client shows it reads (heartbeat round-trips)."""

from __future__ import annotations

from wirthforge_ws.pacing import EASE, INCREASE, LAG_HIGH, SILENT_AFTER, TARGET_SHARE, EnergyPacer

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
    # The first slow answer might be a hiccup: at most half.
    assert pacer.effective_rate == 30.0
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
