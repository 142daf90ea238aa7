"""Debian's Chromium for the browser tests: where it is, how it is started, and the module-level skip.

Playwright cannot download its own browser here, so the tests drive
/usr/bin/chromium (``scripts/ensure-test-tools.sh`` installs it). The
background-networking flags keep Chromium from dialling out of a closed
network at every start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def skip_module_without_chromium() -> None:
    """Skip the calling test module where Chromium is absent, except in CI (where its absence is a failure)."""
    if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)", allow_module_level=True)


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """A headless Chromium driven by Playwright, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
