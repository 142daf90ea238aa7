// @ts-check
/**
 * {@link WirthforgeClient}: the connection to a WIRTHFORGE server, with
 * resume, dedupe, heartbeat, stall and dead-connection detection,
 * visibility-driven pause and policy-close handling. Everything it builds on
 * lives in the sibling modules (protocol, backoff, timer, clock, stats).
 *
 * @module wirthforge/client
 */

import { Backoff } from './backoff.js'
import { PrecisionClock } from './clock.js'
import { CLIENT_TIMEOUT_CLOSE_CODE, PROTOCOL, defaultUrl } from './protocol.js'
import { CONNECT_TIMEOUT_MS, closeAction, deadAfterMs, sessionWasStable } from './rules.js'
import { Stats } from './stats.js'
import { Timer, defaultTimers } from './timer.js'

/** @typedef {import('./protocol.js').ConnectionState} ConnectionState */
/** @typedef {import('./protocol.js').Envelope} Envelope */
/** @typedef {import('./protocol.js').ResumeStatus} ResumeStatus */
/** @typedef {import('./timer.js').TimerFns} TimerFns */

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
 * @property {number} [connectTimeoutMs] an attempt that has not produced startup_complete by then is
 *   abandoned (default PROTOCOL.md §10.3: 5000; tests shorten it)
 * @property {number} [watchdogMs] period of the stall/heartbeat check (default 25)
 * @property {boolean} [pauseWhenHidden] send pause_energy while document.hidden (default true)
 * @property {() => number} [now] epoch ms clock (default a {@link PrecisionClock})
 * @property {TimerFns} [timers]
 * @property {EventTargetLike | null} [window] for the `online` event (default globalThis.window)
 * @property {(EventTargetLike & {hidden: boolean}) | null} [document] for visibilitychange (default globalThis.document)
 * @property {Stats} [stats]
 */

