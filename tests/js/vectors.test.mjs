// The conformance vectors (tests/vectors/*.json, PROTOCOL.md §10) against
// the browser client. Each vector file states one client rule as data; this
// is the driver that feeds it to WirthforgeClient through a fake WebSocket
// and a virtual clock. tests/unit/test_vectors.py is the same driver for the
// Python client. Run: node --test tests/js/vectors.test.mjs

import { test, beforeEach } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { Backoff, WirthforgeClient, percentile, sessionWasStable } from '../../static/wirthforge-client.js'
import { FakeClock, FakeWebSocket } from './fakes.mjs'

const load = (name) => JSON.parse(readFileSync(new URL(`../vectors/${name}`, import.meta.url), 'utf8'))

const CLOSE = load('close_codes.json')
const BACKOFF = load('backoff.json')
const DEAD_LINK = load('dead_link.json')
const RESUME = load('resume.json')
const GAPS = load('frame_gaps.json')
const PERCENTILES = load('percentiles.json')

beforeEach(() => FakeWebSocket.reset())

/** A client on fakes; `connect()` already called. */
function makeClient(opts = {}) {
  const clock = new FakeClock()
  const client = new WirthforgeClient({
    url: 'ws://127.0.0.1:8145/ws',
    WebSocket: FakeWebSocket,
    now: clock.now,
    timers: clock.timers,
    window: null,
    document: null,
    watchdogMs: 1,
    ...opts,
  })
  client.connect()
  FakeWebSocket.last.serverOpen()
  return { client, clock }
}

/** A minimal 1.1 startup_complete. */
function startup(seq, frameRate = 60, energyRateHz = 60, heartbeatIntervalMs = 1000) {
  return {
    type: 'startup_complete', channel: 'system', timestamp: 0, seq,
    payload: { protocol: '1.1', epoch: 'e1', frameRate, energyRateHz, heartbeatIntervalMs, resume: { status: 'none' } },
  }
}

// -- §10.1 close codes --------------------------------------------------------

for (const c of CLOSE.close) {
  test(`close ${c.code} -> ${c.action}`, () => {
    const { client } = makeClient()
    FakeWebSocket.last.serverSend(startup(1))
    FakeWebSocket.last.serverClose(c.code, 'vector')
    assert.equal(client.state, c.action === 'stop' ? 'refused' : 'reconnecting')
  })
}

// -- §10.2 backoff --------------------------------------------------------------

test('backoff defaults are the protocol constants', () => {
  const b = new Backoff()
  assert.deepEqual([b.baseMs, b.capMs], [BACKOFF.base_ms, BACKOFF.cap_ms])
})

for (const c of BACKOFF.ceilings) {
  test(`backoff ceiling of attempt ${c.attempt}`, () => assert.equal(new Backoff().ceiling(c.attempt), c.ceiling_ms))
}

for (const c of BACKOFF.draws) {
  test(`backoff draw: attempt ${c.attempt}, random ${c.random}`, () => {
    const b = new Backoff({ random: () => c.random })
    assert.ok(Math.abs(b.delay(c.attempt) - c.delay_ms) < 1e-9)
  })
}

for (const c of BACKOFF.stable) {
  test(`a session of ${c.session_ms} ms ${c.resets ? 'resets' : 'keeps'} the backoff`, () => {
    assert.equal(sessionWasStable(c.session_ms), c.resets)
    // Through the client: after 3 failed attempts, a session of session_ms, then a loss.
    const { client, clock } = makeClient({ backoff: { random: () => 1 } })
    for (let i = 0; i < 3; i++) {
      FakeWebSocket.last.serverRefuse()
      clock.advance(client.backoff.capMs)
    }
    FakeWebSocket.last.serverOpen()
    FakeWebSocket.last.serverSend(startup(1))
    const tries = client.reconnectTimer.tries
    assert.ok(tries > 0)
    const ws = FakeWebSocket.last
    for (let left = c.session_ms, seq = 2; left > 0; left -= 1000, seq++) {
      clock.advance(Math.min(left, 1000)) // a heartbeat a second keeps the session alive
      ws.serverSend({ type: 'heartbeat', channel: 'system', timestamp: 0, seq, payload: { sequence: seq } })
    }
    assert.equal(FakeWebSocket.last, ws, 'the session lasted')
    ws.serverClose(1006)
    assert.equal(client.reconnectTimer.tries, c.resets ? 0 : tries)
  })
}

