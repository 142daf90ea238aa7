"""End-to-end tests of the monitor page in headless Chromium (Playwright for Python).

Each test starts a real server subprocess (``ServerProcess``, POST /publish
enabled), loads ``/`` from it and drives the page through ``window.wirthforge``
and the ``data-testid`` hooks. Chromium is Debian's (/usr/bin/chromium;
Playwright cannot download browsers here). Without it the module is skipped,
except in CI (``CI`` set), where it must run.

The run also writes a screenshot of the running page to
``test-results/screenshot.png`` (WF_SCREENSHOT_PATH overrides the path,
WF_SCREENSHOT_SECONDS, default 8, sets how long the page runs before the
shot). The committed ``docs/screenshot.png`` shows the page with the
embedded model during a real answer (its strikes, Δt bars and ribbon, the
answer tinted by certainty, Evidence Mode on one token).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import launched_chromium, skip_module_without_chromium
from tests.server_process import ServerProcess
from tests.timing import scaled

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = Path(os.environ.get("WF_SCREENSHOT_PATH", ROOT / "test-results" / "screenshot.png"))

skip_module_without_chromium()

from playwright.sync_api import Browser, Page  # noqa: E402


def ms(seconds: float) -> float:
    """A Playwright timeout or wait in ms: *seconds* stretched by the test time factor (tests/timing.py)."""
    return scaled(seconds) * 1000


# The color of each plotted series in static/page/app.js, to check that data (not
# only the axes) was drawn.
RATE_RGB = (0x22, 0xD3, 0xEE)
MEDIAN_RGB = (0xA7, 0x8B, 0xFA)
P99_RGB = (0xF5, 0x9E, 0x0B)
RAW_RGB = (100, 116, 139)


# -- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def wf_server() -> Iterator[ServerProcess]:
    """A server of its own for each test (one of them restarts it)."""
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1"}, startup_timeout=scaled(20)) as process:
        yield process


class PageWatch:
    """Records what a page did: errors, requests, WebSocket connections."""

    def __init__(self, page: Page, server: ServerProcess) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.websockets: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))

    def external_requests(self) -> list[str]:
        own = (self.server.http_url + "/", self.server.ws_url)
        return [url for url in self.requests if not url.startswith(own) and not url.startswith("data:")]


@pytest.fixture
def page(browser: Browser, wf_server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(ms(10))
    try:
        yield page
    finally:
        context.close()


# -- helpers ----------------------------------------------------------------


def text(page: Page, testid: str) -> str:
    return page.locator(f'[data-testid="{testid}"]').text_content() or ""


def number(page: Page, testid: str) -> float:
    raw = text(page, testid).replace(",", "").strip()
    try:
        return float(raw)
    except ValueError:
        return float("nan")


def wait_state(page: Page, state: str, timeout_ms: float) -> None:
    page.wait_for_function(
        "s => document.querySelector('[data-testid=connection-status]').textContent === s",
        arg=state,
        timeout=timeout_ms,
        polling="raf",
    )


def wait_readout(page: Page, testid: str, low: float, high: float, timeout_ms: float) -> None:
    """Waits until the numeric readout is within [low, high]."""
    page.wait_for_function(
        """([id, lo, hi]) => {
             const raw = document.querySelector(`[data-testid="${id}"]`).textContent.replace(/,/g, '')
             const v = parseFloat(raw)
             return Number.isFinite(v) && v >= lo && v <= hi
           }""",
        arg=[testid, low, high],
        timeout=timeout_ms,
        polling=50,
    )


def colored_pixels(page: Page, testid: str, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels of the canvas close to `rgb` and mostly opaque."""
    return page.evaluate(
        """([id, rgb, tol]) => {
             const c = document.querySelector(`[data-testid="${id}"]`)
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
             let n = 0
             for (let i = 0; i < d.length; i += 4) {
               if (d[i + 3] > 160 && Math.abs(d[i] - rgb[0]) <= tol && Math.abs(d[i + 1] - rgb[1]) <= tol
                   && Math.abs(d[i + 2] - rgb[2]) <= tol) n++
             }
             return n
           }""",
        [testid, list(rgb), tolerance],
    )


def open_page(page: Page, server: ServerProcess) -> PageWatch:
    watch = PageWatch(page, server)
    page.goto(server.http_url + "/")
    return watch


