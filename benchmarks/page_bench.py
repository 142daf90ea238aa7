"""The page's own cost in headless Chromium while the embedded model answers.

Starts a real server (embedded model, 60 Hz frames) on a free loopback port,
opens the page in Debian's Chromium (Playwright, no GPU), keeps the model
answering prompts (one after the other, each bounded by ``--max-tokens``) and
measures, per quality level (``?quality=`` pins the energy view's level; the
page before the energy view has no levels and is measured once as ``page``):

- script time per animation frame: every requestAnimationFrame callback is
  wrapped (init script) and timed with ``performance.now()``; the sum per
  frame, P50 and P95;
- main-thread task time per frame: Chromium's Performance metrics (CDP
  ``Performance.getMetrics``: TaskDuration, ScriptDuration, LayoutDuration,
  RecalcStyleDuration) over the window, divided by the animation frames run;
- frames per second: animation frames per second of wall time;
- token-to-screen latency: for each ``token_stream``, from its server
  timestamp (epoch ms) to the end of the rendering of the first animation
  frame after its arrival (a message posted from that frame's callbacks runs
  once the frame's style, layout and paint are done): P50, P99. Both pages
  draw a token in the first frame after it arrived (at High);
- the page's own latency readout (publish to page, its P99);
- JS heap (``JSHeapUsedSize``) after a forced garbage collection at the end
  of a run of answers (``--heap-seconds``).

The machine is small and shared: numbers are noisy; repeat a run to compare.

    python benchmarks/page_bench.py --seconds 20 --levels high,medium,low,static --heap-seconds 120

``--source sim`` runs the same page against the simulated source (about 10
tokens/s instead of the embedded model's 45), for comparing at the old rate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import CDPSession, Page, sync_playwright  # noqa: E402

from tests.server_process import ServerProcess  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PROMPTS = [
    "Explain how a river shapes a valley.",
    "Write a short story about a lighthouse keeper.",
    "Describe the water cycle for a child.",
    "List some reasons people enjoy hiking.",
]

# Wraps requestAnimationFrame: per frame, the summed callback time; and per
# token_stream, its server timestamp and the frame index at arrival.
INIT_SCRIPT = """
(() => {
  const raf = window.requestAnimationFrame.bind(window)
  const B = window.__bench = {frame: 0, scriptMs: [], painted: new Map(), arrivals: []}
  // A message posted from a frame callback runs after that frame's rendering (style, layout, paint)
  const channel = new MessageChannel()
  channel.port1.onmessage = (e) => {
    B.painted.set(e.data, performance.timeOrigin + performance.now())
    B.painted.delete(e.data - 20000)
  }
  let queued = []
  let scheduled = false
  const run = (ts) => {
    scheduled = false
    const list = queued
    queued = []
    B.frame++
    channel.port2.postMessage(B.frame)
    const t0 = performance.now()
    for (const cb of list) { try { cb(ts) } catch (e) { setTimeout(() => { throw e }) } }
    B.scriptMs.push(performance.now() - t0)
    if (B.scriptMs.length > 20000) B.scriptMs.splice(0, 10000)
  }
  window.requestAnimationFrame = (cb) => {
    queued.push(cb)
    if (!scheduled) { scheduled = true; raf(run) }
    return queued.length
  }
  // one own frame callback per frame, so frame starts are known even when the page skips frames
  const tick = () => { window.requestAnimationFrame(tick) }
  window.requestAnimationFrame(tick)
  const hook = () => {
    const c = window.wirthforge
    if (!c || typeof c.onMessage !== 'function') return setTimeout(hook, 20)
    c.onMessage('token_stream', (m) => {
      if (Array.isArray(m.payload?.tokens) && m.payload.tokens.length && typeof m.timestamp === 'number') {
        B.arrivals.push({server: m.timestamp, frame: B.frame})
        if (B.arrivals.length > 20000) B.arrivals.splice(0, 10000)
      }
    })
  }
  hook()
})()
"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def keep_answering(server: ServerProcess, stop: threading.Event) -> None:
    """Sends prompts one after another until *stop* (409 while one runs: wait)."""
    i = 0
    while not stop.is_set():
        body = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)]}).encode()
        request = urllib.request.Request(
            server.http_url + "/api/prompt", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                i += 1
        except urllib.error.HTTPError:
            pass  # 409: one is running
        except OSError:
            pass
        stop.wait(0.5)


def metrics(cdp: CDPSession) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure(page: Page, cdp: CDPSession, seconds: float) -> dict[str, Any]:
    """One measurement window of *seconds* on the running page."""
    start = page.evaluate("() => ({frame: window.__bench.frame, n: window.__bench.scriptMs.length})")
    m0 = metrics(cdp)
    t0 = time.monotonic()
    time.sleep(seconds)
    m1 = metrics(cdp)
    wall = time.monotonic() - t0
    data = page.evaluate(
        """(start) => {
             const B = window.__bench
             const skip = B.scriptMs.length - (B.frame - start.frame)
             const script = B.scriptMs.slice(Math.max(0, skip))
             const lat = []
             for (const a of B.arrivals) {
               if (a.frame < start.frame) continue
               // a.frame frames had run at arrival: frame a.frame + 1 is the first that can draw it
               const painted = B.painted.get(a.frame + 1)
               if (painted !== undefined) lat.push(painted - a.server)
             }
             const snap = window.wirthforge.stats.snapshot(window.wirthforge.now())
             return {frames: B.frame - start.frame, script, lat, pageP99: snap.latencyP99, pageMedian: snap.latencyMedian,
                     level: window.wfView ? window.wfView.quality.level : 'page'}
           }""",
        start,
    )
    frames = max(1, data["frames"])

    def per_frame(name: str) -> float:
        return round((m1.get(name, 0) - m0.get(name, 0)) * 1000 / frames, 3)

    return {
        "level": data["level"],
        "seconds": round(wall, 1),
        "fps": round(data["frames"] / wall, 1),
        "script_ms_per_frame": {
            "p50": round(percentile(data["script"], 50), 3),
            "p95": round(percentile(data["script"], 95), 3),
        },
        "task_ms_per_frame": per_frame("TaskDuration"),
        "script_cdp_ms_per_frame": per_frame("ScriptDuration"),
        "style_layout_ms_per_frame": round(per_frame("RecalcStyleDuration") + per_frame("LayoutDuration"), 3),
        "token_to_screen_ms": {
            "n": len(data["lat"]),
            "p50": round(percentile(data["lat"], 50), 2),
            "p99": round(percentile(data["lat"], 99), 2),
        },
        "page_latency_readout_ms": {"median": data["pageMedian"], "p99": data["pageP99"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per level")
    parser.add_argument("--levels", default="high,medium,low,static", help="quality levels ('' for today's page)")
    parser.add_argument("--heap-seconds", type=float, default=60.0, help="answers run before the heap is read")
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument(
        "--source",
        default="embedded",
        choices=["embedded", "sim"],
        help="embedded: the model (about 45 tokens/s); sim: the simulated source (about 10 tokens/s, the old rate)",
    )
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args()

    levels = [lv for lv in args.levels.split(",") if lv] or [""]
    env = {"WF_SOURCE": args.source, "WF_MAX_TOKENS": str(args.max_tokens)}
    results: dict[str, Any] = {"args": vars(args), "levels": []}
    with ServerProcess(env=env, startup_timeout=60) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        stop = threading.Event()
        answering = threading.Thread(target=keep_answering, args=(server, stop), daemon=True)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            page = context.new_page()
            page.add_init_script(INIT_SCRIPT)
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(server.http_url + "/")
            page.wait_for_function("() => window.wirthforge && window.wirthforge.state === 'connected'", timeout=20_000)
            answering.start()
            time.sleep(3)
            started = time.monotonic()
            for level in levels:
                if level:
                    page.evaluate("(lv) => window.wfView.quality.pin(lv)", level)
                    time.sleep(1.5)
                result = measure(page, cdp, args.seconds)
                print(json.dumps(result), flush=True)
                results["levels"].append(result)
            if levels != [""]:
                page.evaluate("() => window.wfView.quality.pin(null)")
            time.sleep(max(0.0, args.heap_seconds - (time.monotonic() - started)))
            cdp.send("HeapProfiler.collectGarbage")
            heap = metrics(cdp)["JSHeapUsedSize"] / 2**20
            results["heap_mb_after"] = {"seconds_of_answers": round(time.monotonic() - started), "mb": round(heap, 2)}
            print(json.dumps(results["heap_mb_after"]), flush=True)
        finally:
            stop.set()
            answering.join(timeout=10)
            browser.close()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
