#!/usr/bin/env python
"""Benchmarks of the WIRTHFORGE real-time transport (how each number is taken: docs/PERFORMANCE.md).

    .venv/bin/python benchmarks/bench.py                 # full run, 9-15 minutes
    .venv/bin/python benchmarks/bench.py --quick         # about 4 minutes
    .venv/bin/python benchmarks/bench.py --only micro,cpu --out /tmp/fragment.md
    .venv/bin/python benchmarks/bench.py --only cpu,deflate --deflate-clients 50 --results /tmp/deflate.json

Sections (``--only`` takes a comma-separated subset):

``latency``  1 / 10 / 100 clients, protocol 1.1 and 1.0: client receive time
             minus message timestamp for energy_update, achieved Hz, frame gaps,
             server CPU and RSS.
``steady``   one client for 60 s: achieved rate (client count and /health),
             tick lateness.
``micro``    in-process: build + validate + serialise of an energy_update,
             fastjsonschema vs jsonschema, orjson vs json, fan-out per client.
``cpu``      idle server CPU, 3 x 10 s (CPU under load comes from ``latency``).
``memory``   RSS at idle / 100 clients (from ``latency``) and with a client that
             stops reading while reliable messages are published.
``loops``    the server with uvloop vs the stdlib asyncio loop (setting WF_LOOP).
``deflate``  permessage-deflate on vs off: server CPU per client and bytes.

Except ``micro`` (in the harness's own process, no server), the server runs
as a separate process (``tests/server_process.py``: ``python ws_server.py``
with ``WF_SEED=7`` plus any ``WF_*`` variables of the harness's environment)
and the load clients in one or two further processes. The machine is shared:
before each run the harness waits (``--wait-quiet``) until other processes use
less than ``--quiet-threshold`` % of a core, and repeats a run during which
they used more (``--retries``), keeping the quietest. Results go to
``benchmarks/results.json`` (and to ``--out``: ``.json`` for the raw results,
anything else for Markdown tables). Every subprocess is stopped on exit,
Ctrl-C, SIGTERM or error.

Internal entry point (started by the harness itself): ``bench.py _client ...``
(a load client process).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import atexit
import contextlib
import gc
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_FILE = Path(__file__).resolve()
ROOT = BENCH_FILE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_JSON = BENCH_FILE.parent / "results.json"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: kernel receive timestamps (ns)
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

# ---------------------------------------------------------------------------
# Small statistics helpers


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (the server's /health uses the same rule)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


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


# ===========================================================================
# The load client (runs in its own process: ``bench.py _client``)
#
# One asyncio process holds many WebSocket connections. Each connection is a
# raw non-blocking socket driven by websockets' sans-I/O ClientProtocol, so
# the receive time is taken with time.time_ns() the moment the bytes are read
# from the socket, before any WebSocket or JSON parsing. The kernel's own
# arrival time of the data (SO_TIMESTAMPNS) is recorded too: the difference
# between the two is the time the data waited for the client process.


class _ClientConnection:
    def __init__(self, index: int, url: str, protocol: str, deflate: bool, window: tuple[int, int]) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
        from websockets.uri import parse_uri

        self.index = index
        self.uri = parse_uri(url)
        subprotocols = {"1.1": ["wirthforge.1.1"], "1.0": ["wirthforge.1.0"], "none": None}[protocol]
        extensions = [ClientPerMessageDeflateFactory()] if deflate else None
        self.ws = ClientProtocol(self.uri, subprotocols=subprotocols, extensions=extensions, max_size=None)
        self.window_start, self.window_end = window
        self.sock: socket.socket | None = None
        self.loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.reading = False
        # measurements (energy_update inside the recording window)
        self.lat_user = array.array("d")
        self.lat_kernel = array.array("d")
        self.count = 0
        self.first_t = 0
        self.last_t = 0
        self.first_fn: int | None = None
        self.last_fn_window: int | None = None
        self.last_fn: int | None = None
        self.gaps = 0  # frames missing between consecutive energy_update (frameNumber)
        self.gap_events = 0
        self.disorder = 0  # frameNumber not increasing
        self.wire_bytes = 0  # bytes read from the socket inside the window
        self.payload_bytes = 0  # JSON text bytes inside the window
        self.types: Counter[str] = Counter()
        self.processing_ms = array.array("d")  # payload.processingTime of each energy_update
        # slow-consumer bookkeeping
        self.total_bytes = 0
        self.bytes_after_resume = 0
        self.resumed_at = 0
        self.paused_at = 0
        self.close_at = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.close_by_server = False
        self.lost_error: str | None = None
        self.lost_at = 0
        self.subprotocol: str | None = None
        self.partial_sends = 0

    async def start(self, timeout: float) -> None:
        host, port = self.uri.host, self.uri.port
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock = sock
        await asyncio.wait_for(self.loop.sock_connect(sock, (host, port)), timeout)
        self.ws.send_request(self.ws.connect())
        self._flush()
        self.resume()
        await asyncio.wait_for(self.opened, timeout)

    def pause(self) -> None:
        if self.reading and self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False
            self.paused_at = self.paused_at or time.time_ns()

    def resume(self) -> None:
        if not self.reading and self.sock is not None and not self.lost.done():
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self.reading = True
            if self.paused_at and not self.resumed_at:
                self.resumed_at = time.time_ns()

    def _flush(self) -> None:
        assert self.sock is not None
        for chunk in self.ws.data_to_send():
            if not chunk:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)
                continue
            try:
                sent = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return
            if sent < len(chunk):  # only tiny frames (pong, close) are ever sent
                self.partial_sends += 1

    def _on_readable(self) -> None:
        t = time.time_ns()
        sock = self.sock
        assert sock is not None
        try:
            data, ancillary, _, _ = sock.recvmsg(262144, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._connection_lost(type(error).__name__)
            return
        kernel_t = 0
        for level, kind, cdata in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                seconds, nanoseconds = struct.unpack_from("qq", cdata)
                kernel_t = seconds * 1_000_000_000 + nanoseconds
        if not data:
            self.ws.receive_eof()
            self._drain_events(t, kernel_t, False)
            self._connection_lost("eof")
            return
        self.total_bytes += len(data)
        if self.resumed_at:
            self.bytes_after_resume += len(data)
        in_window = self.window_start <= t < self.window_end
        if in_window:
            self.wire_bytes += len(data)
        self.ws.receive_data(data)
        self._drain_events(t, kernel_t, in_window)
        self._flush()

    def _drain_events(self, t: int, kernel_t: int, in_window: bool) -> None:
        import orjson
        from websockets.frames import Opcode
        from websockets.http11 import Response

        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    if not self.opened.done():
                        self.opened.set_exception(self.ws.handshake_exc)
                else:
                    self.subprotocol = event.headers.get("Sec-WebSocket-Protocol")
                    if not self.opened.done():
                        self.opened.set_result(None)
                continue
            if event.opcode is Opcode.CLOSE:
                if self.ws.close_rcvd is not None and self.close_code is None:
                    self.close_at = t
                    self.close_code = self.ws.close_rcvd.code
                    self.close_reason = self.ws.close_rcvd.reason
                    self.close_by_server = bool(getattr(self.ws, "close_rcvd_then_sent", False))
                continue
            if event.opcode is not Opcode.TEXT:
                continue
            message = orjson.loads(event.data)
            kind = message.get("type")
            if kind == "energy_update":
                frame_number = message["frameNumber"]
                if in_window:
                    timestamp = message["timestamp"]
                    self.lat_user.append(t / 1e6 - timestamp)
                    if kernel_t:
                        self.lat_kernel.append(kernel_t / 1e6 - timestamp)
                    self.processing_ms.append(message["payload"]["processingTime"])
                    if self.count == 0:
                        self.first_t = t
                        self.first_fn = frame_number
                    self.count += 1
                    self.last_t = t
                    self.last_fn_window = frame_number
                    if self.last_fn is not None:
                        step = frame_number - self.last_fn
                        if step > 1:
                            self.gaps += step - 1
                            self.gap_events += 1
                        elif step <= 0:
                            self.disorder += 1
                self.last_fn = frame_number
            if in_window:
                self.types[kind] += 1
                self.payload_bytes += len(event.data)

    def _connection_lost(self, why: str) -> None:
        self.pause()
        if not self.lost.done():
            self.lost_error = why
            self.lost_at = time.time_ns()
            self.lost.set_result(None)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        if self.sock is not None:
            self.sock.close()

    async def close(self) -> None:
        from websockets.protocol import State

        if self.sock is None or self.lost.done():
            return
        if self.ws.state is State.OPEN:
            self.ws.send_close(1000)
            self._flush()
        self.resume()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), 1.0)
        self._connection_lost("closed by client")

    def report(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "subprotocol": self.subprotocol,
            "count": self.count,
            "first_t": self.first_t,
            "last_t": self.last_t,
            "first_fn": self.first_fn,
            "last_fn": self.last_fn_window,
            "gaps": self.gaps,
            "gap_events": self.gap_events,
            "disorder": self.disorder,
            "wire_bytes": self.wire_bytes,
            "payload_bytes": self.payload_bytes,
            "types": dict(self.types),
            "total_bytes": self.total_bytes,
            "bytes_after_resume": self.bytes_after_resume,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "close_by_server": self.close_by_server,
            "close_at": self.close_at,
            "paused_at": self.paused_at,
            "resumed_at": self.resumed_at,
            "lost_error": self.lost_error,
            "lost_at": self.lost_at,
            "partial_sends": self.partial_sends,
        }


async def _client_main(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    window = (args.record_start, args.record_end)
    connections = [_ClientConnection(i, args.url, args.protocol, args.deflate, window) for i in range(args.n)]
    connect_started = time.time_ns()
    outcomes = await asyncio.gather(*(c.start(args.connect_timeout) for c in connections), return_exceptions=True)
    connected_at = time.time_ns()
    failures = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]

    cpu: dict[str, float] = {}

    def snap(key: str) -> None:
        cpu[key] = time.process_time()

    loop.call_later(max((args.record_start - time.time_ns()) / 1e9, 0.0), snap, "start")
    loop.call_later(max((args.record_end - time.time_ns()) / 1e9, 0.0), snap, "end")

    if args.slow_pause_at:
        # One slow consumer: stop reading for slow_seconds, then read again.
        slow = connections[0]
        loop.call_later(max((args.slow_pause_at - time.time_ns()) / 1e9, 0.0), slow.pause)
        loop.call_later(max((args.slow_pause_at - time.time_ns()) / 1e9 + args.slow_seconds, 0.0), slow.resume)

    await asyncio.sleep(max((args.record_end - time.time_ns()) / 1e9, 0.0) + 0.05)
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    snap("end") if "end" not in cpu else None
    snap("start") if "start" not in cpu else None
    lat_user = array.array("d")
    lat_kernel = array.array("d")
    processing = array.array("d")
    for c in connections:
        lat_user.extend(c.lat_user)
        lat_kernel.extend(c.lat_kernel)
        processing.extend(c.processing_ms)
    return {
        "n": args.n,
        "connected": args.n - len(failures),
        "failures": failures[:5],
        "connect_seconds": (connected_at - connect_started) / 1e9,
        "connected_before_window": connected_at <= args.record_start,
        "cpu_seconds_in_window": cpu["end"] - cpu["start"],
        "window_seconds": (args.record_end - args.record_start) / 1e9,
        "lat_user_ms": lat_user.tolist(),
        "lat_kernel_ms": lat_kernel.tolist(),
        "processing_ms": processing.tolist(),
        "connections": [c.report() for c in connections],
    }


def client_entry(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py _client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--protocol", choices=("1.1", "1.0", "none"), default="1.1")
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--record-start", type=int, required=True, help="wall clock, ns")
    parser.add_argument("--record-end", type=int, required=True, help="wall clock, ns")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--slow-pause-at", type=int, default=0, help="wall clock ns at which connection 0 stops reading")
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    hard_limit = (args.record_end - time.time_ns()) / 1e9 + 15.0
    if hard_limit > 3600 or hard_limit < 0:
        raise SystemExit("recording window must end within the hour")
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))  # bounded whatever happens
    signal.alarm(int(hard_limit) + 1)
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(_client_main(args))
    else:
        result = asyncio.run(_client_main(args))
    import orjson

    Path(args.out).write_bytes(orjson.dumps(result))


# ===========================================================================
# The harness


_STARTED: list[Any] = []  # ServerProcess instances and client Popen objects, for cleanup


def _stop_everything() -> None:
    """Stop every subprocess this harness started (idempotent)."""
    while _STARTED:
        item = _STARTED.pop()
        try:
            if isinstance(item, subprocess.Popen):
                if item.poll() is None:
                    item.terminate()
                    try:
                        item.wait(3)
                    except subprocess.TimeoutExpired:
                        item.kill()
                        item.wait(3)
            else:  # ServerProcess
                try:
                    item.stop(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                with contextlib.suppress(OSError):
                    item._log.close()
                    os.unlink(item._log.name)
        except Exception as error:  # keep stopping the others
            print(f"cleanup: {error!r}", file=sys.stderr)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _server_process_class() -> type:
    from tests.server_process import ServerProcess

    return ServerProcess


SERVER_ENV = {"WF_SEED": "7"}  # the simulated model does the same thing in every run


def event_loop_of(pid: int) -> str:
    """Which event loop a server process runs: uvloop's extension is mapped only when uvicorn chose it."""
    with contextlib.suppress(OSError):
        if "uvloop/loop." in Path(f"/proc/{pid}/maps").read_text():
            return "uvloop"
        return "asyncio"
    return "?"


