#!/usr/bin/env python
"""Benchmarks of the WIRTHFORGE real-time transport (how each number is taken: benchmarks/results/NOTES.md).

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
``benchmarks/results/results.json`` (and to ``--out``: ``.json`` for the raw results,
anything else for Markdown tables). Every subprocess is stopped on exit,
Ctrl-C, SIGTERM or error.

Internal entry point (started by the harness itself): ``bench.py _client ...``
(a load client process).

The code lives in the package ``benchmarks/wfbench/`` (load client, machine
readers, runs, report, command line); this file is only the entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.wfbench.cli import main  # noqa: E402  (needs ROOT on sys.path)

if __name__ == "__main__":
    sys.exit(main())
