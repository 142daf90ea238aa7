"""The embedded model's worker process: llama.cpp behind JSON lines on stdin/stdout.

Run as ``python -m wirthforge_ws.sources.backends.llama_worker --model FILE.gguf``. The server
(:class:`wirthforge_ws.sources.backends.adapters.EmbeddedBackend`) starts it and talks to it:

- in (stdin), one JSON object per line:
  ``{"op": "generate", "id": ..., "messages": [...], "maxTokens": N, "temperature": T, "topK": K}``
  and ``{"op": "cancel", "id": ...}``;
- out (stdout): ``{"ready": true, "model": NAME}`` once loaded, then per
  generation ``{"id", "t": text, "p": [[token, probability], ...]}`` for each
  token, and finally ``{"id", "done": reason}`` or ``{"id", "error": reason}``.

Why a process and not a thread: llama.cpp keeps its threads busy and
llama-cpp-python computes every token's log-probabilities in Python under
the GIL; in the server's process both would delay the 60 Hz frame loop. A
separate process, limited to ``--threads`` threads and scheduled
``SCHED_IDLE`` (``--sched idle``: the kernel preempts it at once whenever the
frame loop wakes, where a niced normal process may finish its time slice
first), keeps the frame loop on time (measured in docs/PERFORMANCE.md). If the worker
dies, the server sees end-of-file and reports an error; the frames go on.

Nothing here ever writes a prompt or token text anywhere but the pipe.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

import orjson

# Linux scheduling policies a process may choose for itself: "batch" marks it
# CPU-bound (it never preempts on wake-up), "idle" runs it only on CPU time
# nothing else wants.
SCHEDULERS = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}


def _protocol_stdout() -> IO[bytes]:
    """Our own copy of stdout for the protocol; fd 1 then points at stderr.

    llama.cpp's C code may print to fd 1; it must not corrupt the JSON lines.
    """
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    return out


class Worker:
    """Loads the model once, then serves one generation at a time."""

    def __init__(self, model_path: str, threads: int, out: IO[bytes]) -> None:
        from llama_cpp import Llama  # imported here: only the worker needs llama.cpp

        # logits_all: llama-cpp-python 0.3 refuses logprobs without it.
        # n_ctx: an 8 KiB prompt (about 2,000 tokens) plus a long answer.
        self.llm = Llama(
            model_path=model_path,
            n_ctx=4096,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,
            verbose=False,
        )
        self.out = out
        self.commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled: set[str] = set()

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(message) + b"\n")

    def read_commands(self) -> None:
        """Thread: stdin lines -> command queue; cancels are noted at once so a running generation sees them."""
        for line in sys.stdin.buffer:
            try:
                command = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if command.get("op") == "cancel":
                self.cancelled.add(str(command.get("id")))
            else:
                self.commands.put(command)
        self.commands.put(None)  # stdin closed: the server is gone

    def serve(self) -> None:
        threading.Thread(target=self.read_commands, name="commands", daemon=True).start()
        while (command := self.commands.get()) is not None:
            if command.get("op") == "generate":
                self.generate(command)

    def generate(self, command: dict[str, Any]) -> None:
        request_id = str(command["id"])
        if request_id in self.cancelled:
            self.send({"id": request_id, "done": "cancelled"})
            return
        reason = "stop"
        try:
            chunks = self.llm.create_chat_completion(
                messages=command["messages"],
                stream=True,
                logprobs=True,
                top_logprobs=int(command.get("topK", 5)),
                max_tokens=int(command.get("maxTokens", 256)),
                temperature=float(command.get("temperature", 0.7)),
            )
            if isinstance(chunks, dict):  # stream=True returns an iterator of chunks, never one response
                raise TypeError("llama.cpp returned a whole completion for a streamed request")
            for chunk in chunks:
                if request_id in self.cancelled:
                    reason = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content")
                if text:
                    self.send({"id": request_id, "t": text, "p": _top_probabilities(choice.get("logprobs"))})
                if finish := choice.get("finish_reason"):
                    reason = finish
            self.send({"id": request_id, "done": reason})
        except Exception as error:  # noqa: BLE001 - reported to the server, which turns it into an error_event
            self.send({"id": request_id, "error": type(error).__name__})
        finally:
            self.cancelled.discard(request_id)


def _top_probabilities(logprobs: Mapping[str, Any] | None) -> list[list[Any]]:
    """The top-K (token, probability) pairs of the chunk's first token."""
    content = (logprobs or {}).get("content") or []
    if not content:
        return []
    return [[entry["token"], math.exp(entry["logprob"])] for entry in content[0].get("top_logprobs") or []]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--sched", choices=tuple(SCHEDULERS), default="idle")
    parser.add_argument("--cpus", default="", help="CPU numbers to run on, comma-separated ('' = any)")
    args = parser.parse_args()
    out = _protocol_stdout()
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    # Lower priority than the frame loop's process (both need no privilege).
    if args.sched != "other":
        os.sched_setscheduler(0, SCHEDULERS[args.sched], os.sched_param(0))
    if args.nice:
        os.nice(args.nice)
    worker = Worker(args.model, args.threads, out)
    worker.send({"ready": True, "model": os.path.basename(args.model)})
    worker.serve()


if __name__ == "__main__":
    main()
