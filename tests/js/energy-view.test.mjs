// Unit tests of the energy view's pure parts: mappings, state names, the
// quality controller and the announcer, on fake clocks.
import test from 'node:test'
import assert from 'node:assert/strict'

import {
  FIELD_ALPHA, VIEW_COLORS, blend, certaintyLevel, certaintyOfTopK, contrastRatio, energyState, fieldBrightness,
  interferenceAlpha, memberStyle, particleCount, resonancePhase, ribbonSpeed, ribbonWidth, sessionState, strikeAlpha,
  shortLabel, strikeWidth, tpsAtToken,
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
  ingestEnergy(vs, { totalEnergy: 0.1, evidence: { sessionId: 'r', state: 'DRAINED', tokens: [] } }, 1500)
  assert.equal(vs.strikes.length, 2, "frames of an earlier answer's session (after a replay) keep the drawn answer")
  assert.equal(vs.sessionId, 's')
  ingestEnergy(vs, { totalEnergy: 0.1, evidence: { sessionId: 't', state: 'CHARGING', tokens: [] } }, 2000)
  assert.equal(vs.strikes.length, 0, 'a new answer starts a new lightning')
})

test('certainty: K < 2 is n/a, as the server computes it', () => {
  assert.equal(certaintyOfTopK([1]), null)
  assert.equal(certaintyOfTopK([]), null)
  assert.ok(Math.abs(certaintyOfTopK([0.5, 0.5])) < 1e-12)
  assert.ok(certaintyOfTopK([0.9, 0.05, 0.05]) > certaintyOfTopK([0.4, 0.3, 0.3]))
})

test('tokens/s at a token: the meter window (t - 1 s, t] over the running sum of Δt', () => {
  const dts = [300, 50, 50, 50, 50]
  assert.equal(tpsAtToken(0, (j) => dts[j]), 1, 'the first token alone')
  assert.equal(tpsAtToken(4, (j) => dts[j]), 5, 'all five within 1 s (the TTFT is not a gap)')
  const slow = [300, 400, 400, 400]
  assert.equal(tpsAtToken(3, (j) => slow[j]), 3, 'token 0 is 1.2 s before token 3: out')
  assert.equal(tpsAtToken(3, (j) => (j === 2 ? null : slow[j])), null, 'a Δt the window needs is unknown')
  assert.equal(tpsAtToken(1, () => 1000), 1, 'exactly 1 s before is outside the window')
})

test('colours keep WCAG AA contrast on the field at its brightest', () => {
  assert.ok(fieldBrightness(1) <= FIELD_ALPHA.max + 1e-12 && fieldBrightness(0) >= FIELD_ALPHA.min)
  const backgrounds = [VIEW_COLORS.background, blend(VIEW_COLORS.lightning, VIEW_COLORS.background, FIELD_ALPHA.max)]
  for (const bg of backgrounds) {
    for (const text of [VIEW_COLORS.label, VIEW_COLORS.muted]) assert.ok(contrastRatio(text, bg) >= 4.5, `${text} on ${bg}`)
    const forms = [VIEW_COLORS.lightning, VIEW_COLORS.bar, VIEW_COLORS.stream, VIEW_COLORS.constructive,
      VIEW_COLORS.destructive, VIEW_COLORS.focus, ...[0, 1, 2, 3, 4].map((i) => memberStyle(i).color)]
    for (const form of forms) assert.ok(contrastRatio(form, bg) >= 3, `${form} on ${bg}`)
  }
  assert.ok(Math.abs(contrastRatio('#ffffff', '#000000') - 21) < 1e-9)
})

test('members are told apart by shape, not colour alone', () => {
  const shapes = [0, 1, 2, 3].map((i) => memberStyle(i).shape)
  assert.equal(new Set(shapes).size, 4)
})

/** A 1.1 energy_update payload with exactly the wire's evidence field names. */
function wireFrame(sessionId, tokens, extra = {}) {
  return {
    totalEnergy: 0.4, deltaEnergy: 0, tokensGenerated: tokens.length, processingTime: 0.1, modelId: 'smollm2',
    evidence: {
      sessionId, state: 'FLOWING', profile: 'Dual', tokens, tokensOmitted: 0, tps: 7, certainty: 0.6,
      entropy: 0.4, sinceTokenMs: 3, stall: false, burst: false, ttftMs: 250, energyUnits: 0.02, ...extra,
    },
  }
}

