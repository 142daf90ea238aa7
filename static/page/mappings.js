// @ts-check
/**
 * Pure mappings from the wire's energy evidence to what the energy view
 * draws: no DOM, no clock of their own (times are passed in), so that Node
 * tests can check them. Values follow the upstream visual grammar
 * (strike 2-8 px thicker for a slower token, ribbon 4-12 px wider for more
 * tokens/s, energy states Dormant/Awakening/Active/Resonance at 20/50/80 %,
 * strike and fade durations inside the upstream timing ranges).
 *
 * @example
 * import { energyState, strikeWidth, ribbonWidth } from './mappings.js'
 * energyState(0.62)   // 'Active'
 * strikeWidth(1000)   // 8 (a token after a 1 s stall)
 * strikeWidth(50)     // about 3.3 (a token at 20 tokens/s)
 * ribbonWidth(12)     // 7.2
 *
 * @module page/mappings
 */

/** @typedef {'Dormant' | 'Awakening' | 'Active' | 'Resonance'} EnergyStateName */
/** @typedef {'IDLE' | 'CHARGING' | 'FLOWING' | 'STALLING' | 'SATURATED' | 'DRAINED'} SessionState */
/** @typedef {'high' | 'mid' | 'low' | 'na'} CertaintyLevel */

/** The energy states of the view, from E in [0, 1] (lower bound inclusive). */
export const ENERGY_STATES = Object.freeze([
  { name: /** @type {EnergyStateName} */ ('Dormant'), from: 0 },
  { name: /** @type {EnergyStateName} */ ('Awakening'), from: 0.2 },
  { name: /** @type {EnergyStateName} */ ('Active'), from: 0.5 },
  { name: /** @type {EnergyStateName} */ ('Resonance'), from: 0.8 },
])

/** The session states a frame's `evidence.state` may carry. */
export const SESSION_STATES = Object.freeze(['IDLE', 'CHARGING', 'FLOWING', 'STALLING', 'SATURATED', 'DRAINED'])

/**
 * Timings of the animated forms, in ms, inside the upstream ranges
 * (lightning strike 0.1-0.5 s, fade 0.2-1.0 s; particle lifetime 1-5 s;
 * resonance build-up 1-3 s, sustain 2-10 s, decay 0.5-2 s; interference
 * ripple 0.05-0.5 s per wave, here one 1 s ripple).
 */
export const TIMING = Object.freeze({
  strikeMs: 200,
  fadeMs: 800,
  particleLifeMs: 1000,
  rippleMs: 1000,
  resonanceBuildMs: 1500,
  resonanceSustainMs: 3000,
  resonanceDecayMs: 1000,
})

/**
 * The energy state named for E (0-20 % Dormant, 20-50 % Awakening,
 * 50-80 % Active, 80-100 % Resonance); Dormant for a missing E.
 * @param {number} e
 * @returns {EnergyStateName}
 */
export function energyState(e) {
  if (!Number.isFinite(e)) return 'Dormant'
  let name = ENERGY_STATES[0].name
  for (const s of ENERGY_STATES) if (e >= s.from) name = s.name
  return name
}

/**
 * The session state of a frame, normalised (an unknown value is IDLE).
 * @param {unknown} state
 * @returns {SessionState}
 */
export function sessionState(state) {
  return typeof state === 'string' && SESSION_STATES.includes(state) ? /** @type {SessionState} */ (state) : 'IDLE'
}

/**
 * Words for a session state, as the live region says them.
 * @param {SessionState} state
 */
export function sessionStateWords(state) {
  return state === 'IDLE' ? 'idle' : state.toLowerCase()
}

/**
 * @param {number} v
 * @param {number} lo
 * @param {number} hi
 */
export function clamp(v, lo, hi) {
  return v < lo ? lo : v > hi ? hi : v
}

const STRIKE_MIN_PX = 2
const STRIKE_MAX_PX = 8
const STRIKE_FAST_MS = 25 // 40 tokens/s and faster: the thinnest strike
const STRIKE_SLOW_MS = 1000 // a 1 s pause and slower: the thickest

/**
 * Strike thickness for a token's Δt (ms): 2 px at 25 ms and faster, 8 px at
 * 1 s and slower, logarithmic in between (Δt spans decades). A missing Δt
 * draws the thinnest strike.
 * @param {number | null | undefined} dtMs
 */
export function strikeWidth(dtMs) {
  if (typeof dtMs !== 'number' || !Number.isFinite(dtMs) || dtMs <= 0) return STRIKE_MIN_PX
  const k = clamp(Math.log(dtMs / STRIKE_FAST_MS) / Math.log(STRIKE_SLOW_MS / STRIKE_FAST_MS), 0, 1)
  return STRIKE_MIN_PX + k * (STRIKE_MAX_PX - STRIKE_MIN_PX)
}

/**
 * Strike opacity `ageMs` after its token arrived: full during the strike,
 * then a linear fade; 0 once faded. Negative ages (clock skew) count as 0.
 * @param {number} ageMs
 * @param {{strikeMs: number, fadeMs: number}} [timing]
 */
