#!/usr/bin/env python
"""Benchmark: the 60 Hz frame loop while a real model computes, and the prompt flow's speed.

    make model-bench                                   # about 4 minutes
    .venv/bin/python benchmarks/model_bench.py --quick # about 2 minutes
    .venv/bin/python benchmarks/model_bench.py --configs 1:10,2:0 --seconds 30

Sections (method and numbers: benchmarks/results/NOTES.md, "A real model on the same machine"):

``alone``    the embedded model's tokens/s with nothing else running: the
             llama.cpp worker (wirthforge_ws/llama_worker.py) driven directly,
             for each worker configuration (threads:nice).
``frames``   one 1.1 client's latency, the achieved frame rate, frame gaps and
             tick lateness (benchmarks/bench.py's load run), first with the
             simulator (no model: the baseline), then with the embedded model
             generating continuously in each configuration (a prompter keeps
             sending prompts; it subscribes to ``experience`` only, so the
             measured client is the only one receiving energy frames), plus
             the model's tokens/s meanwhile (as the prompter's WebSocket sees
             them: tokens after the first / time from first to last token).
``prompt``   time from ``POST /api/prompt`` to the first ``token_stream`` on a
             connected client, and tokens/s, for the embedded model and through
             the OpenAI-compatible adapter against ``python -m llama_cpp.server``
             serving the same GGUF.

Results: benchmarks/results/model_results.json (and ``--out`` as Markdown). The
machine's load (other processes) is recorded with each run; nothing here
retries a noisy run: before each run it waits (``--wait-quiet``, like
bench.py) until other processes use less than 25 % of a core, and records
what they used; run it on a quiet machine for the numbers that count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for path in (str(ROOT), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

from benchmarks.wfbench import machine, processes, report, runs  # noqa: E402  the transport benchmark's pieces

RESULTS_JSON = BENCH_DIR / "results" / "model_results.json"
PROMPTS = [
    "Write a long story about a lighthouse keeper and the sea.",
    "Explain how rain forms, step by step, in detail.",
    "Describe a walk through an old city at night.",
]


def tokens_per_second(times: Sequence[float]) -> float | None:
    """Decode rate: tokens after the first over the time from the first to the last."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else None


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


# -- alone ----------------------------------------------------------------------


async def _alone(threads: int, nice: int, sched: str, cpus: str, runs: int, max_tokens: int) -> dict[str, Any]:
    from wirthforge_ws.sources.backends.adapters import EmbeddedBackend, embedded_model_path

    backend = EmbeddedBackend(embedded_model_path(), threads=threads, nice=nice, sched=sched, cpus=cpus, timeout=60)
    await backend.start()
    rates = []
    try:
        for run in range(runs):
            times = []
            async for _ in backend.generate(PROMPTS[run % len(PROMPTS)], max_tokens=max_tokens, top_k=5):
                times.append(time.monotonic())
            rates.append(tokens_per_second(times))
    finally:
        await backend.stop()
    return {
        "threads": threads,
        "nice": nice,
        "sched": sched,
        "cpus": cpus or "any",
        "runs": runs,
        "tokens_per_s": median(rates),
        "each": [round(r, 2) for r in rates if r],
    }


def section_alone(configs: list[tuple[int, int, str, str]], quick: bool) -> list[dict[str, Any]]:
    results = []
    for threads, nice, sched, cpus in configs:
        busy = machine.wait_for_quiet()
        result = asyncio.run(_alone(threads, nice, sched, cpus, 2 if quick else 4, 120))
        result["busy_before_pct_of_core"] = round(busy, 1)
        print(
            f"  - alone, {threads} thread(s), nice {nice}, {sched}, CPUs {cpus or 'any'}: "
            f"{result['tokens_per_s']} tokens/s "
            f"(others used {busy:.0f} % of a core before)",
            flush=True,
        )
        results.append(result)
    return results


# -- frames while the model generates ------------------------------------------------


class Prompter(threading.Thread):
    """Keeps the server's model busy: one prompt after another, until stopped; records tokens/s."""

    def __init__(self, server: Any, max_tokens: int) -> None:
        super().__init__(name="prompter", daemon=True)
        self.server = server
        self.max_tokens = max_tokens
        self.stopping = threading.Event()
        self.rates: list[float] = []
        self.first_token_ms: list[float] = []
        self.tokens = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(
                self.server.ws_url + "?channels=experience", subprotocols=["wirthforge.1.1"], proxy=None
            ) as ws:
                n = 0
                while not self.stopping.is_set() and n < 1000:
                    self._one(ws, PROMPTS[n % len(PROMPTS)])
                    n += 1
        except BaseException as error:  # noqa: BLE001 - reported by the harness
            self.error = error

    def _one(self, ws: Any, prompt: str) -> None:
        posted = time.monotonic()
        session = post_prompt(self.server.http_url, prompt)
        times: list[float] = []
        deadline = posted + 120
        while time.monotonic() < deadline:
            try:
                message = json.loads(ws.recv(timeout=1.0))
            except TimeoutError:
                if self.stopping.is_set():
                    cancel_prompt(self.server.http_url, session)
                    break
                continue
            if message["type"] != "token_stream" or message["payload"]["sessionId"] != session:
                continue
            now = time.monotonic()
            if message["payload"]["tokens"] and not times:
                self.first_token_ms.append((now - posted) * 1000)
            times += [now] * len(message["payload"]["tokens"])
            if message["payload"]["isComplete"]:
                break
            if self.stopping.is_set():
                cancel_prompt(self.server.http_url, session)
                break
        self.tokens += len(times)
        rate = tokens_per_second(times)
        if rate:
            self.rates.append(rate)


