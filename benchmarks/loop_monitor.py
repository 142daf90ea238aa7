#!/usr/bin/env python
"""Run ``ws_server.py`` with a watch on its event loop: how long the loop is held, in CPU time, and by what.

    python benchmarks/loop_monitor.py OUT.jsonl [PYTHON PATH/TO/ws_server.py] [server arguments...]

Without a ``ws_server.py`` path it runs this checkout's; burst_bench.py
passes it as the command prefix of tests/server_process.py, which appends
the interpreter, the script and the arguments. On a machine shared with other work, the
wall time between two frames measures the machine as much as the server; the
CPU time the server's main thread spends without returning to the loop does
not. Two kinds of lines go to OUT (one JSON object each, ``t`` is
``time.monotonic()``, the same clock as every other process's):

- ``{"t", "kind": "held", "wallMs", "cpuMs"}``: a 5 ms timer fired more than
  20 ms late; ``cpuMs`` is what the main thread ran meanwhile (the loop was
  held by work when it is close to ``wallMs``, by the machine when it is not);
- ``{"t", "kind": "gc", "generation", "wallMs", "cpuMs", "collected"}``: a
  garbage collection that took more than 3 ms of CPU.
"""

from __future__ import annotations

import gc
import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any

TICK_S = 0.005
REPORT_LATE_S = 0.020
REPORT_GC_CPU_S = 0.003


def main() -> None:
    out_path, *server_args = sys.argv[1:]
    script = Path(__file__).resolve().parent.parent / "ws_server.py"
    if len(server_args) >= 2 and server_args[1].endswith("ws_server.py"):
        script, server_args = Path(server_args[1]), server_args[2:]
    root = script.parent
    out = open(out_path, "w", buffering=1)  # noqa: SIM115 - open for the life of the process

    def write(**fields: Any) -> None:
        out.write(json.dumps({"t": round(time.monotonic(), 4), **fields}) + "\n")

    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter(), time.thread_time()]
            return
        cpu = time.thread_time() - started[1]
        if cpu > REPORT_GC_CPU_S:
            wall = time.perf_counter() - started[0]
            write(
                kind="gc",
                generation=info["generation"],
                wallMs=round(wall * 1000, 1),
                cpuMs=round(cpu * 1000, 1),
                collected=info["collected"],
            )

    gc.callbacks.append(on_gc)

    import asyncio

    import uvicorn.server

    serve = uvicorn.server.Server.serve

    async def watched_serve(self: uvicorn.server.Server, sockets: Any = None) -> None:
        loop = asyncio.get_running_loop()
        last = [time.perf_counter(), time.thread_time()]

        def tick() -> None:
            now, cpu = time.perf_counter(), time.thread_time()
            late = now - last[0] - TICK_S
            if late > REPORT_LATE_S:
                write(kind="held", wallMs=round(late * 1000, 1), cpuMs=round((cpu - last[1]) * 1000, 1))
            last[:] = [now, cpu]
            loop.call_later(TICK_S, tick)

        loop.call_later(TICK_S, tick)
        await serve(self, sockets)

    uvicorn.server.Server.serve = watched_serve  # type: ignore[method-assign]
    sys.path.insert(0, str(root))
    sys.argv = [str(script), *server_args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
