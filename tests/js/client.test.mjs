import { test, beforeEach } from 'node:test'
import assert from 'node:assert/strict'
import { WirthforgeClient, PROTOCOL, defaultUrl } from '../../static/wirthforge-client.js'
import { FakeClock, FakeEventTarget, FakeWebSocket, startup } from './fakes.mjs'

const URL_ = 'ws://127.0.0.1:8145/ws'

/** A client wired to fakes; random = 1 makes every backoff delay its ceiling. */
function setup(opts = {}) {
  const clock = new FakeClock()
  const win = new FakeEventTarget()
  const doc = new FakeEventTarget({ hidden: false })
  const client = new WirthforgeClient({
    url: URL_,
    WebSocket: FakeWebSocket,
    now: clock.now,
    timers: clock.timers,
    window: win,
    document: doc,
    backoff: { random: () => 1 },
    ...opts,
  })
  const states = []
  client.onState((s) => states.push(s))
  return { clock, win, doc, client, states }
}

/** connect + open + startup_complete */
function connected(opts = {}, startupPayload = {}) {
  const env = setup(opts)
  env.client.connect()
  const ws = FakeWebSocket.last
  ws.serverOpen()
  ws.serverSend(startup(startupPayload))
  return { ...env, ws }
}

const msg = (type, seq, payload = {}, extra = {}) => ({ type, channel: 'x', timestamp: 0, seq, payload, ...extra })

beforeEach(() => FakeWebSocket.reset())

test('defaultUrl follows the page: ws for http, wss for https', () => {
  assert.equal(defaultUrl({ protocol: 'http:', host: '127.0.0.1:8145' }), 'ws://127.0.0.1:8145/ws')
  assert.equal(defaultUrl({ protocol: 'https:', host: 'localhost' }), 'wss://localhost/ws')
  assert.throws(() => defaultUrl(/** @type {any} */ (undefined)))
})

test('connect offers wirthforge.1.1; startup_complete makes it connected', () => {
  const { client, states } = setup()
  let startupSeen = null
  client.onStartup((p) => (startupSeen = p))
  assert.equal(client.state, 'disconnected')
  client.connect()
  assert.equal(client.state, 'connecting')
  const ws = FakeWebSocket.last
  assert.equal(FakeWebSocket.instances.length, 1)
  assert.deepEqual(ws.protocols, [PROTOCOL])
  assert.equal(ws.url, URL_, 'no resume parameters on a first connection')
  ws.serverOpen()
  assert.equal(client.state, 'connecting', 'open alone is not a session')
  ws.serverSend(startup({ heartbeatIntervalMs: 500, energyRateHz: 30 }))
  assert.equal(client.state, 'connected')
  assert.equal(client.epoch, 'epoch-a')
  assert.equal(client.heartbeatIntervalMs, 500)
  assert.equal(client.energyRateHz, 30)
  assert.equal(client.stats.expectedStep, 2)
  assert.equal(startupSeen.connectionId, 'c1')
  assert.deepEqual(states, ['connecting', 'connected'])
  client.connect() // idempotent
  assert.equal(FakeWebSocket.instances.length, 1)
})

test('channels and energyRate options go into the query', () => {
  const { client } = setup({ channels: ['energy', 'system'], energyRate: 20 })
  client.connect()
  const u = new URL(FakeWebSocket.last.url)
  assert.equal(u.searchParams.get('channels'), 'energy,system')
  assert.equal(u.searchParams.get('energyRate'), '20')
})

test('messages are deduplicated by seq and dispatched by type', () => {
  const { client, ws } = connected()
  const got = []
  const all = []
  client.onMessage('token_stream', (m) => got.push(m.seq))
  client.onMessage('*', (m) => all.push(m.type))
  for (const seq of [5, 6, 6, 5, 7, 3]) ws.serverSend(msg('token_stream', seq, { tokens: ['a', 'b'] }))
  assert.deepEqual(got, [5, 6, 7])
  assert.equal(client.lastSeq, 7)
  assert.equal(client.stats.counters.duplicates, 3)
  assert.equal(client.stats.counters.tokens, 6)
  assert.deepEqual(all, ['token_stream', 'token_stream', 'token_stream'])
})

test('startup_complete is never deduplicated and does not move lastSeq', () => {
  const { client, ws, clock } = connected()
  ws.serverSend(msg('token_stream', 40, { tokens: [] }))
  ws.serverClose(1012, 'restart')
  clock.advance(100)
  const ws2 = FakeWebSocket.last
  ws2.serverOpen()
  let startups = 0
  client.onStartup(() => startups++)
  ws2.serverSend(startup({ resume: { status: 'complete', replayed: 0 } }, { seq: 7 })) // below lastSeq
  assert.equal(startups, 1)
  assert.equal(client.state, 'connected')
  assert.equal(client.lastSeq, 40)
  assert.equal(client.stats.counters.duplicates, 0)
})