def token(tokens: list[str], complete: bool = False) -> dict[str, Any]:
    return {
        "type": "token_stream",
        "payload": {"tokens": tokens, "isComplete": complete, "sessionId": "s1", "modelId": "wirthforge-sim"},
    }


# -- tests ------------------------------------------------------------------


def test_page_connects_and_shows_live_stats(page: Page, wf_server: ServerProcess) -> None:
    watch = open_page(page, wf_server)
    wait_state(page, "connected", ms(5))
    assert watch.websockets and watch.websockets[0].startswith(wf_server.ws_url)

    wait_readout(page, "frame-rate", 58, 62, ms(3))
    wait_readout(page, "latency-median", 0, 4.999, ms(3))
    assert number(page, "latency-p99") >= number(page, "latency-median")

    # both plots carry data, not only axes, once scrolled to (off screen they are not redrawn)
    # (a 60 s plot is ~10 px per second: two seconds of data make short lines)
    page.locator('[data-testid="plot-latency"]').scroll_into_view_if_needed()
    page.wait_for_function("() => window.wirthforge.stats.p99History.length >= 8", timeout=ms(3))
    page.wait_for_timeout(ms(0.1))
    assert colored_pixels(page, "plot-rate", RATE_RGB) > 20
    latency_pixels = {
        name: colored_pixels(page, "plot-latency", rgb)
        for name, rgb in (("raw", RAW_RGB), ("median", MEDIAN_RGB), ("p99", P99_RGB))
    }
    assert latency_pixels["median"] + latency_pixels["p99"] > 20, latency_pixels
    assert latency_pixels["raw"] > 0, latency_pixels

    # the token stream, published and simulated, shows up as text
    wf_server.publish([token(["héllo ", "wörld ", "東京 ", "🚀"])])
    page.wait_for_function(
        "() => document.querySelector('[data-testid=token-output]').textContent.includes('héllo wörld 東京 🚀')",
        timeout=ms(3),
    )
    assert number(page, "frames") > 60
    assert number(page, "tokens") >= 4

    assert page.evaluate("() => window.wirthforge.session.protocol") == "1.1"
    assert not page.locator('[data-testid="open-served-page"]').is_visible(), "the file:// notice on the served page"
    assert watch.external_requests() == []
    assert watch.errors == []


def _guidance(page: Page) -> tuple[str, str | None]:
    notice = page.locator('[data-testid="open-served-page"]')
    assert notice.is_visible()
    return notice.inner_text(), page.locator('[data-testid="served-page-link"]').get_attribute("href")


