// @ts-check
/**
 * The throttled spoken summary of the energy view for an ARIA live region
 * ("energy 62 %, active, flowing, 14 tokens per second"): at most one
 * announcement per interval (3 s), and only when the summary changed in a
 * way worth saying (state, badge, energy by 10 points, tokens/s by 3).
 * Pure: the caller passes the clock and writes the text.
 *
 * @example
 * import { Announcer, summarize } from './announcer.js'
 * const a = new Announcer({ write: (text) => { region.textContent = text } })
 * a.offer(summarize(viewState), performance.now())   // call often; it speaks rarely
 *
 * @module page/announcer
 */

import { energyState, sessionStateWords } from './mappings.js'

/** @typedef {import('./view-state.js').ViewState} ViewState */

/** Minimum time between two announcements. */
export const ANNOUNCE_INTERVAL_MS = 3000

/**
 * @typedef {object} Summary
 * @property {string} text what is said
 * @property {string} key what must change for it to be said again
 */

/**
 * The summary of a view state.
 * @param {Pick<ViewState, 'e' | 'state' | 'tps' | 'stall' | 'burst' | 'council'> & {interference?: ViewState['interference']}} vs
 * @returns {Summary}
 */
export function summarize(vs) {
  const pct = Number.isFinite(vs.e) ? Math.round(vs.e * 100) : 0
  const tps = Math.round(vs.tps)
  const parts = [`energy ${pct} %`, energyState(vs.e).toLowerCase(), sessionStateWords(vs.state)]
  parts.push(`${tps} token${tps === 1 ? '' : 's'} per second`)
  if (vs.stall) parts.push('stall')
  if (vs.burst) parts.push('burst')
  if (vs.council && vs.interference) parts.push(`council disagreement ${Math.round(vs.interference.di * 100)} %`)
  const key = [Math.round(pct / 10), energyState(vs.e), vs.state, Math.round(tps / 3), vs.stall, vs.burst, vs.council].join('|')
  return { text: parts.join(', '), key }
}

export class Announcer {
  /**
   * @param {{write: (text: string) => void, intervalMs?: number}} opts
   */
  constructor(opts) {
    this.write = opts.write
    this.intervalMs = opts.intervalMs ?? ANNOUNCE_INTERVAL_MS
    this.lastAt = -Infinity
    this.lastKey = ''
    this.count = 0
    /** @type {string} */
    this.lastText = ''
  }

  /**
   * Offers the current summary; says it when it changed and the interval passed.
   * @param {Summary} s
   * @param {number} now
   * @returns {boolean} whether it was said
   */
  offer(s, now) {
    if (s.key === this.lastKey || now - this.lastAt < this.intervalMs) return false
    this.lastKey = s.key
    this.lastAt = now
    this.lastText = s.text
    this.count++
    this.write(s.text)
    return true
  }
}