export function strikeAlpha(ageMs, timing = TIMING) {
  const a = Math.max(0, ageMs)
  if (a <= timing.strikeMs) return 1
  return clamp(1 - (a - timing.strikeMs) / timing.fadeMs, 0, 1)
}

/**
 * The pulse of a strike (0..1, 1 at emission): a single decaying pulse per
 * token, so that the strikes pulse with the real emission and nothing else.
 * @param {number} ageMs
 * @param {{strikeMs: number}} [timing]
 */
export function strikePulse(ageMs, timing = TIMING) {
  const a = Math.max(0, ageMs)
  return a >= timing.strikeMs ? 0 : 1 - a / timing.strikeMs
}

const TPS_FULL = 30

/**
 * Ribbon width for tokens/s: 4 px at rest, 12 px at 30 tokens/s and more.
 * @param {number | null | undefined} tps
 */
export function ribbonWidth(tps) {
  const t = typeof tps === 'number' && Number.isFinite(tps) ? tps : 0
  return 4 + 8 * clamp(t / TPS_FULL, 0, 1)
}

/**
 * Ribbon flow speed in px/s for tokens/s: proportional (6 px per token/s),
 * 0 when no token flows, so that a still model gives a still ribbon.
 * @param {number | null | undefined} tps
 */
export function ribbonSpeed(tps) {
  const t = typeof tps === 'number' && Number.isFinite(tps) ? tps : 0
  return 6 * clamp(t, 0, 200)
}

/**
 * Particles spawned with one token for its certainty: denser for a more
 * concentrated top-K; none without a certainty ("n/a": nothing is invented).
 * @param {number | null | undefined} certainty
 * @param {number} maxPerToken the quality level's budget
 */
export function particleCount(certainty, maxPerToken) {
  if (typeof certainty !== 'number' || !Number.isFinite(certainty)) return 0
  return Math.round(clamp(certainty, 0, 1) * maxPerToken)
}

/** Opacity of the field's tint at E = 0 and at E = 1: at most 0.15, so that every label and form on it keeps its contrast. */
export const FIELD_ALPHA = Object.freeze({ min: 0.02, max: 0.15 })

/**
 * Field brightness (the opacity of its golden tint) for E, in steps of 1/8
 * (rounded down), so that the decay of E after an answer ends in a still
 * canvas (E below 0.125 is the resting field) rather than a crawl the eye
 * cannot read anyway; 0 without an E.
 * @param {number} e
 */
export function fieldBrightness(e) {
  if (!Number.isFinite(e)) return 0
  const step = Math.floor(clamp(e, 0, 1) * 8) / 8
  return FIELD_ALPHA.min + (FIELD_ALPHA.max - FIELD_ALPHA.min) * step
}

/**
 * Interference overlay opacity for the disagreement index DI in [0, 1]:
 * brighter for more disagreement; 0 without a reading.
 * @param {number | null | undefined} di
 */
export function interferenceAlpha(di) {
  if (typeof di !== 'number' || !Number.isFinite(di)) return 0
  return 0.12 + 0.68 * clamp(di, 0, 1)
}

/**
 * Whether a disagreement reads as constructive (members agree) or
 * destructive; drawn as circles and squares respectively, not by colour alone.
 * @param {number} di
 * @returns {'constructive' | 'destructive'}
 */
export function interferenceKind(di) {
  return di < 0.5 ? 'constructive' : 'destructive'
}

/**
 * Certainty from raw top-K probabilities, as the wire defines it:
 * 1 - H(normalised top-K) / ln K, rounded to 4 decimals; null for no top-K or
 * K < 2 (as the server's meter).
 * @param {readonly number[] | null | undefined} topK
 * @returns {number | null}
 */
export function certaintyOfTopK(topK) {
  if (!Array.isArray(topK) || topK.length < 2) return null
  const ps = topK.filter((p) => typeof p === 'number' && p > 0)
  const sum = ps.reduce((a, b) => a + b, 0)
  if (!(sum > 0)) return null
  let h = 0
  for (const p of ps) {
    const q = p / sum
    h -= q * Math.log(q)
  }
  // 4 decimals, as the wire carries the server's certainty, so both sources of a token agree
  return Math.round(clamp(1 - h / Math.log(topK.length), 0, 1) * 1e4) / 1e4
}

/**
 * The certainty band of a token (its tint and its underline style: solid,
 * dashed, dotted, or a hollow box for "n/a").
 * @param {number | null | undefined} certainty
 * @returns {CertaintyLevel}
 */
export function certaintyLevel(certainty) {
  if (typeof certainty !== 'number' || !Number.isFinite(certainty)) return 'na'
  if (certainty >= 0.66) return 'high'
  if (certainty >= 0.33) return 'mid'
  return 'low'
}

/**
 * Resonance celebration phase `ageMs` after a resonance_event: build-up,
 * sustain, decay, then done; `level` 0..1 is the celebration's strength.
 * @param {number} ageMs
 * @param {typeof TIMING} [timing]
 * @returns {{phase: 'buildup' | 'sustain' | 'decay' | 'done', level: number}}
 */