@contextlib.contextmanager
def running_server(env: dict[str, str] | None = None) -> Iterator[Any]:
    """The real server (``python ws_server.py`` via tests/server_process.py) with WF_* settings in *env*."""
    server = _server_process_class()(env={**SERVER_ENV, **(env or {})})
    _STARTED.append(server)
    server.start()
    try:
        server.event_loop = event_loop_of(server.process.pid)
        yield server
    finally:
        server.stop(timeout=5)
        with contextlib.suppress(ValueError):
            _STARTED.remove(server)
        with contextlib.suppress(OSError):
            server._log.close()
            os.unlink(server._log.name)


# -- /proc readers ------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (all its threads)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
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
            print(f"      (machine busy: {busy:.0f} % of a core used by others; waiting up to "
                  f"{QUIET['max_wait']:g} s for < {QUIET['threshold']:g} %)", flush=True)
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
            print(f"      noisy (others used {result.get('other_load_pct_of_core')} % of a core): repeating", flush=True)
    assert best is not None
    best["attempts_other_load_pct"] = attempts
    best["noisy"] = best.get("other_load_pct_of_core", 0) > QUIET["threshold"]
    return best


# -- one load run ---------------------------------------------------------------


def start_clients(url: str, n: int, protocol: str, window: tuple[int, int], procs: int = 1,
                  deflate: bool = False, slow_pause_at: int = 0, slow_seconds: float = 10.0,
                  tmpdir: str = "") -> list[tuple[subprocess.Popen[bytes], str]]:
    started = []
    sizes = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    for i, size in enumerate(s for s in sizes if s > 0):
        out = os.path.join(tmpdir, f"client-{i}-{time.time_ns()}.json")
        command = [sys.executable, str(BENCH_FILE), "_client", "--url", url, "--n", str(size), "--protocol", protocol,
                   "--record-start", str(window[0]), "--record-end", str(window[1]), "--out", out]
        if deflate:
            command.append("--deflate")
        if slow_pause_at:
            command += ["--slow-pause-at", str(slow_pause_at), "--slow-seconds", str(slow_seconds)]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _STARTED.append(process)
        started.append((process, out))
    return started


