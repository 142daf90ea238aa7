"""The measured sections that run the server as a subprocess: latency, steady state, CPU, memory, loops, deflate, client library."""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.error
from collections import Counter
from typing import Any

from .common import CLK_TCK, NCPU, percentile, summarize
from .machine import loadavg, proc_cpu_seconds, proc_rss_kib, quiet_run, sleep_until_ns, system_cpu, wait_for_quiet
from .processes import _STARTED, SERVER_ENV, _server_process_class, collect_clients, running_server, start_clients


def health_lateness(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine /health tick-lateness windows (each covers the last 10 s): median p50, worst p99 and max."""
    windows = [s["frameLoop"]["tickLatenessMs"] for s in samples if s["frameLoop"]["tickLatenessMs"]["p50"] is not None]
    processing = [s["frameLoop"]["processingMs"] for s in samples if s["frameLoop"]["processingMs"]["p50"] is not None]
    if not windows:
        return {}
    return {
        "windows": len(windows),
        "p50": percentile([w["p50"] for w in windows], 0.5),
        "p99": max(w["p99"] for w in windows),
        "max": max(w["max"] for w in windows),
        "processing_p50": percentile([p["p50"] for p in processing], 0.5) if processing else None,
        "processing_p99": max(p["p99"] for p in processing) if processing else None,
        "processing_max": max(p["max"] for p in processing) if processing else None,
    }


def load_run(
    label: str,
    *,
    clients: int,
    protocol: str = "1.1",
    duration: float,
    procs: int = 1,
    env: dict[str, str] | None = None,
    deflate: bool = False,
    warmup: float = 2.0,
    health_every: float = 9.5,
    tmpdir: str = "",
) -> dict[str, Any]:
    """Start a server, connect *clients* from *procs* client processes, measure for *duration* seconds."""
    print(
        f"  - {label}: {clients} client(s), protocol {protocol}, {procs} client process(es), "
        f"{duration:g} s, server env {env or {}}{', client offers deflate' if deflate else ''}",
        flush=True,
    )
    with running_server(env) as server:
        pid = server.process.pid
        time.sleep(1.0)  # let startup work settle
        connect_allowance = 1.0 + 0.02 * clients if clients else 0.0
        window_start = time.time_ns() + int((connect_allowance + (warmup if clients else 1.0)) * 1e9)
        window_end = window_start + int(duration * 1e9)
        started = (
            start_clients(
                server.ws_url, clients, protocol, (window_start, window_end), procs, deflate=deflate, tmpdir=tmpdir
            )
            if clients
            else []
        )
        sleep_until_ns(window_start)
        cpu0, sys0, t0 = proc_cpu_seconds(pid), system_cpu(), time.monotonic()
        rss0 = proc_rss_kib(pid)
        h0 = server.health()
        h0_t = time.monotonic()
        samples = []
        k = 1
        while k < 1000:  # bounded: at most one sample per health_every seconds of the window
            at = window_start + int(k * health_every * 1e9)
            if at >= window_end - int(0.5e9):
                break
            sleep_until_ns(at)
            samples.append(server.health())
            k += 1
        sleep_until_ns(window_end)
        cpu1, sys1, t1 = proc_cpu_seconds(pid), system_cpu(), time.monotonic()
        rss1 = proc_rss_kib(pid)
        h1 = server.health()
        h1_t = time.monotonic()
        samples.append(h1)
        load = loadavg()
        client_results = collect_clients(started, timeout=duration + 30) if started else []
        loop_seen = server.event_loop

    elapsed = t1 - t0
    server_cpu_pct = 100.0 * (cpu1 - cpu0) / elapsed
    busy = (sys1[0] - sys0[0]) / max(sys1[1] - sys0[1], 1) * NCPU * 100.0  # % of one core, all processes
    client_cpu_pct = sum(100.0 * r["cpu_seconds_in_window"] / r["window_seconds"] for r in client_results)
    lat_user: list[float] = []
    lat_kernel: list[float] = []
    processing: list[float] = []
    conns: list[dict[str, Any]] = []
    for r in client_results:
        lat_user += r["lat_user_ms"]
        lat_kernel += r["lat_kernel_ms"]
        processing += r["processing_ms"]
        conns += r["connections"]
    rates = [
        (c["count"] - 1) / ((c["last_t"] - c["first_t"]) / 1e9)
        for c in conns
        if c["count"] > 1 and c["last_t"] > c["first_t"]
    ]
    fl0, fl1 = h0["frameLoop"], h1["frameLoop"]
    result: dict[str, Any] = {
        "label": label,
        "clients": clients,
        "protocol": protocol,
        "client_processes": len(client_results),
        "server_env": {**SERVER_ENV, **(env or {})},
        "event_loop": loop_seen,
        "deflate": deflate,
        "duration_s": round(elapsed, 3),
        "connected": sum(r["connected"] for r in client_results),
        "connect_failures": [f for r in client_results for f in r["failures"]],
        "all_connected_before_window": all(r["connected_before_window"] for r in client_results),
        "latency_ms": summarize(lat_user),
        "latency_kernel_arrival_ms": summarize(lat_kernel),
        "payload_processing_time_ms": summarize(processing, 4),
        "achieved_hz_clients": {
            "mean": round(statistics.fmean(rates), 3) if rates else None,
            "min": round(min(rates), 3) if rates else None,
        },
        "achieved_hz_health": round((fl1["ticks"] - fl0["ticks"]) / (h1_t - h0_t), 3),
        "frames_received": sum(c["count"] for c in conns),
        "frame_gaps": sum(c["gaps"] for c in conns),
        "frame_gap_events": sum(c["gap_events"] for c in conns),
        "frame_disorder": sum(c["disorder"] for c in conns),
        "server_frames_skipped": fl1["framesSkipped"] - fl0["framesSkipped"],
        "server_budget_overruns": fl1["budgetOverruns"] - fl0["budgetOverruns"],
        "coalesced_latest_wins": h1["messages"]["coalesced"].get("latest_wins", 0)
        - h0["messages"]["coalesced"].get("latest_wins", 0),
        "tick_lateness_ms": health_lateness(samples),
        "server_cpu_pct_of_core": round(server_cpu_pct, 2),
        "server_cpu_pct_per_client": round(server_cpu_pct / clients, 3) if clients else None,
        "client_cpu_pct_of_core": round(client_cpu_pct, 1),
        "machine_busy_pct_of_core": round(busy, 1),
        "other_load_pct_of_core": round(busy - server_cpu_pct - client_cpu_pct, 1),
        "steal_pct_of_core": round((sys1[2] - sys0[2]) / max(sys1[1] - sys0[1], 1) * NCPU * 100.0, 2),
        "loadavg_end": load,
        "server_rss_kib": {"start": rss0, "end": rss1},
        "wire_bytes_per_client_per_s": round(sum(c["wire_bytes"] for c in conns) / max(len(conns), 1) / elapsed),
        "payload_bytes_per_client_per_s": round(sum(c["payload_bytes"] for c in conns) / max(len(conns), 1) / elapsed),
        "message_types": dict(sum((Counter(c["types"]) for c in conns), Counter())),
    }
    lat = result["latency_ms"]
    print(
        f"      latency median {lat['median']} / p99 {lat['p99']} / max {lat['max']} ms; "
        f"{result['achieved_hz_clients']['mean']} Hz; gaps {result['frame_gaps']}; "
        f"server CPU {result['server_cpu_pct_of_core']} %; client CPU {result['client_cpu_pct_of_core']} %; "
        f"other load {result['other_load_pct_of_core']} %; lateness {result['tick_lateness_ms'].get('p99')} ms p99",
        flush=True,
    )
    return result


# -- sections ---------------------------------------------------------------------


def section_latency(quick: bool, tmpdir: str) -> list[dict[str, Any]]:
    duration = 5.0 if quick else 20.0
    plan = [
        ("1.1", 1, 1),
        ("1.1", 10, 1),
        ("1.1", 100, 1),
        ("1.1", 100, 2),
        ("1.0", 1, 1),
        ("1.0", 10, 1),
        ("1.0", 100, 2),
    ]
    return [
        quiet_run(
            lambda p=p, n=n, procs=procs: load_run(
                f"latency {p} x{n} ({procs}p)", clients=n, protocol=p, procs=procs, duration=duration, tmpdir=tmpdir
            )
        )
        for p, n, procs in plan
    ]


def section_steady(quick: bool, tmpdir: str) -> dict[str, Any]:
    duration = 10.0 if quick else 60.0
    result = quiet_run(lambda: load_run("steady state", clients=1, protocol="1.1", duration=duration, tmpdir=tmpdir))
    result["target_hz"] = "60.00 +- 0.05"
    rate = result["achieved_hz_clients"]["mean"]
    result["within_target"] = (
        rate is not None and abs(rate - 60.0) <= 0.05 and abs(result["achieved_hz_health"] - 60.0) <= 0.05
    )
    return result


def section_cpu_idle(quick: bool) -> dict[str, Any]:
    return quiet_run(_cpu_idle)


def _cpu_idle() -> dict[str, Any]:
    """Three consecutive 10 s windows on one idle server; the first is the headline, all are kept."""
    seconds, windows = 10.0, 3
    print(f"  - idle server CPU: {windows} x {seconds:g} s", flush=True)
    samples = []
    with running_server() as server:
        pid = server.process.pid
        time.sleep(3.0)  # past startup
        rss_idle_start = proc_rss_kib(pid)
        for _ in range(windows):
            cpu0, sys0, t0 = proc_cpu_seconds(pid), system_cpu(), time.monotonic()
            time.sleep(seconds)
            cpu1, sys1, t1 = proc_cpu_seconds(pid), system_cpu(), time.monotonic()
            health = server.health()  # its lateness window is the last 10 s: the measured interval
            elapsed = t1 - t0
            pct = 100.0 * (cpu1 - cpu0) / elapsed
            busy = (sys1[0] - sys0[0]) / max(sys1[1] - sys0[1], 1) * NCPU * 100.0
            samples.append(
                {
                    "seconds": round(elapsed, 3),
                    "server_cpu_pct_of_core": round(pct, 2),
                    "cpu_seconds": round(cpu1 - cpu0, 3),
                    "other_load_pct_of_core": round(busy - pct, 1),
                    "tick_lateness_ms": health["frameLoop"]["tickLatenessMs"],
                    "processing_ms": health["frameLoop"]["processingMs"],
                }
            )
        rss = proc_rss_kib(pid)
        loop_name = server.event_loop
    first = samples[0]
    result = {
        **first,
        "clock_ticks_per_s": CLK_TCK,
        "windows": samples,
        "server_cpu_pct_of_core_all": [w["server_cpu_pct_of_core"] for w in samples],
        "server_cpu_pct_of_core_median": percentile([w["server_cpu_pct_of_core"] for w in samples], 0.5),
        "tick_lateness_p99_all": [w["tick_lateness_ms"]["p99"] for w in samples],
        "frames_skipped": health["frameLoop"]["framesSkipped"],
        "achieved_hz_health": health["frameLoop"]["achievedHz"],
        "rss_kib": rss,
        "rss_kib_after_startup": rss_idle_start,
        "event_loop": loop_name,
        "other_load_pct_of_core": max(w["other_load_pct_of_core"] for w in samples),
        "loadavg_end": loadavg(),
    }
    print(
        f"      {result['server_cpu_pct_of_core_all']} % of a core; lateness p99 {result['tick_lateness_p99_all']} ms; "
        f"RSS {rss} KiB; other load up to {result['other_load_pct_of_core']} %",
        flush=True,
    )
    return result


def _token_batch(start: int, batch: int) -> list[dict[str, Any]]:
    tokens = [f" token-{i:05d}-abc" for i in range(64)]  # about 1.2 KB per message
    return [
        {
            "type": "token_stream",
            "payload": {
                "tokens": tokens,
                "isComplete": False,
                "sessionId": f"bench-{start + i}",
                "modelId": "wirthforge-sim",
            },
        }
        for i in range(batch)
    ]


def section_memory(quick: bool, tmpdir: str) -> dict[str, Any]:
    """RSS with one client that stops reading while reliable messages are published (and a control run)."""
    pause_seconds = 10.0
    batch, interval = 10, 0.02  # 500 messages/s, about 0.6 MB/s
    out: dict[str, Any] = {
        "publish": {
            "batch": batch,
            "interval_s": interval,
            "message_bytes_approx": 1200,
            "pause_seconds": pause_seconds,
        }
    }
    for mode in ("control", "slow"):
        print(
            f"  - memory: {mode} client, publishing {batch} token_stream every {interval * 1000:g} ms "
            f"for {pause_seconds:g} s",
            flush=True,
        )
        with running_server(env={"WF_ENABLE_PUBLISH": "1"}) as server:
            pid = server.process.pid
            time.sleep(1.0)
            pause_at = time.time_ns() + int(2.0e9)
            window = (pause_at, pause_at + int((pause_seconds + 4.0) * 1e9))
            started = start_clients(
                server.ws_url,
                1,
                "1.1",
                window,
                1,
                slow_pause_at=pause_at if mode == "slow" else 0,
                slow_seconds=pause_seconds,
                tmpdir=tmpdir,
            )
            sleep_until_ns(pause_at)
            rss_before = proc_rss_kib(pid)
            h0 = server.health()
            samples = []
            published = 0
            failures = 0
            end = pause_at + int(pause_seconds * 1e9)
            next_post = time.time_ns()
            next_sample = time.time_ns()
            for _ in range(int(pause_seconds / interval) + 10):  # bounded by count and by time
                now = time.time_ns()
                if now >= end:
                    break
                if now >= next_sample:
                    h = server.health()
                    samples.append(
                        (
                            round((now - pause_at) / 1e9, 2),
                            proc_rss_kib(pid),
                            sum(h["messages"]["connectionsClosed"].values()),
                            sum(c["queued"] for c in h["connections"]["clients"]),
                        )
                    )
                    next_sample += int(0.5e9)
                try:
                    server.publish(_token_batch(published, batch), timeout=5)
                    published += batch
                except (OSError, urllib.error.URLError):
                    failures += 1
                next_post += int(interval * 1e9)
                sleep_until_ns(next_post)
            rss_end_publish = proc_rss_kib(pid)
            h_end = server.health()
            sleep_until_ns(window[1] - int(0.3e9))  # the client has read again for about 3.7 s
            rss_after = proc_rss_kib(pid)
            h1 = server.health()
            client = collect_clients(started, timeout=pause_seconds + 30)[0]["connections"][0]
            time.sleep(0.5)
            h2 = server.health()
        rss_peak = max([rss_before, rss_end_publish, rss_after] + [s[1] for s in samples])
        closed_at = next((t for t, _, c, _ in samples if c > sum(h0["messages"]["connectionsClosed"].values())), None)
        closed = {
            k: v - h0["messages"]["connectionsClosed"].get(k, 0) for k, v in h1["messages"]["connectionsClosed"].items()
        }
        out[mode] = {
            "published_messages": published,
            "publish_failures": failures,
            "rss_kib_before": rss_before,
            "rss_kib_peak": rss_peak,
            "rss_kib_end_of_publishing": rss_end_publish,
            "rss_kib_after": rss_after,
            "rss_growth_kib": rss_peak - rss_before,
            "rss_samples": samples,
            "server_closed": closed,
            "server_closed_within_s_of_pause": closed_at,
            "connections_at_end_of_publishing": h_end["connections"]["count"],
            "connections_after_client_read_again": h1["connections"]["count"],
            "connections_after_client_closed": h2["connections"]["count"],
            "queued_at_end_of_publishing": [c["queued"] for c in h_end["connections"]["clients"]],
            "client_close_code": client["close_code"],
            "client_close_reason": client["close_reason"],
            "client_close_initiated_by_server": client["close_by_server"],
            "client_close_after_pause_s": round((client["close_at"] - pause_at) / 1e9, 2)
            if client["close_at"]
            else None,
            "client_lost": client["lost_error"],
            "client_lost_after_pause_s": round((client["lost_at"] - pause_at) / 1e9, 2) if client["lost_at"] else None,
            "client_bytes_total": client["total_bytes"],
            "client_bytes_after_resume": client["bytes_after_resume"],
        }
        print(
            f"      published {published}; RSS {rss_before} -> peak {rss_peak} -> {rss_after} KiB; "
            f"server closed {closed}; client saw close {client['close_code']} {client['close_reason']!r} "
            f"/ {client['lost_error']}",
            flush=True,
        )
    return out


def section_loops(quick: bool, tmpdir: str) -> list[dict[str, Any]]:
    duration = 5.0 if quick else 20.0
    results = []
    for n in (0, 1, 10):
        for loop_name in ("uvloop", "asyncio"):
            results.append(
                quiet_run(
                    lambda n=n, loop_name=loop_name: load_run(
                        f"loop {loop_name} x{n}",
                        clients=n,
                        protocol="1.1",
                        duration=duration if n else 10.0,
                        env={"WF_LOOP": loop_name},
                        tmpdir=tmpdir,
                    )
                )
            )
    return results


def section_deflate(quick: bool, tmpdir: str, clients: int = 10) -> list[dict[str, Any]]:
    duration = 5.0 if quick else 10.0
    results = []
    for on in (False, True):
        results.append(
            quiet_run(
                lambda on=on: load_run(
                    f"permessage-deflate {'on' if on else 'off'} x{clients}",
                    clients=clients,
                    protocol="1.1",
                    duration=duration,
                    env={"WF_PERMESSAGE_DEFLATE": "1" if on else "0"},
                    deflate=True,
                    tmpdir=tmpdir,
                )
            )
        )
    return results


# -- the in-process microbenchmark --------------------------------------------------


def section_client(quick: bool) -> list[dict[str, Any]]:
    """Latency as the project's own client sees it (wirthforge_ws.client, as test_latency.py uses it).

    The load client above reads raw sockets to time arrivals before any
    parsing; this section measures through the real client library instead,
    reconnect logic, statistics and all, in the harness process.
    """
    from test_latency import measure

    ServerProcess = _server_process_class()
    duration = 5.0 if quick else 20.0
    runs = []
    for clients in (1, 10):
        wait_for_quiet()
        server = ServerProcess(env=dict(SERVER_ENV))
        _STARTED.append(server)
        with server:
            report = asyncio.run(measure(server.ws_url, clients=clients, duration=duration, protocol="1.1"))
        summary = report.summary()
        print(
            f"  - client library, {clients} client(s): median {summary['median_ms']} ms, "
            f"P99 {summary['p99_ms']} ms, {summary['rate_hz_min']}..{summary['rate_hz_max']} Hz, "
            f"{summary['frames_missed_max']} frames missed",
            flush=True,
        )
        runs.append({"duration_s": duration, **summary})
    return runs