def test_page_opened_as_a_file_says_where_the_served_page_is(browser: Browser) -> None:
    """Double-clicking client-example.html: Chromium blocks /static/page/app.js, the page says what to do."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto((ROOT / "client-example.html").as_uri())
        text_shown, href = _guidance(page)
        assert "make run" in text_shown and "http://127.0.0.1:8145/" in text_shown
        assert href == "http://127.0.0.1:8145/"
        page.click('[data-testid="served-page-link"]', no_wait_after=True, timeout=ms(2), trial=True)  # clickable
    finally:
        context.close()


@pytest.fixture
def foreign_origin() -> Iterator[str]:
    """The repository served by a plain static web server: the page loads, but no WIRTHFORGE server is there."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(ROOT)))
    thread = threading.Thread(target=httpd.serve_forever, name="static-origin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=scaled(5))


def test_page_served_by_another_web_server_says_where_the_served_page_is(browser: Browser, foreign_origin: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(foreign_origin + "/client-example.html")
        assert not page.locator('[data-testid="open-served-page"]').is_visible()  # hidden before the first paint
        page.locator('[data-testid="open-served-page"]').wait_for(state="visible", timeout=ms(10))
        text_shown, href = _guidance(page)
        assert "make run" in text_shown
        assert href == "http://127.0.0.1:8145/"
    finally:
        context.close()


def test_reconnects_within_two_seconds_of_a_restart(page: Page, wf_server: ServerProcess) -> None:
    watch = open_page(page, wf_server)
    wait_state(page, "connected", ms(5))
    wait_readout(page, "frame-rate", 58, 62, ms(3))
    wf_server.publish([token(["before "])])
    page.wait_for_function(
        "() => document.querySelector('[data-testid=token-output]').textContent.includes('before')", timeout=ms(3)
    )

    wf_server.stop()
    down = time.monotonic()
    wait_state(page, "reconnecting", ms(3))
    page.wait_for_timeout(ms(1.5))  # down for a while: the page keeps retrying, backing off
    assert text(page, "connection-status") == "reconnecting"
    attempts_while_down = page.evaluate("() => window.wirthforge.stats.counters.attempts")
    # backoff (ceilings 100 ms doubling to 1 s, full jitter): a few quick tries, then about 2 a second
    assert attempts_while_down <= 8 + 3 * (time.monotonic() - down), "backoff: no hammering while the server is down"

    wf_server.start()  # returns once /health answers
    restarted = time.monotonic()
    wait_state(page, "connected", ms(2))
    assert time.monotonic() - restarted < scaled(2.0)
    frames_after = number(page, "frames")

    # the readouts move again
    wait_readout(page, "reconnects", 1, 1e9, ms(1))
    page.wait_for_function(
        "n => parseFloat(document.querySelector('[data-testid=frames]').textContent.replace(/,/g, '')) > n + 30",
        arg=frames_after,
        timeout=ms(3),
    )
    wait_readout(page, "frame-rate", 58, 62, ms(3))
    # a new epoch: the seq space restarted and the client followed it
    resume = page.evaluate("() => window.wirthforge.lastResume")
    assert resume["status"] == "incomplete" and resume["reason"] == "epoch_changed"
    wf_server.publish([token(["after"])])
    page.wait_for_function(
        "() => document.querySelector('[data-testid=token-output]').textContent.includes('after')", timeout=ms(3)
    )
    assert watch.errors == [] or all("WebSocket" in e for e in watch.errors)


def test_resume_replays_what_was_missed(page: Page, wf_server: ServerProcess) -> None:
    """A dropped connection resumes with epoch/lastSeq; the server replays the gap."""
    open_page(page, wf_server)
    wait_state(page, "connected", ms(5))
    wait_readout(page, "frames", 30, 1e9, ms(3))
    epoch = page.evaluate("() => window.wirthforge.epoch")
    # Drop the socket as a network failure would, and hold the retry for ~1 s
    # (longest backoff step) so that messages are published in the gap.
    page.evaluate(
        """() => {
             const c = window.wirthforge
             c.stableMs = Infinity
             c.backoff.random = () => 1
             c.reconnectTimer.tries = 4
             c.socket.close(4001, 'test: simulated drop')
           }"""
    )
    wait_state(page, "reconnecting", ms(2))
    published = wf_server.publish([token([f"missed-{i} "]) for i in range(3)])
    assert published["published"] == 3
    wait_state(page, "connected", ms(3))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=token-output]').textContent.includes('missed-0 missed-1 missed-2')",
        timeout=ms(2),
    )
    resume = page.evaluate("() => window.wirthforge.lastResume")
    assert resume["status"] == "complete", resume
    assert resume["replayed"] >= 3
    assert page.evaluate("() => window.wirthforge.epoch") == epoch
    wait_readout(page, "recovered", 3, 1e9, ms(1))
    wait_readout(page, "reconnects", 1, 1, ms(1))
    assert page.evaluate("() => window.wirthforge.lastSeq") >= max(published["seqs"])


def test_hidden_page_pauses_the_energy_stream(page: Page, wf_server: ServerProcess) -> None:
    open_page(page, wf_server)
    wait_state(page, "connected", ms(5))
    wait_readout(page, "frame-rate", 58, 62, ms(3))
    set_hidden = """h => {
        Object.defineProperty(document, 'hidden', {value: h, configurable: true})
        Object.defineProperty(document, 'visibilityState', {value: h ? 'hidden' : 'visible', configurable: true})
        document.dispatchEvent(new Event('visibilitychange'))
      }"""
    missed_before = page.evaluate("() => window.wirthforge.stats.counters.framesMissed")
    page.evaluate(set_hidden, True)
    page.wait_for_function(
        "() => window.wirthforge.stats.frameRate(window.wirthforge.now()) === 0", timeout=ms(3), polling=50
    )
    clients = wf_server.health()["connections"]["clients"]
    assert [c["energyPaused"] for c in clients] == [True]
    assert page.evaluate("() => window.wirthforge.state") == "connected", "paused is not stalled"
    page.evaluate(set_hidden, False)
    wait_readout(page, "frame-rate", 58, 62, ms(3))
    assert [c["energyPaused"] for c in wf_server.health()["connections"]["clients"]] == [False]
    # ~a second of paused frames is not counted as missed (the server may skip a frame now and then)
    assert page.evaluate("() => window.wirthforge.stats.counters.framesMissed") - missed_before < 10


