"""The benchmark harness behind ``benchmarks/bench.py``, one module per job.

- :mod:`.common`      paths, platform constants, :func:`~.common.summarize`
- :mod:`.loadclient`  the load client process (raw sockets, sans-I/O websockets)
- :mod:`.processes`   starting and always stopping the server and load clients
- :mod:`.machine`     /proc readers and waiting for a quiet machine
- :mod:`.runs`        the sections that load a real server
- :mod:`.micro`       the in-process per-frame section
- :mod:`.report`      environment and the Markdown tables of benchmarks/results/NOTES.md
- :mod:`.cli`         the command line

Percentiles are the project's one definition, ``wirthforge_ws.stream.rolling.percentile``.
"""
