// @ts-check
/**
 * The wire contract of protocol `wirthforge.1.1` (docs/PROTOCOL.md) as the
 * browser sees it: the subprotocol name, the close codes that matter, the
 * connection states, the message envelope, and the default endpoint. Kept
 * apart from the connection so the UI and tests can use the names and labels
 * without a socket.
 *
 * @example
 * import { POLICY_CLOSE_CODES, defaultUrl, describeCloseCode } from './protocol.js'
 *
 * describeCloseCode(1008)           // 'policy violation'
 * POLICY_CLOSE_CODES.includes(1009) // true: do not reconnect
 * defaultUrl({ protocol: 'https:', host: 'example.org' }) // 'wss://example.org/ws'
 *
 * @module wirthforge/protocol
 */

/** The subprotocol this client speaks. */
export const PROTOCOL = 'wirthforge.1.1'

/**
 * Close codes after which the client must not reconnect on its own
 * (PROTOCOL.md §7): 1003 binary frame, 1008 policy (rate limit, invalid
 * messages), 1009 message too big.
 */
export const POLICY_CLOSE_CODES = Object.freeze([1002, 1003, 1007, 1008, 1009])

/** Close code the client uses when it abandons a dead or hung connection. */
export const CLIENT_TIMEOUT_CLOSE_CODE = 4000

/**
 * Connection states.
 *
 * - `disconnected`: not connected and not trying (initial state, or after
 *   `WirthforgeClient#disconnect()`; a 1000 close by the server reconnects,
 *   PROTOCOL.md §10.1);
 * - `connecting`: first attempt after `connect()`, until `startup_complete`;
 * - `connected`: `startup_complete` received, energy frames arriving (or not expected);
 * - `stalled`: connected, but no energy frame for `stallFrames` frame periods;
 * - `reconnecting`: the connection was lost; waiting for or making a retry;
 * - `refused`: the server closed with a policy code (1002/1003/1007/1008/1009); no retry (§10.1).
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
