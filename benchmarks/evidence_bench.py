"""What the 1.1 energy evidence costs per frame: build + envelope + validate + serialise, with and without it.

Frames come from the simulator (one model, and a council of three), stepped
at 60 Hz, so their evidence is what a server sends. "With" is the frame as
the server builds it now; "without" the same frame without ``evidence``,
validated against the 1.1 schema as it was before the evidence (the 1.0
payload in the 1.1 envelope). Both run the same frames in interleaved
rounds; the median and the best round, in microseconds per frame, and the
bytes per frame. On a shared machine the best round is the steadier figure.

    .venv/bin/python benchmarks/evidence_bench.py [--rounds 21] [--frames 600]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wirthforge_ws.protocol import messages  # noqa: E402
from wirthforge_ws.protocol.schemas import (  # noqa: E402
    BASE_URI,
    SCHEMA_DIR,
    SchemaSet,
    _inlined,
    _load_documents,
    _local_fetcher,
)
from wirthforge_ws.sources.base import FrameActivity  # noqa: E402
from wirthforge_ws.sources.simulated import SimulatedModel  # noqa: E402
from wirthforge_ws.stream import energy_frames  # noqa: E402


def activities(council: bool, frames: int) -> list[FrameActivity]:
    """*frames* consecutive 60 Hz frames of the simulator, from its second answer on (a model in flow)."""
    source = SimulatedModel(council=council, seed=7)
    out = []
    number = 0
    while len(out) < frames:
        number += 1
        activity = source.step(number, number / 60)
        if number > 600:
            out.append(activity)
    return out


def schema_without_evidence() -> Callable[[Any], Any]:
    """The 1.1 energy_update schema as it was before the evidence: the 1.0 payload in the 1.1 envelope."""
    documents = _load_documents(SCHEMA_DIR)
    schema = copy.deepcopy(documents[BASE_URI + "1.1/energy_update.json"])
    schema["properties"]["payload"] = {"$ref": "../1.0/energy_update.json#/definitions/payload"}
    uri = BASE_URI + "1.1/energy_update.json"
    return jsonschema_rs.Draft7Validator(_inlined(schema, uri, _local_fetcher(documents))).validate


def compare(
    cases: dict[str, Callable[[FrameActivity, int], bytes]], frames: list[FrameActivity], rounds: int
) -> dict[str, dict[str, float]]:
    """Microseconds per frame of each case, the cases' rounds interleaved so that a busy machine slows all alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        for number, activity in enumerate(frames):
            fn(activity, number)
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter_ns()
            for number, activity in enumerate(frames):
                fn(activity, number)
            samples[name].append((time.perf_counter_ns() - start) / len(frames) / 1000.0)
    return {
        name: {
            "median_us": round(statistics.median(values), 2),
            "best_us": round(min(values), 2),
            "bytes": round(statistics.fmean(len(cases[name](a, n)) for n, a in enumerate(frames))),
        }
        for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    schemas = SchemaSet()
    validate_with = schemas._outbound["1.1"]["energy_update"].validate
    validate_without = schema_without_evidence()
    ts = messages.now_ms()

    def frame(activity: FrameActivity, number: int, evidence: bool) -> messages.Event:
        level = activity.total_energy
        return messages.energy_update(
            frame_number=number,
            total_energy=level,
            delta_energy=0.0,
            tokens_generated=len(activity.tokens),
            processing_time_ms=0.05,
            model_id=activity.primary.model_id,
            distribution=energy_frames.frame_distribution(activity, level),
            evidence=energy_frames.frame_evidence(activity) if evidence else None,
        )

    def with_evidence(activity: FrameActivity, number: int) -> bytes:
        message = messages.envelope("1.1", frame(activity, number, True), ts, number + 1)
        validate_with(message)
        return orjson.dumps(message)

    def without_evidence(activity: FrameActivity, number: int) -> bytes:
        message = messages.envelope("1.1", frame(activity, number, False), ts, number + 1)
        validate_without(message)
        return orjson.dumps(message)

    results: dict[str, Any] = {}
    for name, council in (("one model", False), ("council of 3", True)):
        frames = activities(council, args.frames)
        timed = compare({"without": without_evidence, "with": with_evidence}, frames, args.rounds)
        without, with_ = timed["without"], timed["with"]
        results[name] = {
            "without": without,
            "with": with_,
            "overhead_percent_best": round(100 * (with_["best_us"] / without["best_us"] - 1), 1),
            "overhead_percent_median": round(100 * (with_["median_us"] / without["median_us"] - 1), 1),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
