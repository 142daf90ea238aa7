"""The command line: ``bench.py [--quick] [--only ...]``; runs the chosen sections and writes the results."""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import RESULTS_JSON
from .loadclient import client_entry
from .machine import QUIET, loadavg, wait_for_quiet
from .micro import section_micro
from .processes import _raise_interrupt, _stop_everything
from .report import environment, git_state, render_tables
from .runs import (
    section_client,
    section_cpu_idle,
    section_deflate,
    section_latency,
    section_loops,
    section_memory,
    section_steady,
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_client":
        client_entry(argv[1:])
        return 0
    sections = ("micro", "cpu", "latency", "client", "steady", "memory", "loops", "deflate")
    parser = argparse.ArgumentParser(
        prog="bench.py", description="Benchmarks of the WIRTHFORGE real-time transport (docs/PERFORMANCE.md)."
    )
    parser.add_argument("--quick", action="store_true", help="short runs (5 s load runs, 10 s steady state)")
    parser.add_argument("--only", default=",".join(sections), help=f"comma-separated subset of {', '.join(sections)}")
    parser.add_argument("--out", help="also write the results here: .json (raw) or anything else (Markdown tables)")
    parser.add_argument("--results", default=str(RESULTS_JSON), help="where to write the raw results (JSON)")
    parser.add_argument(
        "--deflate-clients",
        type=int,
        default=10,
        help="clients in the permessage-deflate comparison (default %(default)s)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=QUIET["threshold"],
        help="%% of one core that other processes may use during a run (default %(default)s)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=QUIET["max_wait"],
        help="seconds to wait for a quiet machine before each run (default %(default)s; 0: never wait)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=int(QUIET["retries"]),
        help="repeat a noisy run up to this many times, keeping the quietest (default %(default)s)",
    )
    args = parser.parse_args(argv)
    QUIET.update(threshold=args.quiet_threshold, max_wait=max(args.wait_quiet, 0.0), retries=max(args.retries, 0))
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(sections)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    # SIGINT explicitly too: a harness started in the background inherits it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    atexit.register(_stop_everything)
    results: dict[str, Any] = {"quick": args.quick, "environment": environment(), "sections": chosen}
    print(
        f"WIRTHFORGE benchmarks ({'quick' if args.quick else 'full'}): {', '.join(chosen)}; "
        f"load average {results['environment']['loadavg_start']}",
        flush=True,
    )
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="wf-bench-") as tmpdir:
            for section in sections:
                if section not in chosen:
                    continue
                print(f"[{section}]", flush=True)
                if section == "micro":
                    busy = wait_for_quiet()
                    results["micro"] = section_micro(args.quick)
                    results["micro"]["busy_before_pct_of_core"] = busy
                elif section == "cpu":
                    results["cpu"] = section_cpu_idle(args.quick)
                elif section == "latency":
                    results["latency"] = section_latency(args.quick, tmpdir)
                elif section == "client":
                    results["client"] = section_client(args.quick)
                elif section == "steady":
                    results["steady"] = section_steady(args.quick, tmpdir)
                elif section == "memory":
                    results["memory"] = section_memory(args.quick, tmpdir)
                elif section == "loops":
                    results["loops"] = section_loops(args.quick, tmpdir)
                elif section == "deflate":
                    results["deflate"] = section_deflate(args.quick, tmpdir, args.deflate_clients)
                gc.collect()
    except KeyboardInterrupt:
        print("interrupted: stopping every subprocess", file=sys.stderr)
        _stop_everything()
        return 130
    finally:
        _stop_everything()
    results["environment"]["loadavg_end"] = loadavg()
    results["environment"]["git_end"] = git_state()
    if results["environment"]["git_end"] != results["environment"]["git"]:
        print("WARNING: the server's code changed during the run (see environment.git / git_end)", file=sys.stderr)
    results["environment"]["elapsed_s"] = round(time.monotonic() - started, 1)
    Path(args.results).write_text(json.dumps(results, indent=1) + "\n")
    tables = render_tables(results)
    print()
    print(tables)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n" if out.suffix == ".json" else tables + "\n")
    print(f"results: {args.results}" + (f", {args.out}" if args.out else ""))
    return 0
