"""
Tests of the protocol schemas and of :mod:`wirthforge_ws.protocol.schemas`.

A corpus of messages, built below from one valid example per type plus
mutations of it, is validated by the compiled validators (jsonschema-rs,
what the server runs) and by the reference validators (jsonschema), which
must both give the expected verdict. The protocol 1.0 part of the corpus is
also checked against the upstream contract WF-TECH-003-event-schemas.json.
"""

from __future__ import annotations

import copy
import json
import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from wirthforge_ws.protocol.schemas import (
    PROTOCOL_VERSIONS,
    SCHEMA_DIR,
    MessageValidationError,
    SchemaSet,
    reference_validator,
)

UPSTREAM_SCHEMA = Path(__file__).resolve().parents[3].parent / "shared/reference/WF-TECH-003-event-schemas.json"

OUTBOUND_TYPES = {
    "startup_complete",
    "energy_update",
    "energy_field",
    "token_stream",
    "interference_event",
    "resonance_event",
    "reward_event",
    "heartbeat",
    "error_event",
}
INBOUND_TYPES = {
    "heartbeat_response",
    "subscribe",
    "unsubscribe",
    "set_energy_rate",
    "pause_energy",
    "resume_energy",
}
FRAME_BOUND = {"energy_update", "energy_field", "interference_event", "resonance_event"}
CHANNEL_OF = {
    "startup_complete": "system",
    "energy_update": "energy",
    "energy_field": "energy",
    "token_stream": "experience",
    "interference_event": "council",
    "resonance_event": "council",
    "reward_event": "reward",
    "heartbeat": "system",
    "error_event": "system",
}

SECRET = "zq-PRIVATE-token-7f3a9c"  # must never show up in an error


# Valid examples ----------------------------------------------------------

TS = 1764101234567

VALID_1_0: dict[str, dict[str, Any]] = {
    "startup_complete": {
        "type": "startup_complete",
        "channel": "system",
        "timestamp": TS,
        "payload": {
            "model": "wirthforge-sim",
            "tier": "Mid-Tier",
            "version": "1.1.0",
            "frameRate": 60,
            "capabilities": ["council", "visualization"],
        },
    },
    "energy_update": {
        "type": "energy_update",
        "channel": "energy",
        "timestamp": TS + 17,
        "frameNumber": 1042,
        "payload": {
            "totalEnergy": 0.62,
            "deltaEnergy": 0.013,
            "tokensGenerated": 1,
            "processingTime": 0.05,
            "modelId": "wirthforge-sim",
            "energyDistribution": {"generation": 0.4, "attention": 0.12, "reasoning": 0.1},
        },
    },
    "energy_field": {
        "type": "energy_field",
        "channel": "energy",
        "timestamp": TS + 100,
        "frameNumber": 1044,
        "payload": {
            "fieldType": "lightning",
            "intensity": 0.7,
            "modelId": "wirthforge-sim",
            "coordinates": [{"x": 0.1, "y": -2, "energy": 0.3}, {"x": 5, "y": 5, "energy": 0}],
        },
    },
    "token_stream": {
        "type": "token_stream",
        "channel": "experience",
        "timestamp": TS + 20,
        "payload": {
            "tokens": ["Hello", ",", " w\u00f6rld \U0001f30d", "<b>not html</b>"],
            "isComplete": False,
            "sessionId": "session-1",
            "modelId": "llama3_2-1b",
            "energyCost": 0.02,
        },
    },
    "interference_event": {
        "type": "interference_event",
        "channel": "council",
        "timestamp": TS + 30,
        "frameNumber": 1050,
        "payload": {
            "patternType": "constructive",
            "models": ["llama3_2-1b", "qwen2_5-0_5b"],
            "intensity": 0.4,
            "coherenceScore": 0.8,
        },
    },
    "resonance_event": {
        "type": "resonance_event",
        "channel": "council",
        "timestamp": TS + 40,
        "frameNumber": 1051,
        "payload": {
            "resonanceType": "harmonic",
            "frequency": 2.5,
            "amplitude": 0.6,
            "participants": ["llama3_2-1b", "qwen2_5-0_5b", "phi3"],
            "phase": 90,
        },
    },
    "reward_event": {
        "type": "reward_event",
        "channel": "reward",
        "timestamp": TS + 50,
        "payload": {
            "rewardType": "milestone",
            "title": "First flow",
            "description": "Ten tokens in a row",
            "points": 10,
            "level": 2,
            "energyBonus": 0.1,
        },
    },
    "heartbeat": {
        "type": "heartbeat",
        "channel": "system",
        "timestamp": TS + 1000,
        "payload": {"sequence": 0, "serverTime": TS + 1000, "frameRate": 59.9, "connectionId": "c-1"},
    },
    "error_event": {
        "type": "error_event",
        "channel": "system",
        "timestamp": TS + 60,
        "payload": {
            "severity": "warning",
            "code": "INVALID_JSON",
            "message": "inbound frame is not JSON",
            "component": "websocket",
            "details": {"reason": "x", "nested": [1, {"a": None}]},
            "recoverable": True,
        },
    },
}

SESSION_1_1 = {
    "protocol": "1.1",
    "connectionId": "c-1",
    "epoch": "8f2c61d0a4b3e915",
    "heartbeatIntervalMs": 1000,
    "channels": {
        "energy": {"rateHz": 60, "delivery": "latest"},
        "experience": {"rateHz": None, "delivery": "reliable"},
        "council": {"rateHz": None, "delivery": "reliable"},
        "reward": {"rateHz": None, "delivery": "reliable"},
        "system": {"rateHz": 1, "delivery": "reliable"},
    },
    "subscriptions": ["energy", "experience", "system"],
    "energyRateHz": 30,
    "limits": {
        "maxMessageBytes": 65536,
        "messagesPerSecond": 100,
        "messageBurst": 200,
        "sendQueueMessages": 1024,
        "sendTimeoutMs": 3000,
        "historyMessages": 10000,
        "historySeconds": 120,
    },
    "resume": {"status": "none"},
}


