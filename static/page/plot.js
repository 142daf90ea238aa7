// @ts-check
/**
 * The monitor page's canvas plotting kit: a time plot with grid, axes,
 * reference lines and connection-state shading ({@link drawPlot}), and the
 * small helpers the energy view shares with it. Pure drawing: it reads the
 * {@link TimeSeries} it is given and keeps no state.
 *
 * @example
 * import { drawPlot } from './plot.js'
 * drawPlot(canvas, { now, spanMs: 60_000, yMax: 75, unit: 'fps', series: [{ data, color: '#22d3ee', width: 2 }] })
 *
 * @module plot
 */

/** @typedef {import('../wirthforge-client.js').TimeSeries} TimeSeries */

/** The palette of the page's canvases (the CSS has the same colours). */
export const COLORS = Object.freeze({
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
})

/**
 * A number with `digits` decimals, or an en dash when it is not finite.
 * @param {number} v
 * @param {number} digits
 * @returns {string}
 */
export function fmt(v, digits) {
  return Number.isFinite(v) ? v.toFixed(digits) : '–'
}

/**
 * Which of some elements are on screen (an IntersectionObserver), so that
 * a canvas nobody can see is not redrawn. An element counts as on screen
 * until the first observation says otherwise, and always where the browser
 * has no IntersectionObserver.
 */
export class OnScreen {
  /** @param {Element[]} elements */
  constructor(elements) {
    /** @type {Set<Element>} */
    this.hidden = new Set()
    if (typeof IntersectionObserver !== 'function') return
    const observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (e.isIntersecting) this.hidden.delete(e.target)
        else this.hidden.add(e.target)
      }
    })
    for (const el of elements) observer.observe(el)
  }

  /** @param {Element} el */
  has(el) {
    return !this.hidden.has(el)
  }
}

/**
 * Matches the backing store to the CSS size and device pixel ratio.
 * @param {HTMLCanvasElement} canvas
 * @param {{maxDpr?: number, clear?: boolean}} [options] cap the pixel ratio (fewer pixels to fill);
 *   clear: false for a caller that paints every pixel itself
 * @returns {{ctx: CanvasRenderingContext2D, w: number, h: number} | null}
 */
export function prepare(canvas, { maxDpr = Infinity, clear = true } = {}) {
  const dpr = Math.min(window.devicePixelRatio || 1, maxDpr)
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
  if (clear) ctx.clearRect(0, 0, w, h)
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
export function gridRow(ctx, y, x0, x1, label, gap) {
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
 * A state change of the connection, for shading the time axis: from `t` on
 * the connection was in `state` (until the next entry).
 * @typedef {{t: number, state: string}} StateSpan
 */

/**
 * @typedef {object} PlotSpec
 * @property {number} now
 * @property {number} spanMs
 * @property {number} yMax
 * @property {string} unit
 * @property {Series[]} series
 * @property {{y: number, color: string, label: string}[]} [refs]
 * @property {StateSpan[]} [timeline] state changes, oldest first: periods not `connected` are shaded
 * @property {number} [digits]
 */

const PAD = { left: 46, right: 12, top: 10, bottom: 22 }

/**
 * Draws a time plot: grid, state shading, reference lines, series, axes.
 * @param {HTMLCanvasElement} canvas
 * @param {PlotSpec} spec
 */
export function drawPlot(canvas, spec) {
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
  const timeline = spec.timeline ?? []
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
export function maxSince(s, since) {
  let m = -Infinity
  s.forEach((t, v) => {
    if (t >= since && Number.isFinite(v) && v > m) m = v
  })
  return m
}
