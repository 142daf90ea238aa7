"""Machine readers (/proc: CPU, RSS, load) and waiting for a quiet machine on a shared host."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import CLK_TCK, NCPU

# -- /proc readers ------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (all its threads)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def system_cpu() -> tuple[float, float, float]:
    """(busy, total, steal) jiffies over all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    steal = values[7] if len(values) > 7 else 0
    return total - idle, total, steal


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def sleep_until_ns(wall_ns: int) -> None:
    delay = (wall_ns - time.time_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


# -- other people's load ------------------------------------------------------------
#
# The machine is shared. Before each run the harness waits (bounded) until
# the CPU used by everything else is below a threshold, and a run during
# which other processes used more than that is repeated (bounded); the
# quietest attempt is kept and every attempt's "other load" is recorded.

QUIET: dict[str, float] = {"threshold": 25.0, "max_wait": 120.0, "retries": 2}


def machine_busy_pct(seconds: float = 1.0) -> float:
    """CPU used by all processes over *seconds*, in % of one core."""
    b0 = system_cpu()
    time.sleep(seconds)
    b1 = system_cpu()
    return (b1[0] - b0[0]) / max(b1[1] - b0[1], 1) * NCPU * 100.0


def wait_for_quiet() -> float:
    """Wait until the machine is quiet (or max_wait passes); returns the last busy reading."""
    deadline = time.monotonic() + QUIET["max_wait"]
    busy = machine_busy_pct()
    announced = False
    while busy > QUIET["threshold"] and time.monotonic() < deadline:
        if not announced:
            print(
                f"      (machine busy: {busy:.0f} % of a core used by others; waiting up to "
                f"{QUIET['max_wait']:g} s for < {QUIET['threshold']:g} %)",
                flush=True,
            )
            announced = True
        time.sleep(2.0)
        busy = machine_busy_pct()
    return round(busy, 1)


def quiet_run(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a measurement when the machine is quiet; repeat it (bounded) if others' load was high."""
    attempts = []
    best: dict[str, Any] | None = None
    for attempt in range(int(QUIET["retries"]) + 1):
        busy_before = wait_for_quiet()
        result = run()
        result["busy_before_pct_of_core"] = busy_before
        attempts.append(result.get("other_load_pct_of_core"))
        if best is None or result.get("other_load_pct_of_core", 0) < best.get("other_load_pct_of_core", 0):
            best = result
        if result.get("other_load_pct_of_core", 0) <= QUIET["threshold"]:
            break
        if attempt < QUIET["retries"]:
            print(
                f"      noisy (others used {result.get('other_load_pct_of_core')} % of a core): repeating", flush=True
            )
    assert best is not None
    best["attempts_other_load_pct"] = attempts
    best["noisy"] = best.get("other_load_pct_of_core", 0) > QUIET["threshold"]
    return best