# What 1.1 adds to each type's payload (the 1.0 envelope strips it: messages.ONLY_1_1).
EVIDENCE_1_1: dict[str, dict[str, Any]] = {
    "startup_complete": SESSION_1_1,
    "energy_update": {
        "evidence": {
            "sessionId": "prompt-0001-8f2c61d0",
            "state": "FLOWING",
            "profile": "Dual",
            "tokens": [
                {"index": 41, "dtMs": 70.2, "certainty": 0.8123, "energy": 0.6012},
                {"index": 42, "dtMs": 1210.0, "certainty": None, "energy": 0.55},
            ],
            "tokensOmitted": 0,
            "tps": 9,
            "certainty": None,
            "entropy": None,
            "sinceTokenMs": 3.4,
            "stall": True,
            "burst": False,
            "ttftMs": 412.5,
            "energyUnits": 0.2481,
            "models": [
                {
                    "modelId": "wirthforge-sim",
                    "energy": 0.55,
                    "state": "FLOWING",
                    "tps": 9,
                    "certainty": None,
                    "dtMs": 1210.0,
                    "tokens": 43,
                },
                {
                    "modelId": "council_critic",
                    "energy": 0.4,
                    "state": "STALLING",
                    "tps": 2.5,
                    "certainty": 0.31,
                    "dtMs": None,
                    "tokens": 0,
                },
            ],
            "ensembleEnergy": 0.475,
        }
    },
    "token_stream": {
        "firstIndex": 12,
        "tokenEvidence": [
            {"dtMs": 80.1, "topK": [0.61, 0.2, 0.1, 0.05]},
            {"dtMs": 0, "topK": None},
            {"dtMs": 95.5, "topK": [1]},
            {"dtMs": 1500.3, "topK": [0.3, 0.3, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]},
        ],
    },
    "interference_event": {"evidence": {"method": "jsd", "disagreement": 0.2, "window": 8}},
    "resonance_event": {"evidence": {"disagreement": 0.05, "tpsRatio": 0.85}},
}


def _as_1_1(message_type: str, seq: int) -> dict[str, Any]:
    message = copy.deepcopy(VALID_1_0[message_type])
    message["timestamp"] += 0.123
    message["seq"] = seq
    message["payload"].update(copy.deepcopy(EVIDENCE_1_1.get(message_type, {})))
    return message


VALID_1_1 = {t: _as_1_1(t, seq) for seq, t in enumerate(sorted(VALID_1_0), start=1)}


# Mutations -----------------------------------------------------------------

DELETE = object()
Verdict = bool | dict[str, bool]  # one verdict, or one per protocol version


def mutate(message: dict[str, Any], *ops: tuple[str, Any]) -> dict[str, Any]:
    """Return a copy of ``message`` with each ``("a.b.0", value)`` applied."""
    message = copy.deepcopy(message)
    for path, value in ops:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = message
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return message


# Payload mutations, per type: (label, ops, verdict). The same payloads are
# used in both protocol versions, so each applies to 1.0 and 1.1.
BAD_MODEL_IDS = [
    ("dot", "llama3.2"),
    ("colon", "llama3:1b"),
    ("ollama name", "llama3.2:1b"),
    ("space", "my model"),
    ("empty", ""),
    ("slash", "org/model"),
    ("non-ascii", "mod\u00e8le"),
    ("trailing newline", "wirthforge-sim\n"),
]


def _model_id_cases(path: str) -> list[tuple[str, list[tuple[str, Any]], Verdict]]:
    cases: list[tuple[str, list[tuple[str, Any]], Verdict]] = [
        (f"{path} {label}", [(path, value)], False) for label, value in BAD_MODEL_IDS
    ]
    cases.append((f"{path} number", [(path, 7)], False))
    cases.append((f"{path} with _ and -", [(path, "Qwen2_5-0_5B-instruct")], True))
    return cases


