"""A recorded generation as a WVMP v0.1 trace, rebuilt from its ``token_stream`` messages in the event log.

Protocol 1.1 ``token_stream`` messages carry each token's evidence
(``tokenEvidence``: its rounded Δt and top-K) and the index of their first
token (``firstIndex``). :class:`TraceCollector` gathers them per model, in
the order they were recorded, and :func:`~wirthforge_ws.energy.build_trace`
computes E with the same meter the live stream used, so the trace's E per
token is the live one. The profile is the one the recording's
``energy_update`` frames name (else the server's own). Token text goes into
the trace only where the recording kept it: a ``token_stream`` with
``textOmitted`` gives none.

A recording made without ``tokenEvidence``, or one that lost some of its
token_streams, cannot give E per token: :class:`NoEvidence` says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..energy import PROFILES, EnergyProfile, TraceModel, build_trace
from ..energy.trace import TraceToken
from ..storage.event_log import EventLog, Recording, StoredMessage

PAGE_ROWS = 1000
MAX_TRACE_TOKENS = 100_000  # far beyond any answer (--max-tokens per model); a bound for odd recordings
BACKENDS = {"embedded": "llama.cpp", "openai": "openai", "ollama": "ollama"}  # backend kind -> WVMP backend


class NoEvidence(Exception):
    """The recording cannot be turned into a trace; the message says why (for the API's 409)."""


class TraceCollector:
    """Gathers one recording's tokens per model from its messages, checking that none is missing."""

    def __init__(self) -> None:
        self.tokens: dict[str, list[TraceToken]] = {}  # modelId -> (dt_ms, top_k, text), in answer order
        self.profile_name: str | None = None  # from the first recorded energy_update evidence
        self.count = 0

    def add(self, message: StoredMessage) -> None:
        """Take one recorded message; raises :class:`NoEvidence` for tokens without evidence or a gap."""
        payload = message.event.payload
        if message.event.type == "energy_update":
            evidence = payload.get("evidence")
            if self.profile_name is None and isinstance(evidence, Mapping) and evidence.get("profile") in PROFILES:
                self.profile_name = str(evidence["profile"])
            return
        if message.event.type != "token_stream":
            return
        model_id = str(payload.get("modelId", ""))
        texts = payload.get("tokens") or []
        tokens = self.tokens.setdefault(model_id, [])
        evidence = payload.get("tokenEvidence")
        if evidence is None:
            if texts:
                raise NoEvidence(
                    "this recording has no per-token evidence (its token_stream messages carry no "
                    "tokenEvidence: it was recorded before the server kept it), so E per token cannot be rebuilt"
                )
            return
        first = payload.get("firstIndex")
        if first != len(tokens):
            raise NoEvidence(
                f"the recording of model {model_id} misses tokens (it has {len(tokens)}, the next "
                f"token_stream starts at index {first}): some of its messages were not kept"
            )
        keep_text = not payload.get("textOmitted", False)
        try:
            for text, entry in zip(texts, evidence, strict=True):
                top_k = entry["topK"]
                tokens.append(
                    (
                        float(entry["dtMs"]),
                        None if top_k is None else [float(p) for p in top_k],
                        str(text) if keep_text else None,
                    )
                )
        except (KeyError, TypeError, ValueError):
            raise NoEvidence(f"a recorded token_stream of model {model_id} has malformed tokenEvidence") from None
        self.count += len(texts)
        if self.count > MAX_TRACE_TOKENS:
            raise NoEvidence(f"the recording has more than {MAX_TRACE_TOKENS} tokens, too many for one trace")

    def models(self, backend_of: Callable[[str], str]) -> list[TraceModel]:
        """One :class:`TraceModel` per model, in the order they first appeared (the primary first)."""
        return [TraceModel(name, backend_of(name), tuple(tokens)) for name, tokens in self.tokens.items()]


def recording_trace(
    log: EventLog, recording: Recording, profile: EnergyProfile, backend_of: Callable[[str], str]
) -> dict[str, Any]:
    """The WVMP v0.1 trace of *recording* (call in a worker thread: it reads the database).

    *profile* applies when no recorded frame names one. Raises
    :class:`NoEvidence`, and ``sqlite3.Error`` / ``OSError`` / a JSON error
    when the log cannot be read.
    """
    collector = TraceCollector()
    after = 0
    while page := log.session_events(recording, after_seq=after, limit=PAGE_ROWS):
        for message in page:
            collector.add(message)
        after = page[-1].seq
    used = PROFILES[collector.profile_name] if collector.profile_name is not None else profile
    return build_trace(recording.session_id, collector.models(backend_of), used)


def backend_names(backends: Mapping[str, str], source: str) -> Callable[[str], str]:
    """modelId -> WVMP ``backend``: from the configured backends' kinds; the simulator is ``sim``."""
    names = {model_id: BACKENDS.get(kind, kind) for model_id, kind in backends.items()}
    fallback = "sim" if source == "sim" else "unknown"
    return lambda model_id: names.get(model_id, fallback)
