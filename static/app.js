// @ts-check
/**
 * The monitor page (client-example.html): a thin view over
 * `wirthforge-client.js`. Message handlers only update state; everything is
 * drawn in one requestAnimationFrame loop (canvases at half the display rate,
 * numbers at 4 Hz so they stay readable). All server text goes into text nodes.
 *
 * The client instance is `window.wirthforge`.
 */
import { WirthforgeClient, TimeSeries, describeCloseCode } from './wirthforge-client.js'
import { installPromptBox } from './wirthforge/prompt.js'

/** @typedef {import('./wirthforge-client.js').ConnectionState} ConnectionState */
/** @typedef {import('./wirthforge-client.js').Envelope} Envelope */
/** @typedef {import('./wirthforge-client.js').CloseInfo} CloseInfo */

const PLOT_SPAN_MS = 60_000
const ENERGY_SPAN_MS = 10_000
const READOUT_EVERY_MS = 250
const MAX_TOKEN_CHARS = 20_000
const MAX_LOG_ROWS = 200

const COLORS = {
  grid: '#1b2534',
  axis: '#5b677b',
  label: '#8693a8',
  rate: '#22d3ee',
  target: '#64748b',
  raw: 'rgba(100, 116, 139, 0.75)',
  median: '#a78bfa',
  p99: '#f59e0b',
  down: 'rgba(239, 68, 68, 0.13)',
  stalled: 'rgba(245, 158, 11, 0.12)',
  generation: '#22d3ee',
  attention: '#a78bfa',
  reasoning: '#34d399',
  total: '#fbbf24',
  track: '#1c2636',
}

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
  tokenOutput: byTestId('token-output'),
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

/**
 * @param {number} v
 * @param {number} digits
 * @returns {string}
 */
function fmt(v, digits) {
  return Number.isFinite(v) ? v.toFixed(digits) : '–'
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

// -- view state (written by message handlers, read by the render loop) ---------

/** Room for 12 s of energy frames at 60 Hz (the view shows 10 s). */
const energySeries = () => new TimeSeries(60 * 12 + 16)

const energy = {
  total: energySeries(),
  generation: energySeries(),
  attention: energySeries(),
  reasoning: energySeries(),
  /** @type {Record<string, any> | null} */
  last: null,
  /** @type {Record<string, any> | null} */
  field: null,
}
/** The four series above, cleared and pruned together. */
const energyHistory = [energy.total, energy.generation, energy.attention, energy.reasoning]

/** Token text not yet on screen. */
let pendingTokens = ''
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
function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : NaN
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
    for (const s of energyHistory) s.clear()
  }
})

client.onMessage('energy_update', (m) => {
  const p = m.payload || {}
  const t = client.now()
  const d = p.energyDistribution || {}
  energy.last = p
  energy.total.push(t, num(p.totalEnergy))
  energy.generation.push(t, num(d.generation))
  energy.attention.push(t, num(d.attention))
  energy.reasoning.push(t, num(d.reasoning))
})

client.onMessage('energy_field', (m) => {
  energy.field = m.payload || null
})