def test_token_text_reaches_a_page_without_animation_frames_and_stays_bounded(
    browser: Browser, wf_server: ServerProcess
) -> None:
    """A hidden tab runs no requestAnimationFrame: token text must still be flushed, and bounded.

    Animation frames are switched off before the page's scripts run. Token
    text that waited for the next animation frame would grow without bound
    and never reach the page.
    """
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.add_init_script("window.requestAnimationFrame = () => 0")
        open_page(page, wf_server)
        page.wait_for_function("() => window.wirthforge.state === 'connected'", timeout=ms(5), polling=50)
        wf_server.publish([token(["no-animation-frames "])])
        page.wait_for_function(
            "() => document.querySelector('[data-testid=token-output]').textContent.includes('no-animation-frames')",
            timeout=ms(3),
            polling=100,
        )
        # 400 KB of token text, far more than the page keeps (20,000 characters).
        wf_server.publish([token([f"<{i:04d}>" + "x" * 994]) for i in range(400)])
        page.wait_for_function(
            "() => document.querySelector('[data-testid=token-output]').textContent.includes('<0399>')",
            timeout=ms(5),
            polling=100,
        )
        shown = page.evaluate("() => document.querySelector('[data-testid=token-output]').textContent.length")
        assert shown <= 20_000, f"{shown} characters of token text on the page"
    finally:
        context.close()


def test_policy_close_is_shown_and_not_retried(page: Page, wf_server: ServerProcess) -> None:
    watch = open_page(page, wf_server)
    wait_state(page, "connected", ms(5))
    sockets_before = len(watch.websockets)

    # flood the server past its inbound rate limit (100/s, bursts of 200)
    sent = page.evaluate(
        """() => {
             let n = 0
             for (let i = 0; i < 500; i++) {
               if (window.wirthforge.send({type: 'heartbeat_response', payload: {sequence: 0}})) n++
             }
             return n
           }"""
    )
    assert sent > 200
    wait_state(page, "refused", ms(3))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=close-reason]').textContent.includes('rate limit exceeded')",
        timeout=ms(1),
    )
    assert page.locator('[data-testid="refused-banner"]').is_visible()
    assert "1008" in text(page, "close-reason")
    attempts = page.evaluate("() => window.wirthforge.stats.counters.attempts")

    page.wait_for_timeout(ms(3))
    assert text(page, "connection-status") == "refused"
    assert len(watch.websockets) == sockets_before, "no new WebSocket after a policy close"
    assert page.evaluate("() => window.wirthforge.stats.counters.attempts") == attempts
    assert text(page, "connect-toggle") == "Connect"


def test_tokens_and_event_text_are_never_html(page: Page, wf_server: ServerProcess) -> None:
    open_page(page, wf_server)
    wait_state(page, "connected", ms(5))
    evil = '<img src=x onerror="window.__xss=(window.__xss||0)+1">'
    wf_server.publish(
        [
            token([evil, "<b>bold</b>"]),
            {
                "type": "reward_event",
                "payload": {
                    "rewardType": "milestone",
                    "title": evil[:100],
                    "points": 1,
                    "description": "<script>x</script>",
                },
            },
        ]
    )
    page.wait_for_function(
        "s => document.querySelector('[data-testid=token-output]').textContent.includes(s)", arg=evil, timeout=ms(3)
    )
    page.wait_for_function(
        "() => document.querySelector('[data-testid=event-log]').textContent.includes('<script>x</script>')",
        timeout=ms(3),
    )
    page.wait_for_timeout(ms(0.3))
    # the answer is one span per token (and a label per block): no element the text could have made
    tags = page.evaluate(
        "() => [...new Set([...document.querySelectorAll('[data-testid=token-output] *')].map((e) => e.tagName))]"
    )
    assert set(tags) <= {"DIV", "SPAN"}, tags
    assert (
        page.evaluate(
            "() => document.querySelectorAll('[data-testid=event-log] img, [data-testid=event-log] script').length"
        )
        == 0
    )
    assert page.evaluate("() => document.images.length") == 0
    assert page.evaluate("() => window.__xss") is None
    assert "<b>bold</b>" in text(page, "token-output")