PAYLOAD_CASES: dict[str, list[tuple[str, list[tuple[str, Any]], Verdict]]] = {
    "startup_complete": [
        ("minimal (no capabilities)", [("payload.capabilities", DELETE)], True),
        ("tier wrong enum", [("payload.tier", "Ultra-Tier")], False),
        ("tier lower case", [("payload.tier", "mid-tier")], False),
        ("version two parts", [("payload.version", "1.0")], False),
        ("version v-prefix", [("payload.version", "v1.0.0")], False),
        ("version pre-release", [("payload.version", "1.0.0-rc1")], False),
        ("version non-ascii digits", [("payload.version", "\u0661.\u0660.\u0660")], False),
        ("version trailing newline", [("payload.version", "1.0.0\n")], False),
        ("frameRate 30", [("payload.frameRate", 30)], {"1.0": False, "1.1": True}),
        ("frameRate 60.0", [("payload.frameRate", 60.0)], True),
        ("frameRate 59.94", [("payload.frameRate", 59.94)], {"1.0": False, "1.1": True}),
        ("frameRate 0", [("payload.frameRate", 0)], False),
        ("frameRate string", [("payload.frameRate", "60")], False),
        ("frameRate true", [("payload.frameRate", True)], False),
        ("capabilities wrong enum", [("payload.capabilities", ["telepathy"])], False),
        ("capabilities not array", [("payload.capabilities", "council")], False),
        ("capabilities empty", [("payload.capabilities", [])], True),
        *_model_id_cases("payload.model"),
    ],
    "energy_update": [
        ("minimal (no distribution)", [("payload.energyDistribution", DELETE)], True),
        ("totalEnergy negative", [("payload.totalEnergy", -0.1)], False),
        ("totalEnergy zero", [("payload.totalEnergy", 0)], True),
        ("totalEnergy string", [("payload.totalEnergy", "0.5")], False),
        ("totalEnergy null", [("payload.totalEnergy", None)], False),
        ("deltaEnergy negative", [("payload.deltaEnergy", -0.5)], True),
        ("deltaEnergy bool", [("payload.deltaEnergy", False)], False),
        ("tokensGenerated fraction", [("payload.tokensGenerated", 1.5)], False),
        ("tokensGenerated integral float", [("payload.tokensGenerated", 2.0)], True),
        ("tokensGenerated bool", [("payload.tokensGenerated", True)], False),
        ("tokensGenerated negative", [("payload.tokensGenerated", -1)], False),
        ("processingTime at budget", [("payload.processingTime", 16.67)], True),
        ("processingTime over budget", [("payload.processingTime", 16.68)], False),
        ("processingTime negative", [("payload.processingTime", -0.01)], False),
        ("distribution empty", [("payload.energyDistribution", {})], True),
        ("distribution extra key", [("payload.energyDistribution.speed", 0.1)], False),
        ("distribution negative", [("payload.energyDistribution.attention", -0.1)], False),
        ("distribution not object", [("payload.energyDistribution", [0.4, 0.1, 0.1])], False),
        *_model_id_cases("payload.modelId"),
    ],
    "energy_field": [
        ("fieldType wrong enum", [("payload.fieldType", "plasma")], False),
        ("intensity over 1", [("payload.intensity", 1.5)], False),
        ("intensity negative", [("payload.intensity", -0.1)], False),
        ("intensity 1", [("payload.intensity", 1)], True),
        ("coordinates empty", [("payload.coordinates", [])], True),
        ("coordinates not array", [("payload.coordinates", {"x": 1, "y": 1, "energy": 1})], False),
        ("point without energy", [("payload.coordinates.0.energy", DELETE)], False),
        ("point extra key", [("payload.coordinates.1.z", 1)], False),
        ("point negative energy", [("payload.coordinates.0.energy", -1)], False),
        ("point x string", [("payload.coordinates.0.x", "1")], False),
        *_model_id_cases("payload.modelId"),
    ],
    "token_stream": [
        ("minimal (no energyCost)", [("payload.energyCost", DELETE)], True),
        ("tokens empty", [("payload.tokens", [])], True),
        ("tokens empty string", [("payload.tokens", [""])], True),
        ("tokens with number", [("payload.tokens", ["a", 1])], False),
        ("tokens not array", [("payload.tokens", "abc")], False),
        ("isComplete string", [("payload.isComplete", "true")], False),
        ("isComplete 1", [("payload.isComplete", 1)], False),
        ("sessionId number", [("payload.sessionId", 5)], False),
        ("energyCost negative", [("payload.energyCost", -1)], False),
        *_model_id_cases("payload.modelId"),
    ],
    "interference_event": [
        ("patternType wrong enum", [("payload.patternType", "chaotic")], False),
        ("one model", [("payload.models", ["llama3_2-1b"])], False),
        ("models with bad id", [("payload.models", ["llama3_2-1b", "qwen2.5"])], False),
        ("models not array", [("payload.models", "a,b")], False),
        ("intensity over 1", [("payload.intensity", 2)], False),
        ("coherenceScore negative", [("payload.coherenceScore", -0.1)], False),
        ("coherenceScore 0", [("payload.coherenceScore", 0)], True),
    ],
    "resonance_event": [
        ("minimal (no phase)", [("payload.phase", DELETE)], True),
        ("resonanceType wrong enum", [("payload.resonanceType", "subharmonic")], False),
        ("frequency negative", [("payload.frequency", -1)], False),
        ("amplitude over 1", [("payload.amplitude", 1.01)], False),
        ("one participant", [("payload.participants", ["phi3"])], False),
        ("participant with colon", [("payload.participants", ["phi3", "llama3:1b"])], False),
        ("phase 360", [("payload.phase", 360)], True),
        ("phase over 360", [("payload.phase", 361)], False),
        ("phase negative", [("payload.phase", -1)], False),
    ],
    "reward_event": [
        (
            "minimal",
            [("payload.description", DELETE), ("payload.level", DELETE), ("payload.energyBonus", DELETE)],
            True,
        ),
        ("rewardType wrong enum", [("payload.rewardType", "bonus")], False),
        ("title 100 chars", [("payload.title", "t" * 100)], True),
        ("title 101 chars", [("payload.title", "t" * 101)], False),
        ("description 500 chars", [("payload.description", "d" * 500)], True),
        ("description 501 chars", [("payload.description", "d" * 501)], False),
        ("points negative", [("payload.points", -1)], False),
        ("points fraction", [("payload.points", 1.5)], False),
        ("level 0", [("payload.level", 0)], False),
        ("level 6", [("payload.level", 6)], False),
        ("level 5", [("payload.level", 5)], True),
        ("energyBonus negative", [("payload.energyBonus", -0.1)], False),
    ],
    "heartbeat": [
        ("minimal", [("payload.frameRate", DELETE), ("payload.connectionId", DELETE)], True),
        ("sequence negative", [("payload.sequence", -1)], False),
        ("sequence missing", [("payload.sequence", DELETE)], False),
        ("serverTime fraction", [("payload.serverTime", TS + 0.5)], False),
        ("serverTime missing", [("payload.serverTime", DELETE)], False),
        ("frameRate string", [("payload.frameRate", "60")], False),
        ("connectionId number", [("payload.connectionId", 5)], False),
    ],
    "error_event": [
        (
            "minimal",
            [("payload.details", DELETE), ("payload.recoverable", DELETE)],
            True,
        ),
        ("severity wrong enum", [("payload.severity", "fatal")], False),
        ("code lower case", [("payload.code", "invalid_json")], False),
        ("code with dash", [("payload.code", "INVALID-JSON")], False),
        ("code trailing newline", [("payload.code", "INVALID_JSON\n")], False),
        ("code empty", [("payload.code", "")], False),
        ("message 1000 chars", [("payload.message", "m" * 1000)], True),
        ("message 1001 chars", [("payload.message", "m" * 1001)], False),
        ("component wrong enum", [("payload.component", "browser")], False),
        ("component orchestrator", [("payload.component", "orchestrator")], True),
        ("details not object", [("payload.details", "x")], False),
        ("recoverable string", [("payload.recoverable", "yes")], False),
    ],
}

