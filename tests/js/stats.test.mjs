import { test } from 'node:test'
import assert from 'node:assert/strict'
import { PrecisionClock, Stats, TimeSeries, percentile, quantile } from '../../static/wirthforge-client.js'

const T0 = 1_764_000_000_000

const close = (a, b, eps = 1e-3) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`)

test('percentile is nearest-rank (PROTOCOL.md §10.6): always an observed value', () => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1)
  assert.equal(percentile(xs, 0.5), 50)
  assert.equal(percentile(xs, 0.99), 99)
  assert.equal(percentile([3], 0.99), 3)
  assert.equal(percentile([1, 2, 3], 0.5), 2)
  assert.equal(percentile([1, 2, 3, 4], 0.5), 2)
  assert.ok(Number.isNaN(percentile([], 0.5)))
  assert.equal(quantile, percentile, 'quantile is another name of the same function')
})

test('TimeSeries keeps the newest points in order and prunes by time', () => {
  const s = new TimeSeries(3)
  for (let i = 1; i <= 5; i++) s.push(i, i * 10)
  assert.deepEqual(s.valuesArray(), [30, 40, 50])
  assert.equal(s.lastTime(), 5)
  s.prune(4.5)
  assert.deepEqual(s.valuesArray(), [50])
  s.clear()
  assert.equal(s.length, 0)
  assert.equal(s.lastValue(), undefined)
})

test('latency median and P99 over the window', () => {
  const st = new Stats({ latencyWindowMs: 10_000 })
  // 100 samples: latencies 0.1 .. 10.0 ms, shuffled arrival order
  const lat = Array.from({ length: 100 }, (_, i) => (i + 1) / 10)
  const order = lat.map((_, i) => (i * 37) % 100)
  order.forEach((k, i) => {
    const now = T0 + i * 10
    close(st.recordLatency(now, now - lat[k]), lat[k])
  })
  const now = T0 + 1000
  close(st.latencyMedian(now), 5.0)
  close(st.latencyP99(now), 9.9)
  const snap = st.snapshot(now)
  assert.equal(snap.latencySamples, 100)
  close(snap.latencyP99, 9.9)
})

test('latency samples leave the window after latencyWindowMs', () => {
  const st = new Stats({ latencyWindowMs: 1000 })
  st.recordLatency(T0, T0 - 50) // 50 ms, old
  st.recordLatency(T0 + 900, T0 + 899) // 1 ms
  st.recordLatency(T0 + 950, T0 + 948) // 2 ms
  close(st.latencyP99(T0 + 999), 50)
  close(st.latencyMedian(T0 + 1500), 1)
  assert.ok(Number.isNaN(st.latencyMedian(T0 + 5000)))
  assert.ok(Number.isNaN(st.recordLatency(T0, undefined)), 'missing timestamp is no sample')
})

test('frame rate counts energy frames of the last second', () => {
  const st = new Stats()
  for (let i = 0; i < 120; i++) st.recordFrame(T0 + (i * 1000) / 60, i)
  const last = T0 + (119 * 1000) / 60
  assert.equal(st.frameRate(last), 60)
  assert.equal(st.frameRate(last + 500), 30)
  assert.equal(st.frameRate(last + 1001), 0)
  assert.equal(st.counters.frames, 120)
  assert.equal(st.counters.frameGaps, 0)
})

test('frame gaps by frameNumber at full rate', () => {
  const st = new Stats()
  st.setExpectedStep(60, 60)
  for (const n of [1, 2, 3]) assert.equal(st.recordFrame(T0, n), 0)
  assert.equal(st.recordFrame(T0, 5), 1) // 4 missing
  assert.equal(st.recordFrame(T0, 10), 4) // 6..9 missing
  assert.equal(st.recordFrame(T0, 11), 0)
  assert.equal(st.counters.frameGaps, 2)
  assert.equal(st.counters.framesMissed, 5)
})

test('frame gaps with decimation use frameRate / energyRate as the step', () => {
  const st = new Stats()
  st.setExpectedStep(60, 30) // step 2
  for (const n of [0, 2, 4, 6]) st.recordFrame(T0, n)
  assert.equal(st.counters.frameGaps, 0)
  assert.equal(st.recordFrame(T0, 10), 1) // frame 8 missing
  assert.equal(st.counters.frameGaps, 1)

  const st25 = new Stats()
  st25.setExpectedStep(60, 25) // step 2.4: the newest frame gives jumps of 2 and 3
  for (let k = 0; k < 50; k++) st25.recordFrame(T0, Math.ceil(k * 2.4))
  assert.equal(st25.counters.frameGaps, 0)
  st25.recordFrame(T0, Math.ceil(49 * 2.4) + 5) // about two frames lost
  assert.equal(st25.counters.frameGaps, 1)
  assert.equal(st25.counters.framesMissed, 1)
})

test('resetFrames and a restarted frame counter do not count as gaps', () => {
  const st = new Stats()
  st.recordFrame(T0, 100)
  st.resetFrames()
  st.recordFrame(T0, 500)
  st.recordFrame(T0, 3) // server restarted
  st.recordFrame(T0, 4)
  assert.equal(st.counters.frameGaps, 0)
})

test('tick samples every sampleEveryMs and keeps 60 s of history', () => {
  const st = new Stats({ sampleEveryMs: 250, historyMs: 60_000 })
  let frame = 0
  let taken = 0
  for (let t = 0; t <= 90_000; t += 50) {
    // 20 Hz stream with 1 ms latency
    st.recordFrame(T0 + t, frame++)
    st.recordLatency(T0 + t, T0 + t - 1)
    if (st.tick(T0 + t)) taken++
  }
  assert.equal(taken, 90_000 / 250 + 1)
  assert.ok(st.rateHistory.length <= 241 && st.rateHistory.length >= 239, String(st.rateHistory.length))
  assert.ok(st.rateHistory.times[st.rateHistory.start] >= T0 + 30_000)
  assert.equal(st.rateHistory.lastValue(), 20)
  close(st.medianHistory.lastValue(), 1)
  close(st.p99History.lastValue(), 1)
  assert.ok(st.latencyHistory.length <= 60_000 / 50 + 1)
  assert.equal(st.tick(T0 + 90_010), false)
})

test('PrecisionClock gives sub-ms epoch time and re-anchors on a wall clock step', () => {
  let mono = 1000.25
  let wall = T0 + 1000
  const clock = new PrecisionClock({ performance: { timeOrigin: T0, now: () => mono }, dateNow: () => wall })
  close(clock.now(), T0 + 1000.25)
  mono += 0.5
  close(clock.now(), T0 + 1000.75)
  // the wall clock is stepped forward by 5 s (NTP): follow it
  wall += 5000
  mono += 0.1
  close(clock.now(), T0 + 6000.5)
  mono += 0.3
  close(clock.now(), T0 + 6000.8)
  // no performance: Date.now()
  const plain = new PrecisionClock({ performance: /** @type {any} */ (null), dateNow: () => 42 })
  assert.equal(plain.now(), 42)
})