test('heartbeats are answered with heartbeat_response carrying the sequence', () => {
  const { client, ws } = connected()
  ws.serverSend(msg('heartbeat', 2, { sequence: 7, serverTime: 1, frameRate: 60, connectionId: 'c1' }))
  const replies = ws.sentMessages().filter((m) => m.type === 'heartbeat_response')
  assert.equal(replies.length, 1)
  assert.equal(replies[0].payload.sequence, 7)
  assert.equal(typeof replies[0].payload.clientTime, 'number')
  assert.equal(client.stats.counters.heartbeats, 1)
})

test('a lost connection reconnects and resumes with epoch and lastSeq', () => {
  const { client, ws, clock, states } = connected()
  ws.serverSend(msg('token_stream', 41, { tokens: ['x'] }))
  ws.serverClose(1006)
  assert.equal(client.state, 'reconnecting')
  assert.equal(client.closeInfo.code, 1006)
  assert.equal(FakeWebSocket.instances.length, 1)
  clock.advance(100) // first retry within base (100 ms)
  assert.equal(FakeWebSocket.instances.length, 2)
  const ws2 = FakeWebSocket.last
  const u = new URL(ws2.url)
  assert.equal(u.searchParams.get('epoch'), 'epoch-a')
  assert.equal(u.searchParams.get('lastSeq'), '41')
  assert.equal(client.state, 'reconnecting', 'still reconnecting until startup_complete')
  ws2.serverOpen()
  ws2.serverSend(startup({ resume: { status: 'complete', replayed: 2 } }, { seq: 50 }))
  const replayed = []
  client.onMessage('token_stream', (m) => replayed.push(m.seq))
  for (const seq of [41, 42, 43]) ws2.serverSend(msg('token_stream', seq, { tokens: ['y'] }))
  assert.deepEqual(replayed, [42, 43], 'replay after a startup carrying a higher seq is not dropped; 41 is a duplicate')
  assert.equal(client.state, 'connected')
  assert.equal(client.stats.counters.recovered, 2)
  assert.equal(client.stats.counters.reconnects, 1)
  assert.deepEqual(states, ['connecting', 'connected', 'reconnecting', 'connected'])
})

test('a new epoch resets the seq space', () => {
  const { client, ws, clock } = connected()
  ws.serverSend(msg('token_stream', 900, { tokens: [] }))
  ws.serverClose(1012, 'server restarting')
  clock.advance(100)
  const ws2 = FakeWebSocket.last
  ws2.serverOpen()
  ws2.serverSend(startup({ epoch: 'epoch-b', resume: { status: 'incomplete', replayed: 0, reason: 'epoch_changed' } }))
  assert.equal(client.epoch, 'epoch-b')
  assert.equal(client.lastSeq, 0)
  assert.equal(client.stats.counters.resyncs, 1)
  const seen = []
  client.onMessage('token_stream', (m) => seen.push(m.seq))
  ws2.serverSend(msg('token_stream', 3, { tokens: [] }))
  assert.deepEqual(seen, [3])
})

for (const [code, reason] of [[1008, 'rate limit exceeded'], [1003, 'binary frames are not accepted'], [1009, 'message too big']]) {
  test(`policy close ${code} -> refused, reason kept, no reconnect`, () => {
    const { client, ws, clock, win } = connected()
    const closes = []
    client.onClose((info) => closes.push(info))
    ws.serverClose(code, reason)
    assert.equal(client.state, 'refused')
    assert.equal(client.closeInfo.code, code)
    assert.equal(client.closeInfo.reason, reason)
    assert.equal(closes.length, 1)
    clock.advance(30_000)
    win.dispatch('online')
    assert.equal(FakeWebSocket.instances.length, 1, 'no new attempt')
    assert.equal(client.state, 'refused')
    // an explicit connect() is the way out
    client.connect()
    assert.equal(FakeWebSocket.instances.length, 2)
    assert.equal(client.state, 'connecting')
  })
}

for (const code of [1001, 1006, 1011, 1012, 1013]) {
  test(`close ${code} -> reconnecting`, () => {
    const { client, ws, clock } = connected()
    ws.serverClose(code, 'x')
    assert.equal(client.state, 'reconnecting')
    clock.advance(100)
    assert.equal(FakeWebSocket.instances.length, 2)
  })
}

test('a 1000 close the user did not ask for -> reconnecting (PROTOCOL.md §10.1)', () => {
  const { client, ws, clock } = connected()
  ws.serverClose(1000, 'bye')
  assert.equal(client.state, 'reconnecting')
  clock.advance(200)
  assert.equal(FakeWebSocket.instances.length, 2)
})

