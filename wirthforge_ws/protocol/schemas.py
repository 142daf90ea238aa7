"""
Load the protocol's JSON Schemas and validate messages against them.

The files under ``schemas/`` are the normative form of every message (see
``docs/PROTOCOL.md``): ``schemas/1.0/`` and ``schemas/1.1/`` hold one schema
per outbound message type, ``schemas/inbound/`` one per client request, and
``schemas/definitions.json`` the pieces they share. Files refer to each other
with relative ``$ref``\\ s resolved against their ``$id``
(``https://wirthforge.local/schemas/<dir>/<type>.json``); that host does not
exist and nothing is ever fetched from the network: every reference resolves
to a file loaded from disk.

:class:`SchemaSet` compiles each file once with jsonschema-rs (a compiled
validator: about a third of the time of fastjsonschema's generated Python on
an energy frame with its evidence) and dispatches on the message's ``type``,
so that validating an energy frame in the 60 Hz loop costs a dictionary
lookup plus one call, not a ``oneOf`` over every type. References are
inlined before compiling (:func:`_inlined`), so the compiled schema is
self-contained and nothing is ever fetched.

:func:`reference_validator` builds the slow, independent validator
(jsonschema + referencing) from the same files; the tests use it to check
that both implementations agree.

Errors never quote the message: :class:`MessageValidationError` says where
and what is wrong in terms of the schema only, because the rejected value may
be private token text and error reasons end up in logs and in error_event
messages sent to every client.

"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import jsonschema_rs

if TYPE_CHECKING:  # jsonschema is only needed by tests and tools
    import jsonschema

__all__ = [
    "SCHEMA_DIR",
    "PROTOCOL_VERSIONS",
    "MessageValidationError",
    "SchemaDefinitionError",
    "SchemaSet",
    "reference_validator",
]

SCHEMA_DIR: Path = Path(__file__).resolve().parents[2] / "schemas"
"""Directory holding the schema files: ``<repo>/schemas``."""

PROTOCOL_VERSIONS = ("1.0", "1.1")
"""Protocol versions with outbound schemas, oldest first."""

INBOUND = "inbound"
"""Subdirectory of the client-to-server schemas."""

BASE_URI = "https://wirthforge.local/schemas/"
"""Base of every ``$id``: the file ``schemas/X/Y.json`` has ``$id`` BASE_URI + ``X/Y.json``."""

Validator = jsonschema_rs.Draft7Validator


class SchemaDefinitionError(ValueError):
    """A schema file is malformed or refers to something outside ``schemas/``."""


class MessageValidationError(ValueError):
    """
    A message does not match its schema.

    :attr:`reason` is a short sentence naming the location and the broken
    rule, e.g. ``payload.tokens[0] must be string``. It is built from the
    schema only and never contains a value taken from the message, so it is
    safe to log and to send back in ``error_event.details.reason``.

    :attr:`path` is a JSON pointer to the offending location (``""`` for the
    message itself), :attr:`keyword` the JSON Schema keyword that failed
    (``""`` when the message was rejected before its schema was chosen), and
    :attr:`unknown_type` is true when the message has a ``type`` that no
    schema describes, so that the caller can answer ``UNKNOWN_MESSAGE_TYPE``
    rather than ``INVALID_MESSAGE``.

    """

    reason: str
    path: str
    keyword: str
    unknown_type: bool

    def __init__(
        self,
        reason: str,
        path: str = "",
        *,
        keyword: str = "",
        unknown_type: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path
        self.keyword = keyword
        self.unknown_type = unknown_type

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(reason={self.reason!r}, path={self.path!r}, "
            f"keyword={self.keyword!r}, unknown_type={self.unknown_type!r})"
        )


class SchemaSet:
    """
    Every schema of the protocol, compiled once.

    Loading reads all files under ``schema_dir``, checks that each ``$id``
    matches the file's place and that each message schema's ``type``
    constant matches its file name, then compiles one validator per message
    type and protocol version. It takes a fraction of a second, so build
    one instance at startup and share it.

    """

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self.schema_dir = Path(schema_dir)
        documents = _load_documents(self.schema_dir)
        fetch = _local_fetcher(documents)
        # The inlined schema of each message type, kept to describe a failure
        # from the schema path the validator reports.
        self._schemas: dict[Validator, Any] = {}

        def compile_dir(subdir: str) -> dict[str, Validator]:
            validators: dict[str, Validator] = {}
            for message_type, uri in _message_schemas(documents, subdir):
                schema = _inlined(documents[uri], uri, fetch)
                try:
                    validator = jsonschema_rs.Draft7Validator(schema)
                except (ValueError, jsonschema_rs.ValidationError) as exc:
                    raise SchemaDefinitionError(f"{uri}: {exc}") from None
                validators[message_type] = validator
                self._schemas[validator] = schema
            if not validators:
                raise FileNotFoundError(f"no schemas in {self.schema_dir / subdir}")
            return validators

        self._outbound = {version: compile_dir(version) for version in PROTOCOL_VERSIONS}
        self._inbound = compile_dir(INBOUND)
        self._outbound_types = {version: frozenset(validators) for version, validators in self._outbound.items()}
        self._inbound_types = frozenset(self._inbound)
        # Names that may appear in an error path: anything else came from the
        # message (a stray key) and is masked.
        self._known_names = frozenset(_property_names(documents.values()))

    def outbound_types(self, version: str) -> frozenset[str]:
        """Return the server-to-client message types of protocol ``version``."""
        try:
            return self._outbound_types[version]
        except KeyError:
            raise ValueError(f"unknown protocol version {version!r}") from None

    def inbound_types(self) -> frozenset[str]:
        """Return the client-to-server message types (all protocol versions)."""
        return self._inbound_types

    def validate_outbound(self, version: str, message: dict[str, Any]) -> None:
        """
        Check a message the server is about to send on a ``version`` connection.

        :raises MessageValidationError: if the version or the message type is
            unknown or the message breaks its type's schema.

        """
        try:
            validator = self._outbound[version][message["type"]]
        except (KeyError, TypeError):
            raise self._dispatch_error(message, self._outbound.get(version), version) from None
        try:
            validator.validate(message)
        except jsonschema_rs.ValidationError as exc:
            # "from None": the library's message quotes the offending value.
            raise self._translate(validator, message, exc) from None
        except (TypeError, ValueError):
            raise self._unrepresentable() from None

    def validate_inbound(self, message: object) -> None:
        """
        Check a message received from a client (already parsed from JSON).

        :raises MessageValidationError: if the message is not an object, has
            no ``type`` or a non-string one, has a ``type`` that no inbound
            schema describes (with ``unknown_type`` set), or breaks its
            type's schema. Whether the request is allowed on the
            connection's protocol version is for the caller to decide.

        """
        try:
            validator = self._inbound[message["type"]]  # type: ignore[index]
        except (KeyError, TypeError):
            raise self._dispatch_error(message, self._inbound, None) from None
        try:
            validator.validate(message)
        except jsonschema_rs.ValidationError as exc:
            raise self._translate(validator, message, exc) from None
        except (TypeError, ValueError):
            raise self._unrepresentable() from None

    # Slow paths: only run once a message has been found wrong.

    @staticmethod
    def _dispatch_error(
        message: object,
        validators: Mapping[str, Validator] | None,
        version: str | None,
    ) -> MessageValidationError:
        if validators is None:
            return MessageValidationError(f"unknown protocol version {version!r}")
        if not isinstance(message, dict):
            return MessageValidationError("message is not an object", keyword="type")
        if "type" not in message:
            return MessageValidationError("message has no type", keyword="required")
        if not isinstance(message["type"], str):
            return MessageValidationError("type must be string", "/type", keyword="type")
        where = f"protocol {version}" if version else "client messages"
        return MessageValidationError(f"unknown message type for {where}", "/type", keyword="type", unknown_type=True)

    def _translate(
        self, validator: Validator, message: object, exc: jsonschema_rs.ValidationError
    ) -> MessageValidationError:
        parts: list[str | int] = []
        for part in exc.instance_path:
            if isinstance(part, int) or part in self._known_names:
                parts.append(part)
            else:
                parts.append("*")  # a key that came from the message, not the schema
        pointer = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
        location = ""
        for p in parts:
            location += f"[{p}]" if isinstance(p, int) else (f".{p}" if location else p)
        expected: Any = self._schemas[validator]
        for part in exc.schema_path:  # down to the failed keyword's value
            expected = _child(expected, part)
        value: Any = message
        for part in exc.instance_path:
            value = _child(value, part)
        if isinstance(exc.kind, jsonschema_rs.ValidationErrorKind.FalseSchema):  # the location must not exist
            rule = ""
            described = "must not be present"
        else:
            last = exc.schema_path[-1] if exc.schema_path else ""
            rule = last if isinstance(last, str) else ""
            described = _describe(rule, expected, value)
        return MessageValidationError(f"{location or 'message'} {described}", pointer, keyword=rule)

    @staticmethod
    def _unrepresentable() -> MessageValidationError:
        # The validator converts the message to JSON values first: a value
        # with no JSON form (an object, a set, a non-string key) stops it there.
        return MessageValidationError("message holds a value that has no JSON form")


def _child(node: Any, part: str | int) -> Any:
    """``node[part]``, or None where the path does not lead anywhere."""
    try:
        return node[part]
    except (KeyError, IndexError, TypeError):
        return None


def _describe(rule: str, expected: Any, value: Any) -> str:
    """Say which rule failed, quoting only the schema (never ``value``)."""
    if rule == "type":
        types = expected if isinstance(expected, list) else [expected]
        return "must be " + " or ".join(map(str, types))
    if rule == "required":
        present = value if isinstance(value, dict) else {}
        missing = [name for name in expected if name not in present] or list(expected)
        return "must contain " + ", ".join(json.dumps(name) for name in missing)
    if rule == "additionalProperties":
        return "must not contain properties other than the ones defined"
    if rule == "const":
        return "must be " + json.dumps(expected)
    if rule == "enum":
        return "must be one of " + ", ".join(json.dumps(item) for item in expected)
    comparison = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }.get(rule)
    if comparison is not None:
        return f"must be {comparison} {json.dumps(expected)}"
    if rule == "pattern":
        return f"must match pattern {expected}"
    counted = {
        "minLength": ("be at least", "character"),
        "maxLength": ("be at most", "character"),
        "minItems": ("contain at least", "item"),
        "maxItems": ("contain at most", "item"),
        "minProperties": ("contain at least", "property"),
        "maxProperties": ("contain at most", "property"),
    }.get(rule)
    if counted is not None:
        verb, noun = counted
        if expected != 1:
            noun = "properties" if noun == "property" else noun + "s"
        suffix = " long" if rule.endswith("Length") else ""
        return f"must {verb} {expected} {noun}{suffix}"
    if rule == "uniqueItems":
        return "must not contain duplicate items"
    if rule == "contains":
        return "must contain an item matching " + json.dumps(expected)
    return f"does not satisfy {rule or 'its schema'}"


def _load_documents(schema_dir: Path) -> dict[str, dict[str, Any]]:
    """Read every schema file below ``schema_dir``, keyed by its ``$id``."""
    if not schema_dir.is_dir():
        raise FileNotFoundError(f"schema directory not found: {schema_dir}")
    documents: dict[str, dict[str, Any]] = {}
    for file in sorted(schema_dir.rglob("*.json")):
        relative = file.relative_to(schema_dir).as_posix()
        document = json.loads(file.read_text(encoding="utf-8"))
        expected = BASE_URI + relative
        if not isinstance(document, dict) or document.get("$id") != expected:
            raise ValueError(f"{file}: $id must be {expected!r}")
        documents[expected] = document
    return documents


def _message_schemas(documents: Mapping[str, dict[str, Any]], subdir: str) -> Iterator[tuple[str, str]]:
    """Yield ``(message type, $id)`` for each file of ``schemas/<subdir>/``."""
    prefix = f"{BASE_URI}{subdir}/"
    for uri, document in sorted(documents.items()):
        if not uri.startswith(prefix) or "/" in uri[len(prefix) :]:
            continue
        message_type = uri[len(prefix) :].removesuffix(".json")
        declared = document.get("properties", {}).get("type", {}).get("const")
        if declared != message_type:
            raise ValueError(f"{uri}: properties.type.const must be {message_type!r}")
        yield message_type, uri


def _inlined(node: Any, base: str, fetch: Callable[[str], Any], depth: int = 0) -> Any:
    """*node* with every ``$ref`` replaced by (an inlined copy of) its target, resolved against *base*.

    Draft-07 ignores the siblings of a ``$ref``, so the target replaces the
    whole object. ``definitions`` are dropped: nothing refers to them any
    more. The protocol's schemas are not recursive; a reference chain deeper
    than 32 is refused rather than followed for ever.
    """
    if depth > 32:
        raise SchemaDefinitionError(f"$ref chain too deep at {base}")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            uri = urljoin(base, ref)
            document_uri, _, fragment = uri.partition("#")
            target = fetch(document_uri)
            for part in (p for p in fragment.split("/") if p):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise SchemaDefinitionError(f"$ref to {uri} does not resolve")
                target = target[part]
            return _inlined(target, document_uri, fetch, depth + 1)
        inlined: dict[str, Any] = {}
        for key, value in node.items():
            if key == "definitions":
                continue
            if key in ("properties", "patternProperties", "dependencies") and isinstance(value, dict):
                # maps of names to schemas (or to lists of names): the names are data, never keywords
                inlined[key] = {name: _inlined(schema, base, fetch, depth) for name, schema in value.items()}
            elif key in ("enum", "const", "required", "default", "examples"):
                inlined[key] = value
            else:
                inlined[key] = _inlined(value, base, fetch, depth)
        return inlined
    if isinstance(node, list):
        return [_inlined(item, base, fetch, depth) for item in node]
    return node


def _local_fetcher(documents: Mapping[str, Any]) -> Callable[[str], Any]:
    """Return a resolver of ``$ref`` URIs that serves loaded files only."""

    def fetch(uri: str) -> Any:
        try:
            return documents[uri]
        except KeyError:
            raise SchemaDefinitionError(
                f"$ref to {uri}: only schemas under {BASE_URI} are resolved, from disk"
            ) from None

    return fetch


def _property_names(nodes: Iterable[Any]) -> Iterator[str]:
    """Yield every key of every ``properties`` object in the given schemas."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                yield from properties
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def reference_validator(
    version_or_inbound: str,
    message_type: str,
    schema_dir: Path = SCHEMA_DIR,
) -> jsonschema.Draft7Validator:
    """
    Build a jsonschema validator for ``schemas/<version_or_inbound>/<message_type>.json``.

    References resolve through a :class:`referencing.Registry` holding every
    file under ``schema_dir``; any other URI fails instead of being fetched.
    This validator is much slower than :class:`SchemaSet` and exists to
    cross-check it, since both must give the same verdict.

    """
    import jsonschema

    registry = _reference_registry(Path(schema_dir).resolve())
    uri = f"{BASE_URI}{version_or_inbound}/{message_type}.json"
    try:
        schema = registry.contents(uri)
    except LookupError:
        raise ValueError(f"no schema {version_or_inbound}/{message_type}.json") from None
    return jsonschema.Draft7Validator(schema, registry=registry)


@functools.lru_cache(maxsize=4)
def _reference_registry(schema_dir: Path) -> Any:
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT7

    def refuse(uri: str) -> Resource[Any]:
        raise NoSuchResource(uri)  # positional: referencing's attrs classes are opaque to mypy

    documents = _load_documents(schema_dir)
    return Registry(retrieve=refuse).with_resources(  # type: ignore[call-arg]
        (uri, Resource.from_contents(document, default_specification=DRAFT7)) for uri, document in documents.items()
    )
