// @ts-check
/**
 * The prompt box: type a prompt, send it to `POST /api/prompt`, follow the
 * answer's `token_stream` messages of its sessionId until every model
 * completed (the answer itself is shown once, by the energy view's answer
 * panel), stop it with `POST /api/prompt/{sessionId}/cancel`.
 *
 * Self-contained: `installPromptBox(client, container)` builds its own DOM
 * (and a few style rules) inside `container` and listens on the page's
 * `WirthforgeClient`. The prompt goes to the server over HTTP only; answers
 * are shown as text (text nodes), never as HTML.
 *
 * data-testid hooks: prompt-input, prompt-send, prompt-stop, prompt-council,
 * prompt-status (its `data-session` is the running answer's sessionId).
 */

const MAX_PROMPT_BYTES = 8 * 1024

const STYLE = `
.prompt { grid-column: 1 / -1; }
.prompt form { display: flex; gap: 10px; align-items: stretch; }
.prompt textarea {
  flex: 1; min-height: 44px; max-height: 140px; resize: vertical; padding: 8px 10px;
  background: var(--panel-2); color: var(--text); border: 1px solid var(--border); border-radius: 8px;
  font: 13px/1.45 var(--sans);
}
.prompt .actions { display: flex; flex-direction: column; gap: 6px; min-width: 110px; }
.prompt label { color: var(--muted); font-size: 12px; display: flex; gap: 6px; align-items: center; }
.prompt .status { color: var(--muted); font-size: 12px; margin-top: 6px; min-height: 1em; }
`

/**
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {string} [text]
 */
function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value)
  if (text) node.textContent = text
  return node
}

/**
 * @param {{ onMessage: (type: string, cb: (m: any) => void) => () => void }} client
 * @param {HTMLElement} container
 * @param {{ fetch?: typeof fetch }} [options]
 */
export function installPromptBox(client, container, options = {}) {
  const doFetch = options.fetch ?? ((input, init) => fetch(input, init))
  const style = el('style', {}, STYLE)
  document.head.appendChild(style)

  container.classList.add('panel', 'prompt')
  const header = el('header')
  header.appendChild(el('h2', {}, 'Prompt'))
  const input = /** @type {HTMLTextAreaElement} */ (el('textarea', {
    'data-testid': 'prompt-input', placeholder: 'Ask the model something…', 'aria-label': 'Prompt',
  }))
  const send = /** @type {HTMLButtonElement} */ (el('button', { type: 'submit', 'data-testid': 'prompt-send' }, 'Send'))
  const stop = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', 'data-testid': 'prompt-stop' }, 'Stop'))
  const council = /** @type {HTMLInputElement} */ (el('input', { type: 'checkbox', 'data-testid': 'prompt-council' }))
  const councilLabel = el('label')
  councilLabel.append(council, 'council')
  const actions = el('div', { class: 'actions' })
  actions.append(send, stop, councilLabel)
  const form = /** @type {HTMLFormElement} */ (el('form'))
  form.append(input, actions)
  const status = el('div', { class: 'status', 'data-testid': 'prompt-status', role: 'status' })
  container.replaceChildren(header, form, status)

  /** @type {string | null} */
  let session = null

  const setRunning = (/** @type {boolean} */ running) => {
    send.disabled = running
    stop.disabled = !running
  }
  setRunning(false)

  // Does the server take prompts at all (not with --source sim)?
  doFetch('/api/models').then((r) => r.json()).then((info) => {
    if (!info.prompts) {
      status.textContent = `source ${info.source}: this server takes no prompts`
      send.disabled = true
      input.disabled = true
    } else {
      status.textContent = `models: ${info.models.join(', ')}`
      if (info.models.length < 2) council.disabled = true
    }
  }).catch(() => { status.textContent = 'the prompt API did not answer' })

  client.onMessage('token_stream', (m) => {
    const p = m.payload || {}
    if (session === null || p.sessionId !== session) return
    if (p.isComplete) {
      completed.add(String(p.modelId))
      if (expected.every((id) => completed.has(id))) finish('done')
    }
  })

  client.onMessage('error_event', (m) => {
    const p = m.payload || {}
    if (session !== null && p.component === 'model' && p.details?.sessionId === session) {
      status.textContent = `${p.details?.source ?? 'model'}: ${p.message ?? p.code}`
      failed = true
    }
  })

  /** @type {string[]} */
  let expected = []
  /** @type {Set<string>} */
  const completed = new Set()

  let failed = false

  /** @param {string} how */
  const finish = (how) => {
    if (!failed) status.textContent = how  // an error stays on screen
    session = null
    setRunning(false)
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const prompt = input.value
    if (!prompt.trim()) { status.textContent = 'type a prompt first'; return }
    if (new TextEncoder().encode(prompt).length > MAX_PROMPT_BYTES) {
      status.textContent = `the prompt is longer than ${MAX_PROMPT_BYTES} bytes`
      return
    }
    setRunning(true)
    completed.clear()
    failed = false
    status.textContent = 'sending…'
    try {
      const response = await doFetch('/api/prompt', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt, council: council.checked }),
      })
      const body = await response.json()
      if (response.status !== 202) {
        status.textContent = `${response.status}: ${body.error ?? 'refused'}`
        setRunning(false)
        return
      }
      session = body.sessionId
      status.dataset.session = String(body.sessionId)
      expected = body.models
      status.textContent = `answering (${expected.join(', ')})…`
    } catch (error) {
      status.textContent = `the server did not answer: ${error}`
      setRunning(false)
    }
  })

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) form.requestSubmit()
  })

  stop.addEventListener('click', async () => {
    if (session === null) return
    const id = session
    stop.disabled = true
    const response = await doFetch(`/api/prompt/${encodeURIComponent(id)}/cancel`, { method: 'POST' })
    if (response.ok && session === id) finish('stopped')
  })

  return { input, send, stop, council, status }
}
