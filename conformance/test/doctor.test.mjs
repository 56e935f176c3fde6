// The connection doctor in a real browser (issue 30): a deliberately
// broken client, driven the way a real one is. It registers dynamically,
// then sends a person (signed in, in Debian's Chromium) to /authorize with
// a redirect URI it never registered, with a resource the server does not
// know, and with a scope the resource does not offer. The person sees an
// error page naming the client and an attempt id, and nothing the
// operator alone should read; the other two come back to the client as
// invalid_target and invalid_scope. The operator then opens the client's
// page (/admin/clients/{id}) and reads, step by step, each refusal's
// reason and fix; a normal user gets 403 there, and `agentauth client
// trace --attempt` gives the one step the person's attempt id names.
// Screenshots: conformance/test-output/doctor-*.png.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHash, randomBytes } from 'node:crypto'
import { chromium } from 'playwright-core'
import { freePort, startServer } from '../lib/server.mjs'

const out = resolve(dirname(fileURLToPath(import.meta.url)), '../test-output')
const PASSWORD = 'correct horse battery'
const MCP = 'https://mcp.example.com/mcp'
const UNKNOWN = 'https://unknown.example/mcp'

let server, browser, callback, port, redirectUri, wrongRedirect, client

before(async () => {
  mkdirSync(out, { recursive: true })
  server = await startServer({
    users: { alice: PASSWORD },
    admins: { olive: PASSWORD },
    args: ['--resource', MCP, '--scopes', 'mcp:tools'],
  })
  port = await freePort()
  redirectUri = `http://127.0.0.1:${port}/callback`
  // Same host and port, another path: a typical slip, not a match.
  wrongRedirect = `http://127.0.0.1:${port}/oauth/callback`
  callback = createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('back at the client') })
  await new Promise((r) => callback.listen(port, '127.0.0.1', r))
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

after(async () => {
  await browser?.close()
  callback?.close()
  await server?.stop()
})

async function signIn(page, username) {
  await page.goto(`${server.issuer}/login`)
  await page.fill('#username', username)
  await page.fill('#password', PASSWORD)
  await Promise.all([page.waitForURL(/\/account$/), page.click('form[action="/login"] button[type=submit]')])
}

/** An /authorize URL as an MCP client builds it (PKCE, state, resource, scope), with `overrides`. */
function authorizeUrl(overrides) {
  const verifier = randomBytes(32).toString('base64url')
  const url = new URL(`${server.issuer}/authorize`)
  url.search = new URLSearchParams({
    response_type: 'code', client_id: client.client_id, redirect_uri: redirectUri, state: randomBytes(8).toString('hex'),
    code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
    resource: MCP, scope: 'mcp:tools', ...overrides,
  }).toString()
  return url
}