// -- §10.3 dead link ------------------------------------------------------------

test('the connect timeout is the protocol constant', () => {
  const { client, clock } = makeClient()
  clock.advance(DEAD_LINK.connect_timeout_ms - 1)
  assert.equal(FakeWebSocket.last.closedByClient, null)
  clock.advance(1)
  assert.equal(client.closeInfo?.by, 'timeout')
})

for (const c of DEAD_LINK.cases) {
  test(`dead link: ${c.name}`, () => {
    const { client, clock } = makeClient()
    const msg = startup(1)
    if (c.heartbeat_interval_ms === null) delete msg.payload.heartbeatIntervalMs
    else msg.payload.heartbeatIntervalMs = c.heartbeat_interval_ms
    const ws = FakeWebSocket.last
    const t0 = clock.t
    ws.serverSend(msg)
    const events = [
      ...c.frames.map((f) => ({ at: f.at_ms, frame: f.type })),
      ...c.checks.map((k) => ({ at: k.at_ms, dead: k.dead })),
    ].sort((a, b) => a.at - b.at)
    let seq = 1
    for (const e of events) {
      clock.advance(t0 + e.at - clock.t)
      if ('frame' in e) ws.serverSend({ type: e.frame, channel: 'x', timestamp: 0, seq: ++seq, payload: {} })
      else assert.equal(ws.closedByClient !== null, e.dead, `at ${e.at} ms (state ${client.state})`)
    }
  })
}

// -- §10.4 resume and de-duplication --------------------------------------------

for (const c of RESUME.cases) {
  test(`resume: ${c.name}`, () => {
    const { client, clock } = makeClient({ backoff: { random: () => 0 } })
    /** @type {(number|null)[]} */
    const delivered = []
    client.onMessage('*', (m) => delivered.push(typeof m.seq === 'number' ? m.seq : null))
    for (const step of c.steps) {
      if (step.recv) {
        FakeWebSocket.last.serverSend(step.recv)
        continue
      }
      const before = FakeWebSocket.instances.length
      FakeWebSocket.last.serverClose(1006)
      clock.advance(1)
      assert.equal(FakeWebSocket.instances.length, before + 1, 'reconnected')
      const query = new URL(FakeWebSocket.last.url).searchParams
      const resume = query.has('epoch') ? { epoch: query.get('epoch'), lastSeq: Number(query.get('lastSeq')) } : null
      assert.deepEqual(resume, step.drop.resume, FakeWebSocket.last.url)
      FakeWebSocket.last.serverOpen()
    }
    assert.deepEqual(delivered, c.delivered)
    assert.equal(client.stats.counters.duplicates, c.duplicates)
  })
}

// -- §10.5 frame gaps -------------------------------------------------------------

for (const c of GAPS.cases) {
  test(`frame gaps: ${c.name}`, () => {
    const { client } = makeClient()
    let seq = 1
    FakeWebSocket.last.serverSend(startup(seq, c.frame_rate, c.energy_rate))
    for (const frame of c.frames) {
      seq += 1
      if (frame === 'startup') FakeWebSocket.last.serverSend(startup(seq, c.frame_rate, c.energy_rate))
      else FakeWebSocket.last.serverSend({ type: 'energy_update', channel: 'energy', timestamp: 0, seq, frameNumber: frame, payload: {} })
    }
    const { frameGaps, framesMissed } = client.stats.counters
    assert.deepEqual([frameGaps, framesMissed], [c.gaps, c.missed])
  })
}

// -- §10.6 percentiles --------------------------------------------------------------

for (const c of PERCENTILES.cases) {
  test(`percentile p${c.p} of ${c.values.length} values`, () => {
    const sorted = [...c.values].sort((a, b) => a - b)
    const got = percentile(sorted, c.p)
    assert.equal(Number.isNaN(got) ? null : got, c.expect)
  })
}
