// @ts-check
/**
 * The retry {@link Timer} (in the style of Phoenix's `timer.js`) and the
 * injectable timer functions ({@link TimerFns}) the client schedules with, so
 * that tests can run on a virtual clock.
 *
 * @example
 * import { Timer } from './timer.js'
 * import { Backoff } from './backoff.js'
 *
 * const backoff = new Backoff()
 * const timer = new Timer(() => reconnect(), (tries) => backoff.delay(tries))
 * timer.scheduleTimeout()
 *
 * @module wirthforge/timer
 */

/**
 * The timer functions the client uses; injectable for tests.
 *
 * @typedef {object} TimerFns
 * @property {(fn: () => void, ms: number) => any} setTimeout
 * @property {(id: any) => void} clearTimeout
 * @property {(fn: () => void, ms: number) => any} setInterval
 * @property {(id: any) => void} clearInterval
 */

/** @type {TimerFns} */
export const defaultTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
  clearInterval: (id) => globalThis.clearInterval(id),
}

/**
 * A retry timer in the style of Phoenix's `Timer`: `scheduleTimeout()` runs
 * `callback` after `timerCalc(tries)` ms and counts the try; `reset()`
 * cancels and starts counting from zero again.
 *
 * @example
 * const backoff = new Backoff()
 * const timer = new Timer(() => reconnect(), (tries) => backoff.delay(tries))
 * timer.scheduleTimeout() // first retry within 100 ms
 * timer.scheduleTimeout() // (after the first fired) within 200 ms
 * timer.reset()           // connected: next loss starts again at 100 ms
 */
export class Timer {
  /**
   * @param {() => void} callback
   * @param {(tries: number) => number} timerCalc delay in ms for the given number of previous tries
   * @param {TimerFns} [timers]
   */
  constructor(callback, timerCalc, timers = defaultTimers) {
    this.callback = callback
    this.timerCalc = timerCalc
    this.timers = timers
    /** @type {any} */
    this.timer = null
    this.tries = 0
  }

  /** Cancels a pending run and forgets the tries. */
  reset() {
    this.tries = 0
    this.cancel()
  }

  /** Cancels a pending run; keeps the tries. */
  cancel() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer)
    this.timer = null
  }

  /** @returns {boolean} whether a run is pending */
  get pending() {
    return this.timer !== null
  }

  /**
   * Schedules the callback (replacing a pending run).
   * @returns {number} the delay chosen, in ms
   */
  scheduleTimeout() {
    this.cancel()
    const delay = this.timerCalc(this.tries)
    this.timer = this.timers.setTimeout(() => {
      this.timer = null
      this.tries += 1
      this.callback()
    }, delay)
    return delay
  }
}