STARTUP_1_1_CASES: list[tuple[str, list[tuple[str, Any]], bool]] = [
    ("protocol 1.0", [("payload.protocol", "1.0")], False),
    ("protocol missing", [("payload.protocol", DELETE)], False),
    ("connectionId empty", [("payload.connectionId", "")], False),
    ("epoch with space", [("payload.epoch", "8f2c 61d0")], False),
    ("epoch with slash", [("payload.epoch", "8f2c/61d0")], False),
    ("epoch uuid", [("payload.epoch", "0f8fad5b-d9cb-469f-a165-70867728950e")], True),
    ("epoch too long", [("payload.epoch", "a" * 129)], False),
    ("heartbeatIntervalMs 0", [("payload.heartbeatIntervalMs", 0)], False),
    ("channels missing reward", [("payload.channels.reward", DELETE)], False),
    ("channels unknown name", [("payload.channels.bogus", {"rateHz": 1, "delivery": "latest"})], False),
    ("channel delivery wrong enum", [("payload.channels.energy.delivery", "sometimes")], False),
    ("channel rateHz 0", [("payload.channels.energy.rateHz", 0)], False),
    ("channel rateHz fraction", [("payload.channels.energy.rateHz", 59.94)], True),
    ("channel rateHz string", [("payload.channels.energy.rateHz", "60")], False),
    ("channel without delivery", [("payload.channels.council.delivery", DELETE)], False),
    ("channel extra key", [("payload.channels.council.queue", 5)], False),
    ("subscriptions without system", [("payload.subscriptions", ["energy"])], False),
    ("subscriptions only system", [("payload.subscriptions", ["system"])], True),
    ("subscriptions duplicate", [("payload.subscriptions", ["system", "system"])], False),
    ("subscriptions unknown channel", [("payload.subscriptions", ["bogus", "system"])], False),
    ("energyRateHz 0", [("payload.energyRateHz", 0)], False),
    ("energyRateHz fraction", [("payload.energyRateHz", 7.5)], True),
    ("limits missing historySeconds", [("payload.limits.historySeconds", DELETE)], False),
    ("limits fractional bytes", [("payload.limits.maxMessageBytes", 1.5)], False),
    ("limits zero history", [("payload.limits.historyMessages", 0)], True),
    ("limits extra key", [("payload.limits.maxClients", 10)], False),
    ("resume complete", [("payload.resume", {"status": "complete", "replayed": 12})], True),
    ("resume complete without replayed", [("payload.resume", {"status": "complete"})], False),
    (
        "resume complete with reason",
        [("payload.resume", {"status": "complete", "replayed": 1, "reason": "epoch_changed"})],
        False,
    ),
    ("resume none with replayed", [("payload.resume", {"status": "none", "replayed": 0})], False),
    (
        "resume incomplete",
        [("payload.resume", {"status": "incomplete", "replayed": 0, "reason": "epoch_changed"})],
        True,
    ),
    (
        "resume incomplete without reason",
        [("payload.resume", {"status": "incomplete", "replayed": 3})],
        False,
    ),
    (
        "resume reason wrong enum",
        [("payload.resume", {"status": "incomplete", "replayed": 0, "reason": "tired"})],
        False,
    ),
    ("resume status wrong enum", [("payload.resume", {"status": "partial"})], False),
    ("resume replayed negative", [("payload.resume", {"status": "complete", "replayed": -1})], False),
    ("resume extra key", [("payload.resume", {"status": "none", "why": "x"})], False),
    ("resume missing", [("payload.resume", DELETE)], False),
]


def _evidence_cases() -> list[tuple[str, list[tuple[str, Any]], bool]]:
    ev = "payload.evidence"
    cases: list[tuple[str, list[tuple[str, Any]], bool]] = [
        ("evidence without council", [(f"{ev}.models", DELETE), (f"{ev}.ensembleEnergy", DELETE)], True),
        ("evidence models without ensembleEnergy", [(f"{ev}.ensembleEnergy", DELETE)], False),
        ("evidence ensembleEnergy without models", [(f"{ev}.models", DELETE)], False),
        ("evidence idle", [(f"{ev}.sessionId", ""), (f"{ev}.state", "IDLE"), (f"{ev}.tokens", [])], True),
        ("evidence state lower case", [(f"{ev}.state", "flowing")], False),
        ("evidence state unknown", [(f"{ev}.state", "BOILING")], False),
        ("evidence profile unknown", [(f"{ev}.profile", "Turbo")], False),
        ("evidence sessionId 129 chars", [(f"{ev}.sessionId", "s" * 129)], False),
        ("evidence extra key", [(f"{ev}.text", "x")], False),
        (
            "evidence tokens 8",
            [(f"{ev}.tokens", [{"index": i, "dtMs": 1, "certainty": 1, "energy": 0} for i in range(8)])],
            True,
        ),
        (
            "evidence tokens 9",
            [(f"{ev}.tokens", [{"index": i, "dtMs": 1, "certainty": 1, "energy": 0} for i in range(9)])],
            False,
        ),
        ("evidence token with text", [(f"{ev}.tokens.0.text", "secret")], False),
        ("evidence token index negative", [(f"{ev}.tokens.0.index", -1)], False),
        ("evidence token dtMs negative", [(f"{ev}.tokens.0.dtMs", -0.1)], False),
        ("evidence token certainty over 1", [(f"{ev}.tokens.0.certainty", 1.01)], False),
        ("evidence token energy over 1", [(f"{ev}.tokens.0.energy", 1.5)], False),
        ("evidence token without energy", [(f"{ev}.tokens.0.energy", DELETE)], False),
        ("evidence tokensOmitted negative", [(f"{ev}.tokensOmitted", -1)], False),
        ("evidence tps negative", [(f"{ev}.tps", -1)], False),
        ("evidence tps null", [(f"{ev}.tps", None)], False),
        ("evidence certainty 0.5", [(f"{ev}.certainty", 0.5)], True),
        ("evidence certainty over 1", [(f"{ev}.certainty", 2)], False),
        ("evidence entropy ln 8", [(f"{ev}.entropy", 2.0794)], True),
        ("evidence entropy over ln 8", [(f"{ev}.entropy", 2.1)], False),
        ("evidence entropy negative", [(f"{ev}.entropy", -0.1)], False),
        ("evidence sinceTokenMs null", [(f"{ev}.sinceTokenMs", None)], True),
        ("evidence sinceTokenMs negative", [(f"{ev}.sinceTokenMs", -1)], False),
        ("evidence stall string", [(f"{ev}.stall", "no")], False),
        ("evidence burst null", [(f"{ev}.burst", None)], False),
        ("evidence ttftMs string", [(f"{ev}.ttftMs", "400")], False),
        ("evidence energyUnits negative", [(f"{ev}.energyUnits", -0.1)], False),
        ("evidence models one", [(f"{ev}.models", [EVIDENCE_1_1["energy_update"]["evidence"]["models"][0]])], False),
        ("evidence models 9", [(f"{ev}.models", [EVIDENCE_1_1["energy_update"]["evidence"]["models"][0]] * 9)], False),
        ("evidence model bad id", [(f"{ev}.models.1.modelId", "llama3:1b")], False),
        ("evidence model energy over 1", [(f"{ev}.models.1.energy", 1.1)], False),
        ("evidence model without tokens", [(f"{ev}.models.1.tokens", DELETE)], False),
        ("evidence model extra key", [(f"{ev}.models.1.text", "x")], False),
        ("evidence ensembleEnergy over 1", [(f"{ev}.ensembleEnergy", 1.01)], False),
    ]
    for key in EVIDENCE_1_1["energy_update"]["evidence"]:
        if key not in ("models", "ensembleEnergy"):
            cases.append((f"evidence without {key}", [(f"{ev}.{key}", DELETE)], False))
    return cases


