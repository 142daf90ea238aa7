// @ts-check
/**
 * The energy view's canvas: a strike per token (thickness from its Δt,
 * pulsing once at its arrival, then fading), particles spawned with each
 * token as dense as its certainty, the field's brightness from E, one flow
 * ribbon per model (width and flow speed from tokens/s; council members in
 * their design-token colour with a shape each), the council's interference
 * overlay (brightness from the disagreement; circles when constructive,
 * squares when destructive) and the resonance celebration (build-up,
 * sustain, decay). Below the strikes, the Δt bars of the last tokens.
 *
 * Everything is a function of the {@link ViewState} and of the time since
 * the message that caused it, so a still model gives a still canvas; the
 * caller skips frames with nothing animating and nothing new
 * ({@link isAnimating}). With `motion: false` (prefers-reduced-motion, or
 * the Static level) every element is drawn in its static form: strikes as
 * fixed bars, ribbons as width bars with an arrow, no particles or ripples,
 * the celebration as a label.
 *
 * @example
 * import { createViewState } from './view-state.js'
 * import { drawView } from './energy-view.js'
 * const vs = createViewState()
 * const hits = drawView(canvas, vs, performance.now(), { level: 'high', motion: true, dtMs: 16.7 })
 * hits.find((h) => x >= h.x0 && x <= h.x1 && y >= h.y0 && y <= h.y1)?.text
 *
 * @module page/energy-view
 */

import {
  TIMING,
  VIEW_COLORS,
  energyState,
  fieldBrightness,
  interferenceAlpha,
  interferenceKind,
  memberStyle,
  orNa,
  particleCount,
  resonancePhase,
  ribbonSpeed,
  ribbonWidth,
  seeded,
  shortLabel,
  strikeAlpha,
  strikePulse,
} from './mappings.js'
import { prepare } from './plot.js'
import { LEVEL_PARTICLES } from './quality.js'

/** @typedef {import('./view-state.js').ViewState} ViewState */
/** @typedef {import('./view-state.js').Strike} Strike */
/** @typedef {import('./quality.js').QualityLevel} QualityLevel */

/**
 * A region of the canvas and the evidence behind it (CSS px).
 * @typedef {object} Hit
 * @property {string} kind strike | ribbon | interference | field | resonance
 * @property {number} x0
 * @property {number} y0
 * @property {number} x1
 * @property {number} y1
 * @property {string} text the source metric with units
 * @property {string} [key] a strike's token key
 */

/**
 * @typedef {object} DrawOptions
 * @property {QualityLevel} level
 * @property {boolean} motion false: static forms only
 * @property {number} dtMs time since the previous drawn frame (advances the ribbons' flow)
 * @property {string | null} [focusKey] a strike or element key to outline (keyboard focus)
 */

const STRIKE_SPACING = 14
const STRIKE_LIFE_MS = TIMING.strikeMs + TIMING.fadeMs

/**
 * Whether something on the canvas still moves at `now` (a strike fading,
 * particles alive, a ribbon flowing, a ripple or a celebration running).
 * @param {ViewState} vs
 * @param {number} now
 * @param {boolean} motion
 */
export function isAnimating(vs, now, motion) {
  if (!motion) return false
  const last = vs.strikes.length ? vs.strikes[vs.strikes.length - 1] : null
  if (last && now - last.at < Math.max(STRIKE_LIFE_MS, TIMING.particleLifeMs)) return true
  if (vs.models.some((m) => m.tps > 0)) return true
  if (vs.interference && now - vs.interference.at < TIMING.rippleMs) return true
  if (vs.resonance && resonancePhase(now - vs.resonance.at).phase !== 'done') return true
  return false
}

/**
 * A strike's jagged path from (x, y0) down to y1, a function of its index.
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} index
 * @param {number} x
 * @param {number} y0
 * @param {number} y1
 * @param {boolean} branch
 */
function boltPath(ctx, index, x, y0, y1, branch) {
  const r = seeded(index + 1)
  const segments = 7
  ctx.beginPath()
  ctx.moveTo(x, y0)
  let bx = x
  let by = y0
  for (let i = 1; i <= segments; i++) {
    const y = y0 + ((y1 - y0) * i) / segments
    const px = x + (r() - 0.5) * 10
    ctx.lineTo(px, y)
    if (i === 3) {
      bx = px
      by = y
    }
  }
  if (branch) {
    ctx.moveTo(bx, by)
    ctx.lineTo(bx + (r() - 0.3) * 14, by + (y1 - y0) * 0.22)
  }
}

