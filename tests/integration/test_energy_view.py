"""The energy view of the page in headless Chromium, against a real server.

Chromium is Debian's (/usr/bin/chromium). The view is read through its own
state (``window.wfView``) and its canvas pixels. Tests that need the 1.1
energy evidence on the wire (per-token Δt and certainty, council members)
skip while the server does not send it yet (``evidence`` absent from its
energy_update frames, or refused by POST /publish).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import launched_chromium, skip_module_without_chromium
from tests.server_process import ServerProcess
from tests.timing import scaled

skip_module_without_chromium()

from playwright.sync_api import Browser, Page  # noqa: E402


def ms(seconds: float) -> float:
    """A Playwright timeout or wait in ms: *seconds* stretched by the test time factor (tests/timing.py)."""
    return scaled(seconds) * 1000


# A hash of the energy canvas's pixels (changes whenever any pixel does).
CANVAS_HASH = """() => {
  const c = document.querySelector('[data-testid=energy-canvas]')
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
  let h = 2166136261
  for (let i = 0; i < d.length; i += 4) h = Math.imul(h ^ (d[i] + 3 * d[i + 1] + 7 * d[i + 2]), 16777619)
  return h >>> 0
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as browser:
        yield browser


def open_view(browser: Browser, server: ServerProcess, **context: Any) -> tuple[Page, list[str]]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, **context)
    page = ctx.new_page()
    page.set_default_timeout(ms(10))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.http_url + "/")
    page.wait_for_function("() => window.wirthforge.state === 'connected' && window.wfView", polling=50)
    return page, errors


def has_evidence(page: Page) -> bool:
    page.wait_for_function("() => window.wfView.state.frames > 5", polling=50)
    return bool(page.evaluate("() => window.wfView.state.hasEvidence"))


# -- today's wire ----------------------------------------------------------------


def test_quality_steps_down_under_cpu_throttling_and_back_up(browser: Browser) -> None:
    """The simulator keeps E moving, so the view draws every frame; 6x CPU throttling makes it step down."""
    with ServerProcess(startup_timeout=scaled(20)) as server:
        page, errors = open_view(browser, server)
        try:
            page.wait_for_function("() => window.wfView.drawCount > 60", polling=100)
            assert page.evaluate("() => window.wfView.quality.level") == "high"
            cdp = page.context.new_cdp_session(page)
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": 6})
            page.wait_for_function("() => window.wfView.quality.level !== 'high'", timeout=ms(20), polling=250)
            shown = page.locator('[data-testid="quality-level"]').text_content()
            assert shown in ("Medium", "Low", "Static"), shown
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
            page.wait_for_function("() => window.wfView.quality.level === 'high'", timeout=ms(40), polling=250)
            assert page.locator('[data-testid="quality-level"]').text_content() == "High"
            assert errors == []
        finally:
            page.context.close()


def test_quality_pinned_low_asks_the_server_for_a_lower_energy_rate(browser: Browser) -> None:
    with ServerProcess(startup_timeout=scaled(20)) as server:
        page, errors = open_view(browser, server)
        try:
            page.select_option('[data-testid="quality-select"]', "low")
            page.wait_for_function("() => window.wirthforge.energyRateHz === 30", polling=50)
            # the server follows: energy frames arrive at 30 per second
            page.wait_for_timeout(ms(2.5))
            rate = page.evaluate("() => window.wirthforge.stats.frameRate(window.wirthforge.now())")
            assert 25 <= rate <= 35, rate
            page.select_option('[data-testid="quality-select"]', "auto")
            page.wait_for_function("() => window.wirthforge.energyRateHz === 60", polling=50)
            assert errors == []
        finally:
            page.context.close()


def test_aria_live_region_announces_at_most_once_per_interval(browser: Browser) -> None:
    with ServerProcess(startup_timeout=scaled(20)) as server:
        page, errors = open_view(browser, server)
        try:
            page.evaluate(
                """() => {
                     window.__said = []
                     const el = document.querySelector('[data-testid=energy-live]')
                     new MutationObserver(() => window.__said.push({t: performance.now(), text: el.textContent}))
                       .observe(el, {childList: true, characterData: true, subtree: true})
                   }"""
            )
            page.wait_for_timeout(ms(8))
            said = page.evaluate("() => window.__said")
            live = page.locator('[data-testid="energy-live"]')
            assert live.get_attribute("aria-live") == "polite" and live.get_attribute("role") == "status"
            text = live.text_content() or ""
            assert text.startswith("energy ") and " %" in text and "tokens per second" in text, text
            gaps = [b["t"] - a["t"] for a, b in zip(said, said[1:], strict=False)]
            assert all(g >= 2990 for g in gaps), gaps
            assert errors == []
        finally:
            page.context.close()


