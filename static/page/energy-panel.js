// @ts-check
/**
 * The energy panel at the top of the page: wires the client's messages into
 * the {@link ViewState}, draws the canvas ({@link drawView}) from the page's
 * one animation-frame loop under the adaptive {@link QualityController},
 * shows the readouts (4 Hz), the answer ({@link AnswerView}), Evidence Mode
 * and the throttled live summary ({@link Announcer}). On Low and below it
 * asks the server for a lower energy rate. Exposed as `window.wfView`.
 *
 * @example
 * import { installEnergyPanel } from './energy-panel.js'
 * const panel = installEnergyPanel(client, new URLSearchParams(location.search))
 * requestAnimationFrame(function loop(t) { panel.frame(client.now()); requestAnimationFrame(loop) })
 *
 * @module page/energy-panel
 */

import { AnswerView } from './answer.js'
import { Announcer, summarize } from './announcer.js'
import { drawView, isAnimating } from './energy-view.js'
import { EvidenceMode } from './evidence.js'
import { energyState, orNa } from './mappings.js'
import { LEVEL_ENERGY_RATE, QualityController, isLevel, levelForTier } from './quality.js'
import {
  createViewState,
  ingestEnergy,
  ingestInterference,
  ingestResonance,
  ingestTokens,
  tokenEvidenceOf,
} from './view-state.js'
import { untrusted } from './wire.js'

/** @typedef {import('./energy-view.js').Hit} Hit */
/** @typedef {import('./quality.js').QualityLevel} QualityLevel */
/** @typedef {import('../wirthforge/client.js').WirthforgeClient} WirthforgeClient */
/** @template T @typedef {import('./wire.js').Untrusted<T>} Untrusted */
/** @typedef {import('./wire.js').StartupPayload} StartupPayload */

const READOUT_EVERY_MS = 250
const STATE_ICONS = Object.freeze({ Dormant: '◇', Awakening: '◈', Active: '◆', Resonance: '✦' })
const LEVEL_NAMES = Object.freeze({ high: 'High', medium: 'Medium', low: 'Low', static: 'Static' })

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
 * @param {HTMLElement} el
 * @param {string} text
 */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text
}

/**
 * @param {HTMLElement} el
 * @param {string} text
 */
function setEvidence(el, text) {
  if (el.dataset.evidence !== text) el.dataset.evidence = text
}

/**
 * @param {WirthforgeClient} client
 * @param {URLSearchParams} params
 */
