// @ts-check
/**
 * The energy view of the monitor page: a gauge of E(t) in [0, 1] on a 270°
 * arc and the stacked distribution (generation, attention, reasoning) of
 * the last 10 s. {@link createEnergyView} holds what the message handlers
 * record ({@link recordEnergy}); {@link drawEnergy} draws it.
 *
 * @example
 * import { createEnergyView, drawEnergy, recordEnergy } from './energy-gauge.js'
 * const view = createEnergyView()
 * client.onMessage('energy_update', (m) => recordEnergy(view, client.now(), m.payload))
 * requestAnimationFrame(() => drawEnergy(canvas, view, client.now()))
 *
 * @module energy-gauge
 */

import { COLORS, fmt, gridRow, prepare } from './plot.js'
import { TimeSeries } from '../wirthforge-client.js'

/** How much history the distribution shows. */
export const ENERGY_SPAN_MS = 10_000

/**
 * What the view shows: the four series and the newest payloads.
 * @typedef {object} EnergyView
 * @property {TimeSeries} total
 * @property {TimeSeries} generation
 * @property {TimeSeries} attention
 * @property {TimeSeries} reasoning
 * @property {Record<string, any> | null} last newest energy_update payload
 * @property {Record<string, any> | null} field newest energy_field payload
 */

/** Room for 12 s of energy frames at 60 Hz (the view shows 10 s). */
const energySeries = () => new TimeSeries(60 * 12 + 16)

/** @returns {EnergyView} an empty view */
export function createEnergyView() {
  return {
    total: energySeries(),
    generation: energySeries(),
    attention: energySeries(),
    reasoning: energySeries(),
    last: null,
    field: null,
  }
}

/**
 * The four series of a view, cleared and pruned together.
 * @param {EnergyView} energy
 */
export function energySeriesOf(energy) {
  return [energy.total, energy.generation, energy.attention, energy.reasoning]
}

/**
 * @param {unknown} v
 * @returns {number} v when it is a finite number, else NaN
 */
export function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : NaN
}

/**
 * Records one energy_update payload at time `t`.
 * @param {EnergyView} energy
 * @param {number} t
 * @param {Record<string, any>} p
 */
export function recordEnergy(energy, t, p) {
  const d = p.energyDistribution || {}
  energy.last = p
  energy.total.push(t, num(p.totalEnergy))
  energy.generation.push(t, num(d.generation))
  energy.attention.push(t, num(d.attention))
  energy.reasoning.push(t, num(d.reasoning))
}

/**
 * Drops samples older than the plotted span (also while the gauge is not drawn).
 * @param {EnergyView} energy
 * @param {number} now the clock the series were stamped with
 */
export function pruneEnergy(energy, now) {
  for (const s of energySeriesOf(energy)) s.prune(now - ENERGY_SPAN_MS - 1000)
}

/**
 * Draws the energy view: the E(t) gauge and, beside it, the stacked
 * distribution of the last `ENERGY_SPAN_MS`.
 * @param {HTMLCanvasElement} canvas
 * @param {EnergyView} energy
 * @param {number} now the clock the series were stamped with
 */
export function drawEnergy(canvas, energy, now) {
  const c = prepare(canvas)
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

  pruneEnergy(energy, now)
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