/** The timeline as the operator reads it: one entry per `#timeline` item, newest first. */
async function timeline(page) {
  return page.locator('#timeline > li').evaluateAll((items) => items.map((li) => ({
    className: li.className,
    step: li.querySelector('strong')?.textContent ?? '',
    attempt: li.querySelector('code')?.textContent ?? null,
    // innerText: as shown, the reason and the fix on lines of their own.
    text: li.innerText.replace(/\s+/g, ' ').trim(),
  })))
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

describe('the connection doctor', () => {
  let attempt

  it('a person sent with a wrong redirect_uri sees the client and an attempt id, not the registration', async () => {
    // 1. Dynamic registration, as an MCP client does it: public, loopback redirect.
    const registration = await fetch(`${server.issuer}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'Broken MCP client',
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      }),
    })
    assert.equal(registration.status, 201)
    client = await registration.json()

    // 2. The wrong redirect URI: no redirect is safe, so the person gets a page.
    const context = await browser.newContext()
    const page = await context.newPage()
    await signIn(page, 'alice')
    const response = await page.goto(authorizeUrl({ redirect_uri: wrongRedirect }).href)
    assert.equal(response.status(), 400)
    assert.ok(page.url().startsWith(`${server.issuer}/authorize?`), 'not sent anywhere')
    const main = await page.textContent('main')
    assert.match(main, /redirect_uri is not registered for this client/)
    const forOperator = (await page.textContent('#for-operator')).replace(/\s+/g, ' ')
    assert.ok(forOperator.includes(`client ${client.client_id}`), forOperator)
    attempt = forOperator.match(/attempt ([a-z0-9]{8})\b/)?.[1]
    assert.ok(attempt, `an attempt id: ${forOperator}`)
    assert.equal(await page.textContent('#for-operator code >> nth=1'), attempt)
    // What the operator alone reads: the registered URIs and the fix.
    const html = await page.content()
    assert.ok(!html.includes(redirectUri), 'the registered redirect URI is not shown to the person')
    assert.ok(!/registered:|Fix|Update the registration/.test(html), 'no operator advice on the person\'s page')
    await page.screenshot({ path: `${out}/doctor-person-error.png`, fullPage: true })

    // 3. An unregistered resource and 4. an unknown scope: the redirect URI
    // is right now, so both go back to the client (RFC 6749 §4.1.2.1).
    for (const [overrides, error, description] of [
      [{ resource: UNKNOWN }, 'invalid_target', UNKNOWN],
      [{ scope: 'mcp:admin' }, 'invalid_scope', 'mcp:admin'],
    ]) {
      const url = authorizeUrl(overrides)
      await page.goto(url.href)
      const back = new URL(page.url())
      assert.equal(`${back.origin}${back.pathname}`, redirectUri, back.href)
      assert.equal(back.searchParams.get('error'), error, back.href)
      assert.ok(back.searchParams.get('error_description').includes(description), back.href)
      assert.equal(back.searchParams.get('state'), url.searchParams.get('state'))
      assert.equal(back.searchParams.get('iss'), server.issuer, 'RFC 9207 iss')
    }

    // A normal user may not read the doctor.
    const denied = await page.goto(`${server.issuer}/admin/clients/${encodeURIComponent(client.client_id)}`)
    assert.equal(denied.status(), 403)
    assert.ok(!(await page.content()).includes(wrongRedirect), 'nothing of the trace on the 403 page')
    await context.close()
  })

  it('the operator reads each refusal, its reason and its fix, on the client\'s page', async () => {
    assert.ok(attempt, 'the first test ran')
    const context = await browser.newContext()
    const page = await context.newPage()
    await signIn(page, 'olive')
    const url = `${server.issuer}/admin/clients/${encodeURIComponent(client.client_id)}`
    // Steps are written in batches (every ~200 ms): reload until all four
    // are there, for at most 10 s.
    let items = []
    for (const deadline = Date.now() + 10_000; ;) {
      const response = await page.goto(url)
      assert.equal(response.status(), 200)
      items = await timeline(page)
      if (items.filter((i) => /^(ok|refused)$/.test(i.className)).length >= 4 || Date.now() > deadline) break
      await sleep(250)
    }
    await page.screenshot({ path: `${out}/doctor-client.png`, fullPage: true })
    assert.equal(items.length, 4, JSON.stringify(items, null, 1))
    const main = (await page.textContent('main')).replace(/\s+/g, ' ')
    assert.ok(main.includes(client.client_id), 'the page names the client')
    assert.ok(main.includes(redirectUri), 'and lists its registered redirect URI')

    // Newest first: scope, resource, redirect, then the registration.
    const [scope, resource, redirect, register] = items

    assert.equal(register.step, 'register')
    assert.equal(register.className, 'ok')
    assert.match(register.text, /^register ok /)
    assert.ok(register.text.includes('authenticates with none; grants: authorization_code refresh_token'), register.text)
    assert.ok(register.text.includes(`redirect URIs: ${redirectUri}`), register.text)

    for (const item of [redirect, resource, scope]) {
      assert.equal(item.step, 'authorize', item.text)
      assert.equal(item.className, 'refused', item.text)
      assert.match(item.text, /^authorize refused /)
      assert.match(item.attempt ?? '', /^[a-z0-9]{8}$/, item.text)
      assert.match(item.text, / Fix: /, item.text)
    }
    assert.equal(new Set([redirect.attempt, resource.attempt, scope.attempt]).size, 3, 'one attempt id per request')

    // The wrong redirect: the person's attempt id, and the registered URI for the operator.
    assert.equal(redirect.attempt, attempt, 'the attempt id the person saw')
    assert.ok(redirect.text.includes(`attempt ${attempt}`), redirect.text)
    assert.ok(redirect.text.includes('redirect_uri is not registered for this client'), redirect.text)
    assert.ok(redirect.text.includes(`Fix: redirect_uri "${wrongRedirect}" is not registered for this client; registered: ${redirectUri}.`), redirect.text)

    // The unknown resource: the registered ones.
    assert.ok(resource.text.includes(`resource "${UNKNOWN}" is not registered at this server`), resource.text)
    assert.ok(resource.text.includes(`Fix: registered resources: ${MCP}.`), resource.text)

    // The unknown scope: the scopes offered, offline_access being the server's own.
    assert.ok(scope.text.includes(`resource "${MCP}" does not offer scope "mcp:admin"`), scope.text)
    assert.ok(scope.text.includes('Fix: scopes offered here: mcp:tools offline_access.'), scope.text)
    await context.close()
  })

  it('agentauth client trace --attempt --json gives the person\'s step alone', async () => {
    assert.ok(attempt, 'the first test ran')
    const lines = (await server.cli(['client', 'trace', client.client_id, '--attempt', attempt, '--json'])).split('\n').filter(Boolean)
    assert.equal(lines.length, 1, lines.join('\n'))
    const step = JSON.parse(lines[0])
    assert.equal(step.attempt, attempt)
    assert.equal(step.step, 'authorize')
    assert.equal(step.outcome, 'refused')
    assert.equal(step.reason, 'redirect_uri is not registered for this client')
    assert.ok(step.fix.includes(`redirect_uri "${wrongRedirect}" is not registered for this client; registered: ${redirectUri}.`), step.fix)
    assert.equal(typeof step.at, 'number')
  })
})
