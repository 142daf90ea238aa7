// @ts-check
/**
 * The page (client-example.html): the energy view at the top
 * (`energy-panel.js`) and the transport monitor below, a thin view over
 * `wirthforge-client.js`. Message handlers only update state; everything is
 * drawn in one requestAnimationFrame loop (canvases at half the display rate,
 * numbers at 4 Hz so they stay readable). All server text goes into text nodes.
 *
 * The client instance is `window.wirthforge`.
 */
import { WirthforgeClient, describeCloseCode } from '../wirthforge-client.js'
import { COLORS, OnScreen, drawPlot, fmt, maxSince } from './plot.js'
import { createEnergyView, drawEnergy, energySeriesOf, num, pruneEnergy, recordEnergy } from './energy-gauge.js'
import { installEnergyPanel } from './energy-panel.js'
import { installPromptBox } from './prompt.js'

/** @typedef {import('../wirthforge-client.js').ConnectionState} ConnectionState */
/** @typedef {import('../wirthforge-client.js').Envelope} Envelope */
/** @typedef {import('../wirthforge-client.js').CloseInfo} CloseInfo */

const PLOT_SPAN_MS = 60_000
const READOUT_EVERY_MS = 250
const TEXT_FLUSH_MS = 500 // token and log text, when no animation frame runs
const MAX_LOG_ROWS = 200

// -- DOM ---------------------------------------------------------------------

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function byTestId(id) {
  const el = document.querySelector(`[data-testid="${id}"]`)
  if (!(el instanceof HTMLElement)) throw new Error(`missing [data-testid=${id}]`)
  return el
}

/**
 * @param {string} id
 * @returns {HTMLCanvasElement}
 */
function canvasByTestId(id) {
  const el = byTestId(id)
  if (!(el instanceof HTMLCanvasElement)) throw new Error(`[data-testid=${id}] is not a canvas`)
  return el
}

const ui = {
  status: byTestId('connection-status'),
  pill: byTestId('connection-pill'),
  toggle: byTestId('connect-toggle'),
  endpoint: byTestId('endpoint'),
  meta: byTestId('session-meta'),
  banner: byTestId('refused-banner'),
  closeReason: byTestId('close-reason'),
  reconnectButton: byTestId('reconnect-button'),
  frameRate: byTestId('frame-rate'),
  frameRateHint: byTestId('frame-rate-hint'),
  latencyMedian: byTestId('latency-median'),
  latencyP99: byTestId('latency-p99'),
  latencySamples: byTestId('latency-samples'),
  frames: byTestId('frames'),
  messages: byTestId('messages'),
  frameGaps: byTestId('frame-gaps'),
  framesMissed: byTestId('frames-missed'),
  reconnects: byTestId('reconnects'),
  attempts: byTestId('attempts'),
  recovered: byTestId('recovered'),
  duplicates: byTestId('duplicates'),
  tokens: byTestId('tokens'),
  eventCounts: byTestId('event-counts'),
  plotRate: canvasByTestId('plot-rate'),
  plotLatency: canvasByTestId('plot-latency'),
  energyView: canvasByTestId('energy-view'),
  energyGeneration: byTestId('energy-generation'),
  energyAttention: byTestId('energy-attention'),
  energyReasoning: byTestId('energy-reasoning'),
  energyDelta: byTestId('energy-delta'),
  energyTokens: byTestId('energy-tokens'),
  energyProcessing: byTestId('energy-processing'),
  energyField: byTestId('energy-field'),
  tokenSession: byTestId('token-session'),
  eventLog: byTestId('event-log'),
  lastClose: byTestId('last-close'),
}

/**
 * Sets textContent only when it changed (no layout churn at 60 Hz).
 * @param {HTMLElement} el
 * @param {string} text
 */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text
}

/** @param {number} n */
function count(n) {
  return n.toLocaleString('en-US')
}

/**
 * The server's close reason, or a label for the code when it sent none.
 * @param {CloseInfo} info
 */
function closeReason(info) {
  return info.reason || describeCloseCode(info.code)
}