def test_screenshot(page: Page, wf_server: ServerProcess) -> None:
    """Writes a screenshot of the running page (see the module docstring)."""
    seconds = float(os.environ.get("WF_SCREENSHOT_SECONDS", "8"))
    open_page(page, wf_server)
    wait_state(page, "connected", ms(5))
    demo = [
        {
            "type": "reward_event",
            "payload": {
                "rewardType": "level_up",
                "title": "Level 2: steady flow",
                "points": 120,
                "level": 2,
                "description": "A minute at full frame rate.",
            },
        },
        {
            "type": "error_event",
            "payload": {
                "severity": "warning",
                "code": "MODEL_SLOW",
                "component": "websocket",
                "message": "Token generation is slower than usual.",
                "recoverable": True,
            },
        },
    ]
    time.sleep(max(0.0, seconds - 0.7))
    wf_server.publish(demo)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=event-log]').textContent.includes('MODEL_SLOW')", timeout=ms(3)
    )
    page.wait_for_timeout(ms(0.4))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_page_lists_recorded_sessions_and_replays_one(browser: Browser, tmp_path: Path) -> None:
    # --record-text: the replayed (or resumed) words come from the recording.
    env = {
        "WF_ENABLE_PUBLISH": "1",
        "WF_PERSIST": "1",
        "WF_PERSIST_PATH": str(tmp_path / "events.sqlite3"),
        "WF_RECORD_TEXT": "1",
    }
    with ServerProcess(env=env, startup_timeout=scaled(20)) as server:
        recorded = {
            "tokens": ["recorded ", "words ", "again"],
            "isComplete": True,
            "sessionId": "rec-7",
            "modelId": "wirthforge-sim",
        }
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(ms(10))
            watch = open_page(page, server)
            wait_state(page, "connected", ms(5))
            server.publish([{"type": "token_stream", "payload": recorded}])
            # No click: the list reloads by itself once a generation completes and is committed.
            row = page.locator('[data-testid="sessions-list"] li', has_text="rec-7")
            row.wait_for(timeout=ms(5))
            assert "3 tokens" in (row.text_content() or "")
            page.select_option('[data-testid="replay-speed"]', "2")
            row.locator('[data-testid="replay-button"]').click()
            # Live first, then replayed: the same tokens in the same order, twice.
            page.wait_for_function(
                "() => document.querySelector('[data-testid=token-output]').textContent"
                ".split('recorded words again').length === 3",
                timeout=ms(5),
            )
            assert "at 2×" in text(page, "sessions-status")
            assert not watch.errors, watch.errors
            assert not watch.external_requests()
        finally:
            context.close()


def test_page_loses_no_token_across_a_server_restart(browser: Browser, tmp_path: Path) -> None:
    """With the event log, a stop and start keeps the epoch: the page resumes complete, every token once."""
    # --record-text: the replayed (or resumed) words come from the recording.
    env = {
        "WF_ENABLE_PUBLISH": "1",
        "WF_PERSIST": "1",
        "WF_PERSIST_PATH": str(tmp_path / "events.sqlite3"),
        "WF_RECORD_TEXT": "1",
    }
    with ServerProcess(env=env, startup_timeout=scaled(20)) as server:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(ms(10))
            open_page(page, server)
            wait_state(page, "connected", ms(5))
            epoch = page.evaluate("() => window.wirthforge.epoch")
            server.publish([token(["tok-before "])])
            page.wait_for_function(
                "() => document.querySelector('[data-testid=token-output]').textContent.includes('tok-before')",
                timeout=ms(3),
            )
            server.publish([token([f"tok-{i} "]) for i in range(5)])  # just before the stop
            server.stop()
            server.start()
            server.publish([token(["tok-after "])])  # most likely before the page is back
            page.wait_for_function(
                "() => document.querySelector('[data-testid=token-output]').textContent.includes('tok-after')",
                timeout=ms(5),
            )
            resume = page.evaluate("() => window.wirthforge.lastResume")
            assert resume["status"] == "complete", resume
            assert page.evaluate("() => window.wirthforge.epoch") == epoch
            output = text(page, "token-output")
            for word in ("tok-before", *(f"tok-{i}" for i in range(5)), "tok-after"):
                assert output.count(word) == 1, (word, output.count(word))
            order = [output.index(word) for word in ("tok-before", *(f"tok-{i}" for i in range(5)), "tok-after")]
            assert order == sorted(order)
        finally:
            context.close()