def collect_clients(started: list[tuple[subprocess.Popen[bytes], str]], timeout: float) -> list[dict[str, Any]]:
    results = []
    for process, out in started:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate(timeout=5)
        with contextlib.suppress(ValueError):
            _STARTED.remove(process)
        if process.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"load client failed ({process.returncode}): {stderr.decode(errors='replace')[-2000:]}")
        results.append(json.loads(Path(out).read_text()))
        os.unlink(out)
    return results


def health_lateness(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine /health tick-lateness windows (each covers the last 10 s): median p50, worst p99 and max."""
    windows = [s["frameLoop"]["tickLatenessMs"] for s in samples if s["frameLoop"]["tickLatenessMs"]["p50"] is not None]
    processing = [s["frameLoop"]["processingMs"] for s in samples if s["frameLoop"]["processingMs"]["p50"] is not None]
    if not windows:
        return {}
    return {
        "windows": len(windows),
        "p50": statistics.median(w["p50"] for w in windows),
        "p99": max(w["p99"] for w in windows),
        "max": max(w["max"] for w in windows),
        "processing_p50": statistics.median(p["p50"] for p in processing) if processing else None,
        "processing_p99": max(p["p99"] for p in processing) if processing else None,
        "processing_max": max(p["max"] for p in processing) if processing else None,
    }


def load_run(label: str, *, clients: int, protocol: str = "1.1", duration: float, procs: int = 1,
             env: dict[str, str] | None = None, deflate: bool = False,
             warmup: float = 2.0, health_every: float = 9.5, tmpdir: str = "") -> dict[str, Any]:
    """Start a server, connect *clients* from *procs* client processes, measure for *duration* seconds."""
    print(f"  - {label}: {clients} client(s), protocol {protocol}, {procs} client process(es), "
          f"{duration:g} s, server env {env or {}}{', client offers deflate' if deflate else ''}", flush=True)
    with running_server(env) as server:
        pid = server.process.pid
        time.sleep(1.0)  # let startup work settle
        connect_allowance = 1.0 + 0.02 * clients if clients else 0.0
        window_start = time.time_ns() + int((connect_allowance + (warmup if clients else 1.0)) * 1e9)
        window_end = window_start + int(duration * 1e9)
        started = start_clients(server.ws_url, clients, protocol, (window_start, window_end), procs,
                                deflate=deflate, tmpdir=tmpdir) if clients else []
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
    rates = [(c["count"] - 1) / ((c["last_t"] - c["first_t"]) / 1e9) for c in conns
             if c["count"] > 1 and c["last_t"] > c["first_t"]]
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
    print(f"      latency median {lat['median']} / p99 {lat['p99']} / max {lat['max']} ms; "
          f"{result['achieved_hz_clients']['mean']} Hz; gaps {result['frame_gaps']}; "
          f"server CPU {result['server_cpu_pct_of_core']} %; client CPU {result['client_cpu_pct_of_core']} %; "
          f"other load {result['other_load_pct_of_core']} %; lateness {result['tick_lateness_ms'].get('p99')} ms p99",
          flush=True)
    return result


# -- sections ---------------------------------------------------------------------


def section_latency(quick: bool, tmpdir: str) -> list[dict[str, Any]]:
    duration = 5.0 if quick else 20.0
    plan = [
        ("1.1", 1, 1), ("1.1", 10, 1), ("1.1", 100, 1), ("1.1", 100, 2),
        ("1.0", 1, 1), ("1.0", 10, 1), ("1.0", 100, 2),
    ]
    return [quiet_run(lambda p=p, n=n, procs=procs: load_run(
        f"latency {p} x{n} ({procs}p)", clients=n, protocol=p, procs=procs, duration=duration, tmpdir=tmpdir))
        for p, n, procs in plan]


def section_steady(quick: bool, tmpdir: str) -> dict[str, Any]:
    duration = 10.0 if quick else 60.0
    result = quiet_run(lambda: load_run("steady state", clients=1, protocol="1.1", duration=duration, tmpdir=tmpdir))
    result["target_hz"] = "60.00 +- 0.05"
    rate = result["achieved_hz_clients"]["mean"]
    result["within_target"] = rate is not None and abs(rate - 60.0) <= 0.05 and abs(result["achieved_hz_health"] - 60.0) <= 0.05
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
            samples.append({"seconds": round(elapsed, 3), "server_cpu_pct_of_core": round(pct, 2),
                            "cpu_seconds": round(cpu1 - cpu0, 3), "other_load_pct_of_core": round(busy - pct, 1),
                            "tick_lateness_ms": health["frameLoop"]["tickLatenessMs"],
                            "processing_ms": health["frameLoop"]["processingMs"]})
        rss = proc_rss_kib(pid)
        loop_name = server.event_loop
    first = samples[0]
    result = {
        **first,
        "clock_ticks_per_s": CLK_TCK,
        "windows": samples,
        "server_cpu_pct_of_core_all": [w["server_cpu_pct_of_core"] for w in samples],
        "server_cpu_pct_of_core_median": statistics.median(w["server_cpu_pct_of_core"] for w in samples),
        "tick_lateness_p99_all": [w["tick_lateness_ms"]["p99"] for w in samples],
        "frames_skipped": health["frameLoop"]["framesSkipped"],
        "achieved_hz_health": health["frameLoop"]["achievedHz"],
        "rss_kib": rss,
        "rss_kib_after_startup": rss_idle_start,
        "event_loop": loop_name,
        "other_load_pct_of_core": max(w["other_load_pct_of_core"] for w in samples),
        "loadavg_end": loadavg(),
    }
    print(f"      {result['server_cpu_pct_of_core_all']} % of a core; lateness p99 {result['tick_lateness_p99_all']} ms; "
          f"RSS {rss} KiB; other load up to {result['other_load_pct_of_core']} %", flush=True)
    return result


def _token_batch(start: int, batch: int) -> list[dict[str, Any]]:
    tokens = [f" token-{i:05d}-abc" for i in range(64)]  # about 1.2 KB per message
    return [{"type": "token_stream",
             "payload": {"tokens": tokens, "isComplete": False, "sessionId": f"bench-{start + i}",
                         "modelId": "wirthforge-sim"}} for i in range(batch)]


def section_memory(quick: bool, tmpdir: str) -> dict[str, Any]:
    """RSS with one client that stops reading while reliable messages are published (and a control run)."""
    pause_seconds = 10.0
    batch, interval = 10, 0.02  # 500 messages/s, about 0.6 MB/s
    out: dict[str, Any] = {"publish": {"batch": batch, "interval_s": interval, "message_bytes_approx": 1200,
                                       "pause_seconds": pause_seconds}}
    for mode in ("control", "slow"):
        print(f"  - memory: {mode} client, publishing {batch} token_stream every {interval * 1000:g} ms "
              f"for {pause_seconds:g} s", flush=True)
        with running_server(env={"WF_ENABLE_PUBLISH": "1"}) as server:
            pid = server.process.pid
            time.sleep(1.0)
            pause_at = time.time_ns() + int(2.0e9)
            window = (pause_at, pause_at + int((pause_seconds + 4.0) * 1e9))
            started = start_clients(server.ws_url, 1, "1.1", window, 1,
                                    slow_pause_at=pause_at if mode == "slow" else 0,
                                    slow_seconds=pause_seconds, tmpdir=tmpdir)
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
                    samples.append((round((now - pause_at) / 1e9, 2), proc_rss_kib(pid),
                                    sum(h["messages"]["connectionsClosed"].values()),
                                    sum(c["queued"] for c in h["connections"]["clients"])))
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
        closed = {k: v - h0["messages"]["connectionsClosed"].get(k, 0)
                  for k, v in h1["messages"]["connectionsClosed"].items()}
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
            "client_close_after_pause_s": round((client["close_at"] - pause_at) / 1e9, 2) if client["close_at"] else None,
            "client_lost": client["lost_error"],
            "client_lost_after_pause_s": round((client["lost_at"] - pause_at) / 1e9, 2) if client["lost_at"] else None,
            "client_bytes_total": client["total_bytes"],
            "client_bytes_after_resume": client["bytes_after_resume"],
        }
        print(f"      published {published}; RSS {rss_before} -> peak {rss_peak} -> {rss_after} KiB; "
              f"server closed {closed}; client saw close {client['close_code']} {client['close_reason']!r} "
              f"/ {client['lost_error']}", flush=True)
    return out


def section_loops(quick: bool, tmpdir: str) -> list[dict[str, Any]]:
    duration = 5.0 if quick else 20.0
    results = []
    for n in (0, 1, 10):
        for loop_name in ("uvloop", "asyncio"):
            results.append(quiet_run(lambda n=n, loop_name=loop_name: load_run(
                f"loop {loop_name} x{n}", clients=n, protocol="1.1", duration=duration if n else 10.0,
                env={"WF_LOOP": loop_name}, tmpdir=tmpdir)))
    return results


def section_deflate(quick: bool, tmpdir: str, clients: int = 10) -> list[dict[str, Any]]:
    duration = 5.0 if quick else 10.0
    results = []
    for on in (False, True):
        results.append(quiet_run(lambda on=on: load_run(
            f"permessage-deflate {'on' if on else 'off'} x{clients}", clients=clients, protocol="1.1", duration=duration,
            env={"WF_PERMESSAGE_DEFLATE": "1" if on else "0"}, deflate=True, tmpdir=tmpdir)))
    return results


# -- the in-process microbenchmark --------------------------------------------------


def _time_per_call(fn: Callable[[], Any], n: int, rounds: int = 7) -> dict[str, float]:
    """Median and best of *rounds* rounds of *n* calls, in microseconds per call."""
    for _ in range(min(n, 2000)):
        fn()
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        per_call.append((time.perf_counter_ns() - start) / n / 1000.0)
    return {"median_us": round(statistics.median(per_call), 3), "best_us": round(min(per_call), 3)}


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
        print(f"  - client library, {clients} client(s): median {summary['median_ms']} ms, "
              f"P99 {summary['p99_ms']} ms, {summary['rate_hz_min']}..{summary['rate_hz_max']} Hz, "
              f"{summary['frames_missed_max']} frames missed", flush=True)
        runs.append({"duration_s": duration, **summary})
    return runs


def section_micro(quick: bool) -> dict[str, Any]:
    print("  - in-process microbenchmark (build / validate / serialise / fan-out)", flush=True)
    import orjson
    import jsonschema

    from wirthforge_ws import messages
    from wirthforge_ws.connection import ConnectOptions, Connection
    from wirthforge_ws.hub import Hub
    from wirthforge_ws.schemas import SchemaSet, reference_validator
    from wirthforge_ws.settings import Settings
    from wirthforge_ws.sources import SimulatedModel

    n = 3000 if quick else 20000
    settings = Settings()
    schemas = SchemaSet()
    distribution = {"generation": 0.412345, "attention": 0.123456, "reasoning": 0.101234}

    def build(frame: int = 1042) -> Any:
        return messages.energy_update(frame_number=frame, total_energy=0.6234567, delta_energy=0.0131234,
                                      tokens_generated=1, processing_time_ms=0.0512, model_id="wirthforge-sim",
                                      distribution=distribution)

    event = build()
    ts = messages.now_ms()
    msg11 = messages.envelope("1.1", event, ts, 48211)
    msg10 = messages.envelope("1.0", event, ts, 48211)
    draft7_11 = reference_validator("1.1", "energy_update")
    draft7_10 = reference_validator("1.0", "energy_update")
    upstream_path = Path("/work/shared/reference/WF-TECH-003-event-schemas.json")
    upstream = json.loads(upstream_path.read_text()) if upstream_path.exists() else None
    r: dict[str, Any] = {"iterations": n, "message_bytes": {"1.1": len(orjson.dumps(msg11)),
                                                            "1.0": len(orjson.dumps(msg10))}}
    t = _time_per_call
    r["build_payload"] = t(build, n)
    r["envelope_1.1"] = t(lambda: messages.envelope("1.1", event, ts, 48211), n)
    r["envelope_1.0"] = t(lambda: messages.envelope("1.0", event, ts, 48211), n)
    r["validate_fastjsonschema_1.1"] = t(lambda: schemas.validate_outbound("1.1", msg11), n)
    r["validate_fastjsonschema_1.0"] = t(lambda: schemas.validate_outbound("1.0", msg10), n)
    r["validate_jsonschema_draft7_reused_1.1"] = t(lambda: draft7_11.validate(msg11), max(n // 20, 200))
    r["validate_jsonschema_draft7_reused_1.0"] = t(lambda: draft7_10.validate(msg10), max(n // 20, 200))
    if upstream is not None:
        upstream_validator = jsonschema.Draft7Validator(upstream)
        upstream_validator.validate(msg10)
        r["validate_jsonschema_upstream_whole_document_1.0"] = t(lambda: upstream_validator.validate(msg10),
                                                                  max(n // 50, 100))
    r["serialise_orjson_1.1"] = t(lambda: orjson.dumps(msg11).decode(), n)
    r["serialise_json_dumps_1.1"] = t(lambda: json.dumps(msg11), n)
    r["serialise_json_dumps_compact_1.1"] = t(lambda: json.dumps(msg11, separators=(",", ":")), n)

    class FakeSubscriber:
        __slots__ = ("version", "hub", "last")

        def __init__(self, hub: Hub, version: str) -> None:
            self.version, self.hub, self.last = version, hub, None

        def deliver(self, outbound: Any) -> None:  # what Connection.deliver does, minus the queue
            self.last = self.hub.render(outbound, self.version)

    def hub_with(subscribers: Sequence[tuple[str, str]]) -> tuple[Hub, list[Any]]:
        hub = Hub(schemas, history_messages=settings.history_messages, history_seconds=settings.history_seconds)
        subs: list[Any] = []
        for kind, version in subscribers:
            if kind == "fake":
                sub: Any = FakeSubscriber(hub, version)
            else:
                sub = Connection(None, hub=hub, settings=settings, version=version,  # type: ignore[arg-type]
                                 subprotocol=f"wirthforge.{version}",
                                 options=ConnectOptions.parse({}, settings, version),
                                 nominal_rates={"energy_update": 60.0, "energy_field": 10.0})
            hub.attach(sub, hub.plan_resume(("energy", "system"), None))
            subs.append(sub)
        return hub, subs

    frame = iter(range(10**9))

    hub2, _ = hub_with([("fake", "1.1"), ("fake", "1.0")])
    r["publish_build_both_versions"] = t(lambda: hub2.publish(build(next(frame))), n)
    hub1, _ = hub_with([("fake", "1.1")])
    r["publish_build_1.1_only"] = t(lambda: hub1.publish(build(next(frame))), n)

    def fanout(kind: str, count: int, iterations: int) -> dict[str, float]:
        hub, subs = hub_with([(kind, "1.1")] * count)
        outboxes = [s.outbox for s in subs] if kind == "conn" else []
        samples = []
        for i in range(iterations + 500):
            e = build(next(frame))
            start = time.perf_counter_ns()
            hub.publish(e)
            elapsed = time.perf_counter_ns() - start
            for outbox in outboxes:  # the writer tasks' part, not timed
                outbox.get_nowait()
            if i >= 500:
                samples.append(elapsed / 1000.0)
        samples.sort()
        return {"median_us": round(statistics.median(samples), 3), "p99_us": round(percentile(samples, 0.99), 3)}

    iterations = 2000 if quick else 10000
    fan: dict[str, Any] = {}
    for kind in ("fake", "conn"):
        one = fanout(kind, 1, iterations)
        hundred = fanout(kind, 100, iterations // 5)
        fan[kind] = {"publish_1_us": one, "publish_100_us": hundred,
                     "per_client_us": round((hundred["median_us"] - one["median_us"]) / 99, 3)}
    r["fanout"] = fan
    r["upstream_style_json_dumps_per_client_x100_us"] = t(lambda: [json.dumps(msg10) for _ in range(100)],
                                                         max(n // 100, 50))

    source = SimulatedModel("wirthforge-sim", council=True, seed=1, frame_rate=60.0, field_every_frames=6)
    clock = [0.0]

    def step() -> Any:
        clock[0] += 1 / 60
        return source.step(int(clock[0] * 60), clock[0])

    r["source_step"] = t(step, n)

    # "Cold": one frame every 16.7 ms as in the server, so caches and branch
    # predictors have been disturbed in between; closer to the in-situ cost.
    cold_hub, _ = hub_with([("fake", "1.1"), ("fake", "1.0")])
    cold_publish, cold_step = [], []
    for i in range(120 if quick else 300):  # bounded: about 5 s
        time.sleep(1 / 60)
        start = time.perf_counter_ns()
        cold_hub.publish(build(next(frame)))
        cold_publish.append((time.perf_counter_ns() - start) / 1000.0)
        time.sleep(1 / 60)
        start = time.perf_counter_ns()
        step()
        cold_step.append((time.perf_counter_ns() - start) / 1000.0)
    cold_publish.sort()
    cold_step.sort()
    r["cold_one_frame_per_16ms"] = {
        "publish_build_both_versions_us": {"median": round(statistics.median(cold_publish), 1),
                                           "p99": round(percentile(cold_publish, 0.99), 1),
                                           "max": round(cold_publish[-1], 1)},
        "source_step_us": {"median": round(statistics.median(cold_step), 1),
                           "p99": round(percentile(cold_step, 0.99), 1), "max": round(cold_step[-1], 1)},
    }

    build_us = r["build_payload"]["median_us"]
    b11 = build_us + r["validate_fastjsonschema_1.1"]["median_us"] + r["serialise_orjson_1.1"]["median_us"]
    r["summary"] = {
        "build_validate_serialise_1.1_us": round(b11 + r["envelope_1.1"]["median_us"], 2),
        "publish_both_versions_us": r["publish_build_both_versions"]["median_us"],
        "publish_both_versions_cold_p99_us": r["cold_one_frame_per_16ms"]["publish_build_both_versions_us"]["p99"],
        "target_us": 200.0,
    }
    print(f"      build {build_us} us, validate(fastjsonschema) {r['validate_fastjsonschema_1.1']['median_us']} us "
          f"vs jsonschema {r['validate_jsonschema_draft7_reused_1.1']['median_us']} us, orjson "
          f"{r['serialise_orjson_1.1']['median_us']} us vs json {r['serialise_json_dumps_1.1']['median_us']} us; "
          f"publish (1.1+1.0) {r['publish_build_both_versions']['median_us']} us; "
          f"fan-out per client {fan['conn']['per_client_us']} us", flush=True)
    return r


# -- environment, tables, output ----------------------------------------------------


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the server's files differ from it (others edit in parallel)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "server_files_modified": git("status", "--porcelain", "--", "wirthforge_ws", "ws_server.py").splitlines()}


def environment() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("websockets", "uvicorn", "uvloop", "fastapi", "starlette", "orjson", "fastjsonschema", "jsonschema"):
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
    lines.append(f"Commit {env.get('git', {}).get('commit')} (server files modified: "
                 f"{env.get('git', {}).get('server_files_modified') or 'none'}). "
                 f"Machine: {env.get('nproc')} x {env.get('cpu_model')}, Python {env.get('python')}, "
                 f"load average at start {env.get('loadavg_start')}, mode {'quick' if results.get('quick') else 'full'}")
    lines.append("")
    runs = results.get("latency", []) + ([results["steady"]] if "steady" in results else [])
    if runs:
        lines.append("| run | clients | proto | client procs | latency median / P99 / max (ms) | kernel-arrival median / P99 (ms) "
                     "| Hz (clients) | Hz (/health) | frame gaps | tick lateness p50 / p99 / max (ms) "
                     "| frame processing p50 / p99 (ms) | server CPU % core "
                     "| client CPU % | other load % | RSS end (MiB) |")
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
                f"| {_f(r['other_load_pct_of_core'], 1)} | {r['server_rss_kib']['end'] / 1024:.1f} |")
        lines.append("")
    if "loops" in results:
        lines.append("| event loop | clients | latency median / P99 / max (ms) | tick lateness p50 / p99 / max (ms) "
                     "| Hz (/health) | server CPU % core | other load % |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in results["loops"]:
            lat, tl = r["latency_ms"], r["tick_lateness_ms"]
            lines.append(f"| {r['server_env'].get('WF_LOOP')} (running: {r.get('event_loop') or '?'}) | {r['clients']} "
                         f"| {_f(lat['median'], 3)} / {_f(lat['p99'], 3)} / {_f(lat['max'], 3)} "
                         f"| {_f(tl.get('p50'), 3)} / {_f(tl.get('p99'), 3)} / {_f(tl.get('max'), 3)} "
                         f"| {_f(r['achieved_hz_health'], 3)} | {_f(r['server_cpu_pct_of_core'], 1)} "
                         f"| {_f(r['other_load_pct_of_core'], 1)} |")
        lines.append("")
    if "client" in results:
        lines.append("")
        lines.append("Latency through wirthforge_ws.client (protocol 1.1):")
        lines.append("| clients | median (ms) | P99 (ms) | max (ms) | Hz per client | frames missed |")
        lines.append("|---|---|---|---|---|---|")
        for r in results["client"]:
            lines.append(f"| {r['clients']} | {r['median_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                         f"{r['rate_hz_min']}-{r['rate_hz_max']} | {r['frames_missed_max']} |")
    if "deflate" in results:
        lines.append("| permessage-deflate | clients | server CPU % core | CPU % per client (above idle) "
                     "| wire bytes/s per client | JSON bytes/s per client | latency median / P99 (ms) |")
        lines.append("|---|---|---|---|---|---|---|")
        idle = results.get("cpu", {}).get("server_cpu_pct_of_core_median", 0.0)
        for r in results["deflate"]:
            lat = r["latency_ms"]
            per = (r["server_cpu_pct_of_core"] - idle) / r["clients"]
            lines.append(f"| {'on' if 'on' in r['label'] else 'off'} | {r['clients']} | {_f(r['server_cpu_pct_of_core'], 1)} "
                         f"| {per:.2f} | {r['wire_bytes_per_client_per_s']} | {r['payload_bytes_per_client_per_s']} "
                         f"| {_f(lat['median'], 3)} / {_f(lat['p99'], 3)} |")
        lines.append("")
    if "cpu" in results:
        c = results["cpu"]
        lines.append(f"Idle server: {c['server_cpu_pct_of_core']} % of a core over the first {c['seconds']} s "
                     f"({c['cpu_seconds']} s CPU at {c['clock_ticks_per_s']} ticks/s; all windows "
                     f"{c['server_cpu_pct_of_core_all']} %, median {c['server_cpu_pct_of_core_median']} %); tick lateness "
                     f"{c['tick_lateness_ms']} ms (p99 of each window {c['tick_lateness_p99_all']}); "
                     f"RSS {c['rss_kib'] / 1024:.1f} MiB; other load up to {c['other_load_pct_of_core']} %")
        lines.append("")
    if "memory" in results:
        m = results["memory"]
        for mode in ("control", "slow"):
            if mode in m:
                x = m[mode]
                lines.append(f"Memory ({mode}): published {x['published_messages']} token_stream; RSS "
                             f"{x['rss_kib_before'] / 1024:.1f} -> peak {x['rss_kib_peak'] / 1024:.1f} -> "
                             f"{x['rss_kib_after'] / 1024:.1f} MiB; server closed {x['server_closed']}; client saw "
                             f"{x['client_close_code']} {x['client_close_reason']!r} / {x['client_lost']} "
                             f"after {x['client_lost_after_pause_s']} s (close initiated by server: "
                             f"{x['client_close_initiated_by_server']}); server decided to close within "
                             f"{x['server_closed_within_s_of_pause']} s of the pause; server connections after the "
                             f"client read again: {x['connections_after_client_read_again']}, after it closed: "
                             f"{x['connections_after_client_closed']}; outbox at end of publishing "
                             f"{x['queued_at_end_of_publishing']}")
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
            lines.append(f"| fan-out, {label}: publish to 1 / to 100 (median) | {f['publish_1_us']['median_us']} / "
                         f"{f['publish_100_us']['median_us']} | per client {f['per_client_us']} |")
        lines.append(f"| build+envelope+validate+serialise (1.1), sum of medians | {m['summary']['build_validate_serialise_1.1_us']} | target 200 |")
        cold = m["cold_one_frame_per_16ms"]
        for key, value in cold.items():
            lines.append(f"| cold (one call per 16.7 ms): {key} median / p99 / max | {value['median']} / {value['p99']} "
                         f"/ {value['max']} | |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_client":
        client_entry(argv[1:])
        return 0
    sections = ("micro", "cpu", "latency", "client", "steady", "memory", "loops", "deflate")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (5 s load runs, 10 s steady state)")
    parser.add_argument("--only", default=",".join(sections), help=f"comma-separated subset of {', '.join(sections)}")
    parser.add_argument("--out", help="also write the results here: .json (raw) or anything else (Markdown tables)")
    parser.add_argument("--results", default=str(RESULTS_JSON), help="where to write the raw results (JSON)")
    parser.add_argument("--deflate-clients", type=int, default=10,
                        help="clients in the permessage-deflate comparison (default %(default)s)")
    parser.add_argument("--quiet-threshold", type=float, default=QUIET["threshold"],
                        help="%% of one core that other processes may use during a run (default %(default)s)")
    parser.add_argument("--wait-quiet", type=float, default=QUIET["max_wait"],
                        help="seconds to wait for a quiet machine before each run (default %(default)s; 0: never wait)")
    parser.add_argument("--retries", type=int, default=int(QUIET["retries"]),
                        help="repeat a noisy run up to this many times, keeping the quietest (default %(default)s)")
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
    print(f"WIRTHFORGE benchmarks ({'quick' if args.quick else 'full'}): {', '.join(chosen)}; "
          f"load average {results['environment']['loadavg_start']}", flush=True)
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


if __name__ == "__main__":
    sys.exit(main())
