// @ts-check
/**
 * The answer, shown once: one block per (session, model), one span per
 * token, each tinted by its certainty and underlined in a style of its band
 * (solid high, dashed mid, dotted low, a hollow box for "n/a"), so that the
 * tint is never the only sign. Tokens whose text was not recorded
 * (`textOmitted`) show a placeholder and the block says why. Text only
 * (text nodes), never HTML; at most MAX_ANSWER_CHARS characters are kept.
 * Message handlers queue tokens; {@link AnswerView#flush} (once per
 * animation frame) appends them in one DOM write.
 *
 * @example
 * import { AnswerView } from './answer.js'
 * const answer = new AnswerView(container, (sid, model, index) => evidenceOf(sid, model, index))
 * client.onMessage('token_stream', (m) => answer.push(m.payload))
 * requestAnimationFrame(() => answer.flush())
 *
 * @module page/answer
 */

import { certaintyLevel } from './mappings.js'
import { untrusted } from './wire.js'

/** @typedef {import('./view-state.js').TokenEvidence} TokenEvidence */
/** @template T @typedef {import('./wire.js').Untrusted<T>} Untrusted */
/** @typedef {import('./wire.js').TokenStreamPayload} TokenStreamPayload */

export const MAX_ANSWER_CHARS = 20_000
const PLACEHOLDER = '▯'
const RETINT_MS = 3000

/**
 * @typedef {object} PendingToken
 * @property {string} sid
 * @property {string} model
 * @property {number} index
 * @property {string} text
 * @property {boolean} omitted
 */

/**
 * @typedef {object} Block
 * @property {HTMLElement} el
 * @property {boolean} complete
 * @property {boolean} omittedNote
 */

export class AnswerView {
  /**
   * @param {HTMLElement} container
   * @param {(sid: string, model: string, index: number) => TokenEvidence | null} evidenceOf
   */
  constructor(container, evidenceOf) {
    this.container = container
    this.evidenceOf = evidenceOf
    /** @type {Map<string, Block>} open blocks by `${sid}\u0000${model}` */
    this.blocks = new Map()
    /** @type {(PendingToken | {sid: string, model: string, complete: true})[]} */
    this.queue = []
    /** @type {{span: HTMLElement, sid: string, model: string, index: number, since: number}[]} spans still without certainty */
    this.untinted = []
    this.chars = 0
    this.queuedChars = 0
  }

  /**
   * Queues a token_stream payload.
   * @param {unknown} payload
   */
  push(payload) {
    /** @type {Untrusted<TokenStreamPayload>} */
    const p = untrusted(payload)
    const sid = typeof p.sessionId === 'string' ? p.sessionId : ''
    const model = String(p.modelId ?? '')
    const tokens = Array.isArray(p.tokens) ? p.tokens : []
    const first = typeof p.firstIndex === 'number' ? p.firstIndex : NaN
    const omitted = p.textOmitted === true
    for (let i = 0; i < tokens.length; i++) {
      const text = String(tokens[i])
      this.queue.push({ sid, model, index: Number.isFinite(first) ? first + i : NaN, text, omitted: omitted || false })
      this.queuedChars += text.length || 1
    }
    if (p.isComplete === true) this.queue.push({ sid, model, complete: true })
    // bounded even when nothing flushes (a hidden tab runs no animation frames)
    while (this.queuedChars > MAX_ANSWER_CHARS && this.queue.length) {
      const dropped = this.queue.shift()
      if (dropped && 'text' in dropped) this.queuedChars -= dropped.text.length || 1
    }
  }

  /**
   * @param {string} sid
   * @param {string} model
   */
  block(sid, model) {
    const key = `${sid}\u0000${model}`
    let b = this.blocks.get(key)
    if (!b || b.complete) {
      const el = document.createElement('div')
      el.className = 'ablock'
      el.dataset.session = sid
      el.dataset.model = model
      const label = document.createElement('span')
      label.className = 'model'
      label.textContent = `${model}: `
      el.append(label)
      if (this.container.lastElementChild) this.container.append(document.createTextNode('\n\n'))
      this.container.append(el)
      b = { el, complete: false, omittedNote: false }
      this.blocks.set(key, b)
    }
    return b
  }

