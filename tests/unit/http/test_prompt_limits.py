"""The prompt API's limits, in process: the body limit fits any prompt within the byte limit, escaped."""

from __future__ import annotations

import json

import pytest

from wirthforge_ws.http.prompt_api import MAX_BODY_BYTES, MAX_PROMPT_BYTES
from wirthforge_ws.settings import Settings


@pytest.mark.parametrize(
    "character",
    ["\x01", "中", "😀", "x", '"', "\\"],
    ids=["control", "cjk", "astral", "ascii", "quote", "backslash"],
)
def test_any_prompt_within_the_byte_limit_fits_the_body_however_escaped(character: str) -> None:
    prompt = character * (MAX_PROMPT_BYTES // len(character.encode()))
    assert len(prompt.encode()) <= MAX_PROMPT_BYTES
    body = json.dumps({"prompt": prompt, "council": False, "model": "SmolLM2-135M-Instruct-critic"})  # ASCII
    assert len(body.encode()) <= MAX_BODY_BYTES


def test_model_settings_are_checked() -> None:
    assert (Settings().model_context, Settings().model_rss_headroom_mb) == (4096, 256.0)
    with pytest.raises(ValueError, match="model_context"):
        Settings(model_context=100)
    with pytest.raises(ValueError, match="model_rss_headroom_mb"):
        Settings(model_rss_headroom_mb=0)
