// @ts-check
/**
 * Evidence Mode: hovering or focusing (keyboard) any element of the energy
 * view, a token of the answer, or a readout shows the metric behind it with
 * units (Δt ms, tokens/s, certainty or "n/a", E) in one tooltip. The canvas
 * and the answer are one tab stop each: the arrow keys move between their
 * elements (tokens), Escape hides the tooltip. The mode can be switched off.
 *
 * @example
 * import { EvidenceMode } from './evidence.js'
 * const ev = new EvidenceMode(tipElement, toggleButton)
 * ev.show('Δt 38.2 ms', anchorRect)
 *
 * @module page/evidence
 */

export class EvidenceMode {
  /**
   * @param {HTMLElement} tip the tooltip (role=tooltip)
   * @param {HTMLButtonElement} toggle aria-pressed button
   */
  constructor(tip, toggle) {
    this.tip = tip
    this.toggle = toggle
    this.on = true
    this.text = ''
    toggle.addEventListener('click', () => {
      this.on = !this.on
      toggle.setAttribute('aria-pressed', String(this.on))
      toggle.textContent = this.on ? 'Evidence mode: on' : 'Evidence mode: off'
      if (!this.on) this.hide()
    })
    toggle.setAttribute('aria-pressed', 'true')
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.hide()
    })
  }

  /**
   * Shows `text` next to a page-coordinate rectangle.
   * @param {string} text
   * @param {{left: number, top: number, bottom: number}} at viewport coordinates
   * @param {string} [owner] id of the element described (aria-describedby)
   */
  show(text, at, owner) {
    if (!this.on) return
    if (this.text !== text) {
      this.tip.textContent = text
      this.text = text
    }
    const x = Math.max(4, Math.min(at.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - 360))
    this.tip.style.left = `${Math.round(x)}px`
    this.tip.style.top = `${Math.round(at.bottom + window.scrollY + 6)}px`
    this.tip.hidden = false
    this.tip.dataset.owner = owner ?? ''
  }

  hide() {
    if (!this.tip.hidden) this.tip.hidden = true
  }
}
