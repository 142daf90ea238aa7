// Unit tests of the energy view's pure parts: mappings, state names, the
// quality controller and the announcer, on fake clocks.
import test from 'node:test'
import assert from 'node:assert/strict'

import {
  certaintyLevel, certaintyOfTopK, energyState, fieldBrightness, interferenceAlpha, particleCount,
  resonancePhase, ribbonSpeed, ribbonWidth, sessionState, strikeAlpha, strikeWidth,
} from '../../static/page/mappings.js'
import { QualityController, levelForTier, workBudgetMs } from '../../static/page/quality.js'
import { Announcer, summarize } from '../../static/page/announcer.js'
import { createViewState, ingestEnergy, ingestTokens, tokenEvidenceOf } from '../../static/page/view-state.js'

test('energy states at 20/50/80 %', () => {
  assert.equal(energyState(0), 'Dormant')
  assert.equal(energyState(0.199), 'Dormant')
  assert.equal(energyState(0.2), 'Awakening')
  assert.equal(energyState(0.62), 'Active')
  assert.equal(energyState(0.8), 'Resonance')
  assert.equal(energyState(NaN), 'Dormant')
  assert.equal(sessionState('FLOWING'), 'FLOWING')
  assert.equal(sessionState('bogus'), 'IDLE')
})

test('strike thicker for a slower token, 2-8 px; ribbon 4-12 px by tokens/s', () => {
  assert.ok(strikeWidth(1000) > strikeWidth(50))
  assert.equal(strikeWidth(5000), 8)
  assert.equal(strikeWidth(1), 2)
  assert.equal(strikeWidth(null), 2)
  assert.ok(ribbonWidth(20) > ribbonWidth(5))
  assert.equal(ribbonWidth(0), 4)
  assert.equal(ribbonWidth(100), 12)
  assert.equal(ribbonSpeed(0), 0, 'a still model gives a still ribbon')
})

test('strikes fade within the upstream timing ranges; resonance phases', () => {
  assert.equal(strikeAlpha(0), 1)
  assert.ok(strikeAlpha(500) < 1 && strikeAlpha(500) > 0)
  assert.equal(strikeAlpha(1000), 0)
  assert.equal(resonancePhase(0).phase, 'buildup')
  assert.equal(resonancePhase(2000).phase, 'sustain')
  assert.equal(resonancePhase(5000).phase, 'decay')
  assert.equal(resonancePhase(6000).phase, 'done')
})

test('certainty: density, tint bands, top-K formula, n/a', () => {
  assert.equal(particleCount(null, 10), 0)
  assert.ok(particleCount(0.9, 10) > particleCount(0.2, 10))
  assert.equal(certaintyOfTopK([1, 0, 0, 0, 0]), 1)
  assert.ok(Math.abs(certaintyOfTopK([0.2, 0.2, 0.2, 0.2, 0.2])) < 1e-9)
  assert.equal(certaintyOfTopK(null), null)
  assert.equal(certaintyLevel(0.9), 'high')
  assert.equal(certaintyLevel(0.5), 'mid')
  assert.equal(certaintyLevel(0.1), 'low')
  assert.equal(certaintyLevel(null), 'na')
  assert.ok(fieldBrightness(0.9) > fieldBrightness(0.1))
  assert.ok(interferenceAlpha(0.8) > interferenceAlpha(0.1))
  assert.equal(interferenceAlpha(null), 0)
})

/** Runs `seconds` of 60 Hz frames drawing `workMs` each. */
function run(q, clock, seconds, workMs) {
  for (let i = 0; i < seconds * 60; i++) {
    clock.t += 1000 / 60
    const draw = q.shouldDraw(1000 / 60)
    q.sample(clock.t, 1000 / 60, draw ? workMs(q.level) : null)
  }
}

test('quality steps down when over budget and back up with hysteresis', () => {
  const clock = { t: 0 }
  const changes = []
  const q = new QualityController({ onChange: (lv) => changes.push(lv) })
  const cost = { high: 2, medium: 1.5, low: 1, static: 0.5 }
  run(q, clock, 5, (lv) => cost[lv])
  assert.equal(q.level, 'high', 'within budget: stays High')
  run(q, clock, 3, (lv) => cost[lv] * 6) // a 6x slower machine
  assert.notEqual(q.level, 'high')
  const down = q.level
  run(q, clock, 1.5, (lv) => cost[lv])
  assert.equal(q.level, down, 'hysteresis: no step up at once')
  run(q, clock, 15, (lv) => cost[lv])
  assert.equal(q.level, 'high', 'back up once fast again')
  assert.ok(changes.length >= 2)
})

test('quality: pin wins, tier picks the start, Medium draws 45 of 60 frames', () => {
  assert.equal(levelForTier('Low-Tier'), 'low')
  assert.equal(levelForTier('Mid-Tier'), 'high')
  assert.equal(levelForTier('High-Tier'), 'high')
  const clock = { t: 0 }
  const q = new QualityController()
  q.pin('medium')
  let draws = 0
  for (let i = 0; i < 600; i++) if (q.shouldDraw(1000 / 60)) draws++
  assert.ok(Math.abs(draws - 450) <= 3, String(draws))
  run(q, clock, 5, () => 100)
  assert.equal(q.level, 'medium', 'pinned: never adapts')
  q.pin(null)
  assert.equal(q.level, 'high')
  assert.ok(workBudgetMs('high') < workBudgetMs('low'))
})

test('announcer: at most once per interval, only on a change', () => {
  const said = []
  const a = new Announcer({ write: (t) => said.push(t), intervalMs: 3000 })
  const vs = { e: 0.62, state: 'FLOWING', tps: 14, stall: false, burst: true, council: false }
  assert.ok(a.offer(summarize(vs), 0))
  assert.match(said[0], /energy 62 %, active, flowing, 14 tokens per second/)
  assert.ok(!a.offer(summarize({ ...vs, state: 'STALLING' }), 1000), 'too soon')
  assert.ok(a.offer(summarize({ ...vs, state: 'STALLING' }), 3100))
  assert.ok(!a.offer(summarize({ ...vs, state: 'STALLING' }), 9000), 'unchanged')
  assert.equal(said.length, 2)
})

test('view state: one strike per token from the frame evidence, joined with token_stream', () => {
  const vs = createViewState()
  const frame = (index, dtMs) => ({ totalEnergy: 0.5, evidence: {
    sessionId: 's', state: 'FLOWING', tokens: [{ index, dtMs, certainty: 0.7, energy: 0.5 }], tps: 10 } })
  ingestEnergy(vs, frame(0, 50), 0)
  ingestEnergy(vs, frame(1, 1000), 1000)
  ingestEnergy(vs, frame(1, 1000), 1001) // replayed duplicate
  assert.equal(vs.strikes.length, 2)
  assert.ok(vs.strikes[1].width > vs.strikes[0].width)
  ingestTokens(vs, { sessionId: 's', modelId: 'm', firstIndex: 0, tokens: ['a', 'b'], tokenEvidence: [{ dtMs: 50, topK: null }, { dtMs: 1000, topK: null }] })
  assert.equal(tokenEvidenceOf(vs, 's', 'm', 1).dtMs, 1000)
  assert.equal(tokenEvidenceOf(vs, 's', 'm', 1).certainty, 0.7)
  ingestEnergy(vs, { totalEnergy: 0.1, evidence: { sessionId: 't', state: 'IDLE', tokens: [] } }, 2000)
  assert.equal(vs.strikes.length, 0, 'a new session starts a new lightning')
})
