"""The run's environment (git, machine) and the Markdown tables of benchmarks/results/NOTES.md."""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from .common import NCPU, ROOT
from .machine import loadavg


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the server's files differ from it (others edit in parallel)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "server_files_modified": git("status", "--porcelain", "--", "wirthforge_ws", "ws_server.py").splitlines(),
    }


def environment() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("websockets", "uvicorn", "uvloop", "fastapi", "starlette", "orjson", "jsonschema-rs", "jsonschema"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        "git": git_state(),
        "nproc": NCPU,
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "libraries": versions,
        "loadavg_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_tables(results: dict[str, Any]) -> str:
    lines: list[str] = []
    env = results.get("environment", {})
    lines.append(
        f"Commit {env.get('git', {}).get('commit')} (server files modified: "
        f"{env.get('git', {}).get('server_files_modified') or 'none'}). "
        f"Machine: {env.get('nproc')} x {env.get('cpu_model')}, Python {env.get('python')}, "
        f"load average at start {env.get('loadavg_start')}, mode {'quick' if results.get('quick') else 'full'}"
    )
    lines.append("")
    runs = results.get("latency", []) + ([results["steady"]] if "steady" in results else [])
    if runs:
        lines.append(
            "| run | clients | proto | client procs | latency median / P99 / max (ms) | kernel-arrival median / P99 (ms) "
            "| Hz (clients) | Hz (/health) | frame gaps | tick lateness p50 / p99 / max (ms) "
            "| frame processing p50 / p99 (ms) | server CPU % core "
            "| client CPU % | other load % | RSS end (MiB) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            lat, kern, tl = r["latency_ms"], r["latency_kernel_arrival_ms"], r["tick_lateness_ms"]
            lines.append(
                f"| {r['label']} | {r['clients']} | {r['protocol']} | {r['client_processes']} "
                f"| {_f(lat['median'], 3)} / {_f(lat['p99'], 3)} / {_f(lat['max'], 3)} "
                f"| {_f(kern['median'], 3)} / {_f(kern['p99'], 3)} "
                f"| {_f(r['achieved_hz_clients']['mean'], 3)} | {_f(r['achieved_hz_health'], 3)} "
                f"| {r['frame_gaps']} | {_f(tl.get('p50'), 3)} / {_f(tl.get('p99'), 3)} / {_f(tl.get('max'), 3)} "
                f"| {_f(tl.get('processing_p50'), 3)} / {_f(tl.get('processing_p99'), 3)} "
                f"| {_f(r['server_cpu_pct_of_core'], 1)} | {_f(r['client_cpu_pct_of_core'], 1)} "
                f"| {_f(r['other_load_pct_of_core'], 1)} | {r['server_rss_kib']['end'] / 1024:.1f} |"
            )
        lines.append("")
    if "loops" in results:
        lines.append(
            "| event loop | clients | latency median / P99 / max (ms) | tick lateness p50 / p99 / max (ms) "
            "| Hz (/health) | server CPU % core | other load % |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for r in results["loops"]:
            lat, tl = r["latency_ms"], r["tick_lateness_ms"]
            lines.append(
                f"| {r['server_env'].get('WF_LOOP')} (running: {r.get('event_loop') or '?'}) | {r['clients']} "
                f"| {_f(lat['median'], 3)} / {_f(lat['p99'], 3)} / {_f(lat['max'], 3)} "
                f"| {_f(tl.get('p50'), 3)} / {_f(tl.get('p99'), 3)} / {_f(tl.get('max'), 3)} "
                f"| {_f(r['achieved_hz_health'], 3)} | {_f(r['server_cpu_pct_of_core'], 1)} "
                f"| {_f(r['other_load_pct_of_core'], 1)} |"
            )
        lines.append("")
    if "client" in results:
        lines.append("")
        lines.append("Latency through wirthforge_ws.client (protocol 1.1):")
        lines.append("| clients | median (ms) | P99 (ms) | max (ms) | Hz per client | frames missed |")
        lines.append("|---|---|---|---|---|---|")
        for r in results["client"]:
            lines.append(
                f"| {r['clients']} | {r['median_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                f"{r['rate_hz_min']}-{r['rate_hz_max']} | {r['frames_missed_max']} |"
            )
    if "deflate" in results:
        lines.append(
            "| permessage-deflate | clients | server CPU % core | CPU % per client (above idle) "
            "| wire bytes/s per client | JSON bytes/s per client | latency median / P99 (ms) |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        idle = results.get("cpu", {}).get("server_cpu_pct_of_core_median", 0.0)
        for r in results["deflate"]:
            lat = r["latency_ms"]
            per = (r["server_cpu_pct_of_core"] - idle) / r["clients"]
            lines.append(
                f"| {'on' if 'on' in r['label'] else 'off'} | {r['clients']} | {_f(r['server_cpu_pct_of_core'], 1)} "
                f"| {per:.2f} | {r['wire_bytes_per_client_per_s']} | {r['payload_bytes_per_client_per_s']} "
                f"| {_f(lat['median'], 3)} / {_f(lat['p99'], 3)} |"
            )
        lines.append("")
    if "cpu" in results:
        c = results["cpu"]
        lines.append(
            f"Idle server: {c['server_cpu_pct_of_core']} % of a core over the first {c['seconds']} s "
            f"({c['cpu_seconds']} s CPU at {c['clock_ticks_per_s']} ticks/s; all windows "
            f"{c['server_cpu_pct_of_core_all']} %, median {c['server_cpu_pct_of_core_median']} %); tick lateness "
            f"{c['tick_lateness_ms']} ms (p99 of each window {c['tick_lateness_p99_all']}); "
            f"RSS {c['rss_kib'] / 1024:.1f} MiB; other load up to {c['other_load_pct_of_core']} %"
        )
        lines.append("")
    if "memory" in results:
        m = results["memory"]
        for mode in ("control", "slow"):
            if mode in m:
                x = m[mode]
                lines.append(
                    f"Memory ({mode}): published {x['published_messages']} token_stream; RSS "
                    f"{x['rss_kib_before'] / 1024:.1f} -> peak {x['rss_kib_peak'] / 1024:.1f} -> "
                    f"{x['rss_kib_after'] / 1024:.1f} MiB; server closed {x['server_closed']}; client saw "
                    f"{x['client_close_code']} {x['client_close_reason']!r} / {x['client_lost']} "
                    f"after {x['client_lost_after_pause_s']} s (close initiated by server: "
                    f"{x['client_close_initiated_by_server']}); server decided to close within "
                    f"{x['server_closed_within_s_of_pause']} s of the pause; server connections after the "
                    f"client read again: {x['connections_after_client_read_again']}, after it closed: "
                    f"{x['connections_after_client_closed']}; outbox at end of publishing "
                    f"{x['queued_at_end_of_publishing']}"
                )
        lines.append("")
    if "micro" in results:
        m = results["micro"]
        lines.append("| in-process, per energy_update | median us | best us |")
        lines.append("|---|---|---|")
        for key, value in m.items():
            if isinstance(value, dict) and "median_us" in value and "best_us" in value:
                lines.append(f"| {key} | {value['median_us']} | {value['best_us']} |")
        fan = m["fanout"]
        for kind, label in (("fake", "fake subscriber (render + keep)"), ("conn", "real Connection.deliver (outbox)")):
            f = fan[kind]
            lines.append(
                f"| fan-out, {label}: publish to 1 / to 100 (median) | {f['publish_1_us']['median_us']} / "
                f"{f['publish_100_us']['median_us']} | per client {f['per_client_us']} |"
            )
        lines.append(
            f"| build+envelope+validate+serialise (1.1), sum of medians | {m['summary']['build_validate_serialise_1.1_us']} | target 200 |"
        )
        cold = m["cold_one_frame_per_16ms"]
        for key, value in cold.items():
            lines.append(
                f"| cold (one call per 16.7 ms): {key} median / p99 / max | {value['median']} / {value['p99']} "
                f"/ {value['max']} | |"
            )
        lines.append("")
    return "\n".join(lines)
