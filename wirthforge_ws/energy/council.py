"""Several models answering one prompt (the council): disagreement DI and ensemble energy.

DI lies in [0, 1] and has one of two methods:

- ``"jsd"``, when at least two members carry top-K at a token index: the
  Jensen-Shannon divergence (base 2, divided by log2 n) of those members'
  top-K at that index, each sorted descending (rank-aligned: the models'
  vocabularies are not compared, their confidence profiles are) and
  normalised. A frame's DI is the mean over the last ``window`` such indices.
- ``"timing"``, when no index has two top-K: over each member's last
  ``window`` Δt (the time to first token excluded, at least 2 each),
  ``0.5 (1 - min(mean) / max(mean)) + 0.5 min(1, max(cv) - min(cv))`` with
  cv = population standard deviation / mean: how differently fast and how
  differently regular the members are.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .meter import MeterSnapshot, TokenReading, jensen_shannon

DEFAULT_WINDOW = 8
MIN_TIMING_DT = 2


@dataclass(frozen=True, slots=True)
class Disagreement:
    """The council's DI at one moment."""

    value: float  # in [0, 1]
    method: str  # "jsd" | "timing"
    window: int  # token indices (jsd) or Δt per member (timing) it used


def _jsd_at(members: Sequence[Sequence[TokenReading]], index: int) -> float | None:
    """JSD of the members' top-K at *index*; None when fewer than two members have one there."""
    distributions = [
        readings[index].top_k
        for readings in members
        if index < len(readings) and readings[index].top_k is not None and math.fsum(readings[index].top_k) > 0
    ]
    if len(distributions) < 2:
        return None
    return jensen_shannon([sorted(d, reverse=True) for d in distributions])


def _jsd_series(members: Sequence[Sequence[TokenReading]]) -> list[float | None]:
    """Per token index (up to the longest member's answer), the JSD there or None."""
    longest = max((len(readings) for readings in members), default=0)
    return [_jsd_at(members, index) for index in range(longest)]


def _timing(members: Sequence[Sequence[TokenReading]], window: int) -> Disagreement | None:
    gaps = [[reading.dt_ms for reading in readings[max(1, len(readings) - window) :]] for readings in members]
    if len(gaps) < 2 or any(len(g) < MIN_TIMING_DT for g in gaps):
        return None
    means = [statistics.fmean(g) for g in gaps]
    cvs = [statistics.pstdev(g) / mean if mean > 0 else 0.0 for g, mean in zip(gaps, means)]
    ratio = min(means) / max(means) if max(means) > 0 else 1.0
    value = 0.5 * (1.0 - ratio) + 0.5 * min(1.0, max(cvs) - min(cvs))
    return Disagreement(value=min(max(value, 0.0), 1.0), method="timing", window=min(len(g) for g in gaps))


def disagreement(members: Sequence[Sequence[TokenReading]], window: int = DEFAULT_WINDOW) -> Disagreement | None:
    """DI of the members' readings so far; None with fewer than two members or too little evidence."""
    if len(members) < 2:
        return None
    used: list[float] = []
    index = max(len(readings) for readings in members) - 1
    while index >= 0 and len(used) < window:  # newest first: a frame costs `window` divergences, not the answer's
        value = _jsd_at(members, index)
        if value is not None:
            used.append(value)
        index -= 1
    if used:
        return Disagreement(value=min(max(statistics.fmean(used), 0.0), 1.0), method="jsd", window=len(used))
    return _timing(members, window)


def disagreement_by_token(
    members: Sequence[Sequence[TokenReading]], window: int = DEFAULT_WINDOW
) -> list[float | None]:
    """DI per token index, for a trace's ``derived`` series; None where it is not defined.

    With the ``"jsd"`` method (as :func:`disagreement` would choose for these
    readings) entry i is the JSD at index i; with ``"timing"`` it is the
    timing index of the members' readings up to index i. The list runs to the
    longest member's last index.
    """
    if len(members) < 2:
        return []
    series = _jsd_series(members)
    if any(value is not None for value in series):
        return series
    result: list[float | None] = []
    for index in range(len(series)):
        value = _timing([readings[: index + 1] for readings in members], window)
        result.append(None if value is None else value.value)
    return result


def ensemble_energy(snapshots: Sequence[MeterSnapshot]) -> float:
    """Equally weighted mean of the members' E at the frame's time, in [0, 1]; 0 with no member."""
    if not snapshots:
        return 0.0
    return min(max(statistics.fmean(s.energy for s in snapshots), 0.0), 1.0)