def test_reduced_motion_draws_static_forms_and_a_still_canvas(browser: Browser) -> None:
    """No model running (embedded source, no prompt): E is constant; nothing on the canvas may move."""
    with ServerProcess(env={"WF_SOURCE": "embedded"}, startup_timeout=scaled(60)) as server:
        page, errors = open_view(browser, server, reduced_motion="reduce")
        try:
            assert page.evaluate("() => matchMedia('(prefers-reduced-motion: reduce)').matches")
            page.wait_for_function("() => window.wfView.drawCount > 0", polling=50)
            page.wait_for_timeout(ms(0.5))
            assert page.evaluate("() => window.wfView.motion") is False
            kinds = page.evaluate("() => window.wfView.hits.map((h) => h.kind)")
            assert "ribbon" in kinds and "field" in kinds
            first = page.locator('[data-testid="energy-canvas"]').screenshot()
            e_before = page.evaluate("() => window.wfView.state.e")
            page.wait_for_timeout(ms(1.5))
            second = page.locator('[data-testid="energy-canvas"]').screenshot()
            assert page.evaluate("() => window.wfView.state.e") == e_before
            assert first == second
            assert errors == []
        finally:
            page.context.close()


def test_generating_moves_the_view_and_idle_stills_it(browser: Browser) -> None:
    """A real answer from the embedded model: the pixels change while tokens flow, then stop within 2 s."""
    with ServerProcess(env={"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "40"}, startup_timeout=scaled(60)) as server:
        page, errors = open_view(browser, server)
        try:
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent.startsWith('models:')"
            )
            page.wait_for_timeout(ms(2.5))  # the idle field settles
            still = page.evaluate(CANVAS_HASH)
            page.wait_for_timeout(ms(0.3))
            assert page.evaluate(CANVAS_HASH) == still, "idle before the prompt: a still canvas"
            page.locator('[data-testid="prompt-input"]').fill("Write a short poem about the sea.")
            page.locator('[data-testid="prompt-send"]').click()
            page.wait_for_function("() => window.wirthforge.stats.counters.tokens > 5", timeout=ms(30))
            hashes = set()
            for _ in range(6):
                hashes.add(page.evaluate(CANVAS_HASH))
                page.wait_for_timeout(ms(0.1))
            # With per-token evidence every token strikes; without it only the field's brightness (E) moves.
            assert len(hashes) >= (3 if has_evidence(page) else 2), "the view moves while tokens flow"
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent === 'done'",
                timeout=ms(60),
            )
            ended = time.monotonic()
            page.wait_for_timeout(ms(2))
            settled = page.evaluate(CANVAS_HASH)
            page.wait_for_timeout(ms(0.5))
            assert page.evaluate(CANVAS_HASH) == settled, "still again within 2 s of the end"
            assert time.monotonic() - ended < scaled(4)
            assert errors == []
        finally:
            page.context.close()


CONTRAST_FAILURES = """(rootSelectors) => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c)
    if (!m) return null
    const p = m[1].split(/[\\s,/]+/).filter(Boolean).map(Number)
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]
  }
  const over = (f, b) => [0, 1, 2].map((i) => f[i] * f[3] + b[i] * (1 - f[3])).concat([1])
  const background = (el) => {
    const layers = []
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor)
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break }
    }
    let b = [0, 0, 0, 1]
    for (const layer of layers.reverse()) b = over(layer, b)
    return b
  }
  const lum = (rgb) => {
    const lin = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4
    const [r, g, b] = rgb.slice(0, 3).map(lin)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
  }
  const failures = []
  let checked = 0
  for (const sel of rootSelectors) for (const el of document.querySelectorAll(`${sel}, ${sel} *`)) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())
    const st = getComputedStyle(el)
    if (!own || !el.getClientRects().length || st.visibility === 'hidden' || el.closest('.sr-only')) continue
    const bg = background(el)
    const fg = over(parse(st.color), bg)
    const la = lum(fg), lb = lum(bg)
    const ratio = (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05)
    const size = parseFloat(st.fontSize), weight = Number(st.fontWeight) || 400
    const need = size >= 24 || (size >= 18.66 && weight >= 700) ? 3 : 4.5
    checked++
    const what = `${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}"`
    if (ratio < need) failures.push(`${what} ${ratio.toFixed(2)}`)
  }
  return { checked, failures }
}"""


