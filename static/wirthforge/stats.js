// @ts-check
/**
 * Rolling statistics of the energy stream: latency median and P99, frame
 * rate, frame gaps and counters ({@link Stats}), built on a fixed-capacity
 * ring of (time, value) points ({@link TimeSeries}) and the nearest-rank
 * {@link percentile}. No I/O: the client feeds it, the page reads snapshots and the
 * 60 s series it plots.
 *
 * @example
 * import { Stats } from './stats.js'
 *
 * const stats = new Stats()
 * stats.recordLatency(now, msg.timestamp)
 * stats.tick(now)                      // sample the plot series
 * stats.snapshot(now).latencyMedian
 *
 * @module wirthforge/stats
 */

import { framesMissed, isFrameGap } from './rules.js'

/**
 * A fixed-capacity ring of (time, value) points, oldest first.
 *
 * @example
 * const s = new TimeSeries(3600)
 * s.push(performance.now(), 0.4)
 * s.prune(now - 60_000)
 * s.forEach((t, v) => plot(t, v))
 */
export class TimeSeries {
  /** @param {number} capacity */
  constructor(capacity) {
    this.capacity = Math.max(1, Math.floor(capacity))
    this.times = new Float64Array(this.capacity)
    this.values = new Float64Array(this.capacity)
    this.start = 0
    this.length = 0
  }

  /**
   * Appends a point; overwrites the oldest when full.
   * @param {number} t
   * @param {number} v
   */
  push(t, v) {
    let i
    if (this.length < this.capacity) {
      i = (this.start + this.length) % this.capacity
      this.length += 1
    } else {
      i = this.start
      this.start = (this.start + 1) % this.capacity
    }
    this.times[i] = t
    this.values[i] = v
  }

  /**
   * Drops the points at or before time `before` (windows are half-open: (before, now]).
   * @param {number} before
   */
  prune(before) {
    while (this.length > 0 && this.times[this.start] <= before) {
      this.start = (this.start + 1) % this.capacity
      this.length -= 1
    }
  }

  clear() {
    this.start = 0
    this.length = 0
  }

  /** @param {(t: number, v: number, i: number) => void} fn */
  forEach(fn) {
    for (let k = 0; k < this.length; k++) {
      const i = (this.start + k) % this.capacity
      fn(this.times[i], this.values[i], k)
    }
  }

  /** @returns {number[]} the values, oldest first */
  valuesArray() {
    /** @type {number[]} */
    const out = []
    this.forEach((_t, v) => out.push(v))
    return out
  }

  /** @returns {number|undefined} time of the newest point */
  lastTime() {
    return this.length ? this.times[(this.start + this.length - 1) % this.capacity] : undefined
  }

  /** @returns {number|undefined} value of the newest point */
  lastValue() {
    return this.length ? this.values[(this.start + this.length - 1) % this.capacity] : undefined
  }
}

/**
 * The nearest-rank percentile (PROTOCOL.md §10.6): the `max(1, ceil(p * n))`-th
 * smallest of the `n` values of an ascending array, `p` in 0..1. Always an
 * observed value, no interpolation; the median of 1, 2, 3, 4 is 2, and P99
 * of fewer than 100 values is the maximum. NaN for an empty array. The same
 * definition as the server's `/health` and the Python client
 * (`wirthforge_ws.stream.rolling.percentile`).
 *
 * @param {ArrayLike<number>} sorted
 * @param {number} p
 * @returns {number}
 */
export function percentile(sorted, p) {
  const n = sorted.length
  if (n === 0) return NaN
  const rank = Math.max(1, Math.ceil(Math.min(Math.max(p, 0), 1) * n))
  return sorted[rank - 1]
}

/** Another name of {@link percentile}, for importers that use it. */
export const quantile = percentile