test('retries back off exponentially up to the 1 s cap while the server is down', () => {
  const { client, ws, clock } = connected()
  ws.serverClose(1006)
  const gaps = []
  let last = clock.t
  for (let i = 0; i < 7; i++) {
    const before = FakeWebSocket.instances.length
    // step 1 ms at a time until the next attempt appears (bounded)
    for (let k = 0; k < 2000 && FakeWebSocket.instances.length === before; k++) clock.advance(1)
    assert.equal(FakeWebSocket.instances.length, before + 1)
    gaps.push(clock.t - last)
    last = clock.t
    FakeWebSocket.last.serverRefuse()
    assert.equal(client.state, 'reconnecting')
  }
  assert.deepEqual(gaps, [100, 200, 400, 800, 1000, 1000, 1000])
  assert.equal(client.stats.counters.attempts, 8)
})

test('a session that lasted stableMs resets the backoff; a short one does not', () => {
  const { client, ws, clock } = connected()
  ws.serverClose(1006)
  clock.advance(100)
  FakeWebSocket.last.serverRefuse()
  clock.advance(200)
  let cur = FakeWebSocket.last
  cur.serverOpen()
  cur.serverSend(startup())
  clock.advance(500) // short session (heartbeats not needed yet)
  cur.serverClose(1011)
  const n = FakeWebSocket.instances.length
  clock.advance(100)
  assert.equal(FakeWebSocket.instances.length, n, 'tries kept: the next delay is 400 ms, not 100')
  clock.advance(300)
  assert.equal(FakeWebSocket.instances.length, n + 1)
  cur = FakeWebSocket.last
  cur.serverOpen()
  cur.serverSend(startup())
  for (let i = 0; i < 3; i++) {
    clock.advance(1000)
    cur.serverSend(msg('heartbeat', 100 + i, { sequence: i }))
  }
  cur.serverClose(1011)
  clock.advance(100)
  assert.equal(FakeWebSocket.instances.length, n + 2, 'stable session: back to 100 ms')
  void client
})

test('the online event retries at once', () => {
  const { client, ws, clock, win } = connected()
  ws.serverClose(1006)
  clock.advance(100)
  FakeWebSocket.last.serverRefuse()
  clock.advance(100)
  FakeWebSocket.last.serverRefuse()
  const n = FakeWebSocket.instances.length
  win.dispatch('online')
  assert.equal(FakeWebSocket.instances.length, n + 1)
  assert.equal(client.state, 'reconnecting')
  win.dispatch('online') // an attempt is in flight: no second socket
  assert.equal(FakeWebSocket.instances.length, n + 1)
})

test('no energy frame for 6 frame periods -> stalled; the next frame -> connected', () => {
  const { client, ws, clock } = connected()
  let f = 0
  const frame = () => ws.serverSend(msg('energy_update', 10 + f, { totalEnergy: 0.5 }, { frameNumber: f++, timestamp: clock.t }))
  for (let i = 0; i < 10; i++) {
    clock.advance(16)
    frame()
  }
  assert.equal(client.state, 'connected')
  clock.advance(90)
  assert.equal(client.state, 'connected', '90 ms < 6 x 16.7 ms')
  clock.advance(40)
  assert.equal(client.state, 'stalled')
  frame()
  assert.equal(client.state, 'connected')
})

test('stall period follows the energy rate', () => {
  const { client, clock } = connected({}, { energyRateHz: 10 })
  assert.equal(client.stallAfterMs, 600)
  clock.advance(550)
  assert.equal(client.state, 'connected')
  clock.advance(100)
  assert.equal(client.state, 'stalled')
})

test('no stall when energy is not subscribed', () => {
  const { client, clock } = connected({}, { subscriptions: ['experience', 'system'] })
  clock.advance(900)
  assert.equal(client.state, 'connected')
})

test('no frame at all for 3 heartbeat intervals -> closed (4000) and reconnecting', () => {
  const { client, ws, clock } = connected()
  for (let i = 0; i < 3; i++) {
    clock.advance(1000)
    ws.serverSend(msg('heartbeat', 20 + i, { sequence: i }))
  }
  clock.advance(2500)
  ws.serverSend(msg('token_stream', 22, { tokens: ['x'] })) // a duplicate, but still a frame: the link is alive
  assert.equal(FakeWebSocket.instances.length, 1)
  clock.advance(2900)
  assert.equal(ws.closedByClient, null)
  clock.advance(150)
  assert.equal(ws.closedByClient?.code, 4000)
  assert.equal(client.state, 'reconnecting')
  assert.equal(client.closeInfo.by, 'timeout')
  clock.advance(100)
  assert.equal(FakeWebSocket.instances.length, 2)
  assert.equal(new URL(FakeWebSocket.last.url).searchParams.get('lastSeq'), '22')
})

