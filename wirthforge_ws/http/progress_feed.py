"""Feeds a progress from what the frame loop publishes for a source's answers.

:class:`ProgressFeed` stands between the frame loop and the source:
each frame it passes the source's activity on unchanged, counts the
primary model's tokens of the answer (the frame's ``token_stream``), notes
council members' token_streams, and adds the reward events the progress
earns (``level_up``, first-use ``achievement``) to the same frame. A replay
replaces the frame loop's source while it plays, so replayed tokens are
not counted. Every source earns its rewards by these rules: the live
source into the user's persisted progress, the simulator into a demo
progress of its own that is never kept.
"""

from __future__ import annotations

from ..sources.simulated import EnergySource, FrameActivity
from ..storage.progress import UserProgress


class ProgressFeed:
    """An EnergySource that forwards *source* and adds the rewards *progress* gives for its answers."""

    def __init__(self, source: EnergySource, progress: UserProgress) -> None:
        self.source = source
        self.progress = progress

    @property
    def model_id(self) -> str:
        return self.source.model_id

    def step(self, frame_number: int, now: float) -> FrameActivity:
        activity = self.source.step(frame_number, now)
        session_id = activity.session_id
        council = any(
            event.type == "token_stream"
            and event.payload.get("sessionId") == session_id
            and event.payload.get("tokens")
            for event in activity.events
        )
        rewards = []
        if session_id and (activity.tokens or council):
            rewards += self.progress.tokens(session_id, len(activity.tokens), council=council)
        if session_id and activity.response_complete:
            rewards += self.progress.complete(session_id)
        for event in activity.events:  # a cancelled answer is closed by its own token_stream
            payload = event.payload
            if event.type == "token_stream" and payload.get("isComplete") and payload.get("sessionId") != session_id:
                rewards += self.progress.complete(str(payload.get("sessionId")))
        if rewards:
            activity.events.extend(rewards)
        return activity