client.onMessage('token_stream', (m) => {
  const p = m.payload || {}
  if (Array.isArray(p.tokens)) pendingTokens += p.tokens.map(String).join('')
  if (p.isComplete) pendingTokens += '\n\n'
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

// -- canvas helpers ------------------------------------------------------------

/**
 * Matches the backing store to the CSS size and device pixel ratio.
 * @param {HTMLCanvasElement} canvas
 * @returns {{ctx: CanvasRenderingContext2D, w: number, h: number} | null}
 */
function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1
  const w = canvas.clientWidth
  const h = canvas.clientHeight
  if (!w || !h) return null
  const bw = Math.round(w * dpr)
  const bh = Math.round(h * dpr)
  if (canvas.width !== bw || canvas.height !== bh) {
    canvas.width = bw
    canvas.height = bh
  }
  const ctx = canvas.getContext('2d')
  if (!ctx) return null
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
  ctx.clearRect(0, 0, w, h)
  return { ctx, w, h }
}

/**
 * Snaps a coordinate to the middle of a device pixel, so a 1 px line is crisp.
 * @param {number} v
 */
function crisp(v) {
  return Math.round(v) + 0.5
}

/**
 * Strokes one straight line (grid, reference) from (xa, ya) to (xb, yb).
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} xa
 * @param {number} ya
 * @param {number} xb
 * @param {number} yb
 * @param {string} color
 */
function strokeLine(ctx, xa, ya, xb, yb, color) {
  ctx.strokeStyle = color
  ctx.beginPath()
  ctx.moveTo(xa, ya)
  ctx.lineTo(xb, yb)
  ctx.stroke()
}

/**
 * One horizontal grid line across [x0, x1] at height `y`, labelled `label`
 * `gap` px left of x0. The caller sets font, textAlign and textBaseline.
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} y
 * @param {number} x0
 * @param {number} x1
 * @param {string} label
 * @param {number} gap
 */
function gridRow(ctx, y, x0, x1, label, gap) {
  const yy = crisp(y)
  strokeLine(ctx, x0, yy, x1, yy, COLORS.grid)
  ctx.fillStyle = COLORS.label
  ctx.fillText(label, x0 - gap, yy)
}

/**
 * A "nice" axis step (1, 2, 2.5, 5 × 10^k) for about `n` intervals up to `max`.
 * @param {number} max
 * @param {number} n
 */
function niceStep(max, n) {
  const raw = max / n
  const mag = 10 ** Math.floor(Math.log10(raw))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag
  return 10 * mag
}

/**
 * @typedef {object} Series
 * @property {TimeSeries} data
 * @property {string} color
 * @property {number} width
 * @property {number} [breakMs] start a new line segment after a gap this long
 */

/**
 * @typedef {object} PlotSpec
 * @property {number} now
 * @property {number} spanMs
 * @property {number} yMax
 * @property {string} unit
 * @property {Series[]} series
 * @property {{y: number, color: string, label: string}[]} [refs]
 * @property {number} [digits]
 */

const PAD = { left: 46, right: 12, top: 10, bottom: 22 }

/**
 * Draws a time plot: grid, state shading, reference lines, series, axes.
 * @param {HTMLCanvasElement} canvas
 * @param {PlotSpec} spec
 */
function drawPlot(canvas, spec) {
  const c = prepare(canvas)
  if (!c) return
  const { ctx, w, h } = c
  const x0 = PAD.left
  const x1 = w - PAD.right
  const y0 = h - PAD.bottom
  const y1 = PAD.top
  const t0 = spec.now - spec.spanMs
  const step = niceStep(spec.yMax, 4)
  const yMax = Math.max(step, Math.ceil(spec.yMax / step - 1e-9) * step)
  const X = (/** @type {number} */ t) => x0 + ((t - t0) / spec.spanMs) * (x1 - x0)
  const Y = (/** @type {number} */ v) => y0 - (Math.min(Math.max(v, 0), yMax) / yMax) * (y0 - y1)

  // not-connected periods
  for (let i = 0; i < timeline.length; i++) {
    const s = timeline[i].state
    if (s === 'connected') continue
    const a = Math.max(timeline[i].t, t0)
    const b = i + 1 < timeline.length ? timeline[i + 1].t : spec.now
    if (b <= t0) continue
    ctx.fillStyle = s === 'stalled' ? COLORS.stalled : COLORS.down
    ctx.fillRect(X(a), y1, Math.max(1, X(b) - X(a)), y0 - y1)
  }

  // grid and y labels
  ctx.font = '11px ui-monospace, "DejaVu Sans Mono", Menlo, monospace'
  ctx.textBaseline = 'middle'
  ctx.textAlign = 'right'
  ctx.lineWidth = 1
  const digits = spec.digits ?? (step < 1 ? (step < 0.1 ? 2 : 1) : 0)
  for (let v = 0; v <= yMax + 1e-9; v += step) gridRow(ctx, Y(v), x0, x1, v.toFixed(digits), 6)
  ctx.save()
  ctx.translate(11, (y0 + y1) / 2)
  ctx.rotate(-Math.PI / 2)
  ctx.textAlign = 'center'
  ctx.fillStyle = COLORS.axis
  ctx.fillText(spec.unit, 0, 0)
  ctx.restore()

  // x labels every 10 s
  ctx.textAlign = 'center'
  ctx.textBaseline = 'top'
  for (let s = 0; s <= spec.spanMs / 1000; s += 10) {
    const x = crisp(X(spec.now - s * 1000))
    strokeLine(ctx, x, y1, x, y0, COLORS.grid)
    ctx.fillStyle = COLORS.label
    ctx.textAlign = s === 0 ? 'right' : 'center'
    ctx.fillText(s === 0 ? 'now' : `−${s} s`, s === 0 ? x1 : x, y0 + 6)
  }

  // reference lines
  for (const ref of spec.refs ?? []) {
    const y = crisp(Y(ref.y))
    ctx.setLineDash([5, 4])
    strokeLine(ctx, x0, y, x1, y, ref.color)
    ctx.setLineDash([])
    ctx.fillStyle = ref.color
    ctx.textAlign = 'left'
    ctx.textBaseline = 'bottom'
    ctx.fillText(ref.label, x0 + 6, y - 2)
  }

  // series
  ctx.save()
  ctx.beginPath()
  ctx.rect(x0, y1 - 2, x1 - x0, y0 - y1 + 4)
  ctx.clip()
  ctx.lineJoin = 'round'
  for (const s of spec.series) {
    ctx.strokeStyle = s.color
    ctx.lineWidth = s.width
    ctx.beginPath()
    let prev = -Infinity
    s.data.forEach((t, v) => {
      if (t < t0 - 1000 || !Number.isFinite(v)) {
        prev = -Infinity
        return
      }
      if (t - prev > (s.breakMs ?? Infinity)) ctx.moveTo(X(t), Y(v))
      else ctx.lineTo(X(t), Y(v))
      prev = t
    })
    ctx.stroke()
  }
  ctx.restore()

  // axes
  ctx.strokeStyle = COLORS.axis
  ctx.lineWidth = 1
  ctx.beginPath()
  ctx.moveTo(x0 + 0.5, y1)
  ctx.lineTo(x0 + 0.5, y0 + 0.5)
  ctx.lineTo(x1, y0 + 0.5)
  ctx.stroke()
}

/**
 * Largest finite value of the series inside the window.
 * @param {TimeSeries} s
 * @param {number} since
 */
function maxSince(s, since) {
  let m = -Infinity
  s.forEach((t, v) => {
    if (t >= since && Number.isFinite(v) && v > m) m = v
  })
  return m
}

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
  })
}

