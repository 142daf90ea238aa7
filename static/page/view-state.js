// @ts-check
/**
 * What the energy view knows, built only from messages on the wire: the
 * newest frame's evidence (E, state, tokens/s, certainty, stall/burst, the
 * council members), one strike per token the frames listed, the newest
 * interference reading and resonance event. Message handlers call the
 * `ingest*` functions (cheap: no drawing, no DOM); the render loop reads the
 * state. Pure: the page clock is passed in, so Node tests drive it.
 *
 * @example
 * import { createViewState, ingestEnergy } from './view-state.js'
 * const vs = createViewState()
 * client.onMessage('energy_update', (m) => ingestEnergy(vs, m.payload, client.now()))
 * vs.strikes.at(-1)?.width   // thickness of the newest token's strike, from its Δt
 *
 * @module page/view-state
 */

import { certaintyOfTopK, sessionState, strikeWidth } from './mappings.js'

/** @typedef {import('./mappings.js').SessionState} SessionState */

/**
 * One token's strike.
 * @typedef {object} Strike
 * @property {string} key `${sessionId}:${index}`
 * @property {string} sessionId
 * @property {number} index position in the answer
 * @property {number | null} dtMs its inter-arrival time
 * @property {number | null} certainty
 * @property {number} energy E right after it
 * @property {number} width strike thickness in px (from dtMs)
 * @property {number} at page time it arrived (ms)
 */

/**
 * One model's flow (a council member, or the single model).
 * @typedef {object} ModelFlow
 * @property {string} modelId
 * @property {number} energy
 * @property {SessionState} state
 * @property {number} tps
 * @property {number | null} certainty
 * @property {number | null} dtMs
 * @property {number} tokens tokens of this member in the newest frame
 * @property {number} phase flow offset in px (advanced by the view from tps)
 */

/**
 * Evidence the page holds for one token, by `${sessionId}:${modelId}:${index}`.
 * @typedef {object} TokenEvidence
 * @property {number | null} dtMs
 * @property {number | null} certainty
 * @property {number | null} energy E right after it (only from an energy frame)
 * @property {'frame' | 'token_stream'} source where the certainty came from
 */

/**
 * @typedef {object} ViewState
 * @property {number} e E of the newest frame (NaN before any)
 * @property {boolean} hasEvidence whether frames carry the 1.1 evidence
 * @property {string | null} sessionId
 * @property {SessionState} state
 * @property {string} profile
 * @property {number} tps
 * @property {number | null} certainty
 * @property {number | null} entropy
 * @property {number | null} sinceTokenMs
 * @property {boolean} stall
 * @property {boolean} burst
 * @property {number | null} ttftMs
 * @property {number} energyUnits
 * @property {number} tokensOmitted tokens of the newest frame beyond those listed
 * @property {string} primaryModel modelId of the primary model
 * @property {Strike[]} strikes newest last, at most MAX_STRIKES, of the newest session
 * @property {ModelFlow[]} models the flows drawn: council members, or the single model
 * @property {boolean} council whether the newest frame was a council's
 * @property {{di: number, method: string, window: number, models: string[], at: number} | null} interference
 * @property {{at: number, type: string, disagreement: number | null, tpsRatio: number | null, participants: string[]} | null} resonance
 * @property {Map<string, TokenEvidence>} tokenEvidence
 * @property {number} version bumped whenever something drawn changed
 * @property {number} frames energy frames seen
 */

export const MAX_STRIKES = 96
const MAX_TOKEN_EVIDENCE = 4096

/** @returns {ViewState} */
export function createViewState() {
  return {
    e: NaN,
    hasEvidence: false,
    sessionId: null,
    state: 'IDLE',
    profile: '',
    tps: 0,
    certainty: null,
    entropy: null,
    sinceTokenMs: null,
    stall: false,
    burst: false,
    ttftMs: null,
    energyUnits: 0,
    tokensOmitted: 0,
    primaryModel: '',
    strikes: [],
    models: [],
    council: false,
    interference: null,
    resonance: null,
    tokenEvidence: new Map(),
    version: 0,
    frames: 0,
  }
}

/**
 * @param {unknown} v
 * @returns {number | null}
 */
