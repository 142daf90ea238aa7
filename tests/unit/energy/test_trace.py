"""WVMP v0.1 traces: built from the golden timelines, recomputed exactly, private by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.energy import reference
from tests.unit.energy.test_golden import GOLDEN_FILES, TOLERANCE, load
from wirthforge_ws.energy import PROFILES
from wirthforge_ws.energy.trace import TraceError, TraceModel, build_trace, recompute


def trace_of(golden: dict[str, Any], with_text: bool = False) -> dict[str, Any]:
    models = [
        TraceModel(
            model["name"],
            model["backend"],
            [(t["dt_ms"], t["top_k"], f"w{i}" if with_text else None) for i, t in enumerate(model["tokens"])],
        )
        for model in golden["models"]
    ]
    # Through JSON, as an exported file would be read back.
    return json.loads(json.dumps(build_trace("s-1", models, PROFILES[golden["profile"]])))


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_recompute_reproduces_every_energy_exactly(path: Path) -> None:
    golden = load(path)
    trace = trace_of(golden)
    written = [[token["E"] for token in model["tokens"]] for model in trace["models"]]
    assert recompute(trace, PROFILES[golden["profile"]]) == written
    assert recompute(trace) == written, "the profile named in meta"
    for energies, expected in zip(written, golden["expected"]["tokens"]):
        assert len(energies) == len(expected)
        assert all(abs(e - x["E"]) <= TOLERANCE for e, x in zip(energies, expected))


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_trace_fields(path: Path) -> None:
    golden = load(path)
    trace = trace_of(golden)
    assert trace["session_id"] == "s-1"
    assert trace["meta"] == {
        "version": "0.1",
        "window_ms": 1000.0,
        "stall_ms": PROFILES[golden["profile"]].stall_ms,
        "burst_tps": 12.0,
        "profile": golden["profile"],
    }
    for model, source, expected in zip(trace["models"], golden["models"], golden["expected"]["tokens"]):
        assert model["backend"] == source["backend"]
        for token, given, want in zip(model["tokens"], source["tokens"], expected):
            assert "token" not in token, "no text unless the caller gives it"
            assert token["t_ms"] == want["t_ms"] and token["delta_ms"] == given["dt_ms"]
            assert token["tps"] == want["tps"] and isinstance(token["stall"], bool)
            if given["top_k"] is None:
                assert "topk" not in token and "certainty" not in token and "entropy" not in token
            else:
                assert [c["p"] for c in token["topk"]] == reference.prepare_top_k(given["top_k"])
                assert all(c.keys() == {"p"} for c in token["topk"]), "candidate texts are never kept"
                assert abs(token["certainty"] - want["certainty"]) <= TOLERANCE
    if len(golden["models"]) > 1:
        (derived,) = trace["derived"]
        method = {"council_top_k": "DI_jsd", "council_timing": "DI_timing"}[path.stem]
        assert derived["name"] == method
        assert len(derived["by_token"]) == len(golden["expected"]["DI_by_token"])
        for a, b in zip(derived["by_token"], golden["expected"]["DI_by_token"]):
            assert (a is None and b is None) or abs(a - b) <= TOLERANCE
    else:
        assert trace["derived"] == []


def test_text_is_kept_only_when_given() -> None:
    trace = trace_of(load(GOLDEN_FILES[0]), with_text=True)
    assert [token["token"] for token in trace["models"][0]["tokens"][:2]] == ["w0", "w1"]


@pytest.mark.parametrize(
    ("trace", "field"),
    [
        ({"models": []}, "meta.profile"),
        ({"meta": {"profile": "Dual"}, "models": {}}, "models"),
        ({"meta": {"profile": "Dual"}, "models": [{"tokens": [{"E": 0.1}]}]}, "tokens[0].delta_ms"),
        ({"meta": {"profile": "Dual"}, "models": [{"tokens": [{"delta_ms": -1}]}]}, "delta_ms"),
        ({"meta": {"profile": "Dual"}, "models": [{"tokens": [{"delta_ms": 1, "topk": [{"t": "x"}]}]}]}, "topk[0].p"),
    ],
)
def test_a_bad_trace_names_its_field(trace: dict[str, Any], field: str) -> None:
    with pytest.raises(TraceError, match=field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        recompute(trace)
