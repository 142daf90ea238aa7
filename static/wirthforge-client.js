// @ts-check
/**
 * WIRTHFORGE real-time client: the browser side of protocol `wirthforge.1.1`
 * (docs/PROTOCOL.md). ES modules with no dependencies and no build step; the
 * JSDoc types are checked by `tsc --checkJs`.
 *
 * This file is the entry point: it only re-exports. Each piece lives in a
 * module of its own under `wirthforge/`, usable on its own:
 *
 * - `wirthforge/protocol.js`: {@link PROTOCOL}, the close codes, the
 *   connection {@link STATES}, the message types, {@link defaultUrl} and
 *   {@link describeCloseCode};
 * - `wirthforge/rules.js`: the client rules of PROTOCOL.md §10 (close codes,
 *   backoff bounds, dead link, frame gaps): {@link closeAction},
 *   {@link deadAfterMs}, {@link isFrameGap}, {@link framesMissed}, ...;
 * - `wirthforge/backoff.js`: {@link Backoff}, exponential backoff with full
 *   jitter;
 * - `wirthforge/timer.js`: {@link Timer}, the retry timer that waits the
 *   backoff delays;
 * - `wirthforge/clock.js`: {@link PrecisionClock}, sub-millisecond Unix epoch
 *   time;
 * - `wirthforge/stats.js`: {@link Stats}, rolling latency (median, P99),
 *   frame rate, frame gaps and counters, plus 60 s series for plotting
 *   ({@link TimeSeries}, {@link percentile}, nearest-rank);
 * - `wirthforge/client.js`: {@link WirthforgeClient}, the connection, with
 *   resume, dedupe, heartbeat, stall and dead-connection detection,
 *   visibility-driven pause and policy-close handling.
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

export {
  CLIENT_TIMEOUT_CLOSE_CODE,
  POLICY_CLOSE_CODES,
  PROTOCOL,
  STATES,
  defaultUrl,
  describeCloseCode,
} from './wirthforge/protocol.js'
export { Backoff } from './wirthforge/backoff.js'
export { Timer } from './wirthforge/timer.js'
export { PrecisionClock } from './wirthforge/clock.js'
export { Stats, TimeSeries, percentile, quantile } from './wirthforge/stats.js'
export {
  CONNECT_TIMEOUT_MS,
  DEAD_LINK_INTERVALS,
  RECONNECT_BASE_MS,
  RECONNECT_CAP_MS,
  STABLE_SESSION_MS,
  closeAction,
  deadAfterMs,
  framesMissed,
  isFrameGap,
  sessionWasStable,
} from './wirthforge/rules.js'
export { WirthforgeClient } from './wirthforge/client.js'

// The public types, under the names they always had here.
/** @typedef {import('./wirthforge/protocol.js').ConnectionState} ConnectionState */
/** @typedef {import('./wirthforge/protocol.js').Envelope} Envelope */
/** @typedef {import('./wirthforge/protocol.js').ResumeStatus} ResumeStatus */
/** @typedef {import('./wirthforge/timer.js').TimerFns} TimerFns */
/** @typedef {import('./wirthforge/stats.js').Counters} Counters */
/** @typedef {import('./wirthforge/stats.js').StatsSnapshot} StatsSnapshot */
/** @typedef {import('./wirthforge/client.js').SocketLike} SocketLike */
/** @typedef {import('./wirthforge/client.js').SocketConstructor} SocketConstructor */
/** @typedef {import('./wirthforge/client.js').CloseInfo} CloseInfo */
/** @typedef {import('./wirthforge/client.js').EventTargetLike} EventTargetLike */
/** @typedef {import('./wirthforge/client.js').ClientOptions} ClientOptions */