function numOrNull(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null
}

/**
 * @param {unknown} v
 * @param {number} fallback
 */
function numOr(v, fallback) {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback
}

/**
 * @param {ViewState} vs
 * @param {string} key
 * @param {TokenEvidence} ev
 */
function remember(vs, key, ev) {
  vs.tokenEvidence.set(key, ev)
  if (vs.tokenEvidence.size > MAX_TOKEN_EVIDENCE) {
    const oldest = vs.tokenEvidence.keys().next().value
    if (oldest !== undefined) vs.tokenEvidence.delete(oldest)
  }
}

/**
 * Records one energy_update payload (1.0 or 1.1) at page time `now`.
 * @param {ViewState} vs
 * @param {Record<string, any>} p
 * @param {number} now
 */
export function ingestEnergy(vs, p, now) {
  vs.frames++
  const e = numOr(p?.totalEnergy, NaN)
  const ev = p?.evidence
  const before = vs.e
  vs.e = e
  if (Math.abs((Number.isFinite(before) ? before : -1) - (Number.isFinite(e) ? e : -1)) > 1e-4) vs.version++
  if (!ev || typeof ev !== 'object') {
    // a 1.0-shaped frame: the single model's ribbon, at rest (no tokens/s on the wire)
    if (!vs.models.length) syncModels(vs, null, e)
    return
  }
  vs.hasEvidence = true
  const sid = typeof ev.sessionId === 'string' ? ev.sessionId : null
  if (sid !== vs.sessionId) {
    vs.sessionId = sid
    vs.strikes = []
    vs.resonance = null
    vs.interference = null
    vs.version++
  }
  const state = sessionState(ev.state)
  const tps = numOr(ev.tps, 0)
  const stall = ev.stall === true
  const burst = ev.burst === true
  if (state !== vs.state || tps !== vs.tps || stall !== vs.stall || burst !== vs.burst) vs.version++
  vs.state = state
  vs.profile = typeof ev.profile === 'string' ? ev.profile : ''
  vs.tps = tps
  vs.certainty = numOrNull(ev.certainty)
  vs.entropy = numOrNull(ev.entropy)
  vs.sinceTokenMs = numOrNull(ev.sinceTokenMs)
  vs.stall = stall
  vs.burst = burst
  vs.ttftMs = numOrNull(ev.ttftMs)
  vs.energyUnits = numOr(ev.energyUnits, 0)
  vs.tokensOmitted = numOr(ev.tokensOmitted, 0)

  const members = Array.isArray(ev.models) ? ev.models : null
  vs.council = !!members && members.length >= 2
  const primary = vs.council && members ? String(members[0]?.modelId ?? '') : vs.primaryModel
  if (vs.council) vs.primaryModel = primary
  if (Array.isArray(ev.tokens) && ev.tokens.length) {
    for (const t of ev.tokens) {
      const index = numOr(t?.index, NaN)
      if (!Number.isFinite(index) || sid === null) continue
      const dtMs = numOrNull(t.dtMs)
      const certainty = numOrNull(t.certainty)
      const energy = numOr(t.energy, e)
      const key = `${sid}:${index}`
      if (vs.strikes.length && vs.strikes[vs.strikes.length - 1].index >= index) {
        // a replayed or resumed frame: keep one strike per token
        if (vs.strikes.some((s) => s.key === key)) continue
      }
      vs.strikes.push({ key, sessionId: sid, index, dtMs, certainty, energy, width: strikeWidth(dtMs), at: now })
      remember(vs, `${sid}:${primary}:${index}`, { dtMs, certainty, energy, source: 'frame' })
      remember(vs, `${sid}::${index}`, { dtMs, certainty, energy, source: 'frame' })
    }
    if (vs.strikes.length > MAX_STRIKES) vs.strikes.splice(0, vs.strikes.length - MAX_STRIKES)
    vs.version++
  }
  syncModels(vs, members, e)
}

/**
 * The flows: one per council member, or the single model's.
 * @param {ViewState} vs
 * @param {any[] | null} members
 * @param {number} e
 */
