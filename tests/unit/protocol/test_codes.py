"""Subprotocol negotiation: which protocol version an offer of subprotocols gets."""

from __future__ import annotations

import pytest

from wirthforge_ws.protocol.codes import negotiate


@pytest.mark.parametrize(
    ("offered", "result"),
    [
        ([], ("1.0", None)),
        (["wirthforge.1.0"], ("1.0", "wirthforge.1.0")),
        (["wirthforge.1.1"], ("1.1", "wirthforge.1.1")),
        (["wirthforge.1.0", "wirthforge.1.1"], ("1.1", "wirthforge.1.1")),
        (["wirthforge.1.1", "wirthforge.1.0"], ("1.1", "wirthforge.1.1")),
        (["chat", "wirthforge.1.0"], ("1.0", "wirthforge.1.0")),
        (["chat"], None),
        (["wirthforge.2.0"], None),
        (["WIRTHFORGE.1.1"], None),  # subprotocol names are case-sensitive
    ],
)
def test_negotiate(offered: list[str], result: tuple[str, str | None] | None) -> None:
    assert negotiate(offered) == result