export function installEnergyPanel(client, params) {
  const canvas = /** @type {HTMLCanvasElement} */ (byTestId('energy-canvas'))
  const answerEl = byTestId('token-output')
  const live = byTestId('energy-live')
  const qualitySelect = /** @type {HTMLSelectElement} */ (byTestId('quality-select'))
  const ui = {
    percent: byTestId('energy-percent'),
    state: byTestId('energy-state'),
    session: byTestId('session-state'),
    tps: byTestId('tps'),
    certainty: byTestId('certainty'),
    ttft: byTestId('ttft'),
    eu: byTestId('energy-units'),
    stall: byTestId('stall-badge'),
    burst: byTestId('burst-badge'),
    council: byTestId('council-badge'),
    level: byTestId('quality-level'),
  }
  const vs = createViewState()
  const evidence = new EvidenceMode(byTestId('evidence-tip'), /** @type {HTMLButtonElement} */ (byTestId('evidence-toggle')))
  const answer = new AnswerView(answerEl, (sid, model, index) => tokenEvidenceOf(vs, sid, model, index))
  const announcer = new Announcer({ write: (text) => { live.textContent = text } })
  const reducedMotion = window.matchMedia('(prefers-reduced-motion: reduce)')

  /** @type {number | null} the energy rate asked for, null: the full rate */
  let askedRate = null
  /** @param {QualityLevel} level */
  const applyRate = (level) => {
    const rate = LEVEL_ENERGY_RATE[level]
    if (rate === askedRate || client.state !== 'connected') return
    const want = rate ?? client.frameRate
    if (client.send({ type: 'set_energy_rate', payload: { rateHz: Math.min(want, client.frameRate || want) } })) askedRate = rate
  }
  const quality = new QualityController({
    onChange: (level) => {
      setText(ui.level, LEVEL_NAMES[level])
      applyRate(level)
      dirty = true
    },
  })
  const pinnedParam = params.get('quality')
  if (isLevel(pinnedParam)) {
    quality.pin(pinnedParam)
    qualitySelect.value = pinnedParam
  }
  setText(ui.level, LEVEL_NAMES[quality.level])
  qualitySelect.addEventListener('change', () => {
    const v = qualitySelect.value
    quality.pin(isLevel(v) ? v : null)
    setText(ui.level, LEVEL_NAMES[quality.level])
  })

  let tierApplied = false
  client.onStartup((payload) => {
    /** @type {Untrusted<StartupPayload>} */
    const p = untrusted(payload)
    askedRate = null
    if (!tierApplied && !quality.pinned) {
      tierApplied = true
      quality.auto = levelForTier(p.tier)
      setText(ui.level, LEVEL_NAMES[quality.level])
    }
    applyRate(quality.level)
  })
  client.onMessage('energy_update', (m) => ingestEnergy(vs, m.payload, client.now()))
  client.onMessage('token_stream', (m) => {
    ingestTokens(vs, m.payload, client.now())
    answer.push(m.payload)
  })
  client.onMessage('interference_event', (m) => ingestInterference(vs, m.payload, client.now()))
  client.onMessage('resonance_event', (m) => ingestResonance(vs, m.payload, client.now()))

  // -- Evidence Mode: canvas elements ---------------------------------------------
  /** @type {Hit[]} */
  let hits = []
  /** @type {string | null} */
  let focusKey = null
  let dirty = true
  /** @param {Hit} hit */
  const showHit = (hit) => {
    const r = canvas.getBoundingClientRect()
    evidence.show(hit.text, { left: r.left + hit.x0, top: r.top + hit.y0, bottom: r.top + Math.min(hit.y1, r.height) })
  }
  canvas.addEventListener('mousemove', (e) => {
    const r = canvas.getBoundingClientRect()
    const x = e.clientX - r.left
    const y = e.clientY - r.top
    const hit = hits.find((h) => x >= h.x0 && x <= h.x1 && y >= h.y0 && y <= h.y1)
    if (hit) showHit(hit)
    else evidence.hide()
  })
  canvas.addEventListener('mouseleave', () => evidence.hide())
  const focusables = () => hits.filter((h) => h.key)
  canvas.addEventListener('focus', () => {
    const list = focusables()
    const first = list.find((h) => h.kind === 'strike') ?? list[0]
    if (first) {
      focusKey = first.key ?? null
      showHit(first)
      dirty = true
    }
  })
  canvas.addEventListener('blur', () => {
    focusKey = null
    dirty = true
    evidence.hide()
  })
  canvas.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight' && e.key !== 'ArrowUp' && e.key !== 'ArrowDown') return
    e.preventDefault()
    // strikes are listed newest first: Left goes back in time
    const list = focusables()
    if (!list.length) return
    const i = list.findIndex((h) => h.key === focusKey)
    const step = e.key === 'ArrowLeft' || e.key === 'ArrowDown' ? 1 : -1
    const next = list[(Math.max(0, i) + step + list.length) % list.length]
    focusKey = next.key ?? null
    showHit(next)
    dirty = true
  })

  // -- Evidence Mode: answer tokens -------------------------------------------------
  /** @param {HTMLElement} span */
  const tokenText = (span) => {
    const block = span.closest('.ablock')
    const sid = block instanceof HTMLElement ? block.dataset.session ?? '' : ''
    const model = block instanceof HTMLElement ? block.dataset.model ?? '' : ''
    const index = Number(span.dataset.index)
    const ev = tokenEvidenceOf(vs, sid, model, index)
    const what = span.dataset.omitted ? 'text not recorded' : JSON.stringify(span.textContent ?? '')
    return `${what} · token #${Number.isFinite(index) ? index : '?'} · Δt ${orNa(ev?.dtMs, 1)} ms · ${orNa(ev?.tps, 1)} tokens/s`
      + ` · certainty ${orNa(ev?.certainty, 2)}`
      + ` · E ${orNa(ev?.energy, 3)}${ev ? ` (from ${ev.source === 'frame' ? 'its energy frame' : 'its token_stream'})` : ''}`
  }
  /** @type {HTMLElement | null} */
  let activeToken = null
  /** @param {HTMLElement | null} span */
  const activate = (span) => {
    if (activeToken) {
      activeToken.classList.remove('active')
      activeToken.removeAttribute('id')
    }
    activeToken = span
    if (!span) {
      answerEl.removeAttribute('aria-activedescendant')
      return
    }
    span.classList.add('active')
    span.id = 'wf-active-token'
    answerEl.setAttribute('aria-activedescendant', span.id)
    evidence.show(tokenText(span), span.getBoundingClientRect())
  }
  answerEl.addEventListener('mouseover', (e) => {
    const t = e.target
    if (t instanceof HTMLElement && t.dataset.index !== undefined) evidence.show(tokenText(t), t.getBoundingClientRect())
  })
  answerEl.addEventListener('mouseleave', () => evidence.hide())
  answerEl.addEventListener('focus', () => {
    const spans = answerEl.querySelectorAll('span[data-index]')
    const last = spans[spans.length - 1]
    if (last instanceof HTMLElement) activate(last)
  })
  answerEl.addEventListener('blur', () => {
    activate(null)
    evidence.hide()
  })
  answerEl.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return
    e.preventDefault()
    const spans = [...answerEl.querySelectorAll('span[data-index]')]
    if (!spans.length) return
    const i = activeToken ? spans.indexOf(activeToken) : spans.length - 1
    const j = Math.min(spans.length - 1, Math.max(0, i + (e.key === 'ArrowLeft' ? -1 : 1)))
    const s = spans[j]
    if (s instanceof HTMLElement) {
      activate(s)
      s.scrollIntoView({ block: 'nearest' })
    }
  })

  // -- Evidence Mode: readouts ---------------------------------------------------------
  /** @param {Event} e */
  const showReadout = (e) => {
    const t = e.target
    if (t instanceof HTMLElement && t.dataset.evidence) evidence.show(t.dataset.evidence, t.getBoundingClientRect())
  }
  for (const el of document.querySelectorAll('.eview [data-evidence]')) {
    el.addEventListener('mouseenter', showReadout)
    el.addEventListener('focus', showReadout)
    el.addEventListener('mouseleave', () => evidence.hide())
    el.addEventListener('blur', () => evidence.hide())
  }

  // -- readouts (4 Hz) -------------------------------------------------------------------
  function renderReadouts() {
    const e = vs.e
    const pct = Number.isFinite(e) ? `${Math.round(e * 100)} %` : '–'
    setText(ui.percent, `E ${pct}`)
    setEvidence(ui.percent, `E ${orNa(e, 3)} (energy_update totalEnergy${vs.council ? ': the council\u2019s mean' : ''})`)
    const es = energyState(e)
    setText(ui.state, `${STATE_ICONS[es]} ${es}`)
    if (ui.state.dataset.state !== es) ui.state.dataset.state = es
    setEvidence(ui.state, `energy state ${es} from E ${orNa(e, 3)} (Dormant < 0.2 ≤ Awakening < 0.5 ≤ Active < 0.8 ≤ Resonance)`)
    setText(ui.session, vs.state === 'IDLE' ? 'idle' : vs.state)
    setEvidence(ui.session, `session state ${vs.state} (evidence.state)${vs.sessionId ? ` · session ${vs.sessionId}` : ''}`)
    setText(ui.tps, `${orNa(vs.tps, 1)} tokens/s`)
    setEvidence(ui.tps, `${orNa(vs.tps, 1)} tokens/s over the last 1 s (evidence.tps)`)
    setText(ui.certainty, `certainty ${orNa(vs.certainty, 2)}`)
    setEvidence(ui.certainty, `certainty ${orNa(vs.certainty, 2)} · entropy ${orNa(vs.entropy, 2)} nats (last token)`)
    setText(ui.ttft, `TTFT ${vs.ttftMs === null ? '–' : `${Math.round(vs.ttftMs)} ms`}`)
    setEvidence(ui.ttft, `time to first token ${orNa(vs.ttftMs, 1)} ms`)
    setText(ui.eu, `${vs.energyUnits.toFixed(2)} EU`)
    setEvidence(ui.eu, `${vs.energyUnits.toFixed(4)} energy units accumulated this generation`)
    if (ui.stall.hidden === vs.stall) ui.stall.hidden = !vs.stall
    setEvidence(ui.stall, `stall: since last token ${orNa(vs.sinceTokenMs, 1)} ms`)
    if (ui.burst.hidden === vs.burst) ui.burst.hidden = !vs.burst
    setEvidence(ui.burst, `burst: ${orNa(vs.tps, 1)} tokens/s (> 12)`)
    const councilOn = vs.council
    if (ui.council.hidden === councilOn) ui.council.hidden = !councilOn
    setText(ui.council, `◎ council · ${vs.models.length} models${vs.interference ? ` · DI ${Math.round(vs.interference.di * 100)} %` : ''}`)
    setEvidence(ui.council, vs.interference ? `disagreement ${vs.interference.di.toFixed(3)} (${vs.interference.method})` : 'no interference reading yet')
    setEvidence(ui.level, `quality ${LEVEL_NAMES[quality.level]}${quality.pinned ? ' (pinned)' : ''}: ${quality.reason}`)
    const summary = summarize(vs)
    announcer.offer(summary, performance.now())
    const label = `Energy view: ${summary.text}. ${vs.strikes.length} token strikes, ${vs.models.length} flow ribbon${vs.models.length === 1 ? '' : 's'}; arrow keys step through its elements`
    if (canvas.getAttribute('aria-label') !== label) canvas.setAttribute('aria-label', label)
  }

  let lastReadout = -Infinity
  let lastFrameAt = NaN
  let lastDrawAt = NaN
  let drawn = 0
  let lastVersion = -1
  let lastSize = ''
  let motionWas = !reducedMotion.matches

  /**
   * One animation frame (call from the page's single loop).
   * @param {number} now client clock (ms)
   */
  function frame(now) {
    const interval = Number.isFinite(lastFrameAt) ? now - lastFrameAt : 1000 / 60
    lastFrameAt = now
    if (now - lastReadout >= READOUT_EVERY_MS) {
      lastReadout = now
      renderReadouts()
    }
    answer.flush(now)
    const level = quality.level
    const motion = !reducedMotion.matches && level !== 'static'
    if (motion !== motionWas) {
      motionWas = motion
      dirty = true
    }
    const size = `${canvas.clientWidth}x${canvas.clientHeight}`
    const changed = dirty || vs.version !== lastVersion || size !== lastSize
    const moving = isAnimating(vs, now, motion)
    let work = null
    if ((changed || moving) && quality.shouldDraw(interval)) {
      const t0 = performance.now()
      const dt = Number.isFinite(lastDrawAt) ? now - lastDrawAt : 0
      hits = drawView(canvas, vs, now, { level, motion, dtMs: dt, focusKey })
      lastDrawAt = now
      lastVersion = vs.version
      lastSize = size
      dirty = false
      drawn++
      work = performance.now() - t0
    } else if (!changed && !moving) {
      lastDrawAt = now
    }
    quality.sample(now, interval, work)
  }

  const api = {
    state: vs,
    quality,
    announcer,
    answer,
    frame,
    /**
     * The evidence the view holds for one token (what Evidence Mode shows).
     * @param {string} sessionId
     * @param {string} modelId
     * @param {number} index
     */
    evidenceOf: (sessionId, modelId, index) => tokenEvidenceOf(vs, sessionId, modelId, index),
    /** Appends queued answer text without an animation frame (hidden tab). */
    flushText: () => answer.flush(client.now()),
    get hits() {
      return hits
    },
    get drawCount() {
      return drawn
    },
    /** whether animated forms are drawn (false: reduced motion or the Static level) */
    get motion() {
      return motionWas
    },
  }
  Object.assign(window, { wfView: api })
  return api
}
