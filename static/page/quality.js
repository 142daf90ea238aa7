// @ts-check
/**
 * The energy view's adaptive quality: High (60 fps, all effects), Medium
 * (45 fps, fewer particles), Low (30 fps, simplified), Static (redrawn only
 * when the data changed, at most twice a second). The view reports each
 * animation frame's interval and its own drawing time; once per measurement
 * window (1 s) the controller steps down when the drawing time is over the
 * level's budget (a quarter of its frame period) or frames were missed, and
 * back up after a hold (3 s, doubled after an attempt that failed) when the
 * work predicted at the level above fits its budget with 20 % to spare
 * (hysteresis). A user can pin a level. Pure: the clock is passed in.
 *
 * @example
 * import { QualityController, levelForTier } from './quality.js'
 * const q = new QualityController({ level: levelForTier('Mid-Tier'), onChange: (lv) => console.log(lv) })
 * // each animation frame:
 * if (q.shouldDraw(intervalMs)) { const t0 = performance.now(); draw(); q.sample(now, intervalMs, performance.now() - t0) }
 * else q.sample(now, intervalMs, null)
 *
 * @module page/quality
 */

/** @typedef {'high' | 'medium' | 'low' | 'static'} QualityLevel */

/** @type {readonly QualityLevel[]} */
export const LEVELS = Object.freeze(['high', 'medium', 'low', 'static'])

/** Target frames per second of each level (Static draws on change, at most 2 per second). */
export const LEVEL_FPS = Object.freeze({ high: 60, medium: 45, low: 30, static: 2 })

/** Particles spawned per token at each level (certainty scales it down). */
export const LEVEL_PARTICLES = Object.freeze({ high: 10, medium: 5, low: 0, static: 0 })

/** Energy rate asked of the server at each level (null: the full frame rate). */
export const LEVEL_ENERGY_RATE = Object.freeze({ high: null, medium: null, low: 30, static: 10 })

/** Relative drawing cost of the levels: only used before a level was measured. */
const COST_GUESS = Object.freeze({ high: 1, medium: 0.7, low: 0.35, static: 0.2 })

const DISPLAY_FRAME_MS = 1000 / 60

/**
 * The starting level for a `startup_complete` tier (High-Tier and Mid-Tier
 * start High, Low-Tier starts Low); High for an unknown tier.
 * @param {unknown} tier
 * @returns {QualityLevel}
 */
export function levelForTier(tier) {
  return tier === 'Low-Tier' ? 'low' : 'high'
}

/**
 * @param {unknown} v
 * @returns {v is QualityLevel}
 */
export function isLevel(v) {
  return typeof v === 'string' && /** @type {readonly string[]} */ (LEVELS).includes(v)
}

/**
 * The drawing-time budget of a level, in ms per drawn frame.
 * @param {QualityLevel} level
 */
export function workBudgetMs(level) {
  return level === 'static' ? 50 : 250 / LEVEL_FPS[level]
}

/**
 * @typedef {object} QualityOptions
 * @property {QualityLevel} [level] starting level (default high)
 * @property {number} [windowMs] measurement window (default 1000)
 * @property {number} [holdUpMs] time within budget before stepping up (default 3000)
 * @property {number} [hysteresis] share of the upper budget kept spare to step up (default 0.2)
 * @property {(level: QualityLevel, prev: QualityLevel, why: string) => void} [onChange]
 */

export class QualityController {
  /** @param {QualityOptions} [opts] */
  constructor(opts = {}) {
    /** @type {QualityLevel} */
    this.auto = opts.level ?? 'high'
    /** @type {QualityLevel | null} */
    this.pinned = null
    this.windowMs = opts.windowMs ?? 1000
    this.baseHoldMs = opts.holdUpMs ?? 3000
    this.holdMs = this.baseHoldMs
    this.hysteresis = opts.hysteresis ?? 0.2
    this.onChange = opts.onChange ?? (() => {})
    /** @type {Partial<Record<QualityLevel, number>>} mean drawing time last measured at each level */
    this.measured = {}
    /** @type {Partial<Record<QualityLevel, {upper: number, here: number}>>} drawing times at a step down */
    this.pairs = {}
    this.captureBaseline = false
    this.windowStart = NaN
    this.frames = 0
    this.drawn = 0
    this.workSum = 0
    this.missed = 0
    this.goodSince = NaN
    this.lastUpAt = -Infinity
    this.reset(NaN)
    /** why the last change happened */
    this.reason = 'start'
    this.acc = 0
    /** @type {{t: number, level: QualityLevel, work: number}[]} the last changes, newest last */
    this.history = []
  }

