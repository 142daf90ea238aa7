#!/usr/bin/env python
"""Benchmark: the embedded model worker's resident memory (RSS) after long and short prompts.

    .venv/bin/python benchmarks/worker_memory.py                 # about 3 minutes on 2 shared cores
    .venv/bin/python benchmarks/worker_memory.py --short 20      # fewer short prompts

Drives :class:`wirthforge_ws.sources.backends.adapters.EmbeddedBackend` directly
(no server) and reads the worker's ``VmRSS`` from ``/proc/<pid>/status``:

1. after loading (no prompt yet);
2. after one 8 KiB English prompt (about 1,800 tokens: the documented byte
   limit, within the model's context), answered with ``--max-tokens`` tokens;
3. after ``--short`` short prompts, one after the other.

It prints one JSON object; docs/SECURITY.md ("Prompt API and model worker")
quotes the numbers. The worker is scheduled normally (``sched other``) so a
busy machine slows the run, not the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wirthforge_ws.sources.backends.adapters import EmbeddedBackend, embedded_model_path  # noqa: E402

SENTENCE = "The keeper climbed the stairs of the lighthouse every evening and lit the lamp for the ships. "
SHORT = ["Say hello.", "Name a colour.", "What is two plus two?", "Describe the sea in one line."]


def long_prompt(limit: int = 8 * 1024) -> str:
    """English text of exactly *limit* UTF-8 bytes."""
    return (SENTENCE * (limit // len(SENTENCE) + 1))[:limit]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def ask(backend: EmbeddedBackend, prompt: str, max_tokens: int) -> int:
    count = 0
    async for _ in backend.generate(prompt, max_tokens=max_tokens, top_k=5):
        count += 1
    return count


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = EmbeddedBackend(embedded_model_path(), sched="other", nice=0, timeout=120)
    await backend.start()
    try:
        await ask(backend, "Hi.", 1)  # loaded and warm
        assert backend.pid is not None
        pid = backend.pid
        result: dict[str, Any] = {"loaded_mb": round(rss_mb(pid), 1)}
        started = time.monotonic()
        result["long_tokens"] = await ask(backend, long_prompt(), args.max_tokens)
        result["long_seconds"] = round(time.monotonic() - started, 1)
        result["after_long_mb"] = round(rss_mb(backend.pid or pid), 1)
        result["same_worker_after_long"] = backend.pid == pid
        started = time.monotonic()
        for index in range(args.short):
            await ask(backend, SHORT[index % len(SHORT)], args.max_tokens)
        result["short_prompts"] = args.short
        result["short_seconds"] = round(time.monotonic() - started, 1)
        assert backend.pid is not None
        result["after_short_mb"] = round(rss_mb(backend.pid), 1)
        result["same_worker_at_end"] = backend.pid == pid
        return result
    finally:
        await backend.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=100, help="short prompts after the long one")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per answer")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
