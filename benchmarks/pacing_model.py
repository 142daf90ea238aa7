#!/usr/bin/env python
"""How old the energy frames a slow reader reads are, under the pacing law (benchmarks/results/NOTES.md §11).

    .venv/bin/python benchmarks/pacing_model.py                 # about a second
    .venv/bin/python benchmarks/pacing_model.py --legacy        # the law without early heartbeats, probing and threshold

A deterministic model, not a server: the project's :class:`EnergyPacer`
(wirthforge_ws/pacing.py) paces one connection whose client reads *R*
messages per second from a FIFO (the kernel's and a library's buffers,
which the server cannot see into) and answers each heartbeat when it
reads it. Time advances in 1 ms steps. The stream is the project's: a
60 Hz energy_update, a 10 Hz energy_field (both decimated as
``Connection._energy_due`` does), about 12 other messages per second
(random frames, seeded), heartbeats as ``Connection.heartbeat`` schedules
them (checked every 50 ms) and a random 0-20 ms delay on each answer.

Per reading rate it prints the worst frame age (read time minus build time)
over ``--seconds`` across ``--seeds`` runs, and the energy rate the client
got. Then the other side of the trade: a fast client (1,000 messages/s)
that stalls once, 150 or 300 ms at one of several moments in its first
1.5 s (when pacing has the least to go on), and the energy_update rate it
gets over 10 s: a law that mistakes a stall for a slow reader costs it
frames. The real test (tests/integration/test_flow_control.py) measures the
same thing on a real server, with a real client.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wirthforge_ws.connection.pacing import EARLY_HEARTBEATS, EnergyPacer  # noqa: E402

FRAME_RATE = 60.0
NOMINAL = {"energy_update": 60.0, "energy_field": 10.0}
OTHER_PER_SECOND = 12.0  # token_stream, council and reward events: measured 10-14/s from the simulator
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TICK = 0.05
STALLS = (0.15, 0.3)  # seconds a fast client stops reading ...
STALL_AT = (0.05, 0.15, 0.3, 0.6, 1.5)  # ... starting this long after it connects
STEP = 0.001


class LegacyPacer(EnergyPacer):
    """The law before probing and the threshold: growth by a quarter up to the ceiling."""

    threshold = property(lambda self: self.ceiling, lambda self, value: None)  # type: ignore[assignment]

    def probe_due(self, last_probe_at: float) -> float:
        return float("inf")  # heartbeats only on the regular schedule


@dataclass
class Run:
    worst_age: float
    worst_at: float
    energy_rate: float


LEGACY_EARLY_HEARTBEATS = (0.1, 0.5)


def simulate(
    read_rate: float,
    *,
    seconds: float,
    seed: int,
    answer_jitter: float,
    legacy: bool,
    pauses: tuple[tuple[float, float], ...] = (),
) -> Run:
    """One connection, *seconds* long: the worst energy_update age its client reads.

    *pauses* are (start, length) spans in which the client reads nothing (a busy page, a GC pause).
    """
    rng = random.Random(seed)
    early = LEGACY_EARLY_HEARTBEATS if legacy else EARLY_HEARTBEATS
    pacer = (LegacyPacer if legacy else EnergyPacer)(FRAME_RATE, nominal_rates=tuple(NOMINAL.values()), now=0.0)
    credit: dict[str, float] = {}
    fifo: deque[tuple[float, str, int]] = deque()  # (built at, type, heartbeat sequence)
    answers: list[tuple[float, int]] = []  # (reaches the server at, sequence)
    ages: list[tuple[float, float]] = []
    next_heartbeat, last_heartbeat, sequence = early[0], 0.0, 0
    next_frame, frame, next_read = 1 / FRAME_RATE, 0, 0.0
    now = 0.0
    for step in range(1, int(seconds / STEP) + 1):
        now = step * STEP
        for answer in [a for a in answers if a[0] <= now]:
            answers.remove(answer)
            pacer.probe_answered(answer[1], now)
        if step % int(HEARTBEAT_TICK / STEP) == 0 and (now >= next_heartbeat or now >= pacer.probe_due(last_heartbeat)):
            if sequence + 1 < len(early):
                next_heartbeat = early[sequence + 1]
            elif now >= next_heartbeat:
                next_heartbeat = max(next_heartbeat + HEARTBEAT_INTERVAL, now)
            last_heartbeat = now
            fifo.append((now, "heartbeat", sequence))
            pacer.queued += 1
            pacer.probe_sent(sequence, now)
            sequence += 1
        if now >= next_frame:
            next_frame += 1 / FRAME_RATE
            frame += 1
            if rng.random() < OTHER_PER_SECOND / FRAME_RATE:
                fifo.append((now, "other", 0))
                pacer.queued += 1
            for kind in ("energy_update", "energy_field") if frame % 6 == 0 else ("energy_update",):
                if pacer.answering and pacer.holding_at(now):
                    continue
                rate, nominal = pacer.effective_rate, NOMINAL[kind]
                if rate < nominal:
                    due = credit.get(kind, 1.0) + rate / nominal
                    credit[kind] = due - 1.0 if due >= 1.0 else due
                    if due < 1.0:
                        continue
                fifo.append((now, kind, 0))
                pacer.queued += 1
                pacer.queued_energy += 1
        if fifo and now >= next_read and not any(start <= now < start + length for start, length in pauses):
            built, kind, number = fifo.popleft()
            if kind == "energy_update":
                ages.append((now, now - built))
            elif kind == "heartbeat":
                answers.append((now + 0.001 + rng.random() * answer_jitter, number))
            next_read = max(next_read, now - 1 / read_rate) + 1 / read_rate
    worst_at, worst_age = max(ages, key=lambda age: age[1])
    return Run(worst_age, worst_at, len(ages) / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="80,60,40,30,25", help="client read rates, messages/s")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--jitter", type=float, default=0.02, help="random delay of each answer, seconds")
    parser.add_argument(
        "--legacy",
        action="store_true",
        help="the simpler law, for comparison: heartbeats at 0.1 and 0.5 s, no probing, no threshold",
    )
    args = parser.parse_args()
    print("| reads/s | worst frame age | at | energy_update Hz |")
    print("|---|---|---|---|")
    for read_rate in (float(r) for r in args.rates.split(",")):
        runs = [
            simulate(read_rate, seconds=args.seconds, seed=seed, answer_jitter=args.jitter, legacy=args.legacy)
            for seed in range(args.seeds)
        ]
        worst = max(runs, key=lambda run: run.worst_age)
        rates = sorted(run.energy_rate for run in runs)
        print(
            f"| {read_rate:g} | {worst.worst_age * 1000:.0f} ms | {worst.worst_at:.1f} s "
            f"| {rates[0]:.0f}-{rates[-1]:.0f} |",
            flush=True,
        )
    print("\n| a fast client stalls | energy_update Hz over 10 s: worst | mean |")
    print("|---|---|---|")
    for length in STALLS:
        rates = [
            simulate(
                1000.0, seconds=10.0, seed=seed, answer_jitter=0.005, legacy=args.legacy, pauses=((at, length),)
            ).energy_rate
            for at in STALL_AT
            for seed in range(args.seeds)
        ]
        print(
            f"| {length * 1000:.0f} ms, at {', '.join(f'{at:g}' for at in STALL_AT)} s "
            f"| {min(rates):.1f} | {sum(rates) / len(rates):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
