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