/**
 * @param {Strike} s
 */
function strikeText(s) {
  return `token #${s.index} · Δt ${orNa(s.dtMs, 1)} ms · ${orNa(s.tps, 1)} tokens/s · certainty ${orNa(s.certainty, 2)} · E ${orNa(s.energy, 3)}`
}

/**
 * The newest frame's flow, for the elements drawn from a whole frame or event.
 * @param {ViewState} vs
 */
function flowText(vs) {
  const last = vs.strikes.length ? vs.strikes[vs.strikes.length - 1] : null
  return `${orNa(vs.tps, 1)} tokens/s · certainty ${orNa(vs.certainty, 2)} · Δt ${orNa(last ? last.dtMs : null, 1)} ms (last token)`
}

/**
 * Draws a marker shape centred on (x, y).
 * @param {CanvasRenderingContext2D} ctx
 * @param {'triangle' | 'circle' | 'square' | 'diamond'} shape
 * @param {number} x
 * @param {number} y
 * @param {number} r
 */
function marker(ctx, shape, x, y, r) {
  ctx.beginPath()
  if (shape === 'circle') ctx.arc(x, y, r, 0, Math.PI * 2)
  else if (shape === 'square') ctx.rect(x - r, y - r, 2 * r, 2 * r)
  else if (shape === 'triangle') {
    ctx.moveTo(x, y - r)
    ctx.lineTo(x + r, y + r)
    ctx.lineTo(x - r, y + r)
    ctx.closePath()
  } else {
    ctx.moveTo(x, y - r)
    ctx.lineTo(x + r, y)
    ctx.lineTo(x, y + r)
    ctx.lineTo(x - r, y)
    ctx.closePath()
  }
  ctx.fill()
}

/**
 * Draws the view at page time `now`; returns the hit regions for Evidence Mode.
 * @param {HTMLCanvasElement} canvas
 * @param {ViewState} vs
 * @param {number} now
 * @param {DrawOptions} opts
 * @returns {Hit[]}
 */