  /** @returns {QualityLevel} the level in force */
  get level() {
    return this.pinned ?? this.auto
  }

  /** @param {number} now */
  reset(now) {
    this.windowStart = now
    this.frames = 0
    this.drawn = 0
    this.workSum = 0
    this.missed = 0
    this.goodSince = now
  }

  /**
   * Pins a level (the controller stops adapting), or unpins with null.
   * @param {QualityLevel | null} level
   */
  pin(level) {
    const prev = this.level
    this.pinned = level !== null && isLevel(level) ? level : null
    if (this.level !== prev) this.onChange(this.level, prev, this.pinned ? 'pinned' : 'unpinned')
  }

  /**
   * Whether this animation frame should draw at the level's frame rate
   * (Static: the caller also draws only when something changed).
   * @param {number} intervalMs time since the previous animation frame
   */
  shouldDraw(intervalMs) {
    const period = 1000 / LEVEL_FPS[this.level]
    this.acc = Math.min(this.acc + Math.max(0, intervalMs), period * 2)
    if (this.acc + 1 >= period) {
      this.acc = Math.max(0, this.acc - period)
      return true
    }
    return false
  }

  /**
   * Records one animation frame: its interval and, when it drew, the drawing
   * time. Decides at the end of each window.
   * @param {number} now
   * @param {number} intervalMs
   * @param {number | null} workMs null when the frame did not draw
   */
  sample(now, intervalMs, workMs) {
    if (!Number.isFinite(this.windowStart)) this.reset(now)
    this.frames++
    if (intervalMs > DISPLAY_FRAME_MS * 1.6) this.missed++
    if (workMs !== null) {
      this.drawn++
      this.workSum += workMs
    }
    if (now - this.windowStart >= this.windowMs) this.decide(now)
  }

  /** @param {number} now */
  decide(now) {
    const level = this.auto
    const drawn = this.drawn
    const mean = drawn ? this.workSum / drawn : NaN
    const missRatio = this.frames ? this.missed / this.frames : 0
    this.windowStart = now
    this.frames = 0
    this.drawn = 0
    this.workSum = 0
    this.missed = 0
    if (this.pinned) return // the user's choice: no adapting
    if (!drawn) return // nothing drawn (a still view): no evidence either way
    this.measured[level] = mean
    // After a step down, the first window at the new level and the last one
    // above make a pair: a step up predicts the upper level's work from the
    // work here with their ratio (the same, whatever slowed or sped the machine).
    const up = LEVELS[LEVELS.indexOf(level) - 1]
    if (this.captureBaseline && up) {
      const w = this.measured[up]
      if (w !== undefined) this.pairs[level] = { upper: w, here: mean }
    }
    this.captureBaseline = false
    const i = LEVELS.indexOf(level)
    const over = mean > workBudgetMs(level) || (missRatio > 0.25 && level !== 'static')
    if (over) {
      this.goodSince = now
      if (i < LEVELS.length - 1) {
        if (now - this.lastUpAt < this.windowMs * 2.5) this.holdMs = Math.min(this.holdMs * 2, 30_000)
        this.change(LEVELS[i + 1], now, `drawing ${mean.toFixed(1)} ms/frame, ${Math.round(missRatio * 100)} % missed`)
      }
      return
    }
    if (i === 0) {
      if (now - this.lastUpAt > 10_000) this.holdMs = this.baseHoldMs
      return
    }
    const upper = LEVELS[i - 1]
    const pair = this.pairs[level]
    const ratio = pair && pair.here > 0 ? pair.upper / pair.here : COST_GUESS[upper] / COST_GUESS[level]
    const predicted = mean * Math.max(1, ratio)
    const fits = predicted <= workBudgetMs(upper) * (1 - this.hysteresis) && missRatio < 0.1
    if (!fits) {
      this.goodSince = now
      return
    }
    if (now - this.goodSince >= this.holdMs) {
      this.lastUpAt = now
      this.change(upper, now, `drawing ${mean.toFixed(1)} ms/frame, ${predicted.toFixed(1)} ms predicted above`)
    }
  }

  /**
   * @param {QualityLevel} next
   * @param {number} now
   * @param {string} why
   */
  change(next, now, why) {
    const prev = this.level
    this.auto = next
    this.reason = why
    this.goodSince = now
    this.captureBaseline = LEVELS.indexOf(next) > LEVELS.indexOf(prev)
    this.history.push({ t: now, level: next, work: this.measured[prev] ?? NaN })
    if (this.history.length > 20) this.history.shift()
    if (this.level !== prev) this.onChange(this.level, prev, why)
  }
}
