// @ts-check
/**
 * The client's clock: sub-millisecond Unix epoch time, to measure latency
 * against the fractional `timestamp` the server puts on 1.1 messages.
 *
 * @module wirthforge/clock
 */

/**
 * Unix epoch time in milliseconds with a sub-millisecond fraction, to compare
 * with the fractional `timestamp` of 1.1 messages.
 *
 * It reads `performance.timeOrigin + performance.now()` and checks it against
 * `Date.now()` (whole ms of the wall clock the server also uses). If the two
 * disagree by more than `toleranceMs` (the wall clock was stepped, or the
 * monotonic clock stood still while the machine slept) it re-anchors the
 * monotonic clock on the wall clock, keeping the sub-ms resolution.
 *
 * @example
 * const clock = new PrecisionClock()
 * const latencyMs = clock.now() - message.timestamp
 */
export class PrecisionClock {
  /**
   * @param {object} [opts]
   * @param {{now(): number, timeOrigin?: number}} [opts.performance]
   * @param {() => number} [opts.dateNow]
   * @param {number} [opts.toleranceMs] default 2
   */
  constructor({ performance = globalThis.performance, dateNow = Date.now, toleranceMs = 2 } = {}) {
    this.performance = performance
    this.dateNow = dateNow
    this.toleranceMs = toleranceMs
    /** offset added to performance.now() */
    this.origin = performance && typeof performance.timeOrigin === 'number' ? performance.timeOrigin : NaN
    this.now = this.now.bind(this)
  }

  /** @returns {number} epoch ms with fraction */
  now() {
    const wall = this.dateNow()
    if (!this.performance || !Number.isFinite(this.origin)) return wall
    const mono = this.performance.now()
    const t = this.origin + mono
    // Date.now() is floor(true time); the true time is in [wall, wall + 1).
    if (t < wall - this.toleranceMs || t > wall + 1 + this.toleranceMs) {
      this.origin = wall + 0.5 - mono
      return wall + 0.5
    }
    return t
  }
}