/**
 * The connection to a WIRTHFORGE server, protocol 1.1.
 *
 * - connects to `opts.url` (default: the page's server, `/ws`), offering
 *   subprotocol `wirthforge.1.1`;
 * Every rule it follows is docs/PROTOCOL.md §10, implemented in
 * `rules.js` and checked by the conformance vectors (`tests/vectors/`):
 *
 * - on reconnect resumes with `epoch`/`lastSeq` query parameters and drops
 *   messages whose `seq` is at or below the last one processed; a new epoch
 *   (server restart) resets the seq space. `startup_complete` is never
 *   dropped and does not move `lastSeq`: the server numbers it after the
 *   replay that follows it;
 * - reconnects on its own with {@link Backoff} (100 ms base, 1 s cap; the
 *   tries start over when a session of 2 s or more ends) and at once on the
 *   window `online` event; stops only after a policy close (1002/1003/1007/1008/1009,
 *   state `refused`, reason in `closeInfo`) or `disconnect()`;
 * - answers each heartbeat with heartbeat_response; no frame at all for 3
 *   heartbeat intervals (or no startup_complete 5 s into an attempt):
 *   closes the socket with 4000 and reconnects;
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
    this.connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS
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
    /** seq of the latest fresh session's startup_complete: the lowest resume point (§10.4) */
    this.resumeFloor = 0
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
    /** when the last frame of any kind arrived (the dead-link clock) */
    this.lastFrameAt = 0
    this.lastEnergyAt = 0
    /** @type {Record<string, any> | null} newest energy_update payload */
    this.lastEnergy = null
    /**
     * The next energy_update is the first of its session: possibly the
     * newest frame the server held (§6), so it is neither a latency sample
     * nor the start of the gap count (§10.5).
     */
    this.firstFramePending = false
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
    const request = /** @type {{type?: unknown, payload?: any}} */ (obj)
    if (request.type === 'set_energy_rate' && request.payload?.rateHz > 0) {
      // §10.5: a rate change restarts the gap count with the requested rate.
      this.energyRateHz = Math.min(request.payload.rateHz, this.frameRate)
      this.stats.setExpectedStep(this.frameRate, this.energyRateHz)
      this.stats.resetFrames()
    }
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
    const position = Math.max(this.lastSeq, this.resumeFloor)
    if (this.resumeEnabled && this.epoch !== null && position > 0) {
      u.searchParams.set('epoch', this.epoch)
      u.searchParams.set('lastSeq', String(position))
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
    } else if (closeAction(code) === 'stop') {
      this.wantConnection = false
      this._stopWatchdog()
      this.reconnectTimer.reset()
      this._setState('refused')
    } else {
      if (sessionWasStable(sessionLength)) this.reconnectTimer.reset()
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
    if (sessionWasStable(sessionLength)) this.reconnectTimer.reset()
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
      // §10.5: the gap count restarts; the next frame is live (the server
      // sends no held frame after resume_energy), so it is a latency sample.
      this.stats.resetFrames()
      this.lastEnergyAt = this.now()
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

  /** @returns {number} ms without any frame after which the connection is dead (§10.3) */
  get deadAfterMs() {
    return deadAfterMs(this.heartbeatIntervalMs)
  }

  /**
   * The watchdog: stall, dead connection, hung attempt. Runs every
   * `watchdogMs` while a socket exists; public so tests can drive it.
   * @param {number} [now]
   */
  checkHealth(now = this.now()) {
    if (!this.socket) return
    if (this.isConnected) {
      if (now - this.lastFrameAt >= this.deadAfterMs) {
        this._drop('no frame: dead link')
        return
      }
      const energyExpected = this.energySubscribed && !this.energyPaused
      if (this.state === 'connected' && energyExpected && now - this.lastEnergyAt > this.stallAfterMs) {
        this._setState('stalled')
      }
    } else if (now - this.attemptStartedAt >= this.connectTimeoutMs) {
      this._drop('connect timeout')
    }
  }

  // -- inbound ----------------------------------------------------------------

  /** @param {any} data */
  _receive(data) {
    this.lastFrameAt = this.now() // any frame proves the link alive (§10.3)
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
      // §10.4: one watermark; the server sends replay, hand-over frames and
      // live traffic in seq order, so anything at or below it is a duplicate.
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
        if (this.firstFramePending) {
          // §10.5: counted as received, but not a latency sample nor a gap baseline.
          this.firstFramePending = false
          this.stats.recordFrame(now)
        } else {
          this.stats.recordFrame(now, msg.frameNumber)
          this.stats.recordLatency(now, msg.timestamp)
        }
        if (this.state === 'stalled') this._setState('connected')
        break
      case 'energy_field':
        c.fields += 1
        break
      case 'heartbeat':
        c.heartbeats += 1
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
      this.resumeFloor = 0
    }
    /** @type {ResumeStatus} */
    const resume = p.resume && typeof p.resume === 'object' ? p.resume : { status: 'none' }
    this.lastResume = resume
    const fresh =
      resume.status === 'none' ||
      (resume.status === 'incomplete' && (resume.reason === 'epoch_changed' || resume.reason === 'invalid_request'))
    if (fresh && typeof msg.seq === 'number') this.resumeFloor = Math.max(this.resumeFloor, msg.seq)
    if (resume.status === 'complete' || resume.status === 'incomplete') c.recovered += Number(resume.replayed) || 0
    if (resume.status === 'incomplete') c.resyncs += 1
    this.session = p
    this.heartbeatIntervalMs = p.heartbeatIntervalMs > 0 ? p.heartbeatIntervalMs : 1000
    this.frameRate = p.frameRate > 0 ? p.frameRate : 60
    this.energyRateHz = p.energyRateHz > 0 ? p.energyRateHz : this.frameRate
    this.energySubscribed = Array.isArray(p.subscriptions) ? p.subscriptions.includes('energy') : true
    this.energyPaused = false
    this.firstFramePending = true
    this.stats.setExpectedStep(this.frameRate, this.energyRateHz)
    this.stats.resetFrames()
    this.connectedAt = now
    this.lastFrameAt = now
    this.lastEnergyAt = now
    c.connects += 1
    if (c.connects > 1) c.reconnects += 1
    this._setState('connected')
    if (this.pauseWhenHidden && this.doc?.hidden) this._pauseEnergy()
    this._emit(this.startupCallbacks, p)
    this._dispatch(msg)
  }
}