/** @param {number} epochMs */
function clockTime(epochMs) {
  const d = new Date(epochMs)
  const p = (/** @type {number} */ n, w = 2) => String(n).padStart(w, '0')
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`
}

// -- client ------------------------------------------------------------------

const params = new URLSearchParams(location.search)
const channelsParam = params.get('channels')
const energyRateParam = Number(params.get('energyRate'))
const client = new WirthforgeClient({
  channels: channelsParam ? channelsParam.split(',').map((s) => s.trim()).filter(Boolean) : undefined,
  energyRate: Number.isFinite(energyRateParam) && energyRateParam > 0 ? energyRateParam : undefined,
})
Object.assign(window, { wirthforge: client })
installPromptBox(client, byTestId('prompt-box'))
const panel = installEnergyPanel(client, params)

// -- view state (written by message handlers, read by the render loop) ---------

const energy = createEnergyView()

let tokenSession = ''

/** @typedef {{at: number, kind: string, text: string}} LogEntry */
/** @type {LogEntry[]} */
let pendingLog = []

/** State changes of the last minute, for shading the plots. */
/** @type {{t: number, state: ConnectionState}[]} */
const timeline = [{ t: client.now(), state: client.state }]

/**
 * @param {string} kind council | reward | error | warning | conn
 * @param {string} text
 */
function log(kind, text) {
  pendingLog.push({ at: Date.now(), kind, text })
  if (pendingLog.length > MAX_LOG_ROWS) pendingLog = pendingLog.slice(-MAX_LOG_ROWS)
}

/** @param {unknown} v */
function list(v) {
  return Array.isArray(v) ? v.map(String).join(' × ') : ''
}

client.onState((state, prev) => {
  timeline.push({ t: client.now(), state })
  const info = client.closeInfo
  if (state === 'reconnecting' && info && prev !== 'reconnecting') {
    log('conn', `connection lost: ${info.code} ${closeReason(info)}; reconnecting`)
  } else if (state === 'refused' && info) {
    log('error', `refused by the server: ${info.code} ${closeReason(info)}; not reconnecting`)
  } else if (state === 'disconnected' && prev !== 'disconnected') {
    log('conn', info?.by === 'client' ? 'disconnected' : `closed by the server: ${info?.code ?? ''} ${info?.reason ?? ''}`)
  } else if (state === 'stalled') {
    log('warning', `energy stream stalled (no frame for ${Math.round(client.stallAfterMs)} ms)`)
  }
})

client.onStartup((p) => {
  const r = client.lastResume
  if (r && r.status === 'complete') log('conn', `resumed: ${r.replayed ?? 0} messages replayed`)
  else if (r && r.status === 'incomplete') log('warning', `resume incomplete (${r.reason ?? 'unknown'}): ${r.replayed ?? 0} replayed; state re-synchronised`)
  else log('conn', `connected to ${p.model ?? 'server'} (${p.connectionId ?? '?'})`)
  if (r && r.status === 'incomplete' && r.reason === 'epoch_changed') {
    for (const s of energySeriesOf(energy)) s.clear()
  }
})

client.onMessage('energy_update', (m) => recordEnergy(energy, client.now(), m.payload || {}))

client.onMessage('energy_field', (m) => {
  energy.field = m.payload || null
})

client.onMessage('token_stream', (m) => {
  const p = m.payload || {}
  if (typeof p.sessionId === 'string') tokenSession = p.sessionId
})

client.onMessage('interference_event', (m) => {
  const p = m.payload || {}
  log('council', `${p.patternType ?? '?'} interference · ${list(p.models)} · intensity ${fmt(num(p.intensity), 2)} · coherence ${fmt(num(p.coherenceScore), 2)}`)
})

client.onMessage('resonance_event', (m) => {
  const p = m.payload || {}
  log('council', `${p.resonanceType ?? '?'} resonance · ${fmt(num(p.frequency), 1)} Hz · amplitude ${fmt(num(p.amplitude), 2)} · ${list(p.participants)}`)
})

client.onMessage('reward_event', (m) => {
  const p = m.payload || {}
  const level = typeof p.level === 'number' ? ` · level ${p.level}` : ''
  const desc = typeof p.description === 'string' && p.description ? ` — ${p.description}` : ''
  log('reward', `+${p.points ?? 0} ${p.rewardType ?? ''}: ${p.title ?? ''}${level}${desc}`)
})

client.onMessage('error_event', (m) => {
  const p = m.payload || {}
  const kind = p.severity === 'info' || p.severity === 'warning' ? 'warning' : 'error'
  log(kind, `[${p.severity ?? 'error'}] ${p.code ?? 'ERROR'}: ${p.message ?? ''}`)
})

// -- controls ------------------------------------------------------------------

/**
 * Whether the client is idle (neither connected nor trying): then the toggle
 * connects, otherwise it disconnects.
 * @param {ConnectionState} state
 */
function isIdle(state) {
  return state === 'disconnected' || state === 'refused'
}

ui.toggle.addEventListener('click', () => {
  if (isIdle(client.state)) client.connect()
  else client.disconnect()
})
ui.reconnectButton.addEventListener('click', () => client.connect())
setText(ui.endpoint, client.url.replace(/^wss?:\/\//, ''))

function drawRate(/** @type {number} */ now) {
  const st = client.stats
  const target = client.session ? client.energyRateHz : 60
  const top = Math.max(target * 1.25, maxSince(st.rateHistory, now - PLOT_SPAN_MS) * 1.1, 10)
  drawPlot(ui.plotRate, {
    now,
    spanMs: PLOT_SPAN_MS,
    yMax: top,
    unit: 'fps',
    series: [{ data: st.rateHistory, color: COLORS.rate, width: 2, breakMs: 1000 }],
    refs: [{ y: target, color: COLORS.target, label: `${fmt(target, 0)} fps` }],
    timeline,
  })
}

function drawLatency(/** @type {number} */ now) {
  const st = client.stats
  const p99max = maxSince(st.p99History, now - PLOT_SPAN_MS)
  const top = Math.max(1, Number.isFinite(p99max) ? p99max * 1.35 : 1)
  drawPlot(ui.plotLatency, {
    now,
    spanMs: PLOT_SPAN_MS,
    yMax: top,
    unit: 'ms',
    series: [
      { data: st.latencyHistory, color: COLORS.raw, width: 1, breakMs: 500 },
      { data: st.medianHistory, color: COLORS.median, width: 2, breakMs: 1000 },
      { data: st.p99History, color: COLORS.p99, width: 2, breakMs: 1000 },
    ],
    timeline,
  })
}

// -- text outputs ----------------------------------------------------------------

function flushLog() {
  if (!pendingLog.length) return
  const ol = ui.eventLog
  for (const entry of pendingLog) {
    const li = document.createElement('li')
    li.className = entry.kind
    const time = document.createElement('time')
    time.textContent = clockTime(entry.at)
    const tag = document.createElement('span')
    tag.className = 'tag'
    tag.textContent = entry.kind === 'conn' ? 'link' : entry.kind
    const text = document.createElement('span')
    text.className = 'text'
    text.textContent = entry.text
    li.append(time, tag, text)
    ol.insertBefore(li, ol.firstChild)
  }
  pendingLog = []
  while (ol.childElementCount > MAX_LOG_ROWS && ol.lastElementChild) ol.lastElementChild.remove()
}

// -- readouts (4 Hz) -------------------------------------------------------------

// -- a page not served by the WIRTHFORGE server -----------------------------------

/**
 * The notice at the top of the page (client-example.html): visible when the
 * page is opened as a file (this module then never runs). Served over HTTP it
 * starts hidden; it is shown again when the first attempts all failed and
 * this origin's `/health` is not a WIRTHFORGE server's (the page came from
 * another web server, or the server is not running), and hidden once a
 * session exists.
 */
const servedElsewhere = byTestId('open-served-page')
let originChecked = false

function checkOrigin() {
  const c = client.stats.counters
  if (c.connects > 0) {
    if (!servedElsewhere.hidden) servedElsewhere.hidden = true
    return
  }
  if (originChecked || c.attempts < 3) return
  originChecked = true
  fetch('/health', { cache: 'no-store' })
    .then((r) => (r.ok ? r.json() : null))
    .catch(() => null)
    .then((health) => {
      const isServer = health && typeof health === 'object' && 'frameLoop' in health
      if (!isServer && client.stats.counters.connects === 0) servedElsewhere.hidden = false
    })
}

/** State readout: every frame, so a short state is never missed. */
function renderState() {
  const s = client.state
  setText(ui.status, s)
  if (ui.pill.dataset.state !== s) ui.pill.dataset.state = s
  setText(ui.toggle, isIdle(s) ? 'Connect' : 'Disconnect')
  const refused = s === 'refused'
  if (ui.banner.hidden === refused) ui.banner.hidden = !refused
  const info = client.closeInfo
  if (refused && info) setText(ui.closeReason, `${closeReason(info)} (${info.code})`)
}

/** @param {number} now */
function renderReadouts(now) {
  const snap = client.stats.snapshot(now)
  const c = snap.counters
  setText(ui.frameRate, fmt(snap.frameRate, 0))
  setText(ui.frameRateHint, client.session ? `last 1 s · target ${fmt(client.energyRateHz, 0)} fps` : 'energy frames, last 1 s')
  setText(ui.latencyMedian, fmt(snap.latencyMedian, 2))
  setText(ui.latencyP99, fmt(snap.latencyP99, 2))
  setText(ui.latencySamples, `${count(snap.latencySamples)} samples`)
  setText(ui.frames, count(c.frames))
  setText(ui.messages, `${count(c.messages)} messages`)
  setText(ui.frameGaps, count(c.frameGaps))
  setText(ui.framesMissed, `${count(c.framesMissed)} frame${c.framesMissed === 1 ? '' : 's'} missed`)
  setText(ui.reconnects, count(c.reconnects))
  setText(ui.attempts, `${count(c.attempts)} attempt${c.attempts === 1 ? '' : 's'}`)
  setText(ui.recovered, count(c.recovered))
  setText(ui.duplicates, `replayed · ${count(c.duplicates)} duplicates`)
  setText(ui.tokens, count(c.tokens))
  setText(ui.eventCounts, `${count(c.council)} council · ${count(c.rewards)} reward · ${count(c.errors)} error`)

  const p = client.session
  if (p) {
    const epoch = typeof client.epoch === 'string' ? client.epoch : '?'
    setText(
      ui.meta,
      [
        `${p.model ?? '?'} · ${p.tier ?? '?'} · v${p.version ?? '?'}`,
        `protocol ${p.protocol ?? '1.1'}`,
        `epoch ${epoch}`,
        `conn ${p.connectionId ?? '?'}`,
        `frames ${fmt(client.frameRate, 0)} Hz · energy ${fmt(client.energyRateHz, 0)} Hz${client.energyPaused ? ' (paused)' : ''}`,
        `heartbeat ${fmt(client.heartbeatIntervalMs / 1000, 1)} s`,
        `seq ${client.lastSeq}`,
      ].join('   ·   '),
    )
  }
  setText(ui.tokenSession, tokenSession ? `session ${tokenSession}` : '')

  const e = energy.last
  if (e) {
    const d = e.energyDistribution || {}
    setText(ui.energyGeneration, fmt(num(d.generation), 3))
    setText(ui.energyAttention, fmt(num(d.attention), 3))
    setText(ui.energyReasoning, fmt(num(d.reasoning), 3))
    const delta = num(e.deltaEnergy)
    setText(ui.energyDelta, Number.isFinite(delta) ? `${delta >= 0 ? '+' : '−'}${Math.abs(delta).toFixed(3)}` : '–')
    setText(ui.energyTokens, fmt(num(e.tokensGenerated), 0))
    setText(ui.energyProcessing, `${fmt(num(e.processingTime), 2)} ms`)
  }
  const f = energy.field
  if (f) setText(ui.energyField, `${f.fieldType ?? '?'} ${fmt(num(f.intensity), 2)}`)

  const info = client.closeInfo
  setText(
    ui.lastClose,
    info
      ? `last close: ${info.code} ${closeReason(info)}${info.by === 'server' ? '' : ` (${info.by})`} at ${clockTime(info.at)}`
      : 'no close yet',
  )
}

// -- the loop ----------------------------------------------------------------------

let lastReadout = -Infinity
let frameCount = 0
const onScreen = new OnScreen([ui.plotRate, ui.plotLatency, ui.energyView])

function frame() {
  const now = client.now()
  client.stats.tick(now)
  while (timeline.length > 2 && timeline[1].t < now - PLOT_SPAN_MS) timeline.shift()
  renderState()
  if (now - lastReadout >= READOUT_EVERY_MS) {
    lastReadout = now
    renderReadouts(now)
    checkOrigin()
  }
  // The monitor's canvases: only while on screen (each redraw costs a canvas
  // upload in the compositor), the minute-long plots at a quarter of the
  // display rate and the gauge at half, staggered, so that one animation
  // frame never carries all the drawing (the page's own rendering delays
  // the messages it measures).
  const slot = frameCount++ % 4
  if (slot === 0 && onScreen.has(ui.plotRate)) drawRate(now)
  else if (slot === 2 && onScreen.has(ui.plotLatency)) drawLatency(now)
  else if (slot % 2 === 1) {
    if (onScreen.has(ui.energyView)) drawEnergy(ui.energyView, energy, now)
    else pruneEnergy(energy, now)
  }
  panel.frame(now)
  flushLog()
  requestAnimationFrame(frame)
}

requestAnimationFrame(frame)
// A hidden tab runs no animation frames: text still reaches the page (and
// its buffers stay small) through this timer, which browsers slow to once a
// second in the background.
setInterval(() => {
  panel.flushText()
  flushLog()
}, TEXT_FLUSH_MS)
// Connect once the page has laid out and painted, so that the first frames
// are not queued behind the initial layout (it would show as latency).
// (A tab opened in the background runs no animation frames: the timeout starts it.)
if (params.get('autoconnect') !== '0') {
  let started = false
  const start = () => {
    if (!started) client.connect()
    started = true
  }
  requestAnimationFrame(() => setTimeout(start, 0))
  setTimeout(start, 300)
}
