"""The in-process section: build + validate + serialise per frame, and fan-out per client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import percentile


def _time_per_call(fn: Callable[[], Any], n: int, rounds: int = 7) -> dict[str, float]:
    """Median and best of *rounds* rounds of *n* calls, in microseconds per call."""
    for _ in range(min(n, 2000)):
        fn()
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        per_call.append((time.perf_counter_ns() - start) / n / 1000.0)
    return {"median_us": round(percentile(per_call, 0.5), 3), "best_us": round(min(per_call), 3)}


def section_micro(quick: bool) -> dict[str, Any]:
    print("  - in-process microbenchmark (build / validate / serialise / fan-out)", flush=True)
    import jsonschema
    import orjson

    from wirthforge_ws.connection.connection import Connection
    from wirthforge_ws.connection.options import ConnectOptions
    from wirthforge_ws.energy.meter import MeterSnapshot, TokenReading
    from wirthforge_ws.energy.profiles import DUAL
    from wirthforge_ws.energy.states import SessionState
    from wirthforge_ws.protocol import messages
    from wirthforge_ws.protocol.schemas import SchemaSet, reference_validator
    from wirthforge_ws.settings import Settings
    from wirthforge_ws.sources.base import FrameActivity
    from wirthforge_ws.sources.simulated import SimulatedModel
    from wirthforge_ws.stream import energy_frames
    from wirthforge_ws.stream.hub import Hub

    n = 3000 if quick else 20000
    settings = Settings()
    schemas = SchemaSet()
    distribution = {"generation": 0.412345, "attention": 0.123456, "reasoning": 0.101234}

    # One model in flow, one token this frame: the frame the server builds
    # most often while a model answers, through the server's own builders.
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

    def build(frame: int = 1042) -> Any:
        return messages.energy_update(
            frame_number=frame,
            total_energy=0.6234567,
            delta_energy=0.0131234,
            tokens_generated=1,
            processing_time_ms=0.0512,
            model_id="wirthforge-sim",
            distribution=distribution,
            evidence=energy_frames.frame_evidence(activity),
        )

    event = build()
    ts = messages.now_ms()
    msg11 = messages.envelope("1.1", event, ts, 48211)
    msg10 = messages.envelope("1.0", event, ts, 48211)
    draft7_11 = reference_validator("1.1", "energy_update")
    draft7_10 = reference_validator("1.0", "energy_update")
    upstream_path = Path(__file__).resolve().parents[3] / "shared/reference/WF-TECH-003-event-schemas.json"
    upstream = json.loads(upstream_path.read_text()) if upstream_path.exists() else None
    r: dict[str, Any] = {
        "iterations": n,
        "message_bytes": {"1.1": len(orjson.dumps(msg11)), "1.0": len(orjson.dumps(msg10))},
    }
    t = _time_per_call
    r["build_payload"] = t(build, n)
    r["envelope_1.1"] = t(lambda: messages.envelope("1.1", event, ts, 48211), n)
    r["envelope_1.0"] = t(lambda: messages.envelope("1.0", event, ts, 48211), n)
    r["validate_schemaset_1.1"] = t(lambda: schemas.validate_outbound("1.1", msg11), n)
    r["validate_schemaset_1.0"] = t(lambda: schemas.validate_outbound("1.0", msg10), n)
    r["validate_jsonschema_draft7_reused_1.1"] = t(lambda: draft7_11.validate(msg11), max(n // 20, 200))
    r["validate_jsonschema_draft7_reused_1.0"] = t(lambda: draft7_10.validate(msg10), max(n // 20, 200))
    if upstream is not None:
        upstream_validator = jsonschema.Draft7Validator(upstream)
        upstream_validator.validate(msg10)
        r["validate_jsonschema_upstream_whole_document_1.0"] = t(
            lambda: upstream_validator.validate(msg10), max(n // 50, 100)
        )
    r["serialise_orjson_1.1"] = t(lambda: orjson.dumps(msg11).decode(), n)

    def whole_frame() -> bytes:
        message = messages.envelope("1.1", build(), ts, 48211)
        schemas.validate_outbound("1.1", message)
        return orjson.dumps(message)

    r["frame_1.1"] = t(whole_frame, n)  # build + envelope + validate + serialise, in one call
    r["serialise_json_dumps_1.1"] = t(lambda: json.dumps(msg11), n)
    r["serialise_json_dumps_compact_1.1"] = t(lambda: json.dumps(msg11, separators=(",", ":")), n)

    class FakeSubscriber:
        __slots__ = ("version", "hub", "last")

        def __init__(self, hub: Hub, version: str) -> None:
            self.version, self.hub, self.last = version, hub, None

        def deliver(self, outbound: Any) -> None:  # what Connection.deliver does, minus the queue
            self.last = self.hub.render(outbound, self.version)

    def hub_with(subscribers: Sequence[tuple[str, str]]) -> tuple[Hub, list[Any]]:
        hub = Hub(schemas, history_messages=settings.history_messages, history_seconds=settings.history_seconds)
        subs: list[Any] = []
        for kind, version in subscribers:
            if kind == "fake":
                sub: Any = FakeSubscriber(hub, version)
            else:
                sub = Connection(
                    None,
                    hub=hub,
                    settings=settings,
                    version=version,  # type: ignore[arg-type]
                    subprotocol=f"wirthforge.{version}",
                    options=ConnectOptions.parse({}, settings, version),
                    nominal_rates={"energy_update": 60.0, "energy_field": 10.0},
                )
            hub.attach(sub, hub.plan_resume(("energy", "system"), None))
            subs.append(sub)
        return hub, subs

    frame = iter(range(10**9))

    hub2, _ = hub_with([("fake", "1.1"), ("fake", "1.0")])
    r["publish_build_both_versions"] = t(lambda: hub2.publish(build(next(frame))), n)
    hub1, _ = hub_with([("fake", "1.1")])
    r["publish_build_1.1_only"] = t(lambda: hub1.publish(build(next(frame))), n)

    def fanout(kind: str, count: int, iterations: int) -> dict[str, float]:
        hub, subs = hub_with([(kind, "1.1")] * count)
        outboxes = [s.outbox for s in subs] if kind == "conn" else []
        samples = []
        for i in range(iterations + 500):
            e = build(next(frame))
            start = time.perf_counter_ns()
            hub.publish(e)
            elapsed = time.perf_counter_ns() - start
            for outbox in outboxes:  # the writer tasks' part, not timed
                outbox.get_nowait()
            if i >= 500:
                samples.append(elapsed / 1000.0)
        samples.sort()
        return {"median_us": round(percentile(samples, 0.5), 3), "p99_us": round(percentile(samples, 0.99), 3)}

    iterations = 2000 if quick else 10000
    fan: dict[str, Any] = {}
    for kind in ("fake", "conn"):
        one = fanout(kind, 1, iterations)
        hundred = fanout(kind, 100, iterations // 5)
        fan[kind] = {
            "publish_1_us": one,
            "publish_100_us": hundred,
            "per_client_us": round((hundred["median_us"] - one["median_us"]) / 99, 3),
        }
    r["fanout"] = fan
    r["upstream_style_json_dumps_per_client_x100_us"] = t(
        lambda: [json.dumps(msg10) for _ in range(100)], max(n // 100, 50)
    )

    source = SimulatedModel("wirthforge-sim", council=True, seed=1)
    clock = [0.0]

    def step() -> Any:
        clock[0] += 1 / 60
        return source.step(int(clock[0] * 60), clock[0])

    r["source_step"] = t(step, n)

    # "Cold": one frame every 16.7 ms as in the server, so caches and branch
    # predictors have been disturbed in between; closer to the in-situ cost.
    cold_hub, _ = hub_with([("fake", "1.1"), ("fake", "1.0")])
    cold_publish, cold_step = [], []
    for _ in range(120 if quick else 300):  # bounded: about 5 s
        time.sleep(1 / 60)
        start = time.perf_counter_ns()
        cold_hub.publish(build(next(frame)))
        cold_publish.append((time.perf_counter_ns() - start) / 1000.0)
        time.sleep(1 / 60)
        start = time.perf_counter_ns()
        step()
        cold_step.append((time.perf_counter_ns() - start) / 1000.0)
    cold_publish.sort()
    cold_step.sort()
    r["cold_one_frame_per_16ms"] = {
        "publish_build_both_versions_us": {
            "median": round(percentile(cold_publish, 0.5), 1),
            "p99": round(percentile(cold_publish, 0.99), 1),
            "max": round(cold_publish[-1], 1),
        },
        "source_step_us": {
            "median": round(percentile(cold_step, 0.5), 1),
            "p99": round(percentile(cold_step, 0.99), 1),
            "max": round(cold_step[-1], 1),
        },
    }

    build_us = r["build_payload"]["median_us"]
    b11 = build_us + r["validate_schemaset_1.1"]["median_us"] + r["serialise_orjson_1.1"]["median_us"]
    r["summary"] = {
        "build_validate_serialise_1.1_us": round(b11 + r["envelope_1.1"]["median_us"], 2),
        "publish_both_versions_us": r["publish_build_both_versions"]["median_us"],
        "publish_both_versions_cold_p99_us": r["cold_one_frame_per_16ms"]["publish_build_both_versions_us"]["p99"],
        "target_us": 200.0,
    }
    print(
        f"      build {build_us} us, validate(SchemaSet) {r['validate_schemaset_1.1']['median_us']} us "
        f"vs jsonschema {r['validate_jsonschema_draft7_reused_1.1']['median_us']} us, orjson "
        f"{r['serialise_orjson_1.1']['median_us']} us vs json {r['serialise_json_dumps_1.1']['median_us']} us; "
        f"publish (1.1+1.0) {r['publish_build_both_versions']['median_us']} us; "
        f"fan-out per client {fan['conn']['per_client_us']} us",
        flush=True,
    )
    return r


# -- environment, tables, output ----------------------------------------------------
