"""The subprocesses a benchmark starts (server, load clients) and their cleanup on any exit."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .common import BENCH_FILE, ROOT

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


# -- one load run ---------------------------------------------------------------


def start_clients(
    url: str,
    n: int,
    protocol: str,
    window: tuple[int, int],
    procs: int = 1,
    deflate: bool = False,
    slow_pause_at: int = 0,
    slow_seconds: float = 10.0,
    tmpdir: str = "",
) -> list[tuple[subprocess.Popen[bytes], str]]:
    started = []
    sizes = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    for i, size in enumerate(s for s in sizes if s > 0):
        out = os.path.join(tmpdir, f"client-{i}-{time.time_ns()}.json")
        command = [
            sys.executable,
            str(BENCH_FILE),
            "_client",
            "--url",
            url,
            "--n",
            str(size),
            "--protocol",
            protocol,
            "--record-start",
            str(window[0]),
            "--record-end",
            str(window[1]),
            "--out",
            out,
        ]
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