def post_prompt(base: str, prompt: str) -> str:
    request = urllib.request.Request(
        base + "/api/prompt",
        data=json.dumps({"prompt": prompt}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["sessionId"]


def cancel_prompt(base: str, session: str) -> None:
    request = urllib.request.Request(f"{base}/api/prompt/{session}/cancel", data=b"", method="POST")
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=10).close()


def worker_cpu_seconds(server_pid: int) -> float:
    """CPU of the server's child processes (the model workers)."""
    total = 0.0
    with contextlib.suppress(OSError):
        for pid in Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                total += machine.proc_cpu_seconds(int(pid))
    return total


def frames_run(
    label: str, env: dict[str, str], seconds: float, generate: bool, max_tokens: int, tmpdir: str
) -> dict[str, Any]:
    """runs.load_run (1 client) against a server whose model (if *generate*) answers prompt after prompt."""
    prompters: list[Prompter] = []
    worker_cpu: list[float] = []
    original = runs.running_server

    @contextlib.contextmanager
    def generating_server(server_env: dict[str, str] | None = None) -> Iterator[Any]:
        with original(server_env) as server:
            time.sleep(2.0)  # the model worker loads
            prompter = Prompter(server, max_tokens)
            if generate:
                prompter.start()
                prompters.append(prompter)
            cpu0, t0 = worker_cpu_seconds(server.process.pid), time.monotonic()
            try:
                yield server
            finally:
                worker_cpu.append(100 * (worker_cpu_seconds(server.process.pid) - cpu0) / (time.monotonic() - t0))
                prompter.stopping.set()
                if generate:
                    prompter.join(30)

    runs.running_server = generating_server
    try:
        busy = machine.wait_for_quiet()
        result = runs.load_run(label, clients=1, protocol="1.1", duration=seconds, env=env, tmpdir=tmpdir)
    finally:
        runs.running_server = original
    result["busy_before_pct_of_core"] = round(busy, 1)
    result["model_worker_cpu_pct_of_core"] = round(worker_cpu[0], 1) if worker_cpu else None
    # runs.load_run counts the model worker (a child of the server) as "other load": take it out.
    result["others_pct_of_core"] = round(
        result["other_load_pct_of_core"] - (result["model_worker_cpu_pct_of_core"] or 0), 1
    )
    if prompters:
        prompter = prompters[0]
        if prompter.error:
            raise RuntimeError(f"the prompter failed: {prompter.error!r}")
        result["model_tokens_per_s"] = median(prompter.rates)
        result["model_generations"] = len(prompter.rates)
        result["model_tokens"] = prompter.tokens
    lat, late = result["latency_ms"], result["tick_lateness_ms"]
    print(
        f"      => {result['achieved_hz_health']} Hz, gaps {result['frame_gaps']}, latency median "
        f"{lat['median']} / p99 {lat['p99']} ms, lateness p99 {late.get('p99')} ms, model "
        f"{result.get('model_tokens_per_s')} tokens/s, worker CPU {result['model_worker_cpu_pct_of_core']} %",
        flush=True,
    )
    return result


def section_frames(configs: list[tuple[int, int, str, str]], seconds: float, tmpdir: str) -> list[dict[str, Any]]:
    runs = [frames_run("simulator, no model (baseline)", {"WF_SOURCE": "sim"}, seconds, False, 0, tmpdir)]
    for threads, nice, sched, cpus in configs:
        env = {
            "WF_SOURCE": "embedded",
            "WF_MODEL_THREADS": str(threads),
            "WF_MODEL_NICE": str(nice),
            "WF_MODEL_SCHED": sched,
            "WF_MODEL_CPUS": cpus,
            "WF_MAX_TOKENS": "200",
        }
        run = frames_run(
            f"model generating: {threads} thread(s), nice {nice}, {sched}, CPUs {cpus or 'any'}",
            env,
            seconds,
            True,
            200,
            tmpdir,
        )
        run["threads"], run["nice"], run["sched"], run["cpus"] = threads, nice, sched, cpus or "any"
        runs.append(run)
    return runs


# -- the prompt flow ------------------------------------------------------------------


def prompt_runs(server: Any, count: int) -> dict[str, Any]:
    prompter = Prompter(server, 120)
    from websockets.sync.client import connect

    with connect(server.ws_url + "?channels=experience", subprotocols=["wirthforge.1.1"], proxy=None) as ws:
        for n in range(count):
            prompter._one(ws, PROMPTS[n % len(PROMPTS)])
    return {
        "prompts": count,
        "first_token_ms": {"median": median(prompter.first_token_ms), "max": round(max(prompter.first_token_ms), 1)},
        "tokens_per_s": median(prompter.rates),
    }


def section_prompt(quick: bool) -> dict[str, Any]:
    from wirthforge_ws.sources.backends.adapters import embedded_model_path

    count = 3 if quick else 6
    results: dict[str, Any] = {}
    machine.wait_for_quiet()
    with runs.running_server({"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "120"}) as server:
        time.sleep(2.0)
        results["embedded"] = prompt_runs(server, count)
    print(f"  - embedded: {results['embedded']}", flush=True)
    from tests.server_process import free_port

    port = free_port()
    llama = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded_model_path()),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            "1",
            "--logits_all",
            "true",
            "--verbose",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes._STARTED.append(llama)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/models", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        env = {"WF_SOURCE": "openai", "WF_OPENAI_URL": url, "WF_OPENAI_MODEL": "smollm2", "WF_MAX_TOKENS": "120"}
        machine.wait_for_quiet()
        with runs.running_server(env) as server:
            results["openai_llama_cpp_server"] = prompt_runs(server, count)
    finally:
        llama.terminate()
        llama.wait(10)
        processes._STARTED.remove(llama)
    print(f"  - openai (llama_cpp.server): {results['openai_llama_cpp_server']}", flush=True)
    return results


# -- report ---------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    lines = [
        "| run | Hz (server) | frame gaps | tick lateness p50 / p99 ms | 1-client latency median / p99 ms "
        "| model tokens/s | model worker CPU % | other processes, % of a core |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in results.get("frames", []):
        late, lat = run["tick_lateness_ms"], run["latency_ms"]
        lines.append(
            f"| {run['label']} | {run['achieved_hz_health']} | {run['frame_gaps']} | {late.get('p50')} / "
            f"{late.get('p99')} | {lat['median']} / {lat['p99']} | {run.get('model_tokens_per_s', '–')} | "
            f"{run.get('model_worker_cpu_pct_of_core')} | {run['others_pct_of_core']} |"
        )
    lines += ["", "| embedded model alone | tokens/s | runs | others before, % of a core |", "|---|---|---|---|"]
    for run in results.get("alone", []):
        lines.append(
            f"| {run['threads']} thread(s), nice {run['nice']}, {run['sched']}, CPUs {run['cpus']} | "
            f"{run['tokens_per_s']} | {run['each']} | {run['busy_before_pct_of_core']} |"
        )
    prompt = results.get("prompt", {})
    if prompt:
        lines += ["", "| source | POST -> first token_stream, median (max) ms | tokens/s |", "|---|---|---|"]
        for name, run in prompt.items():
            lines.append(
                f"| {name} | {run['first_token_ms']['median']} ({run['first_token_ms']['max']}) | "
                f"{run['tokens_per_s']} |"
            )
    return "\n".join(lines) + "\n"


def parse_config(text: str) -> tuple[int, int, str, str]:
    """THREADS:NICE[:SCHED[:CPUS]] -> (threads, nice, scheduling policy, CPUs; CPUs joined with '+')."""
    parts = text.split(":")
    return (
        int(parts[0]),
        int(parts[1]),
        parts[2] if len(parts) > 2 else "other",
        parts[3].replace("+", ",") if len(parts) > 3 else "",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", default="alone,frames,prompt")
    parser.add_argument(
        "--configs",
        default="2:0,1:0,1:10,1:19:batch,1:0:idle",
        help="model worker configurations THREADS:NICE[:SCHED], comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per frame run (20; quick 8)")
    parser.add_argument("--out", help="also write Markdown tables here")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=machine.QUIET["max_wait"],
        help="before each run, wait at most this many seconds for other processes to use "
        f"< {machine.QUIET['threshold']:g} %% of a core",
    )
    args = parser.parse_args(argv)
    machine.QUIET["max_wait"] = args.wait_quiet
    configs = [parse_config(item) for item in args.configs.split(",")]
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    only = set(args.only.split(","))
    results: dict[str, Any] = {"environment": report.environment()}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wf-model-bench-") as tmpdir:
        try:
            if "alone" in only:
                print("alone:", flush=True)
                results["alone"] = section_alone(configs, args.quick)
            if "frames" in only:
                print("frames while the model generates:", flush=True)
                results["frames"] = section_frames(configs, seconds, tmpdir)
            if "prompt" in only:
                print("prompt flow:", flush=True)
                results["prompt"] = section_prompt(args.quick)
        finally:
            processes._stop_everything()
    results["environment"]["loadavg_end"] = machine.loadavg()
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    table = render(results)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
