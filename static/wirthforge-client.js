// @ts-check
/**
 * WIRTHFORGE real-time client: the browser side of protocol `wirthforge.1.1`
 * (docs/PROTOCOL.md). An ES module with no dependencies and no build step; the
 * JSDoc types are checked by `tsc --checkJs`.
 *
 * Four small pieces, usable on their own:
 *
 * - {@link Backoff} and {@link Timer}: exponential backoff with full jitter and
 *   the timer that uses it to retry;
 * - {@link PrecisionClock}: sub-millisecond Unix epoch time;
 * - {@link Stats}: rolling latency (median, P99), frame rate, frame gaps and
 *   counters, plus 60 s series for plotting;
 * - {@link WirthforgeClient}: the connection, with resume, dedupe, heartbeat,
 *   stall and dead-connection detection, visibility-driven pause and
 *   policy-close handling.
 *
 * @example
 * import { WirthforgeClient } from '/static/wirthforge-client.js'
 *
 * const client = new WirthforgeClient()            // ws(s)://<page host>/ws
 * client.onState((state, prev) => console.log(prev, '->', state))
 * client.onMessage('token_stream', (msg) => out.append(msg.payload.tokens.join('')))
 * client.connect()
 * // later: client.stats.snapshot(), client.send({type: 'set_energy_rate', payload: {rateHz: 30}})
 *
 * @module wirthforge-client
 */

/** The subprotocol this client speaks. */
export const PROTOCOL = 'wirthforge.1.1'

/**
 * Close codes after which the client must not reconnect on its own
 * (PROTOCOL.md §7): 1003 binary frame, 1008 policy (rate limit, invalid
 * messages), 1009 message too big.
 */
export const POLICY_CLOSE_CODES = Object.freeze([1003, 1008, 1009])

/** Close code the client uses when it abandons a dead or hung connection. */
export const CLIENT_TIMEOUT_CLOSE_CODE = 4000

/**
 * Connection states.
 *
 * - `disconnected`: not connected and not trying (initial state, after
 *   {@link WirthforgeClient#disconnect}, or after a normal 1000 close by the server);
 * - `connecting`: first attempt after `connect()`, until `startup_complete`;
 * - `connected`: `startup_complete` received, energy frames arriving (or not expected);
 * - `stalled`: connected, but no energy frame for `stallFrames` frame periods;
 * - `reconnecting`: the connection was lost; waiting for or making a retry;
 * - `refused`: the server closed with a policy code (1003/1008/1009); no retry.
 *
 * @typedef {'disconnected'|'connecting'|'connected'|'stalled'|'reconnecting'|'refused'} ConnectionState
 */

/** @type {readonly ConnectionState[]} */
export const STATES = Object.freeze(['disconnected', 'connecting', 'connected', 'stalled', 'reconnecting', 'refused'])

/**
 * One server message (the 1.1 envelope).
 *
 * @typedef {object} Envelope
 * @property {string} type
 * @property {string} [channel]
 * @property {number} [timestamp]   Unix epoch ms with sub-ms fraction (1.1)
 * @property {number} [seq]         stream position (1.1)
 * @property {number} [frameNumber] on frame-bound types
 * @property {Record<string, any>} [payload]
 */

/**
 * `resume` field of startup_complete.
 *
 * @typedef {object} ResumeStatus
 * @property {'none'|'complete'|'incomplete'} status
 * @property {number} [replayed]
 * @property {string} [reason]
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
const defaultTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
  clearInterval: (id) => globalThis.clearInterval(id),
}

// ---------------------------------------------------------------------------
// Backoff and timer
// ---------------------------------------------------------------------------

/**
 * Exponential backoff with full jitter: the delay before retry number
 * `tries` (0 for the first retry) is uniformly random in
 * `[0, min(capMs, baseMs * 2^tries)]`.
 *
 * Defaults: base 100 ms, cap 1000 ms. The cap bounds the time between two
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
  constructor({ baseMs = 100, capMs = 1000, random = Math.random } = {}) {
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

// ---------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

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
 * The p-quantile (0..1) of an ascending array, by linear interpolation
 * between closest ranks (numpy's default). NaN for an empty array.
 *
 * @param {ArrayLike<number>} sorted
 * @param {number} p
 * @returns {number}
 */
