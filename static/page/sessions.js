// Recorded sessions: list what the server's event log holds and replay one.
//
// A self-contained ES module: it finds its panel ([data-testid="sessions-panel"])
// and talks only HTTP (GET /api/sessions, POST /api/replay, POST /api/replay/stop).
// The replay itself arrives over the page's normal WebSocket, like live data,
// with sessionId "replay-<original>". Text from the server is set with
// textContent, never as HTML.

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
      facts.textContent = `${s.tokens} tokens · ${s.durationSeconds.toFixed(1)} s${s.complete ? '' : ' · partial'}`
      const play = document.createElement('button')
      play.type = 'button'
      play.textContent = 'Replay'
      play.dataset.testid = 'replay-button'
      play.addEventListener('click', () => replay(s.id))
      item.append(label, facts, play)
      return item
    })
    list.replaceChildren(...rows)
    if (!body.recording) status.textContent = 'recording is off on this server (see /health)'
    else status.textContent = rows.length ? `${rows.length} recorded` : 'nothing recorded yet'
  }

  /** @param {string} id */
  async function replay (id) {
    const response = await fetch('/api/replay', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ session: id, speed: Number(speed.value) })
    })
    const body = await response.json()
    status.textContent = response.ok
      ? `replaying ${id} at ${body.speed}× (${body.durationSeconds.toFixed(1)} s)`
      : (body.error || `HTTP ${response.status}`)
  }

  stop.addEventListener('click', async () => {
    await fetch('/api/replay/stop', { method: 'POST' })
    status.textContent = 'replay stopped'
  })
  // No polling: a fetch to a stopped server would only fill the console.
  // Instead the list reloads when a generation completes on the page's own
  // stream, a moment later, once the server's event log has committed it.
  refresh.addEventListener('click', load)
  document.addEventListener('visibilitychange', () => { if (!document.hidden) load() })
  window.addEventListener('load', () => {
    const client = /** @type {any} */ (window).wirthforge
    if (!client || typeof client.onMessage !== 'function') return
    client.onMessage('token_stream', (/** @type {any} */ m) => {
      const id = String(m.payload.sessionId || '')
      if (m.payload.isComplete && !id.startsWith('replay-')) setTimeout(load, RELOAD_AFTER_COMPLETE_MS)
    })
  })
  load()
}

const panel = document.querySelector('[data-testid="sessions-panel"]')
if (panel instanceof HTMLElement) mountSessions(panel)