test('an attempt without startup_complete is abandoned after connectTimeoutMs', () => {
  const { client, clock } = setup({ connectTimeoutMs: 3000 })
  client.connect()
  const ws = FakeWebSocket.last
  ws.serverOpen() // accepted but silent
  clock.advance(2900)
  assert.equal(client.state, 'connecting')
  clock.advance(200)
  assert.equal(ws.closedByClient?.code, 4000)
  assert.equal(client.state, 'reconnecting')
})

test('energy is paused while the document is hidden', () => {
  const { client, ws, doc, clock } = connected()
  doc.hidden = true
  doc.dispatch('visibilitychange')
  assert.deepEqual(ws.sentMessages().map((m) => m.type), ['pause_energy'])
  assert.ok(client.energyPaused)
  clock.advance(500) // no frames, but paused: not stalled
  assert.equal(client.state, 'connected')
  doc.hidden = false
  doc.dispatch('visibilitychange')
  assert.deepEqual(ws.sentMessages().map((m) => m.type), ['pause_energy', 'resume_energy'])
  assert.equal(client.energyPaused, false)
  clock.advance(50)
  assert.equal(client.state, 'connected', 'the stall clock restarts at resume')
})

test('a page hidden at connect time pauses right after startup', () => {
  const { client, doc } = setup()
  doc.hidden = true
  client.connect()
  const ws = FakeWebSocket.last
  ws.serverOpen()
  ws.serverSend(startup())
  assert.deepEqual(ws.sentMessages().map((m) => m.type), ['pause_energy'])
})

test('disconnect closes with 1000, stops retrying, and a later connect resumes', () => {
  const { client, ws, clock, win, doc } = connected()
  ws.serverSend(msg('reward_event', 12, { title: 't', points: 1, rewardType: 'milestone' }))
  client.disconnect()
  assert.equal(ws.closedByClient.code, 1000)
  assert.equal(client.state, 'disconnected')
  assert.equal(win.listenerCount('online'), 0)
  assert.equal(doc.listenerCount('visibilitychange'), 0)
  clock.advance(10_000)
  assert.equal(FakeWebSocket.instances.length, 1)
  assert.equal(client.send({ type: 'x' }), false)
  client.connect()
  assert.equal(new URL(FakeWebSocket.last.url).searchParams.get('lastSeq'), '12')
})

test('latency and frame stats are fed from energy frames with the injected clock', () => {
  const { client, ws, clock } = connected()
  for (let i = 0; i < 60; i++) {
    clock.advance(1000 / 60)
    ws.serverSend(msg('energy_update', 100 + i, { totalEnergy: 0.5 }, { frameNumber: i === 30 ? 1000 : i, timestamp: clock.t - 1.5 }))
  }
  const snap = client.stats.snapshot(clock.t)
  assert.equal(snap.frameRate, 60)
  assert.ok(Math.abs(snap.latencyMedian - 1.5) < 1e-3)
  assert.equal(snap.latencySamples, 59, 'the first frame after startup is the cached newest frame: not sampled')
  assert.equal(snap.counters.frames, 60)
  assert.equal(snap.counters.frameGaps, 1, 'the jump to 1000; the jump back is a new baseline')
  assert.equal(client.lastEnergy.totalEnergy, 0.5)
})

test('bad frames are reported, not fatal; a throwing handler does not break the client', () => {
  const { client, ws } = connected()
  const errors = []
  client.onError((e) => errors.push(e))
  client.onMessage('token_stream', () => {
    throw new Error('boom')
  })
  const origError = console.error
  console.error = () => {}
  try {
    ws.serverSend('{not json')
    ws.serverSend(msg('token_stream', 5, { tokens: ['a'] }))
    ws.serverSend(msg('token_stream', 6, { tokens: ['b'] }))
  } finally {
    console.error = origError
  }
  assert.equal(errors.length, 1)
  assert.equal(client.lastSeq, 6)
  assert.equal(client.state, 'connected')
})

test('send serialises JSON only on an open socket', () => {
  const { client } = setup()
  assert.equal(client.send({ type: 'subscribe', payload: { channels: ['energy'] } }), false)
  client.connect()
  assert.equal(client.send({ type: 'x' }), false, 'still connecting')
  FakeWebSocket.last.serverOpen()
  assert.equal(client.send({ type: 'subscribe', payload: { channels: ['energy'] } }), true)
  assert.deepEqual(FakeWebSocket.last.sentMessages(), [{ type: 'subscribe', payload: { channels: ['energy'] } }])
})