test('view state reads the contract fields: tokens/s per strike from Δt, the council members, idle frames', () => {
  const vs = createViewState()
  ingestEnergy(vs, wireFrame('a', [{ index: 0, dtMs: 250, certainty: 0.5, energy: 0.2 }]), 0)
  ingestEnergy(vs, wireFrame('a', [1, 2, 3].map((index) => ({ index, dtMs: 100, certainty: null, energy: 0.3 }))), 300)
  assert.deepEqual(vs.strikes.map((s) => s.tps), [1, 2, 3, 4])
  assert.equal(vs.profile, 'Dual')
  assert.equal(vs.ttftMs, 250)
  assert.equal(vs.energyUnits, 0.02)
  assert.equal(tokenEvidenceOf(vs, 'a', 'smollm2', 3).certainty, null)
  // between answers the wire says sessionId "": the answer's strikes stay
  ingestEnergy(vs, wireFrame('', [], { state: 'DRAINED', tps: 0 }), 2000)
  assert.equal(vs.strikes.length, 4)
  assert.equal(vs.state, 'DRAINED')
  // a council frame: one flow per member, primary first
  const members = ['m1', 'm2'].map((modelId, i) => ({ modelId, energy: 0.3 + i / 10, state: 'FLOWING', tps: 5 + i, certainty: null, dtMs: 90, tokens: 4 }))
  ingestEnergy(vs, wireFrame('b', [{ index: 0, dtMs: 200, certainty: 0.9, energy: 0.1 }], { models: members, ensembleEnergy: 0.35 }), 3000)
  assert.equal(vs.council, true)
  assert.deepEqual(vs.models.map((m) => [m.modelId, m.tps]), [['m1', 5], ['m2', 6]])
  assert.equal(vs.ensembleEnergy, 0.35)
  assert.equal(vs.primaryModel, 'm1')
  assert.equal(vs.strikes.length, 1, 'a new session starts a new lightning')
})

test('view state: token_stream evidence gives tokens/s and certainty per token before any frame lists it', () => {
  const vs = createViewState()
  ingestTokens(vs, { sessionId: 's', modelId: 'm', firstIndex: 0, tokens: ['a', 'b', 'c'], isComplete: false,
    tokenEvidence: [{ dtMs: 400, topK: [0.9, 0.1] }, { dtMs: 600, topK: null }, { dtMs: 500, topK: [0.5, 0.5] }] })
  const ev = [0, 1, 2].map((i) => tokenEvidenceOf(vs, 's', 'm', i))
  assert.deepEqual(ev.map((e) => e.tps), [1, 2, 2], "t = 400, 1000, 1500 ms")
  assert.equal(ev[1].certainty, null)
  assert.ok(Math.abs(ev[2].certainty) < 1e-12)
  assert.equal(ev[0].source, 'token_stream')
})

test('view state: the primary token_stream strikes every token when energy frames are lost; frames add E', () => {
  const vs = createViewState()
  const stream = (sessionId, modelId, firstIndex, dts) => ({ sessionId, modelId, firstIndex, isComplete: false,
    tokens: dts.map(() => 'w'), tokenEvidence: dts.map((dtMs) => ({ dtMs, topK: [0.9, 0.1] })) })
  ingestTokens(vs, stream('a', 'm', 0, [300, 100, 100]), 10)
  assert.deepEqual(vs.strikes.map((s) => [s.index, s.energy, s.width > 0]), [[0, null, true], [1, null, true], [2, null, true]])
  // a frame lists token 2 (the frames of 0 and 1 were coalesced away): one strike each, E filled in
  ingestEnergy(vs, wireFrame('a', [{ index: 2, dtMs: 100, certainty: 0.53, energy: 0.31 }]), 20)
  assert.deepEqual(vs.strikes.map((s) => [s.index, s.energy]), [[0, null], [1, null], [2, 0.31]])
  assert.equal(vs.strikes[2].at, 10, 'it struck when its first listing came')
  // another model of the same session does not strike (it is not the primary)
  ingestTokens(vs, stream('a', 'other', 0, [200]), 30)
  assert.equal(vs.strikes.length, 3)
  // the next answer's first tokens start a new lightning
  ingestTokens(vs, stream('b', 'm', 0, [250]), 40)
  assert.deepEqual(vs.strikes.map((s) => s.key), ['b:0'])
})

test("view state: a council's first frame names the primary; other members' strikes go", () => {
  const vs = createViewState()
  ingestTokens(vs, { sessionId: 'c', modelId: 'critic', firstIndex: 0, tokens: ['x'], isComplete: false,
    tokenEvidence: [{ dtMs: 200, topK: null }] }, 0)
  assert.equal(vs.strikes.length, 1, 'the first model seen is taken for the primary until a frame says')
  const members = ['lead', 'critic'].map((modelId) => ({ modelId, energy: 0.2, state: 'FLOWING', tps: 1, certainty: null, dtMs: 200, tokens: 1 }))
  ingestEnergy(vs, wireFrame('c', [{ index: 0, dtMs: 190, certainty: null, energy: 0.1 }], { models: members, ensembleEnergy: 0.2 }), 5)
  assert.equal(vs.primaryModel, 'lead')
  assert.deepEqual(vs.strikes.map((s) => [s.index, s.dtMs, s.energy]), [[0, 190, 0.1]])
})

test('model labels keep their start and end, so council members sharing a prefix differ', () => {
  const a = shortLabel('SmolLM2-135M-Instruct', 18)
  const b = shortLabel('SmolLM2-135M-Instruct-critic', 18)
  assert.ok(a.length <= 18 && b.length <= 18)
  assert.notEqual(a, b)
  assert.ok(b.endsWith('critic'))
  assert.equal(shortLabel('llama3_2-1b', 18), 'llama3_2-1b')
})
