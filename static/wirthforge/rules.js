// @ts-check
/**
 * The client rules of docs/PROTOCOL.md §10, as constants and pure
 * functions: reconnect or stop per close code, backoff bounds, connect
 * timeout, dead link, frame gaps. Every such decision of the browser client
 * is made here and nowhere else, so that the conformance vectors under
 * `tests/vectors/` hold it to the document. The Python client has the same
 * rules in `wirthforge_ws/client/rules.py`; change both or neither.
 *
 * @module wirthforge/rules
 */

import { POLICY_CLOSE_CODES } from './protocol.js'

/** First backoff ceiling (ms): a single drop is retried within 100 ms. */
export const RECONNECT_BASE_MS = 100
/** Largest backoff ceiling (ms): a client is back about 1 s after its server is. */
export const RECONNECT_CAP_MS = 1000
/** A session that lasted this long (ms) resets the backoff when it ends. */
export const STABLE_SESSION_MS = 2000
/** An attempt that has not produced startup_complete by then (ms) is abandoned. */
export const CONNECT_TIMEOUT_MS = 5000
/** Heartbeat intervals without any frame after which the link is dead. */
export const DEAD_LINK_INTERVALS = 3
/** The heartbeat interval (ms) assumed when startup_complete announces none. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1000

/**
 * What to do after the server (or the network) closed with `code`: stop
 * only on a policy close (1002, 1003, 1007, 1008, 1009); everything else, 1000 and 1001
 * included, reconnects with backoff.
 * @param {number} code
 * @returns {'reconnect'|'stop'}
 */
export function closeAction(code) {
  return POLICY_CLOSE_CODES.includes(code) ? 'stop' : 'reconnect'
}

/**
 * Whether a session that lasted `durationMs` resets the backoff when it ends.
 * @param {number} durationMs
 * @returns {boolean}
 */
export function sessionWasStable(durationMs) {
  return durationMs >= STABLE_SESSION_MS
}

/**
 * Milliseconds without any inbound frame after which an open session is dead.
 * @param {number} [heartbeatIntervalMs] from startup_complete
 * @returns {number}
 */
export function deadAfterMs(heartbeatIntervalMs) {
  const interval = heartbeatIntervalMs && heartbeatIntervalMs > 0 ? heartbeatIntervalMs : DEFAULT_HEARTBEAT_INTERVAL_MS
  return DEAD_LINK_INTERVALS * interval
}

/**
 * Whether a frameNumber step between consecutive energy_update frames is a
 * gap: larger than `ceil(e)`, the largest step decimation produces
 * (`e = frameRate / energyRate`, 1 at full rate).
 * @param {number} step
 * @param {number} expectedStep
 * @returns {boolean}
 */
export function isFrameGap(step, expectedStep) {
  // The tolerance keeps 60 / 30.000000001 from turning 2 into 3.
  return step > Math.ceil(Math.max(expectedStep, 1) - 1e-9)
}

/**
 * Frames (samples, when decimating) a gap of `step` lost:
 * `max(1, floor(step / e + 0.5) - 1)`.
 * @param {number} step
 * @param {number} expectedStep
 * @returns {number}
 */
export function framesMissed(step, expectedStep) {
  return Math.max(1, Math.floor(step / Math.max(expectedStep, 1) + 0.5) - 1)
}