def test_every_control_of_the_view_is_keyboard_reachable_and_focus_shows_evidence(browser: Browser) -> None:
    """Tab reaches each control and readout of the energy panel, in order; focus shows the evidence tooltip."""
    with ServerProcess(startup_timeout=scaled(20)) as server:
        page, errors = open_view(browser, server)
        try:
            page.wait_for_function("() => window.wfView.drawCount > 0", polling=50)
            page.locator("body").focus()
            reached: list[str] = []
            for _ in range(40):
                page.keyboard.press("Tab")
                reached.append(page.evaluate("() => document.activeElement?.dataset?.testid ?? ''"))
            wanted = [
                *("quality-select", "quality-level", "evidence-toggle", "energy-percent", "energy-state"),
                *("session-state", "tps", "certainty", "ttft", "energy-units", "energy-canvas", "token-output"),
                "prompt-council",  # the simulated source takes no prompt: its input and Send are disabled
            ]
            assert [w for w in wanted if w not in reached] == [], " ".join(reached)
            assert list(dict.fromkeys(r for r in reached if r in wanted)) == wanted, "the tab order follows the layout"
            # focus on the canvas: the tooltip names the source metrics with units
            page.locator('[data-testid="energy-canvas"]').focus()
            tip = page.locator('[data-testid="evidence-tip"]')
            tip.wait_for(state="visible")
            shown = tip.text_content() or ""
            assert "tokens/s" in shown and "Δt" in shown and "certainty" in shown and "E " in shown, shown
            assert page.locator('[data-testid="energy-canvas"]').get_attribute("aria-describedby") == "evidence-tip"
            page.keyboard.press("ArrowLeft")
            assert tip.is_visible()
            page.keyboard.press("Escape")
            tip.wait_for(state="hidden")
            # hovering the canvas: the element under the pointer tells its source metrics
            page.locator('[data-testid="energy-canvas"]').blur()
            ribbon = page.evaluate("() => window.wfView.hits.find((h) => h.kind === 'ribbon')")
            box = page.locator('[data-testid="energy-canvas"]').bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + (ribbon["x0"] + ribbon["x1"]) / 2, box["y"] + (ribbon["y0"] + ribbon["y1"]) / 2)
            tip.wait_for(state="visible")
            page.wait_for_function(
                "() => document.querySelector('[data-testid=evidence-tip]').textContent.includes('tokens/s ·')"
            )
            page.mouse.move(0, 0)
            # a readout chip on focus
            page.locator('[data-testid="tps"]').focus()
            tip.wait_for(state="visible")
            assert "tokens/s" in (tip.text_content() or "")
            # the quality select works from the keyboard
            page.locator('[data-testid="quality-select"]').focus()
            page.keyboard.press("ArrowDown")
            page.wait_for_function("() => window.wfView.quality.pinned === 'high'", polling=50)
            assert errors == []
        finally:
            page.context.close()


def test_text_of_the_view_has_aa_contrast(browser: Browser) -> None:
    """Every visible text of the energy panel and the prompt box: 4.5:1 (3:1 when large) on its background."""
    with ServerProcess(startup_timeout=scaled(20)) as server:
        page, errors = open_view(browser, server)
        try:
            page.wait_for_function("() => window.wfView.drawCount > 0", polling=50)
            page.evaluate("() => { for (const b of document.querySelectorAll('.hud .badge')) b.hidden = false }")
            result = page.evaluate(CONTRAST_FAILURES, ['[data-testid="energy-panel"]', '[data-testid="prompt-box"]'])
            assert result["checked"] >= 20, result
            assert result["failures"] == [], result["failures"]
            assert errors == []
        finally:
            page.context.close()


def test_low_tier_starts_at_low_quality_and_asks_for_30_hz(browser: Browser) -> None:
    with ServerProcess(env={"WF_TIER": "Low-Tier"}, startup_timeout=scaled(20)) as server:
        page, errors = open_view(browser, server)
        try:
            page.wait_for_function("() => window.wirthforge.energyRateHz === 30", polling=50)
            assert page.evaluate("() => window.wfView.quality.level") == "low"
            assert page.locator('[data-testid="quality-level"]').text_content() == "Low"
            assert errors == []
        finally:
            page.context.close()


