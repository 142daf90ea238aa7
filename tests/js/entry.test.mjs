import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as entry from '../../static/wirthforge-client.js'
import * as backoff from '../../static/wirthforge/backoff.js'
import * as client from '../../static/wirthforge/client.js'
import * as clock from '../../static/wirthforge/clock.js'
import * as protocol from '../../static/wirthforge/protocol.js'
import * as rules from '../../static/wirthforge/rules.js'
import * as stats from '../../static/wirthforge/stats.js'
import * as timer from '../../static/wirthforge/timer.js'

// The entry point the page imports re-exports each module's public API, the
// same objects (not copies). `defaultTimers` is internal to the package.
const INTERNAL = new Set(['defaultTimers', 'DEFAULT_HEARTBEAT_INTERVAL_MS'])

test('the entry point re-exports every public export of the modules', () => {
  for (const mod of [backoff, client, clock, protocol, rules, stats, timer]) {
    for (const [name, value] of Object.entries(mod)) {
      if (INTERNAL.has(name)) continue
      assert.ok(name in entry, `${name} is not re-exported`)
      assert.equal(entry[name], value, `${name} is a different object`)
    }
  }
})

test('the entry point exports the public API it always had, plus the §10 rules', () => {
  assert.deepEqual(Object.keys(entry).sort(), [
    'Backoff', 'CLIENT_TIMEOUT_CLOSE_CODE', 'CONNECT_TIMEOUT_MS', 'DEAD_LINK_INTERVALS', 'POLICY_CLOSE_CODES',
    'PROTOCOL', 'PrecisionClock', 'RECONNECT_BASE_MS', 'RECONNECT_CAP_MS', 'STABLE_SESSION_MS', 'STATES', 'Stats',
    'TimeSeries', 'Timer', 'WirthforgeClient', 'closeAction', 'deadAfterMs', 'defaultUrl', 'describeCloseCode',
    'framesMissed', 'isFrameGap', 'percentile', 'quantile', 'sessionWasStable',
  ])
})
