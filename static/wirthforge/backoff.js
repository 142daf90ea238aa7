// @ts-check
/**
 * Reconnect delays: exponential backoff with full jitter. Pure arithmetic
 * (no timers), so it is easy to test with a seeded random source; the
 * `Timer` in `timer.js` does the waiting.
 *
 * @module wirthforge/backoff
 */

import { RECONNECT_BASE_MS, RECONNECT_CAP_MS } from './rules.js'

/**
 * Exponential backoff with full jitter: the delay before retry number
 * `tries` (0 for the first retry) is uniformly random in
 * `[0, min(capMs, baseMs * 2^tries)]`.
 *
 * Defaults (PROTOCOL.md §10.2): base 100 ms, cap 1000 ms. The cap bounds the time between two
 * attempts by 1 s, so a page is connected again at most ~1 s (plus one
 * handshake) after its server comes back, well inside 2 s; while the server
 * is down a page averages one attempt per 0.5 s, which is no load at all.
 * Full jitter spreads the reconnects of many tabs after a restart.
 *
 * @example
 * const backoff = new Backoff({ baseMs: 100, capMs: 1000 })
 * backoff.delay(0)  // in [0, 100]
 * backoff.delay(3)  // in [0, 800]
 * backoff.delay(9)  // in [0, 1000]
 */
export class Backoff {
  /**
   * @param {object} [opts]
   * @param {number} [opts.baseMs] first ceiling (default 100)
   * @param {number} [opts.capMs] largest ceiling (default 1000)
   * @param {() => number} [opts.random] uniform source in [0, 1) (default Math.random)
   */
  constructor({ baseMs = RECONNECT_BASE_MS, capMs = RECONNECT_CAP_MS, random = Math.random } = {}) {
    this.baseMs = baseMs
    this.capMs = capMs
    this.random = random
  }

  /**
   * Upper bound of the delay for retry number `tries`.
   * @param {number} tries
   * @returns {number}
   */
  ceiling(tries) {
    // 2 ** tries overflows to Infinity for huge tries; min() takes care of it.
    return Math.min(this.capMs, this.baseMs * 2 ** Math.max(0, tries))
  }

  /**
   * A random delay for retry number `tries`.
   * @param {number} tries
   * @returns {number} milliseconds
   */
  delay(tries) {
    const r = Math.min(Math.max(this.random(), 0), 1)
    return r * this.ceiling(tries)
  }
}