function drawEnergy(/** @type {number} */ now) {
  const c = prepare(ui.energyView)
  if (!c) return
  const { ctx, w, h } = c
  const last = energy.last
  const total = last ? num(last.totalEnergy) : NaN

  // gauge: E(t) in [0, 1] on a 270° arc
  const r = Math.min(h / 2 - 16, w * 0.16, 78)
  const cx = 18 + r
  const cy = h / 2 + 4
  const a0 = Math.PI * 0.75
  const sweep = Math.PI * 1.5
  ctx.lineCap = 'round'
  ctx.lineWidth = 11
  ctx.strokeStyle = COLORS.track
  ctx.beginPath()
  ctx.arc(cx, cy, r, a0, a0 + sweep)
  ctx.stroke()
  if (Number.isFinite(total)) {
    const grad = ctx.createLinearGradient(cx - r, cy, cx + r, cy)
    grad.addColorStop(0, COLORS.generation)
    grad.addColorStop(1, COLORS.total)
    ctx.strokeStyle = grad
    ctx.beginPath()
    ctx.arc(cx, cy, r, a0, a0 + sweep * Math.min(Math.max(total, 0), 1))
    ctx.stroke()
  }
  ctx.textAlign = 'center'
  ctx.textBaseline = 'middle'
  ctx.fillStyle = '#e6ebf3'
  ctx.font = '600 28px ui-monospace, "DejaVu Sans Mono", Menlo, monospace'
  ctx.fillText(fmt(total, 2), cx, cy - 4)
  ctx.fillStyle = COLORS.label
  ctx.font = '11px system-ui, "DejaVu Sans", sans-serif'
  ctx.fillText('total energy', cx, cy + 20)
  ctx.fillText('0', cx + Math.cos(a0) * r, cy + Math.sin(a0) * r + 17)
  ctx.fillText('1', cx + Math.cos(a0 + sweep) * r, cy + Math.sin(a0 + sweep) * r + 17)

  // stacked distribution over the last 10 s (the three parts add up to E(t))
  const x0 = cx + r + 30
  const x1 = w - 10
  const y0 = h - 20
  const y1 = 12
  if (x1 - x0 < 40) return
  const t0 = now - ENERGY_SPAN_MS
  const X = (/** @type {number} */ t) => x0 + ((t - t0) / ENERGY_SPAN_MS) * (x1 - x0)
  const Y = (/** @type {number} */ v) => y0 - Math.min(Math.max(v, 0), 1) * (y0 - y1)
  ctx.lineWidth = 1
  ctx.font = '10px ui-monospace, "DejaVu Sans Mono", Menlo, monospace'
  ctx.textAlign = 'right'
  for (const v of [0, 0.5, 1]) gridRow(ctx, Y(v), x0, x1, v.toFixed(1), 5)
  ctx.textAlign = 'center'
  ctx.textBaseline = 'top'
  ctx.fillText('−10 s', x0 + 14, y0 + 5)
  ctx.fillText('now', x1 - 10, y0 + 5)

  for (const s of energyHistory) s.prune(t0 - 1000)
  const g = energy.generation.valuesArray()
  const a = energy.attention.valuesArray()
  const q = energy.reasoning.valuesArray()
  /** @type {number[]} */
  const ts = []
  energy.generation.forEach((t) => ts.push(t))
  const layers = [
    { color: COLORS.generation, top: (/** @type {number} */ i) => g[i] },
    { color: COLORS.attention, top: (/** @type {number} */ i) => g[i] + a[i] },
    { color: COLORS.reasoning, top: (/** @type {number} */ i) => g[i] + a[i] + q[i] },
  ]
  ctx.save()
  ctx.beginPath()
  ctx.rect(x0, y1, x1 - x0, y0 - y1)
  ctx.clip()
  if (ts.length > 1) {
    for (let k = layers.length - 1; k >= 0; k--) {
      const layer = layers[k]
      ctx.beginPath()
      ctx.moveTo(X(ts[0]), y0)
      for (let i = 0; i < ts.length; i++) {
        const v = layer.top(i)
        ctx.lineTo(X(ts[i]), Y(Number.isFinite(v) ? v : 0))
      }
      ctx.lineTo(X(ts[ts.length - 1]), y0)
      ctx.closePath()
      ctx.globalAlpha = 0.55
      ctx.fillStyle = layer.color
      ctx.fill()
    }
    ctx.globalAlpha = 1
    ctx.strokeStyle = COLORS.total
    ctx.lineWidth = 1.5
    ctx.beginPath()
    let first = true
    energy.total.forEach((t, v) => {
      if (!Number.isFinite(v)) return
      if (first) ctx.moveTo(X(t), Y(v))
      else ctx.lineTo(X(t), Y(v))
      first = false
    })
    ctx.stroke()
  } else {
    ctx.fillStyle = COLORS.label
    ctx.textAlign = 'center'
    ctx.textBaseline = 'middle'
    ctx.fillText('waiting for energy frames', (x0 + x1) / 2, (y0 + y1) / 2)
  }
  ctx.restore()
}