CASES_1_1: dict[str, list[tuple[str, list[tuple[str, Any]], bool]]] = {
    "startup_complete": STARTUP_1_1_CASES,
    "energy_update": _evidence_cases(),
    "token_stream": [
        ("published without evidence", [("payload.firstIndex", DELETE), ("payload.tokenEvidence", DELETE)], True),
        ("tokenEvidence without firstIndex", [("payload.firstIndex", DELETE)], False),
        ("textOmitted", [("payload.textOmitted", True), ("payload.tokens", ["", "", "", ""])], True),
        ("textOmitted false", [("payload.textOmitted", False)], False),
        (
            "textOmitted on a recording without evidence",
            [("payload.textOmitted", True), ("payload.tokenEvidence", DELETE), ("payload.firstIndex", DELETE)],
            True,
        ),
        ("firstIndex negative", [("payload.firstIndex", -1)], False),
        ("firstIndex fraction", [("payload.firstIndex", 1.5)], False),
        ("tokenEvidence empty", [("payload.tokenEvidence", []), ("payload.tokens", [])], True),
        ("tokenEvidence not array", [("payload.tokenEvidence", {"dtMs": 1, "topK": None})], False),
        ("tokenEvidence without topK", [("payload.tokenEvidence.0.topK", DELETE)], False),
        ("tokenEvidence without dtMs", [("payload.tokenEvidence.0.dtMs", DELETE)], False),
        ("tokenEvidence dtMs negative", [("payload.tokenEvidence.0.dtMs", -1)], False),
        ("tokenEvidence topK empty", [("payload.tokenEvidence.0.topK", [])], False),
        ("tokenEvidence topK 9", [("payload.tokenEvidence.0.topK", [0.1] * 9)], False),
        ("tokenEvidence topK over 1", [("payload.tokenEvidence.0.topK", [1.2, 0.1])], False),
        ("tokenEvidence topK with texts", [("payload.tokenEvidence.0.topK", [{"t": "The", "p": 0.2}])], False),
        ("tokenEvidence candidate text", [("payload.tokenEvidence.0.token", "The")], False),
    ],
    "interference_event": [
        ("published without evidence", [("payload.evidence", DELETE)], True),
        ("evidence timing", [("payload.evidence.method", "timing")], True),
        ("evidence method unknown", [("payload.evidence.method", "kl")], False),
        ("evidence disagreement over 1", [("payload.evidence.disagreement", 1.01)], False),
        ("evidence window 0", [("payload.evidence.window", 0)], False),
        ("evidence window 65", [("payload.evidence.window", 65)], False),
        ("evidence without method", [("payload.evidence.method", DELETE)], False),
        ("evidence extra key", [("payload.evidence.models", 2)], False),
    ],
    "resonance_event": [
        ("published without evidence", [("payload.evidence", DELETE)], True),
        ("evidence tpsRatio over 1", [("payload.evidence.tpsRatio", 1.5)], False),
        ("evidence disagreement negative", [("payload.evidence.disagreement", -0.1)], False),
        ("evidence without tpsRatio", [("payload.evidence.tpsRatio", DELETE)], False),
        ("evidence extra key", [("payload.evidence.phase", 1)], False),
    ],
}