export function quantile(sorted, p) {
  const n = sorted.length
  if (n === 0) return NaN
  const h = (n - 1) * Math.min(Math.max(p, 0), 1)
  const lo = Math.floor(h)
  const hi = Math.min(lo + 1, n - 1)
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo])
}

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
 * - latency: `receivedAt - timestamp` per energy message, median and P99 over
 *   the last `latencyWindowMs` (default 10 s). The client does not sample the
 *   first frame of each energy type after startup or resume_energy: that is
 *   the server's cached newest frame, and its age is not transport latency;
 * - frame rate: energy_update messages received in the last `rateWindowMs`
 *   (1 s), as a rate;
 * - frame gaps: consecutive energy_update frameNumbers further apart than
 *   expected. With decimation (energyRate < frameRate) the expected step is
 *   `frameRate / energyRate`; a jump of at least 1.5 steps is a gap, and
 *   `round(jump / step) - 1` frames are counted as missed;
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
        if (jump >= 1.5 * this.expectedStep) {
          missed = Math.max(1, Math.round(jump / this.expectedStep) - 1)
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
    return quantile(this.sortedLatency(now), 0.5)
  }

  /**
   * @param {number} now
   * @returns {number}
   */
  latencyP99(now) {
    return quantile(this.sortedLatency(now), 0.99)
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
      latencyMedian: quantile(sorted, 0.5),
      latencyP99: quantile(sorted, 0.99),
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

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/**
 * The WebSocket surface the client needs; the browser's `WebSocket` fits,
 * and so does a fake in tests.
 *
 * @typedef {object} SocketLike
 * @property {number} readyState
 * @property {string} protocol
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {((ev: any) => void) | null} onopen
 * @property {((ev: {data: any}) => void) | null} onmessage
 * @property {((ev: {code: number, reason: string, wasClean?: boolean}) => void) | null} onclose
 * @property {((ev: any) => void) | null} onerror
 */

/** @typedef {new (url: string, protocols?: string | string[]) => SocketLike} SocketConstructor */

/**
 * Why the last connection ended.
 *
 * @typedef {object} CloseInfo
 * @property {number} code
 * @property {string} reason
 * @property {boolean} wasClean
 * @property {number} at epoch ms
 * @property {'server'|'client'|'timeout'} by `server`: a close event (the server or the network);
 *   `client`: disconnect(); `timeout`: abandoned by the watchdog (dead connection or hung attempt)
 */

/**
 * Something with add/removeEventListener (window, document, or a fake).
 * @typedef {{addEventListener(type: string, fn: (ev?: any) => void): void, removeEventListener(type: string, fn: (ev?: any) => void): void}} EventTargetLike
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [url] WebSocket URL; default `ws(s)://<location.host>/ws`
 * @property {SocketConstructor} [WebSocket] default globalThis.WebSocket
 * @property {string[]} [channels] channels to receive (query `channels`); default all
 * @property {number} [energyRate] energy rate in Hz (query `energyRate`); default the frame rate
 * @property {boolean} [resume] resume with `epoch`/`lastSeq` on reconnect (default true)
 * @property {{baseMs?: number, capMs?: number, random?: () => number}} [backoff]
 * @property {number} [stallFrames] frame periods without an energy frame before `stalled` (default 6)
 * @property {number} [heartbeatTimeoutFactor] heartbeat intervals without a heartbeat before the connection is declared dead (default 2.5)
 * @property {number} [connectTimeoutMs] an attempt that has not produced startup_complete by then is abandoned (default 5000)
 * @property {number} [stableMs] a session that lasted this long resets the backoff when it ends (default 2000)
 * @property {number} [watchdogMs] period of the stall/heartbeat check (default 25)
 * @property {boolean} [pauseWhenHidden] send pause_energy while document.hidden (default true)
 * @property {() => number} [now] epoch ms clock (default a {@link PrecisionClock})
 * @property {TimerFns} [timers]
 * @property {EventTargetLike | null} [window] for the `online` event (default globalThis.window)
 * @property {(EventTargetLike & {hidden: boolean}) | null} [document] for visibilitychange (default globalThis.document)
 * @property {Stats} [stats]
 */

/**
 * The default endpoint: the server that served the page.
 * @param {{protocol: string, host: string}} [loc] default globalThis.location
 * @returns {string}
 */
export function defaultUrl(loc = globalThis.location) {
  if (!loc || !loc.host) throw new Error('WirthforgeClient: no location to derive the URL from; pass opts.url')
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`
}

/**
 * A short human label for a close code.
 * @param {number} code
 * @returns {string}
 */
export function describeCloseCode(code) {
  /** @type {Record<number, string>} */
  const names = {
    1000: 'normal closure', 1001: 'going away', 1003: 'binary frame refused', 1005: 'no status', 1006: 'connection lost',
    1008: 'policy violation', 1009: 'message too big', 1011: 'server error', 1012: 'server restarting',
    1013: 'slow consumer', [CLIENT_TIMEOUT_CLOSE_CODE]: 'client timeout',
  }
  return names[code] || 'closed'
}

/**
 * The connection to a WIRTHFORGE server, protocol 1.1.
 *
 * - connects to `opts.url` (default: the page's server, `/ws`), offering
 *   subprotocol `wirthforge.1.1`;
 * - on reconnect resumes with `epoch`/`lastSeq` query parameters and drops
 *   messages whose `seq` it already processed; a new epoch (server restart)
 *   resets the seq space. `startup_complete` is never dropped and does not
 *   move `lastSeq`: the server numbers it after the replay that follows it;
 * - reconnects on its own with {@link Backoff} (100 ms base, 1 s cap) and at
 *   once on the window `online` event; never after a policy close
 *   (1003/1008/1009, state `refused`, reason in `closeInfo`) nor a normal
 *   1000 close by the server (state `disconnected`);
 * - answers each heartbeat with heartbeat_response; no heartbeat (nor
 *   startup) for 2.5 heartbeat intervals: closes the socket with 4000 and
 *   reconnects;
 * - no energy frame for `stallFrames` frame periods while energy is expected:
 *   state `stalled` (back to `connected` on the next frame);
 * - sends pause_energy while `document.hidden`, resume_energy when visible.
 *
 * Message handlers only update state; render from `stats` and your own
 * buffers in requestAnimationFrame.
 *
 * @example
 * const client = new WirthforgeClient({ channels: ['energy', 'experience'] })
 * const off = client.onMessage('energy_update', (m) => { latest = m.payload })
 * client.onState((s) => { status.textContent = s })
 * client.onClose((info) => console.log(info.code, info.reason))
 * client.connect()
 * client.send({ type: 'set_energy_rate', payload: { rateHz: 30 } })
 * client.disconnect()
 */
export class WirthforgeClient {
  /** @param {ClientOptions} [opts] */
  constructor(opts = {}) {
    this.url = opts.url ?? defaultUrl()
    /** @type {SocketConstructor} */
    this.SocketImpl = opts.WebSocket ?? /** @type {any} */ (globalThis.WebSocket)
    if (!this.SocketImpl) throw new Error('WirthforgeClient: no WebSocket implementation; pass opts.WebSocket')
    this.channels = opts.channels ?? null
    this.energyRate = opts.energyRate ?? null
    this.resumeEnabled = opts.resume ?? true
    this.stallFrames = opts.stallFrames ?? 6
    this.heartbeatTimeoutFactor = opts.heartbeatTimeoutFactor ?? 2.5
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5000
    this.stableMs = opts.stableMs ?? 2000
    this.watchdogMs = opts.watchdogMs ?? 25
    this.pauseWhenHidden = opts.pauseWhenHidden ?? true
    this.now = opts.now ?? new PrecisionClock().now
    this.timers = opts.timers ?? defaultTimers
    this.win = opts.window !== undefined ? opts.window : /** @type {any} */ (globalThis).window ?? null
    this.doc = opts.document !== undefined ? opts.document : /** @type {any} */ (globalThis).document ?? null
    this.stats = opts.stats ?? new Stats()
    this.backoff = new Backoff(opts.backoff)
    this.reconnectTimer = new Timer(() => this._open(), (tries) => this.backoff.delay(tries), this.timers)

    /** @type {ConnectionState} */
    this.state = 'disconnected'
    /** @type {SocketLike | null} */
    this.socket = null
    /** @type {CloseInfo | null} why the last connection ended */
    this.closeInfo = null
    /** the server's stream epoch, from the last startup_complete */
    /** @type {string | null} */
    this.epoch = null
    /** the last seq processed (0: none) */
    this.lastSeq = 0
    /** @type {Record<string, any> | null} payload of the last startup_complete */
    this.session = null
    /** @type {ResumeStatus | null} */
    this.lastResume = null
    this.heartbeatIntervalMs = 1000
    this.frameRate = 60
    this.energyRateHz = 60
    this.energySubscribed = true
    this.energyPaused = false
    this.attemptStartedAt = 0
    this.connectedAt = 0
    this.lastHeartbeatAt = 0
    this.lastEnergyAt = 0
    /** @type {Record<string, any> | null} newest energy_update payload */
    this.lastEnergy = null
    /**
     * Energy types whose next frame is the server's cached newest frame (sent
     * after startup or resume_energy): its age is not transport latency, so
     * it is not sampled.
     * @type {Set<string>}
     */
    this.catchUp = new Set()
    /** @type {any} */
    this.watchdog = null
    this.wantConnection = false

    /** @type {Set<(state: ConnectionState, prev: ConnectionState) => void>} */
    this.stateCallbacks = new Set()
    /** @type {Map<string, Set<(msg: Envelope) => void>>} */
    this.messageCallbacks = new Map()
    /** @type {Set<(info: CloseInfo) => void>} */
    this.closeCallbacks = new Set()
    /** @type {Set<(payload: Record<string, any>) => void>} */
    this.startupCallbacks = new Set()
    /** @type {Set<(err: any) => void>} */
    this.errorCallbacks = new Set()

    this._onOnline = () => this._handleOnline()
    this._onVisibility = () => this._handleVisibility()
    this._listening = false
  }

  // -- callbacks ------------------------------------------------------------

  /**
   * @param {(state: ConnectionState, prev: ConnectionState) => void} cb
   * @returns {() => void} unsubscribe
   */
  onState(cb) {
    this.stateCallbacks.add(cb)
    return () => this.stateCallbacks.delete(cb)
  }

  /**
   * Calls `cb` for each processed (not duplicate) message of `type`; `'*'`
   * for every message.
   * @param {string} type
   * @param {(msg: Envelope) => void} cb
   * @returns {() => void} unsubscribe
   */
  onMessage(type, cb) {
    let set = this.messageCallbacks.get(type)
    if (!set) this.messageCallbacks.set(type, (set = new Set()))
    set.add(cb)
    return () => set.delete(cb)
  }

  /**
   * @param {(info: CloseInfo) => void} cb
   * @returns {() => void} unsubscribe
   */
  onClose(cb) {
    this.closeCallbacks.add(cb)
    return () => this.closeCallbacks.delete(cb)
  }

  /**
   * Called with the startup_complete payload of every session (resume status in `payload.resume`).
   * @param {(payload: Record<string, any>) => void} cb
   * @returns {() => void} unsubscribe
   */
  onStartup(cb) {
    this.startupCallbacks.add(cb)
    return () => this.startupCallbacks.delete(cb)
  }

  /**
   * Socket errors and unparsable frames.
   * @param {(err: any) => void} cb
   * @returns {() => void} unsubscribe
   */
  onError(cb) {
    this.errorCallbacks.add(cb)
    return () => this.errorCallbacks.delete(cb)
  }

  /**
   * @template T
   * @param {Iterable<(arg: T, ...rest: any[]) => void>} callbacks
   * @param {T} arg
   * @param {...any} rest
   */
  _emit(callbacks, arg, ...rest) {
    for (const cb of [...callbacks]) {
      try {
        cb(arg, ...rest)
      } catch (err) {
        // A broken handler must not break the connection.
        globalThis.console?.error?.('wirthforge: callback failed', err)
      }
    }
  }

  // -- public API -------------------------------------------------------------

  /** @returns {boolean} whether a session is established (connected or stalled) */
  get isConnected() {
    return this.state === 'connected' || this.state === 'stalled'
  }

  /**
   * Starts connecting (and keeps the connection up) unless already doing so.
   * Also the way out of `refused`.
   */
  connect() {
    if (this.wantConnection && this.state !== 'refused' && this.state !== 'disconnected') return
    this.wantConnection = true
    this._listen(true)
    this.reconnectTimer.reset()
    this._setState('connecting')
    this._open()
  }

  /**
   * Closes the connection and stops reconnecting. The epoch and lastSeq are
   * kept, so a later `connect()` resumes where this one stopped.
   * @param {number} [code] default 1000
   * @param {string} [reason]
   */
  disconnect(code = 1000, reason = 'client disconnect') {
    this.wantConnection = false
    this.reconnectTimer.reset()
    this._stopWatchdog()
    this._listen(false)
    const ws = this.socket
    if (ws) {
      this._abandon(ws, code, reason)
      this._recordClose({ code, reason, wasClean: true, at: this.now(), by: 'client' })
    }
    this._setState('disconnected')
  }

  /**
   * Sends one message as JSON if the socket is open.
   * @param {object} obj
   * @returns {boolean} whether it was sent
   */
  send(obj) {
    const ws = this.socket
    if (!ws || ws.readyState !== 1) return false
    ws.send(JSON.stringify(obj))
    return true
  }

  /**
   * The URL of the next attempt: options plus resume parameters.
   * @returns {string}
   */
  connectUrl() {
    const u = new URL(this.url)
    if (this.channels) u.searchParams.set('channels', this.channels.join(','))
    if (this.energyRate) u.searchParams.set('energyRate', String(this.energyRate))
    if (this.resumeEnabled && this.epoch !== null && this.lastSeq > 0) {
      u.searchParams.set('epoch', this.epoch)
      u.searchParams.set('lastSeq', String(this.lastSeq))
    }
    return u.toString()
  }

  // -- lifecycle --------------------------------------------------------------

  /** @param {ConnectionState} next */
  _setState(next) {
    const prev = this.state
    if (prev === next) return
    this.state = next
    this._emit(this.stateCallbacks, next, prev)
  }

  /** @param {boolean} on */
  _listen(on) {
    if (on === this._listening) return
    this._listening = on
    const method = on ? 'addEventListener' : 'removeEventListener'
    this.win?.[method]('online', this._onOnline)
    this.doc?.[method]('visibilitychange', this._onVisibility)
  }

  _open() {
    if (!this.wantConnection || this.socket) return
    this.stats.counters.attempts += 1
    this.attemptStartedAt = this.now()
    /** @type {SocketLike} */
    let ws
    try {
      ws = new this.SocketImpl(this.connectUrl(), [PROTOCOL])
    } catch (err) {
      // e.g. a malformed URL: no socket, no close event; retry like a failed attempt.
      this._emit(this.errorCallbacks, err)
      this._scheduleReconnect()
      return
    }
    this.socket = ws
    ws.onopen = () => {}
    ws.onmessage = (ev) => {
      if (ws === this.socket) this._receive(ev.data)
    }
    ws.onerror = (ev) => {
      if (ws === this.socket) this._emit(this.errorCallbacks, ev)
    }
    ws.onclose = (ev) => {
      if (ws === this.socket) this._closed(ev.code, ev.reason, ev.wasClean ?? false)
    }
    this._startWatchdog()
  }

  /**
   * Detaches from a socket and closes it without waiting for its close event.
   * @param {SocketLike} ws
   * @param {number} code
   * @param {string} reason
   */
  _abandon(ws, code, reason) {
    if (this.socket === ws) this.socket = null
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null
    try {
      ws.close(code, reason)
    } catch {
      // already closed, or a code the implementation refuses
    }
  }

  /** @param {CloseInfo} info */
  _recordClose(info) {
    this.closeInfo = info
    this._emit(this.closeCallbacks, info)
  }

  /**
   * The server (or the network) closed the socket.
   * @param {number} code
   * @param {string} reason
   * @param {boolean} wasClean
   */
  _closed(code, reason, wasClean) {
    const ws = this.socket
    if (ws) ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null
    this.socket = null
    const sessionLength = this.connectedAt ? this.now() - this.connectedAt : 0
    this.connectedAt = 0
    this._recordClose({ code, reason: reason || '', wasClean, at: this.now(), by: 'server' })
    if (!this.wantConnection) {
      this._setState('disconnected')
    } else if (POLICY_CLOSE_CODES.includes(code)) {
      this.wantConnection = false
      this._stopWatchdog()
      this.reconnectTimer.reset()
      this._setState('refused')
    } else if (code === 1000) {
      // PROTOCOL.md §7: normal closure, nothing to do.
      this.wantConnection = false
      this._stopWatchdog()
      this.reconnectTimer.reset()
      this._setState('disconnected')
    } else {
      if (sessionLength >= this.stableMs) this.reconnectTimer.reset()
      this._scheduleReconnect()
    }
  }

  /**
   * Abandons the current socket (dead or hung) and reconnects.
   * @param {string} reason
   */
  _drop(reason) {
    const ws = this.socket
    if (!ws) return
    const sessionLength = this.connectedAt ? this.now() - this.connectedAt : 0
    this.connectedAt = 0
    this._abandon(ws, CLIENT_TIMEOUT_CLOSE_CODE, reason)
    this._recordClose({ code: CLIENT_TIMEOUT_CLOSE_CODE, reason, wasClean: false, at: this.now(), by: 'timeout' })
    if (sessionLength >= this.stableMs) this.reconnectTimer.reset()
    this._scheduleReconnect()
  }

  _scheduleReconnect() {
    this._setState('reconnecting')
    this.reconnectTimer.scheduleTimeout()
  }

  _handleOnline() {
    if (this.wantConnection && this.state === 'reconnecting' && !this.socket) {
      this.reconnectTimer.cancel()
      this._open()
    }
  }

  _handleVisibility() {
    if (!this.pauseWhenHidden || !this.doc) return
    if (this.doc.hidden) this._pauseEnergy()
    else this._resumeEnergy()
  }

  _pauseEnergy() {
    if (!this.isConnected || this.energyPaused || !this.energySubscribed) return
    if (this.send({ type: 'pause_energy', payload: {} })) {
      this.energyPaused = true
      if (this.state === 'stalled') this._setState('connected')
    }
  }

  _resumeEnergy() {
    if (!this.energyPaused) return
    this.energyPaused = false
    if (this.send({ type: 'resume_energy', payload: {} })) {
      this.stats.resetFrames()
      this.lastEnergyAt = this.now()
      this.catchUp = new Set(['energy_update', 'energy_field'])
    }
  }

  _startWatchdog() {
    if (this.watchdog === null) this.watchdog = this.timers.setInterval(() => this.checkHealth(), this.watchdogMs)
  }

  _stopWatchdog() {
    if (this.watchdog !== null) this.timers.clearInterval(this.watchdog)
    this.watchdog = null
  }

  /** @returns {number} ms without an energy frame after which the stream is stalled */
  get stallAfterMs() {
    return (this.stallFrames * 1000) / (this.energyRateHz > 0 ? this.energyRateHz : 60)
  }

  /** @returns {number} ms without a heartbeat after which the connection is dead */
  get deadAfterMs() {
    return this.heartbeatTimeoutFactor * this.heartbeatIntervalMs
  }

  /**
   * The watchdog: stall, dead connection, hung attempt. Runs every
   * `watchdogMs` while a socket exists; public so tests can drive it.
   * @param {number} [now]
   */
  checkHealth(now = this.now()) {
    if (!this.socket) return
    if (this.isConnected) {
      if (now - this.lastHeartbeatAt > this.deadAfterMs) {
        this._drop('heartbeat timeout')
        return
      }
      const energyExpected = this.energySubscribed && !this.energyPaused
      if (this.state === 'connected' && energyExpected && now - this.lastEnergyAt > this.stallAfterMs) {
        this._setState('stalled')
      }
    } else if (now - this.attemptStartedAt > this.connectTimeoutMs) {
      this._drop('connect timeout')
    }
  }

  // -- inbound ----------------------------------------------------------------

  /** @param {any} data */
  _receive(data) {
    if (typeof data !== 'string') return // the protocol has text frames only
    /** @type {any} */
    let msg
    try {
      msg = JSON.parse(data)
    } catch (err) {
      this._emit(this.errorCallbacks, err)
      return
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return
    this.handleMessage(msg)
  }

  /**
   * Processes one parsed message (public for tests and for replaying
   * recorded streams).
   * @param {Envelope} msg
   */
  handleMessage(msg) {
    const now = this.now()
    if (msg.type === 'startup_complete') {
      this._startup(msg, now)
      return
    }
    if (typeof msg.seq === 'number') {
      if (msg.seq <= this.lastSeq) {
        this.stats.counters.duplicates += 1
        return
      }
      this.lastSeq = msg.seq
    }
    const c = this.stats.counters
    c.messages += 1
    const payload = msg.payload || {}
    switch (msg.type) {
      case 'energy_update':
        this.lastEnergyAt = now
        this.lastEnergy = payload
        this.stats.recordFrame(now, msg.frameNumber)
        if (!this.catchUp.delete(msg.type)) this.stats.recordLatency(now, msg.timestamp)
        if (this.state === 'stalled') this._setState('connected')
        break
      case 'energy_field':
        c.fields += 1
        if (!this.catchUp.delete(msg.type)) this.stats.recordLatency(now, msg.timestamp)
        break
      case 'heartbeat':
        c.heartbeats += 1
        this.lastHeartbeatAt = now
        this.send({ type: 'heartbeat_response', payload: { sequence: payload.sequence, clientTime: Date.now() } })
        break
      case 'token_stream':
        if (Array.isArray(payload.tokens)) c.tokens += payload.tokens.length
        break
      case 'interference_event':
      case 'resonance_event':
        c.council += 1
        break
      case 'reward_event':
        c.rewards += 1
        break
      case 'error_event':
        c.errors += 1
        break
    }
    this._dispatch(msg)
  }

  /** @param {Envelope} msg */
  _dispatch(msg) {
    const typed = this.messageCallbacks.get(msg.type)
    if (typed) this._emit(typed, msg)
    const all = this.messageCallbacks.get('*')
    if (all) this._emit(all, msg)
  }

  /**
   * @param {Envelope} msg
   * @param {number} now
   */
  _startup(msg, now) {
    const p = msg.payload || {}
    const c = this.stats.counters
    if (typeof p.epoch === 'string' && p.epoch !== this.epoch) {
      // A new epoch is a new seq space (the server restarted).
      this.epoch = p.epoch
      this.lastSeq = 0
    }
    /** @type {ResumeStatus} */
    const resume = p.resume && typeof p.resume === 'object' ? p.resume : { status: 'none' }
    this.lastResume = resume
    if (resume.status === 'complete' || resume.status === 'incomplete') c.recovered += Number(resume.replayed) || 0
    if (resume.status === 'incomplete') c.resyncs += 1
    this.session = p
    this.heartbeatIntervalMs = p.heartbeatIntervalMs > 0 ? p.heartbeatIntervalMs : 1000
    this.frameRate = p.frameRate > 0 ? p.frameRate : 60
    this.energyRateHz = p.energyRateHz > 0 ? p.energyRateHz : this.frameRate
    this.energySubscribed = Array.isArray(p.subscriptions) ? p.subscriptions.includes('energy') : true
    this.energyPaused = false
    this.catchUp = new Set(['energy_update', 'energy_field'])
    this.stats.setExpectedStep(this.frameRate, this.energyRateHz)
    this.stats.resetFrames()
    this.connectedAt = now
    this.lastHeartbeatAt = now
    this.lastEnergyAt = now
    c.connects += 1
    if (c.connects > 1) c.reconnects += 1
    this._setState('connected')
    if (this.pauseWhenHidden && this.doc?.hidden) this._pauseEnergy()
    this._emit(this.startupCallbacks, p)
    this._dispatch(msg)
  }
}
