// Recorded sessions: list what the server's event log holds, replay one,
// delete one or all of them; and the user's progress.
//
// A self-contained ES module: it finds its panel ([data-testid="sessions-panel"])
// and talks only HTTP (GET /api/sessions, POST /api/replay, POST /api/replay/stop,
// DELETE /api/sessions/{id}, DELETE /api/sessions, GET /api/progress).
// The replay itself arrives over the page's normal WebSocket, like live data,
// with sessionId "replay-<original>"; a recording kept without text replays
// with placeholder tokens (textOmitted). Deleting asks for confirmation first.
// Text from the server is set with textContent, never as HTML.

/** The event log commits every ~100 ms: reload the list this long after a generation completes. */
const RELOAD_AFTER_COMPLETE_MS = 400

/** @param {number} ms epoch milliseconds */
function when (ms) {
  const d = new Date(ms)
  return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' }) + ' ' +
    d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })
}

/** @param {HTMLElement} panel */
export function mountSessions (panel) {
  const list = /** @type {HTMLOListElement} */ (panel.querySelector('[data-testid="sessions-list"]'))
  const status = /** @type {HTMLElement} */ (panel.querySelector('[data-testid="sessions-status"]'))
  const speed = /** @type {HTMLSelectElement} */ (panel.querySelector('[data-testid="replay-speed"]'))
  const stop = /** @type {HTMLButtonElement} */ (panel.querySelector('[data-testid="replay-stop"]'))
  const refresh = /** @type {HTMLButtonElement} */ (panel.querySelector('[data-testid="sessions-refresh"]'))
  const purge = /** @type {HTMLButtonElement | null} */ (panel.querySelector('[data-testid="sessions-purge"]'))
  const progress = /** @type {HTMLElement | null} */ (panel.querySelector('[data-testid="progress"]'))
  const policy = /** @type {HTMLElement | null} */ (panel.querySelector('[data-testid="record-policy"]'))

  async function load () {
    let body
    try {
      const response = await fetch('/api/sessions?limit=50')
      body = await response.json()
      if (!response.ok) {
        status.textContent = body.error || `HTTP ${response.status}`
        list.replaceChildren()
        return
      }
    } catch (error) {
      status.textContent = 'sessions unavailable'
      return
    }
    const rows = body.sessions.map((/** @type {any} */ s) => {
      const item = document.createElement('li')
      item.dataset.sessionId = s.id
      const label = document.createElement('span')
      label.className = 'what'
      label.textContent = `${when(s.startedAt)} · ${s.sessionId}`
      const facts = document.createElement('span')
      facts.className = 'facts'
      facts.textContent = `${s.tokens} tokens · ${s.durationSeconds.toFixed(1)} s${s.complete ? '' : ' · partial'}` +
        (s.textKept === false ? ' · no text' : '')
      const play = document.createElement('button')
      play.type = 'button'
      play.textContent = 'Replay'
      play.dataset.testid = 'replay-button'
      play.addEventListener('click', () => replay(s.id, s.textKept !== false))
      const remove = document.createElement('button')
      remove.type = 'button'
      remove.textContent = 'Delete'
      remove.dataset.testid = 'delete-button'
      remove.addEventListener('click', () => removeOne(s.id, s.sessionId))
      item.append(label, facts, play, remove)
      return item
    })
    list.replaceChildren(...rows)
    if (policy) {
      policy.textContent = !body.recording
        ? 'nothing is recorded'
        : body.recordText
          ? 'answers are recorded with their text (--record-text); prompts never are'
          : 'answers are recorded as numbers only (counts, timing, energy): no text, no prompts'
    }
    if (!body.recording) status.textContent = 'recording is off on this server (see /health)'
    else status.textContent = rows.length ? `${rows.length} recorded` : 'nothing recorded yet'
  }

  async function loadProgress () {
    if (!progress) return
    try {
      const response = await fetch('/api/progress')
      const p = await response.json()
      const next = p.nextLevelAt === null ? 'top level' : `next level at ${p.nextLevelAt.toLocaleString()} tokens`
      const earned = p.achievements.length ? ` · ${p.achievements.map((/** @type {string} */ a) => a.replace(/_/g, ' ')).join(', ')}` : ''
      progress.textContent = `Level ${p.level} · ${p.tokens.toLocaleString()} tokens · ${p.sessions} answers · ` +
        `${p.energyUnits} EU · ${next}${earned}${p.persisted ? '' : ' (not kept across restarts)'}`
    } catch (error) {
      progress.textContent = 'progress unavailable'
    }
  }

  /**
   * @param {string} id
   * @param {string} name
   */
  async function removeOne (id, name) {
    if (!window.confirm(`Delete the recording ${name}? Its rows are removed from this computer; this cannot be undone.`)) return
    const response = await fetch(`/api/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' })
    const body = await response.json()
    status.textContent = response.ok ? `deleted ${name}` : (body.error || `HTTP ${response.status}`)
    await load()
    if (response.ok) status.textContent = `deleted ${name}`
  }

  async function removeAll () {
    if (!window.confirm('Delete every recording? They are removed from this computer; this cannot be undone.')) return
    const reset = window.confirm('Also reset your progress (level, totals, achievements)? Cancel keeps it.')
    const response = await fetch(`/api/sessions?resetProgress=${reset}`, { method: 'DELETE' })
    const body = await response.json()
    await load()
    await loadProgress()
    status.textContent = response.ok
      ? `deleted every recording${body.progressReset ? ' and reset your progress' : ''}`
      : (body.error || `HTTP ${response.status}`)
  }

  /**
   * @param {string} id
   * @param {boolean} textKept
   */
  async function replay (id, textKept = true) {
    const response = await fetch('/api/replay', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ session: id, speed: Number(speed.value) })
    })
    const body = await response.json()
    status.textContent = response.ok
      ? `replaying ${id} at ${body.speed}× (${body.durationSeconds.toFixed(1)} s)` +
        (textKept ? '' : ': no text was recorded, so its tokens show as placeholders')
      : (body.error || `HTTP ${response.status}`)
  }

  stop.addEventListener('click', async () => {
    await fetch('/api/replay/stop', { method: 'POST' })
    status.textContent = 'replay stopped'
  })
  // No polling: a fetch to a stopped server would only fill the console.
  // Instead the list reloads when a generation completes on the page's own
  // stream, a moment later, once the server's event log has committed it.
  refresh.addEventListener('click', () => { load(); loadProgress() })
  if (purge) purge.addEventListener('click', removeAll)
  document.addEventListener('visibilitychange', () => { if (!document.hidden) load() })
  window.addEventListener('load', () => {
    const client = /** @type {any} */ (window).wirthforge
    if (!client || typeof client.onMessage !== 'function') return
    client.onMessage('token_stream', (/** @type {any} */ m) => {
      const id = String(m.payload.sessionId || '')
      if (m.payload.isComplete && !id.startsWith('replay-')) setTimeout(() => { load(); loadProgress() }, RELOAD_AFTER_COMPLETE_MS)
    })
    client.onMessage('reward_event', () => loadProgress())
  })
  load()
  loadProgress()
}

const panel = document.querySelector('[data-testid="sessions-panel"]')
if (panel instanceof HTMLElement) mountSessions(panel)