  /**
   * Tints a span from the evidence the page holds.
   * @param {HTMLElement} span
   * @param {TokenEvidence | null} ev
   */
  tint(span, ev) {
    const level = certaintyLevel(ev ? ev.certainty : null)
    span.className = `tok c-${level}${span.dataset.omitted ? ' omitted' : ''}`
    if (ev && ev.certainty !== null) span.style.setProperty('--c', String(Math.round(ev.certainty * 100) / 100))
    return level !== 'na'
  }

  /**
   * Appends what was queued (call once per animation frame); re-tints spans
   * whose evidence arrived after their text.
   * @param {number} now
   */
  flush(now) {
    if (this.untinted.length) {
      const keep = []
      for (const u of this.untinted) {
        if (!this.tint(u.span, this.evidenceOf(u.sid, u.model, u.index)) && now - u.since < RETINT_MS) keep.push(u)
      }
      this.untinted = keep
    }
    if (!this.queue.length) return false
    const el = this.container
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24
    /** @type {Map<HTMLElement, DocumentFragment>} */
    const frags = new Map()
    for (const item of this.queue) {
      const b = this.block(item.sid, item.model)
      if ('complete' in item) {
        const end = document.createElement('span')
        end.className = 'end'
        end.textContent = ' ■'
        const f = frags.get(b.el)
        if (f) {
          b.el.append(f)
          frags.delete(b.el)
        }
        b.el.append(end)
        b.complete = true
        continue
      }
      let f = frags.get(b.el)
      if (!f) {
        f = document.createDocumentFragment()
        frags.set(b.el, f)
      }
      if (item.omitted && !b.omittedNote) {
        const note = document.createElement('span')
        note.className = 'omitted-note'
        note.textContent = '[text not recorded: this recording was made without --record-text; ▯ stands for each token] '
        f.append(note)
        b.omittedNote = true
      }
      const span = document.createElement('span')
      span.dataset.index = String(item.index)
      if (item.omitted) {
        span.dataset.omitted = '1'
        span.textContent = PLACEHOLDER
      } else span.textContent = item.text
      if (!this.tint(span, this.evidenceOf(item.sid, item.model, item.index))) {
        this.untinted.push({ span, sid: item.sid, model: item.model, index: item.index, since: now })
      }
      f.append(span)
      this.chars += item.text.length || 1
    }
    for (const [blockEl, f] of frags) blockEl.append(f)
    this.queue = []
    this.queuedChars = 0
    if (this.untinted.length > 512) this.untinted.splice(0, this.untinted.length - 512)
    this.trim()
    if (atBottom) el.scrollTop = el.scrollHeight
    return true
  }

  /** Drops the oldest tokens (whole blocks first) beyond MAX_ANSWER_CHARS. */
  trim() {
    if (this.chars <= MAX_ANSWER_CHARS) return
    const target = Math.floor(MAX_ANSWER_CHARS * 0.75)
    while (this.chars > target && this.container.firstChild) {
      const first = this.container.firstChild
      if (first instanceof HTMLElement && first.classList.contains('ablock')) {
        const tokens = first.querySelectorAll('span[data-index]')
        const size = first.textContent?.length ?? 0
        if (this.chars - size >= target || tokens.length < 2) {
          this.chars -= size
          first.remove()
          for (const [k, b] of this.blocks) if (b.el === first) this.blocks.delete(k)
          continue
        }
        // trim this block from its start
        for (const t of tokens) {
          if (this.chars <= target) break
          this.chars -= t.textContent?.length || 1
          t.remove()
        }
        break
      }
      first.remove()
    }
  }
}
