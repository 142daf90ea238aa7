"""The user's progress: level, total tokens, energy units, answers, first-use achievements.

Fed from real answers (the frame loop's completed token_streams; see
``http/progress_feed.py``), kept in the event log's database (table
``progress``, one row) so it survives restarts, and reset only when the
user asks (``DELETE /api/sessions?resetProgress=true``).

Levels follow the total tokens of answers (:data:`LEVEL_THRESHOLDS`):

======  ==============
level   total tokens
======  ==============
1       0
2       500
3       2,000
4       8,000
5       32,000
======  ==============

Energy units (EU) are 0.01 per token, as the upstream energy notes count them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..protocol import messages
from ..protocol.messages import Event

LEVEL_THRESHOLDS = (0, 500, 2_000, 8_000, 32_000)  # total tokens at which levels 1..5 begin
EU_PER_TOKEN = 0.01

ACHIEVEMENTS: dict[str, tuple[str, str]] = {
    "first_answer": ("First answer", "A real model's answer flowed through the field."),
    "first_council": ("First council", "Two or more models answered the same prompt together."),
    "first_long_answer": ("First long answer", "An answer of 200 tokens or more."),
}
LONG_ANSWER_TOKENS = 200


def level_for(tokens: int) -> int:
    """The level (1-5) that *tokens* in total have reached."""
    return sum(1 for threshold in LEVEL_THRESHOLDS if tokens >= threshold)


@dataclass
class ProgressState:
    """What the user has done, as stored and as ``GET /api/progress`` shows it."""

    tokens: int = 0
    energy_units: float = 0.0
    sessions: int = 0
    achievements: list[str] = field(default_factory=list)

    @property
    def level(self) -> int:
        return level_for(self.tokens)

    def as_json(self) -> dict[str, Any]:
        level = self.level
        return {
            "level": level,
            "tokens": self.tokens,
            "energyUnits": round(self.energy_units, 2),
            "sessions": self.sessions,
            "achievements": list(self.achievements),
            "nextLevelAt": LEVEL_THRESHOLDS[level] if level < len(LEVEL_THRESHOLDS) else None,
            "levelThresholds": list(LEVEL_THRESHOLDS),
        }

    def copy(self) -> ProgressState:
        return ProgressState(self.tokens, self.energy_units, self.sessions, list(self.achievements))


def load_progress(connection: sqlite3.Connection) -> ProgressState:
    row = connection.execute(
        "SELECT tokens, energy_units, sessions, achievements FROM progress WHERE id = 1"
    ).fetchone()
    if row is None:
        return ProgressState()
    achievements = orjson.loads(row[3])
    return ProgressState(int(row[0]), float(row[1]), int(row[2]), [str(a) for a in achievements])


def save_progress(connection: sqlite3.Connection, state: ProgressState) -> None:
    """Write *state* inside the caller's transaction."""
    connection.execute(
        "INSERT OR REPLACE INTO progress (id, tokens, energy_units, sessions, achievements) VALUES (1, ?, ?, ?, ?)",
        (state.tokens, state.energy_units, state.sessions, orjson.dumps(state.achievements).decode()),
    )


class UserProgress:
    """Counts answers and gives the reward events they earn; *persist* is called with each changed state.

    Called from the frame loop (synchronously, no I/O: *persist* only hands
    the state to the event log's writer thread).
    """

    def __init__(self, state: ProgressState, persist: Any = None) -> None:
        self.state = state
        self._persist = persist
        self._open: dict[str, _Answer] = {}

    def tokens(self, session_id: str, count: int, *, council: bool = False) -> list[Event]:
        """*count* more tokens of answer *session_id* (the primary model's); returns level-ups reached."""
        answer = self._open.get(session_id)
        if answer is None:
            if count <= 0:
                return []  # an answer counts from its first token (late council tokens of an ended one do not)
            answer = self._open[session_id] = _Answer()
            self.state.sessions += 1
        answer.council = answer.council or council
        if count <= 0:
            return []
        before = self.state.level
        answer.tokens += count
        self.state.tokens += count
        self.state.energy_units += count * EU_PER_TOKEN
        self._changed()
        after = self.state.level
        if after == before:
            return []
        return [
            messages.reward_event(
                reward_type="level_up",
                title=f"Level {after}",
                points=50 * (after - 1),
                level=after,
                description=f"{self.state.tokens} tokens of answers in total (level {after} begins at "
                f"{LEVEL_THRESHOLDS[after - 1]}).",
            )
        ]

    def complete(self, session_id: str) -> list[Event]:
        """Answer *session_id* ended; returns the first-use achievements it earned."""
        answer = self._open.pop(session_id, None)
        if answer is None or answer.tokens == 0:
            return []
        earned = ["first_answer"]
        if answer.council:
            earned.append("first_council")
        if answer.tokens >= LONG_ANSWER_TOKENS:
            earned.append("first_long_answer")
        events = []
        for key in earned:
            if key in self.state.achievements:
                continue
            self.state.achievements.append(key)
            title, description = ACHIEVEMENTS[key]
            events.append(
                messages.reward_event(reward_type="achievement", title=title, points=5, description=description)
            )
        if events:
            self._changed()
        return events

    def reset(self) -> None:
        """Back to level 1 with nothing counted (a purge that asks for it)."""
        self.state = ProgressState()
        self._open.clear()
        self._changed()

    def _changed(self) -> None:
        if self._persist is not None:
            self._persist(self.state.copy())


@dataclass(slots=True)
class _Answer:
    tokens: int = 0
    council: bool = False