# What the view holds for the newest answer block: per token its text, tint and
# evidence (Δt, tokens/s, certainty, E), and the strikes of the newest session.
ANSWER_STATE = """() => {
  const block = [...document.querySelectorAll('[data-testid=token-output] .ablock')].pop()
  if (!block) return null
  const { session, model } = block.dataset
  const tokens = [...block.querySelectorAll('span[data-index]')].map((span) => {
    const ev = window.wfView.evidenceOf(session, model, Number(span.dataset.index))
    return { index: span.dataset.index, text: span.textContent, tint: span.className,
             evidence: ev && { dtMs: ev.dtMs, tps: ev.tps, certainty: ev.certainty, energy: ev.energy } }
  })
  const strikes = window.wfView.state.strikes.map((s) => ({
    index: s.index, dtMs: s.dtMs, tps: s.tps, certainty: s.certainty, energy: s.energy, width: s.width }))
  return { session, model, complete: !!block.querySelector('.end'), tokens, strikes }
}"""


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=scaled(10)) as response:
        return json.loads(response.read())


def _without_e(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "energy"}


def _e_differences(live: list[Any], replayed: list[Any], of: Any) -> list[tuple[Any, Any, Any]]:
    """(index, live E, replayed E) wherever both views hold an E for the token and they differ."""
    return [
        (i, of(a)["energy"], of(b)["energy"])
        for i, (a, b) in enumerate(zip(live, replayed, strict=True))
        if of(a)["energy"] is not None and of(b)["energy"] is not None and of(a)["energy"] != of(b)["energy"]
    ]


def test_a_replayed_session_draws_as_it_did_live(browser: Browser, tmp_path: Path) -> None:
    """A real answer, recorded, then played back with POST /api/replay: the view holds the same per-token state."""
    env = {
        **{"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "24", "WF_PERSIST": "1"},
        "WF_PERSIST_PATH": str(tmp_path / "events.sqlite3"),
        "WF_RECORD_TEXT": "1",  # the replay shows the recorded words, to compare them with the live ones
    }
    with ServerProcess(env=env, startup_timeout=scaled(60)) as server:
        page, errors = open_view(browser, server)
        try:
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent.startsWith('models:')"
            )
            page.locator('[data-testid="prompt-input"]').fill("Name three colours.")
            page.locator('[data-testid="prompt-send"]').click()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent === 'done'", timeout=ms(60)
            )
            page.wait_for_function(f"() => ({ANSWER_STATE})()?.complete", polling=100)
            live = page.evaluate(ANSWER_STATE)
            assert len(live["tokens"]) >= 5, live
            recording = None
            deadline = time.monotonic() + scaled(10)
            while recording is None and time.monotonic() < deadline:
                with urllib.request.urlopen(server.http_url + "/api/sessions", timeout=scaled(5)) as response:
                    listed = json.loads(response.read())["sessions"]
                recording = next((r for r in listed if r["sessionId"] == live["session"] and r["complete"]), None)
                time.sleep(0.2)
            assert recording is not None, "the answer was recorded"
            _post_json(server.http_url + "/api/replay", {"session": recording["id"], "speed": 1})
            page.wait_for_function(
                "s => { const r = (" + ANSWER_STATE + ")(); return r && r.session !== s && r.complete }",
                arg=live["session"],
                timeout=ms(60),
                polling=100,
            )
            replayed = page.evaluate(ANSWER_STATE)
            # the same tokens, in order, the same text and tint
            assert [(t["index"], t["text"], t["tint"]) for t in replayed["tokens"]] == [
                (t["index"], t["text"], t["tint"]) for t in live["tokens"]
            ]
            assert has_evidence(page), "the server sends the 1.1 evidence"
            # each token's evidence: Δt, tokens/s and certainty from the (reliable) token_streams, always the same;
            # E comes with energy frames, which a busy reader may lose to coalescing: equal wherever both had it
            assert [_without_e(t["evidence"]) for t in replayed["tokens"]] == [
                _without_e(t["evidence"]) for t in live["tokens"]
            ]
            assert _e_differences(live["tokens"], replayed["tokens"], lambda t: t["evidence"]) == []
            # the strikes: one per token, the same thickness, Δt, tokens/s and certainty, and E where both had it
            assert [_without_e(s) for s in replayed["strikes"]] == [_without_e(s) for s in live["strikes"]]
            assert len(live["strikes"]) == len(live["tokens"])
            assert _e_differences(live["strikes"], replayed["strikes"], lambda s: s) == []
            both = [
                a
                for a, b in zip(live["strikes"], replayed["strikes"], strict=True)
                if None not in (a["energy"], b["energy"])
            ]
            assert both, "some strike carries its E from a frame, live and replayed"
            assert errors == []
        finally:
            page.context.close()


