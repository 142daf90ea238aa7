"""Instructions per 1.1 energy frame (build + envelope + validate + serialise), counted by callgrind.

Time per frame on a shared 2-core machine varies by a factor of two between
runs; the number of instructions does not. This runs the frame the server
builds most often while one model answers (one token in the frame, through
the server's own builders, as ``bench.py --only micro`` times it) under
``valgrind --tool=callgrind``, once with no frames and once with
``--frames``, and prints the difference divided by the frame count, so that
start-up (imports, schema compilation) cancels out.

    .venv/bin/python benchmarks/frame_instructions.py [--frames 3000]

Needs valgrind (Debian's ``valgrind`` package). Instructions are a proxy for
time: they leave out cache misses and branch mispredictions, which the timed
benchmarks include.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_frames(frames: int) -> int:
    """Build *frames* frames in this process; return the size of the last one in bytes."""
    sys.path.insert(0, str(ROOT))
    import orjson

    from wirthforge_ws.energy.meter import MeterSnapshot, TokenReading
    from wirthforge_ws.energy.profiles import DUAL
    from wirthforge_ws.energy.states import SessionState
    from wirthforge_ws.protocol import messages
    from wirthforge_ws.protocol.schemas import SchemaSet
    from wirthforge_ws.sources.base import FrameActivity
    from wirthforge_ws.stream import energy_frames

    schemas = SchemaSet()
    distribution = {"generation": 0.412345, "attention": 0.123456, "reasoning": 0.101234}
    reading = TokenReading(
        index=41,
        t_ms=3120.4,
        dt_ms=70.2,
        tps=11.0,
        top_k=(0.8123, 0.1),
        certainty=0.81234,
        entropy=0.30123,
        stall=False,
        burst=False,
        energy=0.6234567,
    )
    activity = FrameActivity(
        session_id="prompt-0001-8f2c61d0",
        primary=MeterSnapshot(
            model_id="wirthforge-sim",
            energy=0.6234567,
            state=SessionState.FLOWING,
            tps=11.0,
            certainty=0.81234,
            entropy=0.30123,
            since_token_ms=4.1,
            stall=False,
            burst=False,
            ttft_ms=412.5,
            energy_units=0.2481,
            tokens=42,
            dt_ms=70.2,
        ),
        profile=DUAL,
        tokens=["x"],
        readings=[reading],
    )
    timestamp = messages.now_ms()

    def frame(number: int) -> bytes:
        event = messages.energy_update(
            frame_number=number,
            total_energy=0.6234567,
            delta_energy=0.0131234,
            tokens_generated=1,
            processing_time_ms=0.0512,
            model_id="wirthforge-sim",
            distribution=distribution,
            evidence=energy_frames.frame_evidence(activity),
        )
        message = messages.envelope("1.1", event, timestamp, number)
        schemas.validate_outbound("1.1", message)
        return orjson.dumps(message)

    last = frame(1)  # warm: the first call of each path is not what the loop pays
    for number in range(2, frames + 2):
        last = frame(number)
    return len(last)


def instructions(frames: int, out_dir: Path) -> int:
    """Instructions callgrind counts for a whole process that builds *frames* frames."""
    out = out_dir / f"callgrind.{frames}"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    command += [sys.executable, __file__, "--child", str(frames)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError("callgrind printed no total:\n" + done.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # the process callgrind runs
    args = parser.parse_args()
    if args.child is not None:
        print(run_frames(args.child))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        base = instructions(0, Path(tmp))
        total = instructions(args.frames, Path(tmp))
    size = run_frames(0)
    print(f"{(total - base) / args.frames:,.0f} instructions per frame ({args.frames} frames, {size} bytes each)")


if __name__ == "__main__":
    main()
