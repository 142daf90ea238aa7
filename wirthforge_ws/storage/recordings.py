"""Recordings: one per generation (a token_stream ``sessionId``), grouped as the writer stores rows.

A council's members answer under one sessionId, each ending with its own
``isComplete``: the recording is complete when every model seen in it has
ended.

A recording's id is the seq of its first message, so ids are unique across
restarts. :class:`RecordingTracker` keeps the recordings still open (no
``isComplete`` yet) and updates their row inside the writer's transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded generation, as the sessions API lists it."""

    id: int
    session_id: str
    model_id: str
    started_ms: float
    ended_ms: float
    tokens: int
    messages: int
    complete: bool
    text_kept: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "sessionId": self.session_id,
            "modelId": self.model_id,
            "startedAt": round(self.started_ms, 3),
            "endedAt": round(self.ended_ms, 3),
            "durationSeconds": round((self.ended_ms - self.started_ms) / 1000.0, 3),
            "tokens": self.tokens,
            "messages": self.messages,
            "complete": self.complete,
            "textKept": self.text_kept,
        }


@dataclass(slots=True)
class OpenRecording:
    """A recording whose generation has not completed yet (mutable while its rows arrive)."""

    id: int
    model_id: str
    started_ms: float
    ended_ms: float
    tokens: int = 0
    messages: int = 0
    complete: bool = False
    models: set[str] = field(default_factory=set)  # modelIds seen (a council answers in one recording)
    ended: set[str] = field(default_factory=set)  # modelIds whose isComplete came


class RecordingTracker:
    """Assigns token_stream rows to recordings and keeps the ``recordings`` table in step."""

    def __init__(self, *, text_kept: bool = True) -> None:
        self._open: dict[str, OpenRecording] = {}
        self.text_kept = text_kept  # whether this run stores the answers' text (--record-text)

    def snapshot(self) -> dict[str, OpenRecording]:
        """A copy of the open recordings, to :meth:`restore` if a batch's transaction is rolled back."""
        return {
            key: dataclasses.replace(value, models=set(value.models), ended=set(value.ended))
            for key, value in self._open.items()
        }

    def restore(self, snapshot: dict[str, OpenRecording]) -> None:
        self._open = snapshot

    def clear(self) -> None:
        """Forget the open recordings (their rows may be gone): later rows start new recordings."""
        self._open.clear()

    def forget(self, recording_id: int) -> None:
        """Drop an open recording that was deleted: its later rows start a new one."""
        self._open = {key: value for key, value in self._open.items() if value.id != recording_id}

    def assign(
        self, connection: sqlite3.Connection, seq: int, kind: str, timestamp_ms: float, payload: dict[str, Any]
    ) -> int | None:
        """The recording id of a row (None unless it is a token_stream); updates its row in the open transaction."""
        if kind != "token_stream":
            return None
        session_id = str(payload.get("sessionId", ""))
        model_id = str(payload.get("modelId", ""))
        current = self._open.get(session_id)
        if current is None:
            current = OpenRecording(seq, model_id, timestamp_ms, timestamp_ms)
            self._open[session_id] = current
        # Complete once every model seen in it has sent its isComplete (each council member sends its own).
        current.models.add(model_id)
        if payload.get("isComplete"):
            current.ended.add(model_id)
        complete = current.ended >= current.models
        current.ended_ms = timestamp_ms
        current.tokens += len(payload.get("tokens") or ())
        current.messages += 1
        current.complete = complete
        connection.execute(
            "INSERT OR REPLACE INTO recordings "
            "(id, session_id, model_id, started_ms, ended_ms, tokens, messages, complete, text_kept) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                current.id,
                session_id,
                current.model_id,
                current.started_ms,
                current.ended_ms,
                current.tokens,
                current.messages,
                int(current.complete),
                int(self.text_kept),
            ),
        )
        if complete:
            del self._open[session_id]
        return current.id
