"""The page's part of the user's record, in Debian's Chromium: what is kept, progress, delete one, delete all.

Without Chromium the module is skipped (as tests/integration/test_browser.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import launched_chromium, skip_module_without_chromium
from tests.server_process import ServerProcess
from tests.timing import scaled

skip_module_without_chromium()

from playwright.sync_api import Browser, Dialog  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as browser:
        yield browser


def answer(session_id: str) -> list[dict[str, Any]]:
    payload = {"tokens": ["kept ", "words"], "isComplete": True, "sessionId": session_id, "modelId": "wirthforge-sim"}
    return [{"type": "token_stream", "payload": payload}]


def test_page_shows_what_is_kept_and_progress_and_deletes_with_confirmation(browser: Browser, tmp_path: Path) -> None:
    env = {"WF_ENABLE_PUBLISH": "1", "WF_PERSIST": "1", "WF_PERSIST_PATH": str(tmp_path / "events.sqlite3")}
    with ServerProcess(env=env) as server:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(scaled(20) * 1000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            dialogs: list[str] = []
            answers = {"accept": True}

            def on_dialog(dialog: Dialog) -> None:
                dialogs.append(dialog.message)
                dialog.accept() if answers["accept"] else dialog.dismiss()

            page.on("dialog", on_dialog)
            page.goto(server.http_url + "/")
            policy = page.locator('[data-testid="record-policy"]')
            policy.filter(has_text="numbers only").wait_for()
            page.locator('[data-testid="progress"]').filter(has_text="Level 1").wait_for()
            server.publish(answer("rec-doomed"))
            server.publish(answer("rec-kept"))
            rows = page.locator('[data-testid="sessions-list"] li')
            doomed = rows.filter(has_text="rec-doomed")
            doomed.wait_for(timeout=scaled(15) * 1000)
            assert "no text" in (doomed.text_content() or "")

            answers["accept"] = False  # a dismissed confirmation deletes nothing
            doomed.locator('[data-testid="delete-button"]').click()
            page.wait_for_timeout(300)
            assert doomed.count() == 1 and len(dialogs) == 1
            answers["accept"] = True
            doomed.locator('[data-testid="delete-button"]').click()
            doomed.wait_for(state="detached")
            assert rows.filter(has_text="rec-kept").count() == 1

            page.locator('[data-testid="sessions-purge"]').click()
            rows.filter(has_text="rec-kept").wait_for(state="detached")
            page.locator('[data-testid="sessions-status"]').filter(has_text="deleted every recording").wait_for()
            assert len(dialogs) == 4, dialogs  # one for the row, twice more for everything (and the progress)
            assert "reset your progress" in dialogs[-1]
            assert not errors, errors
        finally:
            context.close()


def test_a_replay_of_a_recording_without_text_shows_placeholders_and_says_why(browser: Browser, tmp_path: Path) -> None:
    env = {"WF_ENABLE_PUBLISH": "1", "WF_PERSIST": "1", "WF_PERSIST_PATH": str(tmp_path / "events.sqlite3")}
    with ServerProcess(env=env) as server:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(scaled(20) * 1000)
            page.goto(server.http_url + "/")
            server.publish(answer("rec-private"))
            row = page.locator('[data-testid="sessions-list"] li', has_text="rec-private")
            row.wait_for(timeout=scaled(15) * 1000)
            row.locator('[data-testid="replay-button"]').click()
            page.locator('[data-testid="sessions-status"]').filter(has_text="placeholders").wait_for()
            replayed = page.locator('[data-testid="token-output"] .ablock[data-session="replay-rec-private"]')
            replayed.locator(".omitted-note").wait_for()
            assert replayed.locator("span[data-omitted]").count() == 2
            assert "kept" not in (replayed.text_content() or ""), "no recorded word is shown"
        finally:
            context.close()
