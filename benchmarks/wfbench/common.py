"""Paths, platform constants and the summary statistics every section reports."""

from __future__ import annotations

import os
import socket
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wirthforge_ws.stream.rolling import percentile

BENCH_DIR = Path(__file__).resolve().parent.parent
BENCH_FILE = BENCH_DIR / "bench.py"  # the entry point; load clients are started as ``bench.py _client``
ROOT = BENCH_DIR.parent
RESULTS_JSON = BENCH_DIR / "results" / "results.json"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: kernel receive timestamps (ns)
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

# ---------------------------------------------------------------------------
# Small statistics helpers (percentiles: the project's one nearest-rank
# definition, wirthforge_ws.stream.rolling.percentile, PROTOCOL.md §10.6)


def summarize(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "median": None, "p99": None, "p999": None, "max": None, "mean": None}

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "n": len(ordered),
        "min": r(ordered[0]),
        "median": r(percentile(ordered, 0.5)),
        "p99": r(percentile(ordered, 0.99)),
        "p999": r(percentile(ordered, 0.999)),
        "max": r(ordered[-1]),
        "mean": r(statistics.fmean(ordered)),
    }
