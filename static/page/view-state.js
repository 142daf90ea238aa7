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

import { certaintyOfTopK, sessionState, strikeWidth, tpsAtToken } from './mappings.js'
import { untrusted, untrustedList } from './wire.js'

/** @typedef {import('./mappings.js').SessionState} SessionState */
/** @template T @typedef {import('./wire.js').Untrusted<T>} Untrusted */
/** @typedef {import('./wire.js').EnergyPayload} EnergyPayload */
/** @typedef {import('./wire.js').EnergyEvidence} EnergyEvidence */
/** @typedef {import('./wire.js').EvidenceToken} EvidenceToken */
/** @typedef {import('./wire.js').EvidenceModel} EvidenceModel */
/** @typedef {import('./wire.js').TokenStreamPayload} TokenStreamPayload */
/** @typedef {import('./wire.js').TokenStreamEvidence} TokenStreamEvidence */
/** @typedef {import('./wire.js').InterferencePayload} InterferencePayload */
/** @typedef {import('./wire.js').ResonancePayload} ResonancePayload */

/**
 * One token's strike.
 * @typedef {object} Strike
 * @property {string} key `${sessionId}:${index}`
 * @property {string} sessionId
 * @property {string} model the model whose token it is ("" when only a frame listed it: the primary)
 * @property {number} index position in the answer
 * @property {number | null} dtMs its inter-arrival time
 * @property {number | null} tps tokens/s at it (from the Δt of the tokens before it, else its frame's)
 * @property {number | null} certainty
 * @property {number | null} energy E right after it (null until an energy frame lists the token)
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
 * @property {number | null} tps tokens/s at it (the meter's window over the Δt known before it; else its frame's)
 * @property {number | null} certainty
 * @property {number | null} energy E right after it (only from an energy frame)
 * @property {'frame' | 'token_stream'} source where the certainty came from
 */

/**
 * @typedef {object} ViewState
 * @property {number} e E of the newest frame (NaN before any)
 * @property {boolean} hasEvidence whether frames carry the 1.1 evidence
 * @property {string | null} sessionId the newest answer's (kept while the wire says "" between answers)
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
 * @property {number | null} ensembleEnergy the council's mean E (council frames only)
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
    ensembleEnergy: null,
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
 * Tokens/s at token `index` of a series of remembered evidence (keys
 * `${prefix}${index}`), from the Δt of the tokens before it; null when one
 * the window needs is unknown. `ownDt` stands in for token `index`'s own Δt
 * when it is not remembered under this prefix yet.
 * @param {ViewState} vs
 * @param {string} prefix
 * @param {number} index
 * @param {number | null} [ownDt]
 */
function tpsOf(vs, prefix, index, ownDt) {
  return tpsAtToken(index, (j) => (j === index && ownDt !== undefined ? ownDt : vs.tokenEvidence.get(`${prefix}${j}`)?.dtMs))
}

/**
 * Records one energy_update payload (1.0 or 1.1) at page time `now`.
 * @param {ViewState} vs
 * @param {unknown} payload
 * @param {number} now
 */
export function ingestEnergy(vs, payload, now) {
  vs.frames++
  /** @type {Untrusted<EnergyPayload>} */
  const p = untrusted(payload)
  const e = numOr(p.totalEnergy, NaN)
  const before = vs.e
  vs.e = e
  if (Math.abs((Number.isFinite(before) ? before : -1) - (Number.isFinite(e) ? e : -1)) > 1e-4) vs.version++
  if (p.evidence === null || typeof p.evidence !== 'object') {
    // a 1.0-shaped frame: the single model's ribbon, at rest (no tokens/s on the wire)
    if (!vs.models.length) syncModels(vs, [], e)
    return
  }
  /** @type {Untrusted<EnergyEvidence>} */
  const ev = untrusted(p.evidence)
  vs.hasEvidence = true
  const state = sessionState(ev.state)
  /** @type {Untrusted<EvidenceToken>[]} */
  const tokens = untrustedList(ev.tokens)
  // The drawn answer's strikes stay until another answer starts (CHARGING, or
  // its first tokens listed): not on the "" of an idle server, nor when the
  // frames go back to an earlier answer's session after a replay.
  const frameSid = typeof ev.sessionId === 'string' && ev.sessionId ? ev.sessionId : null
  if (frameSid !== null && frameSid !== vs.sessionId && (vs.sessionId === null || state === 'CHARGING' || tokens.length)) {
    startAnswer(vs, frameSid)
  }
  const sid = vs.sessionId
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
  vs.ensembleEnergy = numOrNull(ev.ensembleEnergy)

  /** @type {Untrusted<EvidenceModel>[]} */
  const members = untrustedList(ev.models)
  vs.council = members.length >= 2
  if (vs.council) {
    const primary = String(members[0]?.modelId ?? '')
    if (primary !== vs.primaryModel) {
      // a council's first frame names the primary: strikes of another member's token_stream go
      vs.strikes = vs.strikes.filter((s) => s.model === '' || s.model === primary)
      vs.primaryModel = primary
    }
  }
  const primary = vs.primaryModel
  if (tokens.length && sid !== null && frameSid === sid) {
    for (const t of tokens) {
      const index = numOr(t.index, NaN)
      if (!Number.isInteger(index) || index < 0) continue
      const dtMs = numOrNull(t.dtMs)
      const certainty = numOrNull(t.certainty)
      const energy = numOr(t.energy, e)
      remember(vs, `${sid}::${index}`, { dtMs, tps: null, certainty, energy, source: 'frame' })
      const tokenTps = tpsOf(vs, `${sid}::`, index) ?? tpsOf(vs, `${sid}:${primary}:`, index, dtMs) ?? tps
      /** @type {TokenEvidence} */
      const evidence = { dtMs, tps: tokenTps, certainty, energy, source: 'frame' }
      remember(vs, `${sid}:${primary}:${index}`, evidence)
      remember(vs, `${sid}::${index}`, evidence)
      strike(vs, sid, '', index, evidence, now)
    }
  }
  syncModels(vs, vs.council ? members : [], e)
}