def _envelope_cases(
    version: str, message_type: str, valid: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Mutations of the envelope, the same for every type."""
    for key in valid:
        yield f"missing {key}", mutate(valid, (key, DELETE)), False
    for key in valid["payload"]:
        yield (
            f"missing payload.{key}",
            mutate(valid, (f"payload.{key}", DELETE)),
            not _required(version, message_type, key, valid["payload"]),
        )
    yield "extra top-level key", mutate(valid, ("extra", 1)), False
    yield "extra payload key", mutate(valid, ("payload.extra", 1)), False
    other = "reward" if CHANNEL_OF[message_type] != "reward" else "system"
    yield "wrong channel", mutate(valid, ("channel", other)), False
    yield "channel not a channel", mutate(valid, ("channel", "bogus")), False
    yield "wrong type", mutate(valid, ("type", "bogus_event")), False
    yield "payload not object", mutate(valid, ("payload", [])), False
    yield "payload null", mutate(valid, ("payload", None)), False
    yield "timestamp negative", mutate(valid, ("timestamp", -1)), False
    yield "timestamp string", mutate(valid, ("timestamp", str(TS))), False
    yield "timestamp zero", mutate(valid, ("timestamp", 0)), True
    if version == "1.0":
        yield "1.0 timestamp float", mutate(valid, ("timestamp", TS + 0.5)), False
        yield "1.0 timestamp integral float", mutate(valid, ("timestamp", float(TS))), True
        yield "1.0 with seq", mutate(valid, ("seq", 1)), False
    else:
        yield "1.1 timestamp integer", mutate(valid, ("timestamp", TS)), True
        yield "1.1 timestamp negative fraction", mutate(valid, ("timestamp", -0.5)), False
        yield "1.1 seq 0", mutate(valid, ("seq", 0)), False
        yield "1.1 seq fraction", mutate(valid, ("seq", 1.5)), False
        yield "1.1 seq string", mutate(valid, ("seq", "5")), False
        yield "1.1 seq bool", mutate(valid, ("seq", True)), False
        yield "1.1 seq large", mutate(valid, ("seq", 2**53)), True
    if message_type in FRAME_BOUND:
        yield "frameNumber negative", mutate(valid, ("frameNumber", -1)), False
        yield "frameNumber string", mutate(valid, ("frameNumber", "1")), False
        yield "frameNumber zero", mutate(valid, ("frameNumber", 0)), True
    else:
        yield "frameNumber on a type without frames", mutate(valid, ("frameNumber", 1)), False


_REQUIRED_PAYLOAD: dict[str, dict[str, set[str]]] = {
    version: {
        t: set(json.loads((SCHEMA_DIR / "1.0" / f"{t}.json").read_text())["definitions"]["payload"]["required"])
        for t in OUTBOUND_TYPES
    }
    for version in PROTOCOL_VERSIONS
}
_DEPENDENCIES: dict[str, dict[str, list[str]]] = {}  # 1.1 type -> payload key -> keys it needs
for _t in OUTBOUND_TYPES:  # 1.1 files that define a payload of their own
    _definitions = json.loads((SCHEMA_DIR / "1.1" / f"{_t}.json").read_text()).get("definitions", {})
    if "payload" in _definitions:
        _REQUIRED_PAYLOAD["1.1"][_t] = set(_definitions["payload"]["required"])
        _DEPENDENCIES[_t] = _definitions["payload"].get("dependencies", {})


def _required(version: str, message_type: str, key: str, payload: dict[str, Any]) -> bool:
    """Whether *payload* becomes invalid without *key*: required, or needed by another key it has."""
    if key in _REQUIRED_PAYLOAD[version][message_type]:
        return True
    needs = _DEPENDENCIES.get(message_type, {}) if version == "1.1" else {}
    return any(key in needed and other in payload for other, needed in needs.items())


def _outbound_corpus() -> Iterator[tuple[str, str, str, dict[str, Any], bool]]:
    """Yield ``(id, version, type, message, expected verdict)``."""
    for version, examples in (("1.0", VALID_1_0), ("1.1", VALID_1_1)):
        for message_type, valid in examples.items():
            yield f"{version}-{message_type}-valid", version, message_type, valid, True
            for label, message, verdict in _envelope_cases(version, message_type, valid):
                yield f"{version}-{message_type}-{label}", version, message_type, message, verdict
            cases = list(PAYLOAD_CASES[message_type])
            if version == "1.1":
                cases += CASES_1_1.get(message_type, [])
            else:
                # A 1.1 field on a 1.0 message breaks the upstream contract.
                cases += [
                    (f"1.1 field {key}", [(f"payload.{key}", value)], False)
                    for key, value in EVIDENCE_1_1.get(message_type, {}).items()
                ]
            for label, ops, expected in cases:
                verdict = expected[version] if isinstance(expected, dict) else expected
                yield (
                    f"{version}-{message_type}-{label}",
                    version,
                    message_type,
                    mutate(valid, *ops),
                    verdict,
                )


OUTBOUND_CORPUS = list(_outbound_corpus())

INBOUND_CORPUS: list[tuple[str, str, Any, bool]] = [
    # (label, type, message, verdict)
    (
        "heartbeat_response valid",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": 3}},
        True,
    ),
    (
        "heartbeat_response with clientTime and timestamp",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": 3, "clientTime": TS + 0.25}, "timestamp": TS},
        True,
    ),
    ("heartbeat_response missing payload", "heartbeat_response", {"type": "heartbeat_response"}, False),
    ("heartbeat_response missing sequence", "heartbeat_response", {"type": "heartbeat_response", "payload": {}}, False),
    (
        "heartbeat_response sequence negative",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": -1}},
        False,
    ),
    (
        "heartbeat_response sequence string",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": "3"}},
        False,
    ),
    (
        "heartbeat_response clientTime string",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": 3, "clientTime": "now"}},
        False,
    ),
    (
        "heartbeat_response extra payload key",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": 3, "rtt": 1}},
        False,
    ),
    (
        "heartbeat_response extra top-level key",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": 3}, "channel": "system"},
        False,
    ),
    (
        "heartbeat_response timestamp string",
        "heartbeat_response",
        {"type": "heartbeat_response", "payload": {"sequence": 3}, "timestamp": "now"},
        False,
    ),
    ("subscribe valid", "subscribe", {"type": "subscribe", "payload": {"channels": ["energy", "council"]}}, True),
    (
        "subscribe all five",
        "subscribe",
        {"type": "subscribe", "payload": {"channels": ["energy", "experience", "council", "reward", "system"]}},
        True,
    ),
    ("subscribe empty list", "subscribe", {"type": "subscribe", "payload": {"channels": []}}, False),
    (
        "subscribe unknown channel",
        "subscribe",
        {"type": "subscribe", "payload": {"channels": ["energy", "bogus"]}},
        False,
    ),
    ("subscribe channels string", "subscribe", {"type": "subscribe", "payload": {"channels": "energy"}}, False),
    ("subscribe missing channels", "subscribe", {"type": "subscribe", "payload": {}}, False),
    ("subscribe missing payload", "subscribe", {"type": "subscribe"}, False),
    (
        "subscribe extra payload key",
        "subscribe",
        {"type": "subscribe", "payload": {"channels": ["energy"], "rateHz": 5}},
        False,
    ),
    (
        "unsubscribe valid",
        "unsubscribe",
        {"type": "unsubscribe", "payload": {"channels": ["experience"]}, "timestamp": TS},
        True,
    ),
    (
        "unsubscribe system (refused in code, not by the schema)",
        "unsubscribe",
        {"type": "unsubscribe", "payload": {"channels": ["system"]}},
        True,
    ),
    ("unsubscribe empty list", "unsubscribe", {"type": "unsubscribe", "payload": {"channels": []}}, False),
    ("unsubscribe channel number", "unsubscribe", {"type": "unsubscribe", "payload": {"channels": [1]}}, False),
    ("set_energy_rate valid", "set_energy_rate", {"type": "set_energy_rate", "payload": {"rateHz": 30}}, True),
    (
        "set_energy_rate fraction (range is checked in code)",
        "set_energy_rate",
        {"type": "set_energy_rate", "payload": {"rateHz": 0.5}},
        True,
    ),
    ("set_energy_rate zero", "set_energy_rate", {"type": "set_energy_rate", "payload": {"rateHz": 0}}, False),
    ("set_energy_rate negative", "set_energy_rate", {"type": "set_energy_rate", "payload": {"rateHz": -5}}, False),
    ("set_energy_rate string", "set_energy_rate", {"type": "set_energy_rate", "payload": {"rateHz": "30"}}, False),
    ("set_energy_rate bool", "set_energy_rate", {"type": "set_energy_rate", "payload": {"rateHz": True}}, False),
    ("set_energy_rate missing rateHz", "set_energy_rate", {"type": "set_energy_rate", "payload": {}}, False),
]
for _t in ("pause_energy", "resume_energy"):
    INBOUND_CORPUS += [
        (f"{_t} without payload", _t, {"type": _t}, True),
        (f"{_t} empty payload", _t, {"type": _t, "payload": {}}, True),
        (f"{_t} with timestamp", _t, {"type": _t, "timestamp": TS + 0.5}, True),
        (f"{_t} payload with key", _t, {"type": _t, "payload": {"now": True}}, False),
        (f"{_t} payload list", _t, {"type": _t, "payload": []}, False),
        (f"{_t} payload null", _t, {"type": _t, "payload": None}, False),
        (f"{_t} extra top-level key", _t, {"type": _t, "channel": "energy"}, False),
    ]
for _t in sorted(INBOUND_TYPES):
    INBOUND_CORPUS.append((f"{_t} wrong type", _t, {"type": "bogus", "payload": {}}, False))
    INBOUND_CORPUS.append((f"{_t} missing type", _t, {"payload": {}}, False))


# Fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet()


_reference_cache: dict[tuple[str, str], jsonschema.Draft7Validator] = {}


def reference(directory: str, message_type: str) -> jsonschema.Draft7Validator:
    key = (directory, message_type)
    if key not in _reference_cache:
        _reference_cache[key] = reference_validator(directory, message_type)
    return _reference_cache[key]


@pytest.fixture(scope="module")
def upstream() -> jsonschema.Draft7Validator:
    if not UPSTREAM_SCHEMA.is_file():
        pytest.skip(f"upstream contract not found: {UPSTREAM_SCHEMA}")
    document = json.loads(UPSTREAM_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(document)
    # The per-type schemas only resolve inside the whole document.
    return jsonschema.Draft7Validator(document)


def fast_verdict(check: Any, *args: Any) -> bool:
    try:
        check(*args)
    except MessageValidationError:
        return False
    return True


# (a) the compiled validators and the reference validators agree ----------


def test_schema_files(schemas: SchemaSet) -> None:
    for version in PROTOCOL_VERSIONS:
        assert schemas.outbound_types(version) == OUTBOUND_TYPES
        assert {p.stem for p in (SCHEMA_DIR / version).glob("*.json")} == OUTBOUND_TYPES
    assert schemas.inbound_types() == INBOUND_TYPES
    for path in SCHEMA_DIR.rglob("*.json"):
        document = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft7Validator.check_schema(document)
        assert document["$schema"] == "http://json-schema.org/draft-07/schema#"
        relative = path.relative_to(SCHEMA_DIR).as_posix()
        assert document["$id"] == f"https://wirthforge.local/schemas/{relative}"


@pytest.mark.parametrize(
    ("version", "message_type", "message", "expected"),
    [case[1:] for case in OUTBOUND_CORPUS],
    ids=[case[0] for case in OUTBOUND_CORPUS],
)
def test_outbound_corpus(
    schemas: SchemaSet, version: str, message_type: str, message: dict[str, Any], expected: bool
) -> None:
    before = copy.deepcopy(message)
    assert fast_verdict(schemas.validate_outbound, version, message) is expected
    assert reference(version, message_type).is_valid(message) is expected
    assert message == before  # validation never fills in defaults


@pytest.mark.parametrize(
    ("message_type", "message", "expected"),
    [case[1:] for case in INBOUND_CORPUS],
    ids=[case[0] for case in INBOUND_CORPUS],
)
def test_inbound_corpus(schemas: SchemaSet, message_type: str, message: Any, expected: bool) -> None:
    assert fast_verdict(schemas.validate_inbound, message) is expected
    assert reference("inbound", message_type).is_valid(message) is expected


def test_corpus_covers_every_type() -> None:
    seen = {(version, t) for _, version, t, _, _ in OUTBOUND_CORPUS}
    assert seen == {(v, t) for v in PROTOCOL_VERSIONS for t in OUTBOUND_TYPES}
    assert {t for _, t, _, _ in INBOUND_CORPUS} == INBOUND_TYPES
    for version in PROTOCOL_VERSIONS:
        verdicts = {expected for _, v, _, _, expected in OUTBOUND_CORPUS if v == version}
        assert verdicts == {True, False}


# (b) protocol 1.0 is the upstream contract ----------------------------------

CORPUS_1_0 = [case for case in OUTBOUND_CORPUS if case[1] == "1.0"]

# Messages that we reject on purpose although the upstream file, read by
# Python's jsonschema, accepts them: Python's "$" matches before a final
# newline and "\d" matches any Unicode digit, while browsers' ECMA-262
# regular expressions (which the upstream UIs use) reject both.
STRICTER_THAN_UPSTREAM = {
    "1.0-startup_complete-payload.model trailing newline",
    "1.0-startup_complete-version non-ascii digits",
    "1.0-startup_complete-version trailing newline",
    "1.0-energy_update-payload.modelId trailing newline",
    "1.0-energy_field-payload.modelId trailing newline",
    "1.0-token_stream-payload.modelId trailing newline",
    "1.0-error_event-code trailing newline",
}


@pytest.mark.parametrize(
    ("message", "expected"),
    [(case[3], case[4]) for case in CORPUS_1_0],
    ids=[case[0] for case in CORPUS_1_0],
)
def test_1_0_matches_upstream(
    schemas: SchemaSet, upstream: jsonschema.Draft7Validator, message: dict[str, Any], expected: bool
) -> None:
    ours = fast_verdict(schemas.validate_outbound, "1.0", message)
    theirs = upstream.is_valid(message)
    if ours:
        assert theirs, "accepted by schemas/1.0 but rejected by the upstream contract"
    if not theirs:
        assert not ours, "rejected by the upstream contract but accepted by schemas/1.0"


def test_1_0_stricter_than_upstream_only_where_intended(
    schemas: SchemaSet, upstream: jsonschema.Draft7Validator
) -> None:
    stricter = {
        case_id
        for case_id, _, _, message, _ in CORPUS_1_0
        if upstream.is_valid(message) and not fast_verdict(schemas.validate_outbound, "1.0", message)
    }
    assert stricter == STRICTER_THAN_UPSTREAM


# Error reporting ---------------------------------------------------------------


def _errors_with_secret(schemas: SchemaSet) -> Iterator[MessageValidationError]:
    valid = VALID_1_0["token_stream"]
    outbound = [
        mutate(valid, ("payload.tokens", [SECRET, 5])),
        mutate(valid, ("payload.tokens", SECRET)),
        mutate(valid, ("payload.tokens", {SECRET: SECRET})),
        mutate(valid, ("payload.tokens", [SECRET]), (f"payload.{SECRET}", SECRET)),
        mutate(valid, ("payload.tokens", [SECRET]), (SECRET, [SECRET])),
        mutate(valid, ("payload.tokens", [SECRET]), ("payload.modelId", SECRET + ":1b")),
        mutate(valid, ("payload.tokens", [SECRET]), ("payload.sessionId", [SECRET])),
        mutate(valid, ("payload.tokens", [SECRET]), ("payload.isComplete", SECRET)),
        mutate(valid, ("payload.tokens", [SECRET]), ("channel", SECRET)),
        mutate(valid, ("payload.tokens", [SECRET]), ("type", SECRET)),
        mutate(valid, ("payload.tokens", [SECRET]), ("payload", SECRET)),
    ]
    for version in PROTOCOL_VERSIONS:
        for message in outbound:
            with pytest.raises(MessageValidationError) as info:
                schemas.validate_outbound(version, message)
            yield info.value
    inbound: list[Any] = [
        SECRET,
        [SECRET],
        {SECRET: 1},
        {"type": SECRET},
        {"type": [SECRET]},
        {"type": "subscribe", "payload": {"channels": [SECRET]}},
        {"type": "subscribe", "payload": {"channels": ["energy"], SECRET: 1}},
        {"type": "subscribe", "payload": {"channels": SECRET}},
        {"type": "heartbeat_response", "payload": {"sequence": SECRET}},
        {"type": "pause_energy", "payload": {SECRET: SECRET}},
        {"type": "set_energy_rate", "payload": {"rateHz": SECRET}},
        {"type": "set_energy_rate", "payload": {"rateHz": 1}, "timestamp": SECRET},
    ]
    for message in inbound:
        with pytest.raises(MessageValidationError) as info:
            schemas.validate_inbound(message)
        yield info.value


def test_errors_never_quote_token_text(schemas: SchemaSet) -> None:
    count = 0
    for error in _errors_with_secret(schemas):
        count += 1
        rendered = "".join(traceback.format_exception(error))
        for text in (error.reason, error.path, str(error), repr(error), rendered):
            assert SECRET not in text
        assert error.reason  # and it still says something
    assert count > 20


def test_error_reason_and_path(schemas: SchemaSet) -> None:
    message = mutate(VALID_1_0["token_stream"], ("payload.tokens", ["a", 5]))
    with pytest.raises(MessageValidationError) as info:
        schemas.validate_outbound("1.0", message)
    assert info.value.reason == "payload.tokens[1] must be string"
    assert info.value.path == "/payload/tokens/1"
    assert info.value.keyword == "type"
    assert info.value.unknown_type is False

    message = mutate(VALID_1_0["energy_update"], ("payload.modelId", DELETE))
    with pytest.raises(MessageValidationError) as info:
        schemas.validate_outbound("1.0", message)
    assert info.value.reason == 'payload must contain "modelId"'
    assert info.value.path == "/payload"

    with pytest.raises(MessageValidationError) as info:
        schemas.validate_outbound("1.1", VALID_1_0["energy_update"])
    assert info.value.reason == 'message must contain "seq"'
    assert info.value.path == ""

    with pytest.raises(MessageValidationError) as info:
        schemas.validate_inbound({"type": "subscribe", "payload": {"channels": ["energy", "x"]}})
    assert info.value.path == "/payload/channels/1"
    assert info.value.keyword == "enum"  # lets the caller answer UNKNOWN_CHANNEL


def test_values_with_no_json_form_are_refused_not_raised(schemas: SchemaSet) -> None:
    # A builder bug (a set, an object) must give the same clear error as a
    # wrong value, not the validator's own exception.
    for value in ({"energy"}, object()):
        message = mutate(VALID_1_0["token_stream"], ("payload.tokens", value))
        with pytest.raises(MessageValidationError) as info:
            schemas.validate_outbound("1.0", message)
        assert info.value.reason == "message holds a value that has no JSON form"


def test_a_stray_property_is_named_by_its_rule_and_masked(schemas: SchemaSet) -> None:
    message = mutate(VALID_1_0["heartbeat"], ("payload.token-text-here", 1))
    with pytest.raises(MessageValidationError) as info:
        schemas.validate_outbound("1.0", message)
    assert info.value.reason == "payload must not contain properties other than the ones defined"
    assert info.value.keyword == "additionalProperties"
    assert "token-text-here" not in repr(info.value)


def test_inbound_dispatch_errors(schemas: SchemaSet) -> None:
    reasons = set()
    for message, unknown in [
        ([], False),
        ("subscribe", False),
        (None, False),
        ({"payload": {}}, False),
        ({"type": 5}, False),
        ({"type": "energy_update"}, True),
        ({"type": "bogus"}, True),
    ]:
        with pytest.raises(MessageValidationError) as info:
            schemas.validate_inbound(message)
        assert info.value.unknown_type is unknown
        reasons.add(info.value.reason)
    assert {"message is not an object", "message has no type", "type must be string"} <= reasons
    assert "unknown message type for client messages" in reasons


def test_outbound_dispatch_errors(schemas: SchemaSet) -> None:
    with pytest.raises(MessageValidationError, match="unknown protocol version"):
        schemas.validate_outbound("2.0", VALID_1_0["heartbeat"])
    with pytest.raises(MessageValidationError) as info:
        schemas.validate_outbound("1.0", {"type": "subscribe", "payload": {"channels": ["energy"]}})
    assert info.value.unknown_type
    with pytest.raises(MessageValidationError, match="not an object"):
        schemas.validate_outbound("1.0", ["heartbeat"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        schemas.outbound_types("0.9")


def test_remote_references_are_never_fetched(tmp_path: Path) -> None:
    schema_dir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    path = schema_dir / "1.0" / "heartbeat.json"
    document = json.loads(path.read_text())
    document["properties"]["timestamp"] = {"$ref": "https://example.invalid/timestamp.json"}
    path.write_text(json.dumps(document))
    with pytest.raises(Exception, match="only schemas under"):
        SchemaSet(schema_dir)


def test_schema_id_must_match_file(tmp_path: Path) -> None:
    schema_dir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    path = schema_dir / "1.1" / "heartbeat.json"
    document = json.loads(path.read_text())
    document["$id"] = "https://wirthforge.local/schemas/1.1/heartbeat_v2.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"\$id"):
        SchemaSet(schema_dir)