export function drawView(canvas, vs, now, opts) {
  const c = prepare(canvas, { maxDpr: 2, clear: false })
  /** @type {Hit[]} */
  const hits = []
  if (!c) return hits
  const { ctx, w, h } = c
  const motion = opts.motion
  const rich = motion && opts.level === 'high'
  const e = Number.isFinite(vs.e) ? vs.e : 0

  // field: brightness from E
  ctx.fillStyle = VIEW_COLORS.background
  ctx.fillRect(0, 0, w, h)
  ctx.globalAlpha = fieldBrightness(vs.e)
  ctx.fillStyle = VIEW_COLORS.lightning
  ctx.fillRect(0, 0, w, h)
  ctx.globalAlpha = 1
  hits.push({
    kind: 'field', x0: 0, y0: 0, x1: w, y1: h,
    text: `field · E ${orNa(vs.e, 3)} (${Math.round(e * 100)} %, ${energyState(vs.e)}) · state ${vs.state} · ${flowText(vs)}`,
  })

  const laneTop = 14
  const laneBottom = Math.round(h * 0.5)
  const barBase = laneBottom + 34
  const ribbonTop = barBase + 16
  const x1 = w - 16
  const ribbonX0 = 150

  // strikes, newest at the right; their Δt bars below
  const n = Math.min(vs.strikes.length, Math.floor((x1 - 16) / STRIKE_SPACING))
  const maxParticles = motion ? LEVEL_PARTICLES[opts.level] : 0
  ctx.lineCap = 'round'
  ctx.lineJoin = 'round'
  for (let k = 0; k < n; k++) {
    const s = vs.strikes[vs.strikes.length - 1 - k]
    const x = x1 - k * STRIKE_SPACING
    const age = now - s.at
    // the Δt bar (static form too): its height follows the strike's thickness
    const barH = s.width * 3.5
    ctx.fillStyle = VIEW_COLORS.bar
    ctx.globalAlpha = 0.85
    ctx.fillRect(x - s.width / 2, barBase - barH, s.width, barH)
    if (s.dtMs !== null && s.dtMs >= 1000) {
      // a stall: hatched cap, so that it is not told by size alone
      ctx.fillStyle = VIEW_COLORS.label
      ctx.fillRect(x - s.width / 2, barBase - barH - 3, s.width, 2)
    }
    ctx.globalAlpha = 1
    hits.push({ kind: 'strike', key: s.key, x0: x - STRIKE_SPACING / 2, y0: laneTop, x1: x + STRIKE_SPACING / 2, y1: barBase, text: strikeText(s) })
    if (!motion) {
      // static: a fixed-thickness bar per token
      ctx.fillStyle = VIEW_COLORS.lightning
      ctx.globalAlpha = 0.35 + 0.65 * Math.min(1, Math.max(0, s.energy ?? 0))
      ctx.fillRect(x - s.width / 2, laneTop + 10, s.width, laneBottom - laneTop - 10)
      ctx.globalAlpha = 1
      continue
    }
    const alpha = strikeAlpha(age)
    if (alpha > 0) {
      const pulse = strikePulse(age)
      if (rich) {
        ctx.strokeStyle = VIEW_COLORS.lightningGlow
        ctx.lineWidth = s.width * (2.2 + pulse)
        ctx.globalAlpha = alpha
        boltPath(ctx, s.index, x, laneTop, laneBottom, true)
        ctx.stroke()
      }
      ctx.strokeStyle = VIEW_COLORS.lightning
      ctx.lineWidth = s.width * (1 + 0.35 * pulse)
      ctx.globalAlpha = alpha
      boltPath(ctx, s.index, x, laneTop, laneBottom, rich)
      ctx.stroke()
      ctx.globalAlpha = 1
    }
    // particles: spawned with the token, as many as its certainty, for their lifetime
    const count = particleCount(s.certainty, maxParticles)
    if (count > 0 && age < TIMING.particleLifeMs) {
      const r = seeded(s.index * 31 + 7)
      const life = Math.max(0, age) / TIMING.particleLifeMs
      ctx.fillStyle = VIEW_COLORS.lightning
      ctx.globalAlpha = 1 - life
      for (let i = 0; i < count; i++) {
        const ang = r() * Math.PI * 2
        const dist = 4 + life * (10 + r() * 26)
        ctx.fillRect(x + Math.cos(ang) * dist - 1, laneBottom + Math.sin(ang) * dist * 0.6 - 1, 2, 2)
      }
      ctx.globalAlpha = 1
    }
  }
  ctx.fillStyle = VIEW_COLORS.muted
  ctx.font = '11px system-ui, "DejaVu Sans", sans-serif'
  ctx.textBaseline = 'alphabetic'
  ctx.textAlign = 'left'
  ctx.fillText('Δt per token (taller = slower)', 12, barBase - 2)
  if (!vs.strikes.length) {
    ctx.fillStyle = VIEW_COLORS.muted
    ctx.textAlign = 'center'
    ctx.fillText(vs.hasEvidence || vs.frames ? 'no token yet: ask the model something' : 'waiting for energy frames', w / 2, laneTop + 40)
    ctx.textAlign = 'left'
  }

  // ribbons: one per model
  const rows = Math.max(1, vs.models.length)
  const rowH = Math.max(16, Math.min(26, (h - ribbonTop - 6) / rows))
  vs.models.forEach((m, i) => {
    const y = ribbonTop + rowH * (i + 0.5)
    const style = vs.models.length >= 2 ? memberStyle(i) : { color: VIEW_COLORS.stream, shape: /** @type {const} */ ('circle') }
    const width = ribbonWidth(m.tps)
    if (motion) m.phase = (m.phase + (ribbonSpeed(m.tps) * Math.min(opts.dtMs, 100)) / 1000) % 1000
    ctx.fillStyle = style.color
    marker(ctx, style.shape, 14, y, 5)
    ctx.fillStyle = VIEW_COLORS.label
    ctx.font = '11px ui-monospace, "DejaVu Sans Mono", monospace'
    ctx.fillText(shortLabel(m.modelId, 18), 24, y + 4)
    ctx.strokeStyle = style.color
    ctx.lineWidth = width
    ctx.lineCap = 'butt'
    ctx.setLineDash([10, 5]) // the stream's dotted pattern (not colour alone)
    ctx.lineDashOffset = motion ? -m.phase : 0
    ctx.beginPath()
    ctx.moveTo(ribbonX0, y)
    ctx.lineTo(x1 - 12, y)
    ctx.stroke()
    ctx.setLineDash([])
    if (!motion) {
      // static: an arrow says the direction of flow
      ctx.fillStyle = style.color
      ctx.beginPath()
      ctx.moveTo(x1 - 12, y - width / 2 - 3)
      ctx.lineTo(x1, y)
      ctx.lineTo(x1 - 12, y + width / 2 + 3)
      ctx.closePath()
      ctx.fill()
    }
    hits.push({
      kind: 'ribbon', key: `ribbon:${m.modelId}`, x0: 0, y0: y - rowH / 2, x1: w, y1: y + rowH / 2,
      text: `${m.modelId} · ${orNa(m.tps, 1)} tokens/s · E ${orNa(m.energy, 3)} · ${m.state} · certainty ${orNa(m.certainty, 2)} · Δt ${orNa(m.dtMs, 1)} ms`,
    })
  })
  ctx.lineCap = 'round'

  // council: the interference overlay over the ribbons
  if (vs.council && vs.interference) {
    const di = vs.interference.di
    const kind = interferenceKind(di)
    const color = kind === 'constructive' ? VIEW_COLORS.constructive : VIEW_COLORS.destructive
    const oy0 = ribbonTop
    const oy1 = ribbonTop + rowH * rows
    ctx.globalAlpha = interferenceAlpha(di) * 0.25
    ctx.fillStyle = color
    ctx.fillRect(ribbonX0, oy0, x1 - ribbonX0, oy1 - oy0)
    ctx.globalAlpha = interferenceAlpha(di)
    const shapes = 4 + Math.round(di * 12)
    for (let i = 0; i < shapes; i++) {
      const sx = ribbonX0 + ((i + 0.5) * (x1 - ribbonX0)) / shapes
      marker(ctx, kind === 'constructive' ? 'circle' : 'square', sx, (oy0 + oy1) / 2, 3.5)
    }
    const age = now - vs.interference.at
    if (motion && age < TIMING.rippleMs) {
      ctx.strokeStyle = color
      ctx.lineWidth = 2
      ctx.globalAlpha = interferenceAlpha(di) * (1 - age / TIMING.rippleMs)
      ctx.beginPath()
      ctx.arc((ribbonX0 + x1) / 2, (oy0 + oy1) / 2, 8 + (age / TIMING.rippleMs) * 60, 0, Math.PI * 2)
      ctx.stroke()
    }
    ctx.globalAlpha = 1
    ctx.fillStyle = VIEW_COLORS.label
    ctx.textAlign = 'right'
    ctx.fillText(`${kind} · disagreement ${Math.round(di * 100)} %`, x1, oy0 - 3)
    ctx.textAlign = 'left'
    hits.push({
      kind: 'interference', key: 'interference', x0: ribbonX0, y0: oy0, x1, y1: oy1,
      text: `interference · disagreement ${di.toFixed(3)} (${vs.interference.method}, ${vs.interference.window} tokens) · ${kind}`
        + ` · ${flowText(vs)} · E ${orNa(vs.e, 3)}`,
    })
  }

  // resonance celebration
  if (vs.resonance) {
    const ph = resonancePhase(now - vs.resonance.at)
    if (ph.phase !== 'done') {
      const cx = w / 2
      const cy = laneBottom / 2 + laneTop
      if (motion) {
        VIEW_COLORS.resonance.forEach((col, i) => {
          ctx.strokeStyle = col
          ctx.lineWidth = 2
          ctx.globalAlpha = ph.level * 0.8
          ctx.beginPath()
          ctx.arc(cx, cy, 10 + i * 10 + ph.level * 16, 0, Math.PI * 2)
          ctx.stroke()
        })
        ctx.globalAlpha = 1
      }
      ctx.fillStyle = VIEW_COLORS.label
      ctx.textAlign = 'center'
      ctx.font = '600 13px system-ui, "DejaVu Sans", sans-serif'
      ctx.fillText(`✦ resonance (${ph.phase})`, cx, cy + 4)
      ctx.textAlign = 'left'
      hits.push({
        kind: 'resonance', key: 'resonance', x0: cx - 80, y0: cy - 60, x1: cx + 80, y1: cy + 60,
        text: `resonance · disagreement ${orNa(vs.resonance.disagreement, 3)} · tokens/s ratio ${orNa(vs.resonance.tpsRatio, 2)}`
          + ` · ${flowText(vs)} · E ${orNa(vs.e, 3)}`,
      })
    }
  }

  // keyboard focus outline
  if (opts.focusKey) {
    const f = hits.find((x) => x.key === opts.focusKey)
    if (f) {
      ctx.strokeStyle = VIEW_COLORS.focus
      ctx.lineWidth = 2
      ctx.setLineDash([])
      ctx.strokeRect(f.x0 + 1, f.y0 + 1, f.x1 - f.x0 - 2, f.y1 - f.y0 - 2)
    }
  }
  return hits.reverse() // topmost first
}
