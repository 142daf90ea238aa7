"""
Tests of docs/asyncapi.yaml: it is a well-formed AsyncAPI 3.0 document, and it
references every schema file (and only existing ones) instead of repeating them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from wirthforge_ws.protocol.schemas import PROTOCOL_VERSIONS, SCHEMA_DIR, SchemaSet, reference_validator

ASYNCAPI = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.yaml"

# Which schema directory the messages of each operation come from.
OPERATION_SOURCES = {
    "receive": {f"../schemas/{version}/" for version in PROTOCOL_VERSIONS},
    "send": {"../schemas/inbound/"},
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def refs(node: Any) -> Iterator[str]:
    """Yield every ``$ref`` value in ``node``, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local reference (``#/a/b``) inside ``document``."""
    assert ref.startswith("#/"), f"{ref} is not a local reference"
    node: Any = document
    for token in ref[2:].split("/"):
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"{ref} does not resolve"
        node = node[token]
    return node


def deref(document: dict[str, Any], node: Any) -> Any:
    """Follow local references until reaching an object that is not one."""
    seen = set()
    while isinstance(node, dict) and set(node) == {"$ref"} and node["$ref"].startswith("#/"):
        assert node["$ref"] not in seen, f"reference cycle at {node['$ref']}"
        seen.add(node["$ref"])
        node = resolve(document, node["$ref"])
    return node


def schema_files() -> set[str]:
    """Every message schema, as the path the document uses to reference it."""
    return {
        "../schemas/" + path.relative_to(SCHEMA_DIR).as_posix()
        for path in SCHEMA_DIR.rglob("*.json")
        if path.name != "definitions.json"
    }


def test_every_schema_file_is_referenced(document: dict[str, Any]) -> None:
    external = {ref for ref in refs(document) if not ref.startswith("#")}
    missing = schema_files() - external
    assert not missing, f"schema files not referenced in asyncapi.yaml: {sorted(missing)}"
    assert len(schema_files()) == 9 * len(PROTOCOL_VERSIONS) + 6


def test_every_referenced_file_exists(document: dict[str, Any]) -> None:
    for ref in refs(document):
        if ref.startswith("#"):
            resolve(document, ref)
            continue
        target = (ASYNCAPI.parent / ref.split("#", 1)[0]).resolve()
        assert target.is_file(), f"{ref} does not exist"
        assert SCHEMA_DIR in target.parents, f"{ref} points outside schemas/"


def test_asyncapi_3_structure(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    info = document["info"]
    assert isinstance(info["title"], str) and info["title"]
    assert isinstance(info["version"], str) and info["version"]

    server = document["servers"]["localhost"]
    assert server["host"] == "127.0.0.1:8145"
    assert server["protocol"] == "ws"
    assert server["pathname"] == "/ws"

    channels = document["channels"]
    assert channels, "no channels"
    for name, channel in channels.items():
        assert isinstance(channel.get("address"), str), f"channel {name} has no address"
        for server_ref in channel.get("servers", []):
            assert server_ref["$ref"].startswith("#/servers/")
            resolve(document, server_ref["$ref"])
        for message_name, message in channel.get("messages", {}).items():
            message = deref(document, message)
            assert isinstance(message, dict) and "payload" in message, (
                f"channel {name} message {message_name} has no payload"
            )
    assert [c["address"] for c in channels.values()] == ["/ws"]

    operations = document["operations"]
    assert {op["action"] for op in operations.values()} == {"send", "receive"}
    for name, operation in operations.items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/"), name
        channel = resolve(document, channel_ref)
        assert channel in channels.values()
        assert operation["messages"], f"operation {name} has no messages"
        for message_ref in operation["messages"]:
            ref = message_ref["$ref"]
            # AsyncAPI 3.0: an operation's messages are a subset of its channel's.
            assert ref.startswith(channel_ref + "/messages/"), f"{name}: {ref}"
            message = deref(document, resolve(document, ref))
            payload_ref = message["payload"]["$ref"]
            assert any(payload_ref.startswith(d) for d in OPERATION_SOURCES[operation["action"]]), (
                f"operation {name} ({operation['action']}) lists {payload_ref}"
            )


def test_operations_cover_every_message(document: dict[str, Any]) -> None:
    listed = {
        deref(document, resolve(document, ref["$ref"]))["payload"]["$ref"]
        for operation in document["operations"].values()
        for ref in operation["messages"]
    }
    assert listed == schema_files()


def test_subprotocol_negotiation_is_described(document: dict[str, Any]) -> None:
    binding = document["channels"]["ws"]["bindings"]["ws"]
    assert binding["method"] == "GET"
    assert set(binding["query"]["properties"]) >= {"channels", "energyRate", "epoch", "lastSeq"}
    assert "Sec-WebSocket-Protocol" in binding["headers"]["properties"]
    description = document["info"]["description"]
    for subprotocol in ("wirthforge.1.0", "wirthforge.1.1"):
        assert subprotocol in description


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, str, str, Any]]:
    for name, message in document["components"]["messages"].items():
        directory, file_name = message["payload"]["$ref"].split("/")[-2:]
        for example in message.get("examples", []):
            yield name, directory, file_name.removesuffix(".json"), example["payload"]


def test_examples_match_their_schemas(document: dict[str, Any]) -> None:
    schemas = SchemaSet()
    examples = list(_examples(document))
    assert examples
    for name, directory, message_type, example in examples:
        validator = reference_validator(directory, message_type)
        errors = [error.message for error in validator.iter_errors(example)]
        assert not errors, f"example of {name}: {errors}"
        if directory == "inbound":
            schemas.validate_inbound(example)
        else:
            schemas.validate_outbound(directory, example)


def test_parses_with_pydantic_asyncapi(document: dict[str, Any]) -> None:
    """Cross-check with an independent AsyncAPI 3 model, when it is installed."""
    pydantic_asyncapi = pytest.importorskip("pydantic_asyncapi")
    from pydantic_asyncapi.v3 import AsyncAPI as AsyncAPIV3

    model = pydantic_asyncapi.AsyncAPI.model_validate(document)
    assert isinstance(model.root, AsyncAPIV3)
    assert set(model.root.operations or {}) == set(document["operations"])


def test_the_1_1_fields_have_examples(document: dict[str, Any]) -> None:
    """Each type that 1.1 extends shows its 1.1 fields in an example, so a reader sees them in use."""
    from wirthforge_ws.protocol.messages import ONLY_1_1

    shown: dict[str, set[str]] = {}
    for _, directory, message_type, example in _examples(document):
        if directory == "1.1":
            shown.setdefault(message_type, set()).update(example["payload"])
    for message_type, keys in ONLY_1_1.items():
        assert keys - {"textOmitted"} <= shown.get(message_type, set()), message_type
