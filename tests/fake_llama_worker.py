"""A fake embedded model worker: ``llama_worker``'s JSON-lines protocol, no model.

The backend's process handling (replacement of a silent worker, the cancel
grace, memory recycling, empty answers) is tested against this in a second,
where the real model takes minutes on a shared machine. The model path's
name picks the behaviour:

- ``answers``: five tokens per answer;
- ``empty``: every answer ends at once, without a token;
- ``deaf``: evaluates forever (a progress report every 0.05 s) and ignores cancels;
- ``grows``: answers, and reports 300 MB more resident memory than at load.

A measure counts one token per word plus 10 for the chat template.
Run as ``python -m tests.fake_llama_worker --model NAME [--context N]`` (the
other flags of the real worker are accepted and ignored).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

LOADED_RSS = 200 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--context", type=int, default=4096)
    args, _ = parser.parse_known_args()
    behaviour = Path(args.model).stem
    lock = threading.Lock()
    cancelled: set[str] = set()

    def send(message: dict[str, Any]) -> None:
        with lock:
            sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
            sys.stdout.buffer.flush()

    send({"ready": True, "model": behaviour, "context": args.context, "rss": LOADED_RSS})
    for line in sys.stdin.buffer:
        command = orjson.loads(line)
        request_id = str(command.get("id"))
        if command["op"] == "cancel":
            cancelled.add(request_id)
        elif command["op"] == "measure":
            words = len(command["messages"][-1]["content"].split())
            send({"id": request_id, "size": words + 10, "context": args.context})
        elif behaviour == "deaf":
            while True:
                send({"id": request_id, "eval": 64, "of": 4096})
                time.sleep(0.05)
        elif behaviour == "empty":
            send({"id": request_id, "done": "stop", "tokens": 0, "rss": LOADED_RSS})
        else:
            for index in range(5):
                send({"id": request_id, "t": f"w{index} ", "p": [[f"w{index} ", 0.9], ["x", 0.1]]})
            rss = LOADED_RSS + (300 * 1024 * 1024 if behaviour == "grows" else 0)
            send({"id": request_id, "done": "stop", "tokens": 5, "rss": rss})


if __name__ == "__main__":
    main()
