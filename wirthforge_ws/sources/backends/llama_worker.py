"""The embedded model's worker process: llama.cpp behind JSON lines on stdin/stdout.

Run as ``python -m wirthforge_ws.sources.backends.llama_worker --model FILE.gguf``. The server
(:class:`wirthforge_ws.sources.backends.adapters.EmbeddedBackend`) starts it and talks to it:

- in (stdin), one JSON object per line:
  ``{"op": "generate", "id": ..., "messages": [...], "maxTokens": N, "temperature": T, "topK": K}``,
  ``{"op": "measure", "id": ..., "messages": [...]}`` and ``{"op": "cancel", "id": ...}``;
- out (stdout): ``{"ready": true, "model": NAME, "context": TOKENS, "rss": BYTES}`` once
  loaded; for a measure ``{"id", "size": TOKENS, "context": TOKENS}``; per generation
  ``{"id", "eval": DONE, "of": TOTAL}`` after each slice of the prompt it evaluates,
  ``{"id", "t": text, "p": [[token, probability], ...]}`` for each token, and finally
  ``{"id", "done": reason, "tokens": N, "rss": BYTES}`` or ``{"id", "error": reason}``
  (``"too_long"`` with ``size`` and ``context`` when the prompt leaves no room for an answer).

Why a process and not a thread: llama.cpp keeps its threads busy, and the
per-token work in Python holds the GIL; in the server's process both would
delay the 60 Hz frame loop. A separate process, limited to ``--threads``
threads and scheduled ``SCHED_IDLE`` (``--sched idle``: the kernel preempts
it at once whenever the frame loop wakes, where a niced normal process may
finish its time slice first), keeps the frame loop on time (measured in
docs/PERFORMANCE.md). If the worker dies, the server sees end-of-file and
reports an error; if it stops answering, the server kills and replaces it.

Why the worker drives llama.cpp token by token instead of calling
``create_chat_completion``:

- **cancel stops the prompt's evaluation**: llama.cpp's abort callback
  looks at the cancel set between two operations of its compute graph, so
  a cancel ends the running evaluation within milliseconds (llama.cpp drops
  the aborted batch from its KV cache; llama-cpp-python counts only the
  batches that completed) and the next prompt starts at once. Without it a
  whole 8 KiB prompt is one uninterruptible call inside llama-cpp-python.
  The prompt goes in slices of :data:`EVAL_SLICE` tokens, each reported as
  progress, so the server can tell a long prompt from a hung worker;
- **memory stays bounded**: llama-cpp-python's log-probabilities need
  ``logits_all``, which keeps a float per vocabulary entry for every
  position of the context (49,152 x 4,096 x 4 bytes = 805 MB for SmolLM2,
  resident once a long prompt filled it). The worker reads only the last
  position's logits and computes the top-K probabilities itself;
- the prompt's length is measured with the model's own tokenizer and chat
  template (``measure``), so the server refuses a prompt the context cannot
  hold instead of failing it later.

Consecutive prompts reuse the KV cache for their common prefix (the system
prompt), so only what differs is evaluated.

Nothing here ever writes a prompt or token text anywhere but the pipe.
"""

from __future__ import annotations

import argparse
import codecs
import ctypes
import logging
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any

import orjson

# Linux scheduling policies a process may choose for itself: "batch" marks it
# CPU-bound (it never preempts on wake-up), "idle" runs it only on CPU time
# nothing else wants.
SCHEDULERS = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}

# Prompt tokens per progress report (and llama.cpp's batch size, which bounds
# its compute buffer): about 0.15 s of one core for SmolLM2.
EVAL_SLICE = 64

# Sampling of create_completion's defaults (the temperature comes per request).
TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _protocol_stdout() -> IO[bytes]:
    """Our own copy of stdout for the protocol; fd 1 then points at stderr.

    llama.cpp's C code may print to fd 1; it must not corrupt the JSON lines.
    """
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    return out