// -- text outputs ----------------------------------------------------------------

/** One text node holds the token stream: appendData/deleteData, never HTML. */
const tokenText = document.createTextNode('')
ui.tokenOutput.replaceChildren(tokenText)

function flushTokens() {
  if (!pendingTokens) return
  const el = ui.tokenOutput
  const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24
  tokenText.appendData(pendingTokens)
  pendingTokens = ''
  if (tokenText.length > MAX_TOKEN_CHARS) tokenText.deleteData(0, tokenText.length - Math.floor(MAX_TOKEN_CHARS * 0.75))
  if (atBottom) el.scrollTop = el.scrollHeight
}

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

const STATE_LABEL = /** @type {Record<ConnectionState, string>} */ ({
  disconnected: 'disconnected',
  connecting: 'connecting',
  connected: 'connected',
  stalled: 'stalled',
  reconnecting: 'reconnecting',
  refused: 'refused',
})

/** State readout: every frame, so a short state is never missed. */
function renderState() {
  const s = client.state
  setText(ui.status, STATE_LABEL[s])
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

function frame() {
  const now = client.now()
  client.stats.tick(now)
  while (timeline.length > 2 && timeline[1].t < now - PLOT_SPAN_MS) timeline.shift()
  renderState()
  if (now - lastReadout >= READOUT_EVERY_MS) {
    lastReadout = now
    renderReadouts(now)
  }
  // Canvases at half the display rate, alternating, so that one animation
  // frame never carries all the drawing (the page's own rendering delays
  // the messages it measures).
  if (frameCount++ % 2 === 0) {
    drawRate(now)
    drawLatency(now)
  } else {
    drawEnergy(now)
  }
  flushTokens()
  flushLog()
  requestAnimationFrame(frame)
}

requestAnimationFrame(frame)
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