# -- the prompt box, with the real embedded model ------------------------------

TOTAL_RGB = (0xFB, 0xBF, 0x24)  # the energy view's total line (COLORS.total in static/page/plot.js)
# The answer block of the running prompt's session (the answer is shown once, in the energy view).
ANSWER_JS = (
    "(() => { const s = document.querySelector('[data-testid=prompt-status]').dataset.session;"
    " const b = [...document.querySelectorAll('[data-testid=token-output] .ablock')]"
    ".filter((e) => e.dataset.session === s).pop(); return b ? b.textContent : '' })()"
)


def top_row(page: Page, testid: str, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """The highest canvas row holding a pixel close to `rgb` (canvas height when there is none)."""
    return page.evaluate(
        """([id, rgb, tol]) => {
             const c = document.querySelector(`[data-testid="${id}"]`)
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
             for (let i = 0; i < d.length; i += 4) {
               if (d[i + 3] > 160 && Math.abs(d[i] - rgb[0]) <= tol && Math.abs(d[i + 1] - rgb[1]) <= tol
                   && Math.abs(d[i + 2] - rgb[2]) <= tol) return Math.floor(i / 4 / c.width)
             }
             return c.height
           }""",
        [testid, list(rgb), tolerance],
    )


def test_prompt_box_streams_a_real_answer_and_stop_works(browser: Browser) -> None:
    with ServerProcess(env={"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "60"}, startup_timeout=scaled(60)) as server:
        context = browser.new_context(viewport={"width": 1440, "height": 1200})
        page = context.new_page()
        page.set_default_timeout(ms(30))
        try:
            watch = open_page(page, server)
            wait_state(page, "connected", ms(5))
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent.startsWith('models:')"
            )
            page.wait_for_timeout(ms(1.5))  # the energy view fills its 10 s window at rest
            resting = top_row(page, "energy-view", TOTAL_RGB)

            page.locator('[data-testid="prompt-input"]').fill("Write a short poem about the sea.")
            page.locator('[data-testid="prompt-send"]').click()
            assert page.locator('[data-testid="prompt-send"]').is_disabled()
            page.wait_for_function(ANSWER_JS + ".length > 30")
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent === 'done'", timeout=ms(60)
            )
            answer = page.evaluate(ANSWER_JS)
            assert answer.startswith("SmolLM2-135M-Instruct: ") and answer.endswith(" ■")
            # shown once: the answer's text is on the page once, not in two panels
            body = answer.removeprefix("SmolLM2-135M-Instruct: ").removesuffix(" ■")
            assert len(body) > 20
            assert page.evaluate("() => document.body.textContent").count(body) == 1
            # the energy plot moved: its total line rose above where it rested
            assert top_row(page, "energy-view", TOTAL_RGB) < resting - 5

            # Stop: a long answer, stopped after its first words
            page.locator('[data-testid="prompt-input"]').fill("Count from one to one hundred in words.")
            page.locator('[data-testid="prompt-send"]').click()
            page.wait_for_function(ANSWER_JS + ".length > 30")
            page.locator('[data-testid="prompt-stop"]').click()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent === 'stopped'"
            )
            # Tokens published before the cancel was answered may still be on their way; the answer's
            # closing mark (its isComplete) comes in the next frame, and nothing may follow it.
            page.wait_for_function(ANSWER_JS + ".endsWith('■')")
            stopped = page.evaluate(ANSWER_JS)
            page.wait_for_timeout(ms(1))
            assert page.evaluate(ANSWER_JS) == stopped, "no token after Stop"
            assert page.locator('[data-testid="prompt-send"]').is_enabled()
            assert not watch.errors, watch.errors
            assert not watch.external_requests()
        finally:
            context.close()
