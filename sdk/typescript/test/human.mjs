// The human step of the code flow without a browser: a cookie jar and the
// real sign-in and consent forms, posted as a browser would post them.
import assert from 'node:assert/strict'

export class Human {
  constructor(username, password) {
    this.username = username
    this.password = password
    this.jar = new Map()
  }

  keep(response) {
    for (const c of response.headers.getSetCookie()) {
      const [pair] = c.split(';')
      const i = pair.indexOf('=')
      this.jar.set(pair.slice(0, i), pair.slice(i + 1))
    }
  }

  async go(url, init = {}) {
    const response = await fetch(url, {
      ...init,
      redirect: 'manual',
      headers: { ...init.headers, cookie: [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ') },
    })
    this.keep(response)
    return response
  }

  /**
   * Opens an authorization URL, signs in when sent to the login page,
   * approves on the consent page, and returns the redirect back to the
   * client (its `code`, `state`, `iss`). `onConsent(html)` may inspect the page.
   */
  async authorize(url, { onConsent } = {}) {
    let response = await this.go(url)
    for (let hops = 0; hops < 10; hops++) {
      const location = response.headers.get('location')
      if (response.status >= 300 && response.status < 400 && location) {
        const next = new URL(location, url)
        if (next.origin !== new URL(url).origin) return next // back at the client
        response = await this.go(next)
        url = next
        continue
      }
      const html = await response.text()
      assert.equal(response.status, 200, html.slice(0, 500))
      const field = (name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))?.[1]
      const decode = (s) => s
        ?.replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
        .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(Number(d)))
        .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')
      const form = (action, body) => this.go(new URL(action, url), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(body),
      })
      if (html.includes('action="/login"')) {
        response = await form('/login', { csrf_token: decode(field('csrf_token')), return_to: decode(field('return_to')), username: this.username, password: this.password })
      } else if (html.includes('action="/authorize/decision"')) {
        if (onConsent) await onConsent(html)
        response = await form('/authorize/decision', { csrf_token: decode(field('csrf_token')), request: decode(field('request')), attempt: decode(field('attempt')), decision: 'approve' })
      } else {
        throw new Error(`unexpected page at ${url}: ${html.slice(0, 500)}`)
      }
    }
    throw new Error('too many redirects')
  }
}

/** The owner signs in and approves, with her password, the pending request whose binding message is `binding`. */
export async function approveBackchannel(issuer, username, password, binding) {
  const person = new Human(username, password)
  const origin = { origin: issuer }
  const decode = (s) => s.replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')
  const form = (path, body) => person.go(new URL(path, issuer), { method: 'POST', headers: { ...origin, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body) })
  let page = await (await person.go(new URL('/login', issuer))).text()
  let csrf = decode(page.match(/name="csrf_token" value="([^"]+)"/)[1])
  const r = await form('/login', { csrf_token: csrf, username, password, return_to: '/account' })
  assert.equal(r.status, 303, await r.text())
  for (let i = 0; i < 50; i++) {
    page = await (await person.go(new URL('/account/approvals', issuer))).text()
    const ids = page.match(/data-approvals-live="([^"]*)"/)[1].split(',').filter(Boolean)
    csrf = decode(page.match(/data-csrf="([^"]+)"/)[1])
    for (const id of ids) {
      const start = page.indexOf(`id="request-${id}"`)
      const section = page.slice(start, page.indexOf('</section>', start))
      const m = section.match(/<strong class="binding">([^<]*)<\/strong>/)
      if (m && decode(m[1]) === binding) {
        const done = await form(`/account/approvals/${id}/approve`, { csrf_token: csrf, password })
        assert.equal(done.status, 303, await done.text())
        return
      }
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`no pending request ${binding}`)
}