def resident_bytes() -> int:
    """This process's resident memory (RSS), from /proc/self/statm."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def top_probabilities(logits: Any, k: int) -> list[tuple[int, float]]:
    """The *k* most probable token ids and their probabilities (softmax of the raw logits, temperature 1)."""
    import numpy as np

    k = max(1, min(k, len(logits)))
    best = np.argpartition(logits, -k)[-k:]
    peak = float(logits.max())
    total = float(np.exp(logits - peak).sum())
    ranked = sorted(best.tolist(), key=lambda token: -float(logits[token]))
    return [(token, float(np.exp(float(logits[token]) - peak) / total)) for token in ranked]


class Worker:
    """Loads the model once, then serves one command at a time."""

    def __init__(self, model_path: str, threads: int, context: int, out: IO[bytes]) -> None:
        import llama_cpp  # imported here: only the worker needs llama.cpp
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=model_path,
            n_ctx=context,
            n_batch=EVAL_SLICE,
            n_ubatch=EVAL_SLICE,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )
        # llama.cpp logs each aborted batch at error level; a cancel is no error, and a
        # real failure raises in Python and reaches the server as an "error" reply.
        logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
        self.context = self.llm.n_ctx()
        self.template = self._chat_template()
        self.out = out
        self.commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.current: str | None = None  # the request being generated
        # Kept referenced: llama.cpp holds only the C pointer.
        self._abort = llama_cpp.ggml_abort_callback(self._should_abort)
        llama_cpp.llama_set_abort_callback(self.llm.ctx, self._abort, None)

    def _should_abort(self, _data: Any) -> bool:
        """llama.cpp's abort callback (from its compute thread): is the running request cancelled?"""
        return self.current is not None and self.current in self.cancelled

    def _chat_template(self) -> Any:
        """The model's chat template (GGUF metadata), ChatML when it has none."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        eos, bos = llm.token_eos(), llm.token_bos()
        return Jinja2ChatFormatter(
            template=llm.metadata.get("tokenizer.chat_template") or CHATML,
            eos_token=llm.detokenize([eos], special=True).decode("utf-8", "ignore") if eos != -1 else "",
            bos_token=llm.detokenize([bos], special=True).decode("utf-8", "ignore") if bos != -1 else "",
        )

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
            request_id = str(command.get("id"))
            try:
                if command.get("op") == "generate":
                    self.generate(request_id, command)
                elif command.get("op") == "measure":
                    self.send(
                        {"id": request_id, "size": len(self.tokens(command["messages"])), "context": self.context}
                    )
            except Exception as error:  # noqa: BLE001 - reported to the server, which turns it into an error_event
                self.send({"id": request_id, "error": type(error).__name__})
            finally:
                self.cancelled.discard(request_id)

    def tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens as the model sees them: chat template applied, special tokens parsed."""
        formatted = self.template(messages=messages)
        return self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)

    def generate(self, request_id: str, command: dict[str, Any]) -> None:
        if request_id in self.cancelled:
            self.send({"id": request_id, "done": "cancelled", "tokens": 0, "rss": resident_bytes()})
            return
        prompt = self.tokens(command["messages"])
        room = self.context - len(prompt)
        if room < 1:
            self.send({"id": request_id, "error": "too_long", "size": len(prompt), "context": self.context})
            return
        count, reason = 0, "cancelled"
        self.current = request_id
        try:
            if self._evaluate(request_id, prompt):
                max_tokens = min(int(command.get("maxTokens", 256)), room)
                count, reason = self._answer(request_id, prompt, command, max_tokens)
        except RuntimeError:  # llama_decode returned 2: aborted by a cancel
            if request_id not in self.cancelled:
                raise
        finally:
            self.current = None
        self.send({"id": request_id, "done": reason, "tokens": count, "rss": resident_bytes()})

    def _evaluate(self, request_id: str, prompt: Sequence[int]) -> bool:
        """Evaluate *prompt* into the KV cache, slice by slice; False if it was cancelled meanwhile.

        The part it shares with what the cache holds (the system prompt of
        the previous request) is kept; at least the last token is evaluated
        again so its logits are fresh.
        """
        llm = self.llm
        held = llm.input_ids[: llm.n_tokens]
        common = 0
        for cached, wanted in zip(held, prompt):
            if cached != wanted:
                break
            common += 1
        llm.n_tokens = min(common, len(prompt) - 1)  # eval() drops the cache past n_tokens
        for start in range(llm.n_tokens, len(prompt), EVAL_SLICE):
            if request_id in self.cancelled:
                return False
            llm.eval(prompt[start : start + EVAL_SLICE])
            self.send({"id": request_id, "eval": llm.n_tokens, "of": len(prompt)})
        return request_id not in self.cancelled

    def _answer(
        self, request_id: str, prompt: Sequence[int], command: dict[str, Any], max_tokens: int
    ) -> tuple[int, str]:
        """Sample up to *max_tokens* tokens after the evaluated prompt, each sent with its top-K; (count, reason)."""
        import llama_cpp
        import numpy as np

        llm = self.llm
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        width = llm.n_vocab()
        top_k = int(command.get("topK", 5))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        names: dict[int, str] = {}
        count = 0
        tokens: Iterator[int] = llm.generate(
            prompt, top_k=TOP_K, top_p=TOP_P, min_p=MIN_P, temp=float(command.get("temperature", 0.7))
        )
        for token in tokens:
            if request_id in self.cancelled:
                return count, "cancelled"
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                return count, "stop"
            # The logits the token was sampled from: the last position's (only that one is kept).
            pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(width,))
            top = [[self._name(names, candidate), p] for candidate, p in top_probabilities(logits, top_k)]
            text = decoder.decode(llm.detokenize([token]))
            count += 1
            if text:  # a token that ends inside a UTF-8 character shows with the next one
                self.send({"id": request_id, "t": text, "p": top})
            if count >= max_tokens:
                return count, "length"
        return count, "stop"

    def _name(self, names: dict[int, str], token: int) -> str:
        if token not in names:
            names[token] = self.llm.detokenize([token]).decode("utf-8", "ignore")
        return names[token]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--context", type=int, default=4096, help="context size in tokens (prompt and answer)")
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
    worker = Worker(args.model, args.threads, args.context, out)
    try:
        worker.send(
            {"ready": True, "model": os.path.basename(args.model), "context": worker.context, "rss": resident_bytes()}
        )
        worker.serve()
    except BrokenPipeError:  # the server is gone (or replaced this worker): nothing to tell anyone
        os._exit(0)


if __name__ == "__main__":
    main()
