import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Backoff, Timer } from '../../static/wirthforge-client.js'
import { FakeClock, seededRandom } from './fakes.mjs'

test('ceiling doubles from the base and stops at the cap', () => {
  const b = new Backoff({ baseMs: 100, capMs: 1000 })
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((t) => b.ceiling(t)), [100, 200, 400, 800, 1000, 1000, 1000])
  assert.equal(b.ceiling(5000), 1000) // 2 ** 5000 is Infinity
})

test('defaults are base 100 ms and cap 1 s', () => {
  const b = new Backoff()
  assert.equal(b.baseMs, 100)
  assert.equal(b.capMs, 1000)
})

test('delay is the random fraction of the ceiling (full jitter)', () => {
  let r = 0
  const b = new Backoff({ random: () => r })
  assert.equal(b.delay(0), 0)
  r = 0.5
  assert.equal(b.delay(0), 50)
  assert.equal(b.delay(2), 200)
  assert.equal(b.delay(10), 500)
  r = 0.999999
  assert.ok(b.delay(3) < 800 && b.delay(3) > 799)
  r = 1.5 // a broken source is clamped, never beyond the ceiling
  assert.equal(b.delay(1), 200)
  r = -1
  assert.equal(b.delay(1), 0)
})

test('delays stay within [0, min(cap, base * 2^tries)] for many random draws', () => {
  const b = new Backoff({ baseMs: 100, capMs: 1000, random: seededRandom(42) })
  let sum = 0
  let n = 0
  for (let tries = 0; tries < 40; tries++) {
    const ceiling = Math.min(1000, 100 * 2 ** tries)
    for (let i = 0; i < 500; i++) {
      const d = b.delay(tries)
      assert.ok(d >= 0 && d <= ceiling, `tries=${tries} delay=${d}`)
      if (tries >= 4) {
        sum += d
        n++
      }
    }
  }
  // Capped phase: mean near cap / 2, i.e. about two attempts per second while the server is down.
  const mean = sum / n
  assert.ok(mean > 450 && mean < 550, `mean ${mean}`)
})

test('Timer counts tries and feeds them to timerCalc; reset starts over', () => {
  const clock = new FakeClock()
  const seen = []
  let fired = 0
  const timer = new Timer(() => fired++, (tries) => (seen.push(tries), 100 * (tries + 1)), clock.timers)
  assert.equal(timer.scheduleTimeout(), 100)
  assert.ok(timer.pending)
  clock.advance(99)
  assert.equal(fired, 0)
  clock.advance(1)
  assert.equal(fired, 1)
  assert.equal(timer.tries, 1)
  assert.equal(timer.pending, false)
  assert.equal(timer.scheduleTimeout(), 200)
  clock.advance(200)
  assert.equal(fired, 2)
  timer.scheduleTimeout()
  timer.reset()
  clock.advance(10_000)
  assert.equal(fired, 2, 'reset cancels the pending run')
  assert.equal(timer.tries, 0)
  assert.deepEqual(seen, [0, 1, 2])
})

test('scheduling again replaces the pending run', () => {
  const clock = new FakeClock()
  let fired = 0
  const timer = new Timer(() => fired++, () => 100, clock.timers)
  timer.scheduleTimeout()
  clock.advance(50)
  timer.scheduleTimeout()
  clock.advance(60)
  assert.equal(fired, 0)
  clock.advance(40)
  assert.equal(fired, 1)
  assert.equal(clock.pendingTimeouts(), 0)
})
