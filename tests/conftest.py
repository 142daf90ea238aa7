"""Shared fixtures: one real server per test module, and its WebSocket URL.

Test modules that need a differently configured server start their own
``ServerProcess``; a module may also override ``server`` with its own fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server_process import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """The real server (subprocess) on a free loopback port, with POST /publish enabled."""
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1"}) as process:
        yield process


@pytest.fixture
def ws_url(server: ServerProcess) -> str:
    return server.ws_url