function syncModels(vs, members, e) {
  /** @type {{modelId: string, energy: number, state: SessionState, tps: number, certainty: number | null, dtMs: number | null, tokens: number}[]} */
  const next = members && members.length >= 2
    ? members.slice(0, 8).map((m) => ({
      modelId: String(m?.modelId ?? '?'),
      energy: numOr(m?.energy, 0),
      state: sessionState(m?.state),
      tps: numOr(m?.tps, 0),
      certainty: numOrNull(m?.certainty),
      dtMs: numOrNull(m?.dtMs),
      tokens: numOr(m?.tokens, 0),
    }))
    : [{
      modelId: vs.primaryModel || 'model',
      energy: Number.isFinite(e) ? e : 0,
      state: vs.state,
      tps: vs.tps,
      certainty: vs.certainty,
      dtMs: vs.strikes.length ? vs.strikes[vs.strikes.length - 1].dtMs : null,
      tokens: 0,
    }]
  const old = new Map(vs.models.map((m) => [m.modelId, m]))
  if (next.length !== vs.models.length || next.some((m, i) => vs.models[i].modelId !== m.modelId)) vs.version++
  vs.models = next.map((m) => ({ ...m, phase: old.get(m.modelId)?.phase ?? 0 }))
}

/**
 * Records one token_stream payload: the evidence of each token (its Δt and
 * the certainty of its top-K), for the answer and Evidence Mode.
 * @param {ViewState} vs
 * @param {Record<string, any>} p
 */
export function ingestTokens(vs, p) {
  const sid = typeof p?.sessionId === 'string' ? p.sessionId : ''
  const model = String(p?.modelId ?? '')
  if (!vs.primaryModel && model) vs.primaryModel = model
  const first = numOr(p?.firstIndex, NaN)
  const evidence = Array.isArray(p?.tokenEvidence) ? p.tokenEvidence : []
  if (!Number.isFinite(first)) return
  for (let i = 0; i < evidence.length; i++) {
    const te = evidence[i]
    const key = `${sid}:${model}:${first + i}`
    const known = vs.tokenEvidence.get(key)
    if (known && known.source === 'frame') continue
    remember(vs, key, { dtMs: numOrNull(te?.dtMs), certainty: certaintyOfTopK(te?.topK), energy: null, source: 'token_stream' })
  }
}

/**
 * The evidence the page holds for token `index` of `modelId` in `sessionId`.
 * @param {ViewState} vs
 * @param {string} sessionId
 * @param {string} modelId
 * @param {number} index
 * @returns {TokenEvidence | null}
 */
export function tokenEvidenceOf(vs, sessionId, modelId, index) {
  const exact = vs.tokenEvidence.get(`${sessionId}:${modelId}:${index}`)
  if (exact && exact.source === 'frame') return exact
  // the frame lists the primary's tokens: the same session and index, when this model is the primary
  const framed = modelId === vs.primaryModel || !vs.primaryModel ? vs.tokenEvidence.get(`${sessionId}::${index}`) : undefined
  return framed ?? exact ?? null
}

/**
 * Records an interference_event payload.
 * @param {ViewState} vs
 * @param {Record<string, any>} p
 * @param {number} now
 */
export function ingestInterference(vs, p, now) {
  const ev = p?.evidence
  const di = numOr(ev?.disagreement, numOr(p?.intensity, NaN))
  if (!Number.isFinite(di)) return
  vs.interference = {
    di,
    method: typeof ev?.method === 'string' ? ev.method : 'intensity',
    window: numOr(ev?.window, 0),
    models: Array.isArray(p?.models) ? p.models.map(String) : [],
    at: now,
  }
  vs.version++
}

/**
 * Records a resonance_event payload: the celebration starts now.
 * @param {ViewState} vs
 * @param {Record<string, any>} p
 * @param {number} now
 */
export function ingestResonance(vs, p, now) {
  const ev = p?.evidence
  vs.resonance = {
    at: now,
    type: typeof p?.resonanceType === 'string' ? p.resonanceType : 'resonance',
    disagreement: numOrNull(ev?.disagreement),
    tpsRatio: numOrNull(ev?.tpsRatio),
    participants: Array.isArray(p?.participants) ? p.participants.map(String) : [],
  }
  vs.version++
}
