"""What a source tells the frame loop each frame: the interface every source implements.

A source (the live models, the simulator, a replay) runs one
:class:`~wirthforge_ws.energy.ModelMeter` per model and reports, per frame,
one :class:`FrameActivity`: the meters' snapshots at the frame's time, the
tokens that arrived since the previous frame with their own readings, and
the events it produced (council, rewards, errors). The frame loop turns that
into the frame's messages (``energy_update`` with its evidence,
``token_stream``, ``energy_field``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..energy import MeterSnapshot, TokenReading
from ..energy.profiles import EnergyProfile
from ..energy.states import SessionState
from ..protocol.messages import Event


@dataclass(slots=True)
class TokenBatch:
    """One model's tokens of this frame: the content of one ``token_stream``.

    *readings* holds one :class:`TokenReading` per text (the token's own dt
    and top-K). A replay has no readings; it passes the recorded
    ``tokenEvidence`` instead, or neither for a recording made without it.
    """

    model_id: str
    session_id: str
    texts: list[str]
    readings: list[TokenReading]
    first_index: int  # index of texts[0] in the model's answer; with no texts, the answer's length
    complete: bool = False
    text_omitted: bool = False
    recorded_evidence: list[dict[str, object]] | None = None


@dataclass(slots=True)
class FrameActivity:
    """What a source did during one frame."""

    session_id: str  # the answer the energy belongs to; "" before the first prompt
    primary: MeterSnapshot  # the answer's first model at the frame's time
    profile: EnergyProfile
    tokens: list[str] = field(default_factory=list)  # the primary's token texts of this frame
    readings: list[TokenReading] = field(default_factory=list)  # the primary's readings of this frame
    history: Sequence[TokenReading] = ()  # the primary's readings of its answer so far, oldest first
    council: list[MeterSnapshot] = field(default_factory=list)  # during a council: every member, primary first
    streams: list[TokenBatch] = field(default_factory=list)  # this frame's token_streams, primary first
    response_complete: bool = False  # the primary's answer ended in this frame
    events: list[Event] = field(default_factory=list)  # council, reward and error events
    distribution: Mapping[str, float] | None = None  # a replay's recorded split; else computed from the meter

    @property
    def total_energy(self) -> float:
        """``totalEnergy``: the primary's E, or the ensemble mean during a council (as ``energy.ensemble_energy``)."""
        council = self.council
        if not council:
            return self.primary.energy
        # ensemble_energy's equal-weight mean, without statistics.fmean's cost (a few us per frame)
        return min(max(sum([member.energy for member in council]) / len(council), 0.0), 1.0)


class EnergySource(Protocol):
    """Anything that can tell the frame loop what happened during a frame."""

    model_id: str

    def step(self, frame_number: int, now: float) -> FrameActivity:
        """Advance to monotonic time *now* (seconds) and report this frame."""
        ...


def idle_snapshot(model_id: str, energy: float = 0.0, state: SessionState = SessionState.IDLE) -> MeterSnapshot:
    """A snapshot for a model no meter follows (a replay without recorded evidence)."""
    return MeterSnapshot(
        model_id=model_id,
        energy=min(max(energy, 0.0), 1.0),
        state=state,
        tps=0.0,
        certainty=None,
        entropy=None,
        since_token_ms=None,
        stall=False,
        burst=False,
        ttft_ms=None,
        energy_units=0.0,
        tokens=0,
        dt_ms=None,
    )