export function resonancePhase(ageMs, timing = TIMING) {
  const a = Math.max(0, ageMs)
  const b = timing.resonanceBuildMs
  const s = timing.resonanceSustainMs
  const d = timing.resonanceDecayMs
  if (a < b) return { phase: 'buildup', level: a / b }
  if (a < b + s) return { phase: 'sustain', level: 1 }
  if (a < b + s + d) return { phase: 'decay', level: 1 - (a - b - s) / d }
  return { phase: 'done', level: 0 }
}

/**
 * The design-token colour of a council member by its position, with its
 * shape (triangle, circle, square, diamond, then again), so that members
 * are told apart without colour.
 * @param {number} i
 * @returns {{color: string, shape: 'triangle' | 'circle' | 'square' | 'diamond'}}
 */
export function memberStyle(i) {
  const colors = ['#3b82f6', '#8b5cf6', '#10b981', '#f59e0b', '#ef4444']
  const shapes = /** @type {const} */ (['triangle', 'circle', 'square', 'diamond'])
  return { color: colors[i % colors.length], shape: shapes[i % shapes.length] }
}

/**
 * A number with `digits` decimals, or "n/a".
 * @param {number | null | undefined} v
 * @param {number} digits
 */
export function orNa(v, digits) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : 'n/a'
}

/**
 * A deterministic pseudo-random sequence for one token (mulberry32), so a
 * strike's shape is a function of its index and never jitters per frame.
 * @param {number} seed
 * @returns {() => number} values in [0, 1)
 */
export function seeded(seed) {
  let a = (seed * 2654435761) >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}


/**
 * Colours of the view (design tokens of the upstream visual grammar): each
 * keeps WCAG AA contrast on the field at its brightest (text 4.5:1, forms 3:1).
 */
export const VIEW_COLORS = Object.freeze({
  background: '#0b111b',
  lightning: '#fbbf24',
  lightningGlow: 'rgba(254, 243, 199, 0.28)',
  stream: '#60a5fa',
  constructive: '#c084fc',
  destructive: '#ef4444',
  resonance: Object.freeze(['#a855f7', '#06b6d4', '#10b981', '#f59e0b', '#ef4444']),
  label: '#cbd5e1',
  muted: '#94a3b8',
  bar: '#f59e0b',
  focus: '#fbbf24',
})

/**
 * @param {string} hex `#rrggbb`
 * @returns {[number, number, number]}
 */
function rgbOf(hex) {
  const m = /^#([0-9a-f]{6})$/i.exec(hex)
  if (!m) throw new Error(`not a #rrggbb colour: ${hex}`)
  const n = parseInt(m[1] ?? '', 16)
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255]
}

/**
 * `fg` drawn with opacity `alpha` over `bg` (both `#rrggbb`).
 * @param {string} fg
 * @param {string} bg
 * @param {number} alpha
 */
export function blend(fg, bg, alpha) {
  const f = rgbOf(fg)
  const b = rgbOf(bg)
  return `#${f.map((c, i) => Math.round(alpha * c + (1 - alpha) * (b[i] ?? 0)).toString(16).padStart(2, '0')).join('')}`
}

/**
 * WCAG relative luminance of a `#rrggbb` colour.
 * @param {string} hex
 */
export function luminance(hex) {
  const [r, g, b] = rgbOf(hex).map((c) => {
    const v = c / 255
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4
  })
  return 0.2126 * (r ?? 0) + 0.7152 * (g ?? 0) + 0.0722 * (b ?? 0)
}

/**
 * WCAG contrast ratio of two `#rrggbb` colours (1 to 21).
 * @param {string} a
 * @param {string} b
 */
export function contrastRatio(a, b) {
  const la = luminance(a)
  const lb = luminance(b)
  return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05)
}

/** The tokens/s window of the server's meter (every profile's window_ms). */
export const TPS_WINDOW_MS = 1000

/**
 * Tokens/s at token `index` as the server's meter defines it: the tokens
 * whose time lies in (t(index) - window, t(index)], itself included, with
 * t the running sum of the tokens' Δt. `dtOf(j)` gives token j's Δt (the
 * first token's, the TTFT, is never needed); null when a Δt the window
 * needs is unknown.
 * @param {number} index
 * @param {(j: number) => number | null | undefined} dtOf
 * @param {number} [windowMs]
 * @returns {number | null}
 */
export function tpsAtToken(index, dtOf, windowMs = TPS_WINDOW_MS) {
  let sum = 0
  let n = 1
  for (let j = index; j > 0; j--) {
    const dt = dtOf(j)
    if (typeof dt !== 'number' || !Number.isFinite(dt)) return null
    sum += dt
    if (sum >= windowMs) return (n * 1000) / windowMs
    n++
  }
  return (n * 1000) / windowMs
}

/**
 * A model id shortened to at most `max` characters, keeping its start and
 * its end ("SmolLM2-…ct-critic"), so that ids sharing a long prefix stay
 * told apart.
 * @param {string} id
 * @param {number} max
 */
export function shortLabel(id, max) {
  if (id.length <= max) return id
  const tail = Math.ceil((max - 1) / 2)
  return `${id.slice(0, max - 1 - tail)}…${id.slice(-tail)}`
}