/**
 * Draws token `index` of the drawn answer once, whichever message lists it
 * first: an energy frame (lossy: a slow reader's frames are coalesced) or
 * the primary's token_stream (reliable, resumed). A later listing only fills
 * in what the first lacked (E comes with frames only).
 * @param {ViewState} vs
 * @param {string} sid
 * @param {string} model
 * @param {number} index
 * @param {TokenEvidence} ev
 * @param {number} now
 */
function strike(vs, sid, model, index, ev, now) {
  const key = `${sid}:${index}`
  const known = vs.strikes.find((s) => s.key === key)
  if (known) {
    if (known.energy === null && ev.energy !== null) known.energy = ev.energy
    if (known.certainty === null && ev.certainty !== null) known.certainty = ev.certainty
    if (ev.source === 'frame') known.model = ''
    vs.version++
    return
  }
  vs.strikes.push({
    key, sessionId: sid, model, index, dtMs: ev.dtMs, tps: ev.tps, certainty: ev.certainty, energy: ev.energy,
    width: strikeWidth(ev.dtMs), at: now,
  })
  if (vs.strikes.length > MAX_STRIKES) vs.strikes.splice(0, vs.strikes.length - MAX_STRIKES)
  vs.version++
}

/**
 * Starts a new lightning for answer `sid` (its first strike comes next).
 * @param {ViewState} vs
 * @param {string} sid
 */
function startAnswer(vs, sid) {
  vs.sessionId = sid
  vs.strikes = []
  vs.resonance = null
  vs.interference = null
  vs.version++
}

/**
 * The flows: one per council member, or the single model's.
 * @param {ViewState} vs
 * @param {Untrusted<EvidenceModel>[]} members [] outside a council
 * @param {number} e
 */
function syncModels(vs, members, e) {
  /** @type {Omit<ModelFlow, 'phase'>[]} */
  const next = members.length >= 2
    ? members.slice(0, 8).map((m) => ({
      modelId: String(m.modelId ?? '?'),
      energy: numOr(m.energy, 0),
      state: sessionState(m.state),
      tps: numOr(m.tps, 0),
      certainty: numOrNull(m.certainty),
      dtMs: numOrNull(m.dtMs),
      tokens: numOr(m.tokens, 0),
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
 * the certainty of its top-K), for the answer and Evidence Mode, and a
 * strike per token of the primary model.
 * @param {ViewState} vs
 * @param {unknown} payload
 * @param {number} now page time (ms)
 */
export function ingestTokens(vs, payload, now) {
  /** @type {Untrusted<TokenStreamPayload>} */
  const p = untrusted(payload)
  const sid = typeof p.sessionId === 'string' ? p.sessionId : ''
  const model = String(p.modelId ?? '')
  if (!vs.primaryModel && model) vs.primaryModel = model
  const first = numOr(p.firstIndex, NaN)
  if (!Number.isInteger(first)) return
  /** @type {Untrusted<TokenStreamEvidence>[]} */
  const evidence = untrustedList(p.tokenEvidence)
  // the primary's tokens strike too: a new answer's first tokens start a new lightning
  const strikes = model === vs.primaryModel && sid !== '' && evidence.length > 0
  if (strikes && sid !== vs.sessionId) startAnswer(vs, sid)
  evidence.forEach((te, i) => {
    const index = first + i
    const key = `${sid}:${model}:${index}`
    let ev = vs.tokenEvidence.get(key)
    if (!ev || ev.source !== 'frame') {
      const topK = Array.isArray(te.topK) ? te.topK : null
      const dtMs = numOrNull(te.dtMs)
      ev = { dtMs, tps: null, certainty: certaintyOfTopK(topK), energy: null, source: 'token_stream' }
      remember(vs, key, ev)
      ev.tps = tpsOf(vs, `${sid}:${model}:`, index)
    }
    if (strikes) strike(vs, sid, model, index, ev, now)
  })
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
 * @param {unknown} payload
 * @param {number} now
 */
export function ingestInterference(vs, payload, now) {
  /** @type {Untrusted<InterferencePayload>} */
  const p = untrusted(payload)
  /** @type {Untrusted<NonNullable<InterferencePayload['evidence']>>} */
  const ev = untrusted(p.evidence)
  const di = numOr(ev.disagreement, numOr(p.intensity, NaN))
  if (!Number.isFinite(di)) return
  vs.interference = {
    di,
    method: typeof ev.method === 'string' ? ev.method : 'intensity',
    window: numOr(ev.window, 0),
    models: Array.isArray(p.models) ? p.models.map(String) : [],
    at: now,
  }
  vs.version++
}

/**
 * Records a resonance_event payload: the celebration starts now.
 * @param {ViewState} vs
 * @param {unknown} payload
 * @param {number} now
 */
export function ingestResonance(vs, payload, now) {
  /** @type {Untrusted<ResonancePayload>} */
  const p = untrusted(payload)
  /** @type {Untrusted<NonNullable<ResonancePayload['evidence']>>} */
  const ev = untrusted(p.evidence)
  vs.resonance = {
    at: now,
    type: typeof p.resonanceType === 'string' ? p.resonanceType : 'resonance',
    disagreement: numOrNull(ev.disagreement),
    tpsRatio: numOrNull(ev.tpsRatio),
    participants: Array.isArray(p.participants) ? p.participants.map(String) : [],
  }
  vs.version++
}