/**
 * Counters kept by {@link Stats}; the client updates them.
 *
 * @typedef {object} Counters
 * @property {number} messages     messages processed (after dedupe)
 * @property {number} frames       energy_update messages
 * @property {number} fields       energy_field messages
 * @property {number} frameGaps    places where frameNumber jumped by more than the expected step
 * @property {number} framesMissed estimated frames lost in those gaps
 * @property {number} tokens       tokens received
 * @property {number} council      interference and resonance events
 * @property {number} rewards      reward events
 * @property {number} errors       error events
 * @property {number} heartbeats   heartbeats received (and answered)
 * @property {number} duplicates   messages dropped because their seq was already processed
 * @property {number} attempts     WebSocket connection attempts
 * @property {number} connects     successful sessions (startup_complete received)
 * @property {number} reconnects   successful sessions after the first one
 * @property {number} recovered    messages replayed by the server on resume
 * @property {number} resyncs      resumes reported incomplete
 */

/**
 * A snapshot of the statistics at one moment.
 *
 * @typedef {object} StatsSnapshot
 * @property {number} frameRate      energy_update messages received in the last second, per second
 * @property {number} latencyMedian  ms, over the latency window (NaN when empty)
 * @property {number} latencyP99     ms
 * @property {number} latencyLast    ms, the newest sample
 * @property {number} latencySamples number of samples in the window
 * @property {Counters} counters     a copy
 */

/**
 * Rolling statistics of the energy stream.
 *
 * - latency: `receivedAt - timestamp` per energy_update, nearest-rank median
 *   and P99 over the last `latencyWindowMs` (default 10 s). The client does
 *   not sample the first energy_update of a session: it may be the newest
 *   frame the server held, and its age is not transport latency
 *   (PROTOCOL.md §10.5-10.6);
 * - frame rate: energy_update messages received in the last `rateWindowMs`
 *   (1 s), as a rate;
 * - frame gaps: PROTOCOL.md §10.5 ({@link isFrameGap}, {@link framesMissed}
 *   in `rules.js`): with `e = frameRate / energyRate`, a step above
 *   `ceil(e)` is a gap that lost `max(1, floor(step / e + 0.5) - 1)` frames;
 * - `tick(now)` samples rate, median and P99 into 60 s series for plots; the
 *   latency series holds every sample.
 *
 * @example
 * const stats = new Stats()
 * stats.setExpectedStep(60, 60)
 * stats.recordFrame(now, 1041); stats.recordFrame(now + 16.7, 1043) // one gap
 * stats.recordLatency(now, msg.timestamp)
 * stats.snapshot(now).latencyP99
 */
export class Stats {
  /**
   * @param {object} [opts]
   * @param {number} [opts.latencyWindowMs] default 10000
   * @param {number} [opts.rateWindowMs] default 1000
   * @param {number} [opts.historyMs] length of the plot series, default 60000
   * @param {number} [opts.sampleEveryMs] tick sampling period, default 250
   * @param {number} [opts.maxRateHz] sizes the ring buffers, default 240
   */
  constructor({ latencyWindowMs = 10000, rateWindowMs = 1000, historyMs = 60000, sampleEveryMs = 250, maxRateHz = 240 } = {}) {
    this.latencyWindowMs = latencyWindowMs
    this.rateWindowMs = rateWindowMs
    this.historyMs = historyMs
    this.sampleEveryMs = sampleEveryMs
    const perSecond = Math.max(1, maxRateHz)
    this.latency = new TimeSeries(Math.ceil((perSecond * latencyWindowMs) / 1000) + 16)
    this.arrivals = new TimeSeries(Math.ceil((perSecond * rateWindowMs) / 1000) + 16)
    /** every latency sample of the last `historyMs` */
    this.latencyHistory = new TimeSeries(Math.ceil((perSecond * historyMs) / 1000) + 16)
    const samples = Math.ceil(historyMs / sampleEveryMs) + 8
    /** frame rate sampled by tick() */
    this.rateHistory = new TimeSeries(samples)
    /** latency median sampled by tick() */
    this.medianHistory = new TimeSeries(samples)
    /** latency P99 sampled by tick() */
    this.p99History = new TimeSeries(samples)
    this.expectedStep = 1
    /** @type {number|null} */
    this.lastFrameNumber = null
    this.lastTick = -Infinity
    /** @type {Counters} */
    this.counters = Stats.zeroCounters()
  }

