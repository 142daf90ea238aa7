// Test doubles for the WIRTHFORGE browser client: a virtual clock with
// timers, a scriptable WebSocket, and a minimal event target. Not a test file
// itself (node --test only picks *.test.mjs).

/** A virtual clock: timers fire only when advance() passes their due time. */
export class FakeClock {
  constructor(start = 1_764_000_000_000) {
    this.t = start
    this.nextId = 1
    /** @type {Map<number, {due: number, fn: () => void, every: number|null}>} */
    this.pending = new Map()
    this.now = () => this.t
    this.timers = {
      setTimeout: (fn, ms) => this._add(fn, ms, null),
      clearTimeout: (id) => this.pending.delete(id),
      setInterval: (fn, ms) => this._add(fn, ms, Math.max(1, ms)),
      clearInterval: (id) => this.pending.delete(id),
    }
  }

  _add(fn, ms, every) {
    const id = this.nextId++
    this.pending.set(id, { due: this.t + Math.max(0, ms || 0), fn, every })
    return id
  }

  /** Advances virtual time by ms, firing due timers in order (bounded). */
  advance(ms) {
    const end = this.t + ms
    for (let guard = 0; guard < 1_000_000; guard++) {
      let nextId = null
      let next = null
      for (const [id, timer] of this.pending) {
        if (timer.due <= end && (next === null || timer.due < next.due || (timer.due === next.due && id < nextId))) {
          next = timer
          nextId = id
        }
      }
      if (next === null) break
      this.t = Math.max(this.t, next.due)
      if (next.every !== null) next.due += next.every
      else this.pending.delete(nextId)
      next.fn()
    }
    this.t = end
  }

  /** Number of pending one-shot timers (intervals excluded). */
  pendingTimeouts() {
    return [...this.pending.values()].filter((t) => t.every === null).length
  }
}

/** A WebSocket whose server side the test plays. */
export class FakeWebSocket {
  static CONNECTING = 0
  static OPEN = 1
  static CLOSING = 2
  static CLOSED = 3
  /** @type {FakeWebSocket[]} */
  static instances = []

  static reset() {
    FakeWebSocket.instances = []
  }

  static get last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1]
  }

  constructor(url, protocols) {
    this.url = url
    this.protocols = protocols
    this.readyState = FakeWebSocket.CONNECTING
    this.protocol = ''
    /** @type {string[]} */
    this.sent = []
    /** @type {{code?: number, reason?: string} | null} */
    this.closedByClient = null
    this.onopen = null
    this.onmessage = null
    this.onclose = null
    this.onerror = null
    FakeWebSocket.instances.push(this)
  }

  send(data) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('InvalidStateError: not open')
    this.sent.push(data)
  }

  close(code, reason) {
    this.closedByClient = { code, reason }
    this.readyState = FakeWebSocket.CLOSED
  }

  /** Parsed messages the client sent. */
  sentMessages() {
    return this.sent.map((s) => JSON.parse(s))
  }

  // -- the server's side --

  serverOpen(protocol = 'wirthforge.1.1') {
    this.readyState = FakeWebSocket.OPEN
    this.protocol = protocol
    this.onopen?.({})
  }

  serverSend(obj) {
    this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) })
  }

  serverClose(code = 1006, reason = '') {
    this.readyState = FakeWebSocket.CLOSED
    this.onclose?.({ code, reason, wasClean: code !== 1006 })
  }

  /** A failed attempt: error then close 1006, as browsers report a refused TCP connect. */
  serverRefuse() {
    this.readyState = FakeWebSocket.CLOSED
    this.onerror?.({})
    this.onclose?.({ code: 1006, reason: '', wasClean: false })
  }
}

/** window/document stand-in with addEventListener and dispatch. */
export class FakeEventTarget {
  constructor(props = {}) {
    Object.assign(this, props)
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map()
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set())
    this.listeners.get(type).add(fn)
  }

  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn)
  }

  dispatch(type) {
    for (const fn of [...(this.listeners.get(type) ?? [])]) fn({ type })
  }

  listenerCount(type) {
    return this.listeners.get(type)?.size ?? 0
  }
}

/** A startup_complete message as a 1.1 server sends it. */
export function startup(overrides = {}, envelope = {}) {
  return {
    type: 'startup_complete',
    channel: 'system',
    timestamp: 1_764_000_000_000.123,
    seq: 1,
    ...envelope,
    payload: {
      model: 'wirthforge-sim',
      tier: 'Mid-Tier',
      version: '1.1.0',
      frameRate: 60,
      capabilities: ['council', 'visualization'],
      protocol: '1.1',
      connectionId: 'c1',
      epoch: 'epoch-a',
      heartbeatIntervalMs: 1000,
      channels: {},
      subscriptions: ['energy', 'experience', 'council', 'reward', 'system'],
      energyRateHz: 60,
      limits: {},
      resume: { status: 'none' },
      ...overrides,
    },
  }
}

/** Deterministic uniform [0, 1) source (mulberry32). */
export function seededRandom(seed = 1) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
