"""What the event log keeps of an answer: its numbers by default, its text only with ``--record-text``.

By default a ``token_stream`` is stored with each token's text replaced by
``""`` and ``textOmitted: true``: the token count, its timing, its
probabilities and whatever else the payload carries (``firstIndex``,
``tokenEvidence``) stay, so energy, replay and traces still work; the words
do not. Prompts never reach the log at all (they go only to the model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def without_text(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """*payload* as stored without text (a copy; the live message is untouched)."""
    if kind != "token_stream":
        return payload
    stored = dict(payload)
    stored["tokens"] = [""] * len(payload.get("tokens") or ())
    stored["textOmitted"] = True
    evidence = payload.get("tokenEvidence")
    if isinstance(evidence, list):
        stored["tokenEvidence"] = [_evidence_without_text(item) for item in evidence]
    return stored


def _evidence_without_text(item: Any) -> Any:
    """Per-token evidence keeps its numbers; a top-K keyed by candidate text keeps only the probabilities."""
    if not isinstance(item, Mapping):
        return item
    top_k = item.get("topK")
    if isinstance(top_k, Mapping):
        return {**item, "topK": sorted((float(p) for p in top_k.values()), reverse=True)}
    if isinstance(top_k, list) and any(isinstance(entry, Mapping) for entry in top_k):
        kept = [
            {key: value for key, value in entry.items() if key not in _TEXT_KEYS}
            if isinstance(entry, Mapping)
            else entry
            for entry in top_k
        ]
        return {**item, "topK": kept}
    return {key: value for key, value in item.items() if key not in _TEXT_KEYS}


_TEXT_KEYS = frozenset({"token", "text"})