  /** @returns {Counters} */
  static zeroCounters() {
    return {
      messages: 0, frames: 0, fields: 0, frameGaps: 0, framesMissed: 0, tokens: 0, council: 0, rewards: 0,
      errors: 0, heartbeats: 0, duplicates: 0, attempts: 0, connects: 0, reconnects: 0, recovered: 0, resyncs: 0,
    }
  }

  /**
   * Sets the expected frameNumber step from the server frame rate and the
   * energy rate this connection receives.
   * @param {number} frameRate
   * @param {number} energyRate
   */
  setExpectedStep(frameRate, energyRate) {
    const step = frameRate > 0 && energyRate > 0 ? frameRate / energyRate : 1
    this.expectedStep = Math.max(1, step)
  }

  /** Forgets the previous frameNumber (new connection, resumed stream). */
  resetFrames() {
    this.lastFrameNumber = null
  }

  /**
   * Records one energy_update.
   * @param {number} now receive time, epoch ms
   * @param {number} [frameNumber]
   * @returns {number} frames missed before this one (0 when none)
   */
  recordFrame(now, frameNumber) {
    this.counters.frames += 1
    this.arrivals.push(now, 1)
    let missed = 0
    if (typeof frameNumber === 'number' && Number.isFinite(frameNumber)) {
      const last = this.lastFrameNumber
      if (last !== null) {
        const jump = frameNumber - last
        if (jump > 0 && isFrameGap(jump, this.expectedStep)) {
          missed = framesMissed(jump, this.expectedStep)
          this.counters.frameGaps += 1
          this.counters.framesMissed += missed
        }
        // jump <= 0: a restarted or reordered stream; just take the new baseline.
      }
      this.lastFrameNumber = frameNumber
    }
    return missed
  }

  /**
   * Records a latency sample.
   * @param {number} now receive time, epoch ms
   * @param {number} [timestamp] the message's timestamp
   * @returns {number} the latency in ms, or NaN when the timestamp is missing
   */
  recordLatency(now, timestamp) {
    if (typeof timestamp !== 'number' || !Number.isFinite(timestamp)) return NaN
    const ms = now - timestamp
    this.latency.push(now, ms)
    this.latencyHistory.push(now, ms)
    return ms
  }

  /**
   * @param {number} now
   * @returns {number} frames per second over the rate window
   */
  frameRate(now) {
    this.arrivals.prune(now - this.rateWindowMs)
    return (this.arrivals.length * 1000) / this.rateWindowMs
  }

  /**
   * @param {number} now
   * @returns {number[]} latency samples of the window, ascending
   */
  sortedLatency(now) {
    this.latency.prune(now - this.latencyWindowMs)
    return this.latency.valuesArray().sort((a, b) => a - b)
  }

  /**
   * @param {number} now
   * @returns {number}
   */
  latencyMedian(now) {
    return percentile(this.sortedLatency(now), 0.5)
  }

  /**
   * @param {number} now
   * @returns {number}
   */
  latencyP99(now) {
    return percentile(this.sortedLatency(now), 0.99)
  }

  /**
   * @param {number} now
   * @returns {StatsSnapshot}
   */
  snapshot(now) {
    const sorted = this.sortedLatency(now)
    const last = this.latency.lastValue()
    return {
      frameRate: this.frameRate(now),
      latencyMedian: percentile(sorted, 0.5),
      latencyP99: percentile(sorted, 0.99),
      latencyLast: last === undefined ? NaN : last,
      latencySamples: sorted.length,
      counters: { ...this.counters },
    }
  }

  /**
   * Samples the plot series if `sampleEveryMs` passed since the last sample,
   * and prunes everything older than `historyMs`. Call it often (e.g. every
   * animation frame); it is cheap when there is nothing to do.
   * @param {number} now
   * @returns {boolean} whether a sample was taken
   */
  tick(now) {
    if (now - this.lastTick < this.sampleEveryMs) return false
    this.lastTick = now
    const s = this.snapshot(now)
    this.rateHistory.push(now, s.frameRate)
    if (s.latencySamples > 0) {
      this.medianHistory.push(now, s.latencyMedian)
      this.p99History.push(now, s.latencyP99)
    }
    const before = now - this.historyMs
    for (const series of [this.rateHistory, this.medianHistory, this.p99History, this.latencyHistory]) series.prune(before)
    return true
  }
}