# -- the 1.1 energy evidence -----------------------------------------------------------


def _frame(server_frame: int, session: str, index: int, dt_ms: float, certainty: float) -> dict[str, Any]:
    return {
        "type": "energy_update",
        "payload": {
            "totalEnergy": 0.5,
            "energyDistribution": {"generation": 0.2, "attention": 0.15, "reasoning": 0.15},
            "deltaEnergy": 0.0,
            "tokensGenerated": 1,
            "processingTime": 0.1,
            "modelId": "scripted-model",
            "evidence": {
                "sessionId": session,
                "state": "FLOWING",
                "profile": "Lite",
                "tokens": [{"index": index, "dtMs": dt_ms, "certainty": certainty, "energy": 0.5}],
                "tokensOmitted": 0,
                "tps": 10.0,
                "certainty": certainty,
                "entropy": 0.5,
                "sinceTokenMs": 1.0,
                "stall": dt_ms > 1000,
                "burst": False,
                "ttftMs": 300.0,
                "energyUnits": 0.1,
            },
        },
    }


def test_strike_after_a_stall_is_thicker_than_at_20_tokens_per_second(browser: Browser) -> None:
    """A scripted timeline through POST /publish: tokens at 50 ms, a 1 s pause, one token after it."""
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1", "WF_SOURCE": "embedded"}, startup_timeout=scaled(60)) as server:
        page, _ = open_view(browser, server)
        try:
            for i in range(5):
                server.publish([_frame(0, "scripted", i, 50.0, 0.8)])
                time.sleep(0.05)
            time.sleep(1.0)
            server.publish([_frame(0, "scripted", 5, 1000.0, 0.4)])
            page.wait_for_function(
                "() => window.wfView.state.strikes.some((s) => s.sessionId === 'scripted' && s.index === 5)"
            )
            strikes = page.evaluate("() => window.wfView.state.strikes.filter((s) => s.sessionId === 'scripted')")
            fast = [s["width"] for s in strikes if s["index"] < 5]
            stalled = [s["width"] for s in strikes if s["index"] == 5][0]
            assert stalled > max(fast), (stalled, fast)
        finally:
            page.context.close()


def test_answer_tokens_are_tinted_by_their_certainty_and_show_it_on_hover(browser: Browser) -> None:
    """A token_stream with per-token top-K (POST /publish): tint class, underline style and tooltip per token.

    The embedded source without a prompt sends no tokens of its own: the published answer is the page's only one.
    """
    with ServerProcess(env={"WF_ENABLE_PUBLISH": "1", "WF_SOURCE": "embedded"}, startup_timeout=scaled(60)) as server:
        page, errors = open_view(browser, server)
        try:
            top_k = [[0.97, 0.01, 0.01, 0.01], [0.8, 0.1, 0.1], [0.5, 0.3, 0.2], None]
            server.publish(
                [
                    {
                        "type": "token_stream",
                        "payload": {
                            "tokens": ["sure ", "unsure ", "guess ", "unknown"],
                            "isComplete": True,
                            "sessionId": "tinted",
                            "modelId": "scripted-model",
                            "firstIndex": 0,
                            "tokenEvidence": [{"dtMs": 40.0 + 10 * i, "topK": k} for i, k in enumerate(top_k)],
                        },
                    }
                ]
            )
            block = page.locator('[data-testid="token-output"] .ablock[data-session="tinted"]')
            block.locator(".end").wait_for()
            spans = block.locator("span[data-index]")
            assert spans.count() == 4, "each token shown once"
            classes = [spans.nth(i).get_attribute("class") for i in range(4)]
            assert classes == ["tok c-high", "tok c-mid", "tok c-low", "tok c-na"], classes
            styles = page.evaluate(
                """() => [...document.querySelectorAll('.ablock[data-session=tinted] span[data-index]')]
                     .map((s) => getComputedStyle(s).textDecorationStyle + '/' + getComputedStyle(s).outlineStyle)"""
            )
            assert len(set(styles)) == 4, f"not by colour alone: {styles}"
            tip = page.locator('[data-testid="evidence-tip"]')
            spans.nth(1).hover()
            tip.wait_for(state="visible")
            shown = tip.text_content() or ""
            assert "token #1 · Δt 50.0 ms · 2.0 tokens/s · certainty 0.42" in shown, shown
            spans.nth(3).hover()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=evidence-tip]').textContent.includes('certainty n/a')"
            )
            # the keyboard: focus the answer (its newest token), then step back with the arrow keys
            page.mouse.move(0, 0)
            page.locator('[data-testid="token-output"]').focus()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=evidence-tip]').textContent.includes('token #3 ·')"
            )
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "() => document.querySelector('[data-testid=evidence-tip]').textContent.includes('token #1 ·')"
            )
            active = page.evaluate(
                "() => document.querySelector('[data-testid=token-output]').getAttribute('aria-activedescendant')"
            )
            assert active and page.locator(f"#{active}").get_attribute("data-index") is not None
            assert errors == []
        finally:
            page.context.close()


