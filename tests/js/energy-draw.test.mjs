// Unit tests of the energy view's drawing (static/page/energy-view.js) on a
// recording fake canvas and a fake clock: what is drawn is a function of the
// view state and the time since the message that caused it, nothing else.
import test from 'node:test'
import assert from 'node:assert/strict'

import { drawView, isAnimating } from '../../static/page/energy-view.js'
import { TIMING } from '../../static/page/mappings.js'
import { QualityController } from '../../static/page/quality.js'
import { createViewState, ingestEnergy, ingestInterference, ingestResonance } from '../../static/page/view-state.js'

globalThis.window ??= /** @type {any} */ ({ devicePixelRatio: 1 })

/** A canvas whose 2D context records every call and property write, in order. */
function fakeCanvas(width = 900, height = 280) {
  const log = []
  const ctx = new Proxy({}, {
    get: (_, name) => (...args) => { log.push([name, ...args.map((a) => (typeof a === 'number' ? Math.round(a * 1000) / 1000 : a))]) },
    set: (_, name, value) => { log.push([`=${String(name)}`, value]); return true },
  })
  return { log, canvas: { clientWidth: width, clientHeight: height, width, height, getContext: () => ctx } }
}

/** Draws `vs` at `now` and returns the call log and the hit regions. */
function draw(vs, now, opts = {}) {
  const { log, canvas } = fakeCanvas()
  const hits = drawView(/** @type {any} */ (canvas), vs, now, { level: 'high', motion: true, dtMs: 16.7, ...opts })
  return { log: JSON.stringify(log), calls: log, hits }
}

/** A view state after an answer of `n` tokens at 50 ms, the last at page time `at`. */
function answered(n, at, { tps = 0, council = false } = {}) {
  const vs = createViewState()
  const tokens = Array.from({ length: n }, (_, index) => ({ index, dtMs: index ? 50 : 300, certainty: 0.8, energy: 0.6 }))
  const evidence = {
    sessionId: 's', state: tps ? 'FLOWING' : 'DRAINED', profile: 'Dual', tokens, tokensOmitted: 0, tps,
    certainty: 0.8, entropy: 0.2, sinceTokenMs: 0, stall: false, burst: false, ttftMs: 300, energyUnits: 0.1,
  }
  if (council) {
    evidence.models = ['a', 'b'].map((modelId) => ({ modelId, energy: 0.5, state: 'FLOWING', tps, certainty: null, dtMs: 50, tokens: n }))
    evidence.ensembleEnergy = 0.5
  }
  ingestEnergy(vs, { totalEnergy: 0.6, evidence }, at)
  return vs
}

test('the same state at the same time draws the same thing (no jitter, no randomness)', () => {
  const vs = answered(10, 1000, { tps: 12 })
  const a = draw(vs, 1100, { dtMs: 0 })
  const b = draw(vs, 1100, { dtMs: 0 })
  assert.equal(a.log, b.log)
})

test('nothing moves unless a signal moved it: a still model gives a still canvas', () => {
  const vs = answered(10, 1000) // answer over: tps 0
  const settled = 1000 + Math.max(TIMING.strikeMs + TIMING.fadeMs, TIMING.particleLifeMs) + 1
  assert.equal(isAnimating(vs, settled, true), false)
  assert.equal(draw(vs, settled).log, draw(vs, settled + 60_000).log, 'a minute later: the same pixels')
  // a token arrives: it strikes and fades (the view moves), then settles again
  assert.equal(isAnimating(vs, 1000, true), true)
  assert.notEqual(draw(vs, 1000).log, draw(vs, 1500).log)
  // tokens/s on the wire: the ribbon flows
  const flowing = answered(3, 0, { tps: 10 })
  assert.equal(isAnimating(flowing, 60_000, true), true)
})

test('reduced motion: static forms only, the same at any time', () => {
  const vs = answered(12, 1000, { tps: 8, council: true })
  ingestInterference(vs, { patternType: 'destructive', models: ['a', 'b'], intensity: 0.7, coherenceScore: 0.3,
    evidence: { method: 'jsd', disagreement: 0.7, window: 8 } }, 1000)
  ingestResonance(vs, { resonanceType: 'harmonic', frequency: 2, amplitude: 0.5, participants: ['a', 'b'],
    evidence: { disagreement: 0.1, tpsRatio: 0.9 } }, 1000)
  assert.equal(isAnimating(vs, 1000, false), false)
  const at0 = draw(vs, 1000, { motion: false })
  const later = draw(vs, 1400, { motion: false, dtMs: 400 })
  assert.equal(at0.log, later.log, 'no pulse, fade, flow, ripple or particle')
  assert.ok(!at0.calls.some((c) => c[0] === 'arc' && c[3] > 5), 'no rings or ripples (markers only)')
  assert.ok(!at0.calls.some((c) => c[0] === 'fillRect' && c[3] === 2 && c[4] === 2), 'no particles')
  assert.ok(at0.calls.some((c) => c[0] === 'fillText' && String(c[1]).startsWith('✦ resonance')), 'the celebration as a label')
  assert.ok(at0.calls.some((c) => c[0] === 'fillText' && String(c[1]).includes('disagreement 70 %')), 'interference as a number')
  const kinds = new Set(at0.hits.map((h) => h.kind))
  for (const k of ['strike', 'ribbon', 'interference', 'resonance', 'field']) assert.ok(kinds.has(k), k)
  // with motion the same state animates
  assert.notEqual(draw(vs, 1000).log, draw(vs, 1400, { dtMs: 400 }).log)
})

test('Evidence Mode: every drawn element names Δt, tokens/s, certainty (or n/a) and E', () => {
  const vs = answered(6, 1000, { tps: 9, council: true })
  ingestInterference(vs, { patternType: 'constructive', models: ['a', 'b'], intensity: 0.2, coherenceScore: 0.8 }, 1000)
  const { hits } = draw(vs, 1000)
  assert.ok(hits.length >= 8)
  for (const h of hits) {
    assert.match(h.text, /Δt (n\/a|[\d.]+) ms/, h.kind)
    assert.match(h.text, /(n\/a|[\d.]+) tokens\/s/, h.kind)
    assert.match(h.text, /certainty (n\/a|[\d.]+)/, h.kind)
    assert.match(h.text, /E (n\/a|[\d.]+)/, h.kind)
  }
  const strike = hits.find((h) => h.kind === 'strike' && h.key === 's:5')
  assert.match(strike.text, /token #5 · Δt 50\.0 ms · 6\.0 tokens\/s · certainty 0\.80 · E 0\.600/)
})

test('quality steps down on missed frames and steps up only after the hold (fake clock)', () => {
  let t = 0
  const changes = []
  const q = new QualityController({ onChange: (lv) => changes.push([t, lv]) })
  // a display that delivers every second frame (33 ms intervals): missed frames, cheap drawing
  for (let i = 0; i < 120; i++) {
    t += 33.3
    q.sample(t, 33.3, q.shouldDraw(33.3) ? 1 : null)
  }
  assert.notEqual(q.level, 'high')
  const down = changes.length
  // back to 60 Hz: the level holds for at least holdUpMs before stepping up
  const backAt = t
  for (let i = 0; i < 60 * 20; i++) {
    t += 1000 / 60
    q.sample(t, 1000 / 60, q.shouldDraw(1000 / 60) ? 1 : null)
  }
  assert.equal(q.level, 'high')
  const up = changes.slice(down)
  assert.ok(up.length >= 1 && up[0][0] - backAt >= 3000, JSON.stringify(up))
})