def test_hovering_a_token_shows_the_evidence_its_frame_carried(browser: Browser) -> None:
    with ServerProcess(env={"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "30"}, startup_timeout=scaled(60)) as server:
        page, errors = open_view(browser, server)
        try:
            page.evaluate(
                """() => { window.__frames = []
                     window.wirthforge.onMessage('energy_update', (m) => {
                       for (const t of (m.payload.evidence?.tokens || [])) window.__frames.push(t) }) }"""
            )
            if not has_evidence(page):
                pytest.skip("the server sends no energy evidence yet")
            page.locator('[data-testid="prompt-input"]').fill("Name three colours.")
            page.locator('[data-testid="prompt-send"]').click()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent === 'done'",
                timeout=ms(60),
            )
            # A token the user can point at (a newline token has no box) whose frame carried its evidence.
            index = page.evaluate(
                """() => [...document.querySelectorAll('[data-testid=token-output] span[data-index]')]
                     .filter((s) => s.offsetWidth > 0 && s.textContent.trim())
                     .map((s) => Number(s.dataset.index))
                     .find((i) => i >= 3 && window.__frames.some((t) => t.index === i))"""
            )
            assert index is not None, "no visible token with evidence"
            token = page.locator(f'[data-testid="token-output"] span[data-index="{index}"]').last
            token.hover()
            tip = page.locator('[data-testid="evidence-tip"]')
            tip.wait_for(state="visible")
            carried = page.evaluate("(i) => window.__frames.find((t) => t.index === i)", index)
            shown = tip.text_content() or ""
            assert f"Δt {carried['dtMs']:.1f} ms" in shown, (shown, carried)
            cert = "n/a" if carried["certainty"] is None else f"{carried['certainty']:.2f}"
            assert f"certainty {cert}" in shown, (shown, carried)
            assert errors == []
        finally:
            page.context.close()


def test_council_draws_two_ribbons_and_an_interference_overlay(browser: Browser) -> None:
    env = {"WF_SOURCE": "embedded", "WF_MAX_TOKENS": "60", "WF_COUNCIL_WITH": "embedded/critic"}
    with ServerProcess(env=env, startup_timeout=scaled(90)) as server:
        page, errors = open_view(browser, server)
        try:
            if not has_evidence(page):
                pytest.skip("the server sends no energy evidence yet")
            page.wait_for_function(
                "() => document.querySelector('[data-testid=prompt-status]').textContent.startsWith('models:')"
            )
            # watch every drawn frame: the council's overlay only lasts while its members answer
            page.evaluate(
                """() => {
                     window.__council = { interference: 0, seen: null }
                     window.wirthforge.onMessage('interference_event', () => { window.__council.interference++ })
                     const watch = () => {
                       const hits = window.wfView.hits
                       const ribbons = hits.filter((h) => h.kind === 'ribbon').length
                       if (!window.__council.seen && ribbons === 2 && hits.some((h) => h.kind === 'interference')) {
                         window.__council.seen = hits.map((h) => h.kind)
                       }
                       requestAnimationFrame(watch)
                     }
                     requestAnimationFrame(watch)
                   }"""
            )
            page.locator('[data-testid="prompt-council"]').check()
            page.locator('[data-testid="prompt-input"]').fill("Write a short poem about the sea.")
            page.locator('[data-testid="prompt-send"]').click()
            page.wait_for_function(
                """() => window.__council.seen
                         || document.querySelector('[data-testid=prompt-status]').textContent === 'done'""",
                timeout=ms(60),
                polling=100,
            )
            council = page.evaluate("() => window.__council")
            assert council["seen"], f"no frame drew two ribbons and the overlay ({council['interference']} events)"
            assert errors == []
        finally:
            page.context.close()
