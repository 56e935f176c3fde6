// Approvals of one action (issue 32) driven by third-party clients: OpenID
// CIBA (Client-Initiated Backchannel Authentication) with RFC 9396 rich
// authorization details, against the real binary.
//
// - openid-client, poll mode: an agent (made with the CLI, private_key_jwt)
//   asks its owner; she approves with her password (no passkey yet) and
//   the poll ends in a DPoP-bound, short token carrying the details and no
//   refresh token; a denied request ends the poll with access_denied.
// - oauth4webapi, ping mode: a confidential client registered (RFC 7591)
//   with a notification endpoint here; before bob consented to it its
//   request reaches nobody; after one authorization code flow it reaches
//   him, his approval pings the endpoint with the client's bearer token,
//   and one token request delivers. 20 rounds measure the time from the
//   approval to the ping and to the token (printed for the benchmark note).
// - Chromium (playwright-core, the DevTools virtual authenticator): the
//   approvals page shows a request the moment it is made (server-sent
//   events reload it; the test never does), the passkey approves it, and
//   a second request is denied in one click.
// - The whole loop with the example MCP server and the official MCP SDK
//   client: delete_note with an ordinary token is error -31403 naming the
//   details; the agent asks for exactly those; the owner approves with her
//   passkey in Chromium; the DPoP-bound token makes that call once.
//
// Each describe starts its own server (and users and agents), so that no
// test sees another's requests. Screenshots go to conformance/test-output/.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import * as client from 'openid-client'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { chromium } from 'playwright-core'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { McpError } from '@modelcontextprotocol/sdk/types.js'
import { freePort, startServer } from '../lib/server.mjs'
import { startMcpServer } from '../lib/mcp.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }
const out = resolve(dirname(fileURLToPath(import.meta.url)), '../test-output')
const PASSWORD = 'correct horse battery'
const CIBA = 'urn:openid:params:grant-type:ciba'
// A resource that needs no process: tests 1 to 3 never call it.
const NOTES = 'https://notes.example.com/mcp'
const ROUNDS = Number(process.env.CIBA_PING_ROUNDS ?? 20)

let browser
const shots = []

after(async () => {
  await browser?.close()
  if (shots.length) console.log(`screenshots:\n  ${shots.join('\n  ')}`)
})

// ---------------------------------------------------------------------------
// Shared helpers

/**
 * The resources file: one resource that declares the `mcp_tool_call`
 * detail type (what tests/api/ciba.rs declares), so that metadata lists it,
 * /bc-authorize takes it, and the approvals page says it in words.
 */
function resourcesFile(dir, uri, scopes) {
  const file = join(dir, 'resources.toml')
  writeFileSync(file, `
[[resource]]
uri = "${uri}"
name = "Notes"
scopes = [${scopes.map((s) => `"${s}"`).join(', ')}]

[[resource.authorization_details]]
type = "mcp_tool_call"
description = "One call of one tool"
render = "Call the tool {tool} with {arguments}"
fields.tool = { kind = "string", required = true, max_length = 128 }
fields.arguments = { kind = "object" }
`)
  return file
}

/**
 * An agent made with the CLI holding two ES256 keys: one signs its client
 * assertions (private_key_jwt), the other its DPoP proofs. The server takes
 * an agent's DPoP proof only from one of its registered keys, so the
 * approval token is bound to a key the operator vouched for.
 */
async function createAgent(run, dir, { name, owner = 'alice', scope }) {
  const auth = await jose.generateKeyPair('ES256', { extractable: true })
  const dpop = await jose.generateKeyPair('ES256', { extractable: true })
  const keys = [
    { ...(await jose.exportJWK(auth.publicKey)), kid: `${name}-auth`, alg: 'ES256', use: 'sig' },
    { ...(await jose.exportJWK(dpop.publicKey)), kid: `${name}-dpop`, alg: 'ES256', use: 'sig' },
  ]
  const file = join(dir, `${name}.jwks`)
  writeFileSync(file, JSON.stringify({ keys }))
  const id = await run(['agent', 'create', '--owner', owner, '--name', name, '--scope', scope, '--jwk', file])
  return { id, name, auth, dpop, authKid: `${name}-auth` }
}

/** A server with a resources file for `resource` and the agents asked for. */
async function startStack({ resource = NOTES, scopes = ['notes'], users = { alice: PASSWORD }, host, agents = [], args = [] } = {}) {
  const made = {}
  const server = await startServer({
    host,
    users,
    // Loopback notification endpoints (ping mode) are http: allowed only
    // with this flag.
    args: ['--insecure-fetch-for-tests-only', ...args],
    async prepare({ run, dir }) {
      for (const a of agents) made[a.name] = await createAgent(run, dir, a)
      return ['--resources-file', resourcesFile(dir, resource, scopes)]
    },
  })
  return { server, agents: made }
}

/** The details that approve one `delete_note` call, as the resource names them. */
const deleteNote = (resource, id) => [{ type: 'mcp_tool_call', locations: [resource], tool: 'delete_note', arguments: { id } }]

const unescapeHtml = (s) => s.replace(/&quot;/g, '"').replace(/&#39;|&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')

/**
 * A person at the server's pages without a browser: fetch with a cookie
 * jar, redirects not followed (a 303 is the answer to check). Used where
 * the page's script plays no part (password approvals, the code flow).
 */
class Person {
  constructor(issuer) {
    this.issuer = issuer
    this.jar = new Map()
  }

  cookie() {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ')
  }

  async fetch(path, init = {}) {
    const r = await fetch(new URL(path, this.issuer), {
      ...init,
      redirect: 'manual',
      headers: { ...init.headers, cookie: this.cookie() },
    })
    for (const c of r.headers.getSetCookie()) {
      const [pair, ...attributes] = c.split(';')
      const i = pair.indexOf('=')
      const [name, value] = [pair.slice(0, i).trim(), pair.slice(i + 1)]
      if (attributes.some((a) => /^\s*max-age=0\s*$/i.test(a))) this.jar.delete(name)
      else this.jar.set(name, value)
    }
    return r
  }

  post(path, fields) {
    return this.fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields),
    })
  }

  async signIn(username, password = PASSWORD) {
    const page = await this.fetch('/login')
    const csrf = (await page.text()).match(/name="csrf_token" value="([^"]+)"/)[1]
    const r = await this.post('/login', { csrf_token: csrf, username, password, return_to: '/account' })
    assert.equal(r.status, 303, `sign-in as ${username}`)
    return this
  }

  /**
   * The approvals page as data: the pending requests (id, binding message,
   * the action in words) and the CSRF token its forms carry.
   */
  async approvals() {
    const r = await this.fetch('/account/approvals')
    assert.equal(r.status, 200)
    const html = await r.text()
    const ids = html.match(/data-approvals-live="([^"]*)"/)[1].split(',').filter(Boolean)
    const csrf = html.match(/data-csrf="([^"]+)"/)[1]
    const requests = ids.map((id) => {
      const start = html.indexOf(`id="request-${id}"`)
      const section = html.slice(start, html.indexOf('</section>', start))
      return {
        id,
        binding: unescapeHtml(section.match(/<strong class="binding">([^<]*)<\/strong>/)?.[1] ?? ''),
        actions: [...section.matchAll(/<li><strong>([^<]*)<\/strong>/g)].map((m) => unescapeHtml(m[1])),
        passwordForm: section.includes('name="password"'),
      }
    })
    return { requests, csrf, html }
  }

  /** The one pending request whose binding message is `binding`. */
  async request(binding) {
    const { requests, csrf } = await this.approvals()
    const found = requests.filter((r) => r.binding === binding)
    assert.equal(found.length, 1, `one request "${binding}" among ${JSON.stringify(requests)}`)
    return { ...found[0], csrf }
  }

  approve(request, password = PASSWORD) {
    return this.post(`/account/approvals/${request.id}/approve`, { csrf_token: request.csrf, password })
  }

  deny(request) {
    return this.post(`/account/approvals/${request.id}/deny`, { csrf_token: request.csrf })
  }
}

/**
 * Polls the CIBA grant with oauth4webapi as CIBA Core §7.3 and §11 say:
 * wait `interval` between requests, 5 s more after slow_down, stop at
 * anything but authorization_pending.
 */
async function pollGrant(as, c, auth, started, options = {}) {
  let interval = started.interval ?? 5
  const deadline = Date.now() + started.expires_in * 1000
  for (;;) {
    await new Promise((r) => setTimeout(r, interval * 1000))
    options.signal?.throwIfAborted()
    const response = await oauth.backchannelAuthenticationGrantRequest(as, c, auth, started.auth_req_id, { ...insecure, ...options })
    try {
      return await oauth.processBackchannelAuthenticationGrantResponse(as, c, response)
    } catch (err) {
      if (!(err instanceof oauth.ResponseBodyError) || Date.now() > deadline) throw err
      if (err.error === 'slow_down') interval += 5
      else if (err.error !== 'authorization_pending') throw err
    }
  }
}

/**
 * A poll left running in the background while the owner answers: its
 * failure is seen where the test awaits it, and a test that failed before
 * then does not leave an unhandled rejection behind.
 */
function background(promise) {
  promise.catch(() => {})
  return promise
}

/** Chromium, launched once for the file (Debian's; none is downloaded). */
async function theBrowser() {
  browser ??= await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  return browser
}

async function shot(page, name) {
  mkdirSync(out, { recursive: true })
  const path = `${out}/${name}.png`
  await page.screenshot({ path, fullPage: true })
  shots.push(path)
}

/**
 * `username` signed in in Chromium with a virtual authenticator that does
 * user verification (a platform passkey), and a passkey registered on it
 * (as console.test.mjs does). With a passkey, the approvals page offers
 * only "Approve with your passkey": the password no longer approves.
 */
async function ownerWithPasskey(issuer, username) {
  const context = await (await theBrowser()).newContext()
  const page = await context.newPage()
  const cdp = await context.newCDPSession(page)
  await cdp.send('WebAuthn.enable')
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  })
  await page.goto(`${issuer}/login`)
  await page.fill('#username', username)
  await page.fill('#password', PASSWORD)
  await Promise.all([page.waitForURL(/\/account$/), page.click('form[action="/login"] button[type=submit]')])
  await page.goto(`${issuer}/account/passkeys`)
  await page.fill('#passkey-name', 'Virtual phone')
  await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/passkeys/register') && r.status() === 200),
    page.click('[data-passkey=register] button'),
  ])
  await page.waitForSelector('text=Virtual phone')
  const signCount = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials[0].signCount
  return { context, page, cdp, authenticatorId, signCount }
}

/**
 * Approves the request shown with `binding` on the open approvals page
 * with the passkey: the page's script runs the assertion ceremony bound to
 * that request and reloads the list.
 */
async function approveWithPasskey(page, binding) {
  const section = page.locator('section.approval', { hasText: binding })
  const button = section.locator('[data-passkey=approve] button')
  assert.equal(await button.textContent(), 'Approve with your passkey')
  assert.equal(await section.locator('input[type=password]').count(), 0, 'no password field once a passkey exists')
  const answered = page.waitForResponse((r) => /\/account\/approvals\/[^/]+\/approve$/.test(r.url()))
  const loaded = page.waitForEvent('load')
  loaded.catch(() => {})
  await button.click()
  const approved = await answered
  if (approved.status() !== 200) {
    const alert = section.locator('[role=alert]')
    await alert.waitFor()
    assert.fail(`the approval was refused (${approved.status()}): ${await alert.textContent()}`)
  }
  // The script then goes back to the list: the page loads anew.
  await loaded
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
const stats = (list) => {
  const s = [...list].sort((a, b) => a - b)
  const f = (x) => `${x.toFixed(1)} ms`
  return `p50 ${f(percentile(s, 50))}, p95 ${f(percentile(s, 95))}, max ${f(s[s.length - 1])}, min ${f(s[0])}`
}

// ---------------------------------------------------------------------------
// 1. openid-client, poll mode

describe('openid-client: an agent asks its owner (poll mode)', () => {
  let server, agent, config
  // Stops the polls still running when the suite ends (a failed test's).
  const polls = new AbortController()

  before(async () => {
    ;({ server, agents: { 'notes-bot': agent } } = await startStack({ agents: [{ name: 'notes-bot', scope: 'notes' }] }))
    config = await client.discovery(
      new URL(server.issuer), agent.id, { token_endpoint_auth_method: 'private_key_jwt' },
      client.PrivateKeyJwt({ key: agent.auth.privateKey, kid: agent.authKid }),
      { execute: [client.allowInsecureRequests] },
    )
  })

  after(async () => {
    polls.abort()
    await server?.stop()
  })

  it('metadata names the endpoint, both delivery modes, the grant and the declared detail type', () => {
    const m = config.serverMetadata()
    assert.equal(m.backchannel_authentication_endpoint, `${server.issuer}/bc-authorize`)
    assert.deepEqual(m.backchannel_token_delivery_modes_supported, ['poll', 'ping'])
    assert.ok(m.grant_types_supported.includes(CIBA))
    assert.deepEqual(m.authorization_details_types_supported, ['mcp_tool_call'])
  })

  it('approved with the password: one DPoP-bound token for exactly the details, short, without a refresh token', async () => {
    const details = deleteNote(NOTES, 'n2')
    const started = await client.initiateBackchannelAuthentication(config, {
      login_hint: 'alice',
      binding_message: 'Delete note n2 (code 4711)',
      scope: 'notes',
      authorization_details: JSON.stringify(details),
    })
    assert.equal(started.interval, 2, '--ciba-interval default')
    assert.ok(started.expires_in > 0 && started.expires_in <= 300, `${started.expires_in}`)

    // The DPoP key is the agent's second registered key.
    const DPoP = client.getDPoPHandle(config, agent.dpop)
    const polled = background(client.pollBackchannelAuthenticationGrant(config, started, undefined, { DPoP, signal: polls.signal }))
    // The owner, meanwhile, on her approvals page (no passkey: the password).
    const alice = await new Person(server.issuer).signIn('alice')
    const request = await alice.request('Delete note n2 (code 4711)')
    assert.deepEqual(request.actions, ['Call the tool delete_note with {"id":"n2"}'], 'the action in words')
    assert.ok(request.passwordForm)
    assert.equal((await alice.approve(request, 'not her password')).status, 401, 'a wrong password approves nothing')
    assert.equal((await alice.approve(request)).status, 303)

    const tokens = await polled
    assert.equal(tokens.token_type.toLowerCase(), 'dpop')
    assert.equal(tokens.refresh_token, undefined, 'an approval is for now: no refresh token')
    assert.ok(tokens.expires_in > 0 && tokens.expires_in <= 300, `expires_in ${tokens.expires_in}`)
    // The token carries the approved details (RFC 9396 §9.1), and the
    // token response names them too (§7; the test below).
    const claims = jose.decodeJwt(tokens.access_token)
    assert.equal(claims.cnf.jkt, await jose.calculateJwkThumbprint(await jose.exportJWK(agent.dpop.publicKey)))
    assert.deepEqual(claims.authorization_details, details)
    assert.equal(claims.aud, NOTES)
    assert.equal(claims.client_id, agent.id)
    assert.equal(claims.act.agent_id, agent.id, 'the agent acts')
    assert.notEqual(claims.sub, agent.id, 'for its owner')
    assert.ok(claims.exp - claims.iat <= 300)
    // The token verifies against the server's keys like any RFC 9068 token.
    await jose.jwtVerify(tokens.access_token, jose.createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri)), {
      issuer: server.issuer, audience: NOTES, typ: 'at+jwt',
    })

    // Delivered once: the same auth_req_id again is invalid_grant.
    await assert.rejects(client.pollBackchannelAuthenticationGrant(config, started, undefined, { DPoP, signal: polls.signal }), (err) => {
      assert.equal(err.error, 'invalid_grant')
      return true
    })
  })

  it('denied: the poll ends with access_denied', async () => {
    const started = await client.initiateBackchannelAuthentication(config, {
      login_hint: 'alice',
      binding_message: 'Delete note n3 (code 0815)',
      scope: 'notes',
      authorization_details: JSON.stringify(deleteNote(NOTES, 'n3')),
    })
    const DPoP = client.getDPoPHandle(config, agent.dpop)
    const polled = background(client.pollBackchannelAuthenticationGrant(config, started, undefined, { DPoP, signal: polls.signal }))
    const alice = await new Person(server.issuer).signIn('alice')
    assert.equal((await alice.deny(await alice.request('Delete note n3 (code 0815)'))).status, 303)
    await assert.rejects(polled, (err) => {
      assert.ok(err instanceof client.ResponseBodyError, err)
      assert.equal(err.error, 'access_denied')
      assert.equal(err.status, 400)
      return true
    })
    assert.deepEqual((await alice.approvals()).requests, [], 'nothing left to answer')
  })

  // RFC 9396 §7: "the authorization server MUST also return the
  // authorization details as granted by the resource owner and assigned to
  // the respective access token" in the token response.
  it('RFC 9396 §7: the token response names the granted details', async () => {
    const details = deleteNote(NOTES, 'n1')
    const started = await client.initiateBackchannelAuthentication(config, {
      login_hint: 'alice', binding_message: 'Delete note n1 (code 9396)', scope: 'notes',
      authorization_details: JSON.stringify(details),
    })
    const polled = background(client.pollBackchannelAuthenticationGrant(config, started, undefined, { DPoP: client.getDPoPHandle(config, agent.dpop), signal: polls.signal }))
    const alice = await new Person(server.issuer).signIn('alice')
    assert.equal((await alice.approve(await alice.request('Delete note n1 (code 9396)'))).status, 303)
    const tokens = await polled
    assert.deepEqual(jose.decodeJwt(tokens.access_token).authorization_details, details)
    assert.deepEqual(tokens.authorization_details, details)
  })
})

// ---------------------------------------------------------------------------
// 2. oauth4webapi, ping mode

describe('oauth4webapi: a client bob signed in to pings (ping mode)', () => {
  let server, as, notify, pings, redirectUri
  const waiters = new Set()

  before(async () => {
    ;({ server } = await startStack({ users: { alice: PASSWORD, bob: PASSWORD } }))
    const issuer = new URL(server.issuer)
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
    // The client's notification endpoint (and its redirect URI, never
    // followed here: the test reads the redirect).
    pings = []
    const port = await freePort()
    redirectUri = `http://127.0.0.1:${port}/callback`
    notify = createServer((req, res) => {
      let body = ''
      req.on('data', (d) => { body += d })
      req.on('end', () => {
        const at = performance.now()
        let json = null
        try { json = JSON.parse(body) } catch {}
        pings.push({ at, method: req.method, path: req.url, authorization: req.headers.authorization, contentType: req.headers['content-type'], body: json })
        res.writeHead(204).end()
        for (const w of waiters) w()
      })
    })
    await new Promise((r) => notify.listen(port, '127.0.0.1', r))
  })

  after(async () => {
    notify?.close()
    await server?.stop()
  })

  /** The ping for `authReqId`, as soon as it arrives. */
  async function pingFor(authReqId, ms = 10_000) {
    const deadline = Date.now() + ms
    for (;;) {
      const found = pings.find((p) => p.body?.auth_req_id === authReqId)
      if (found) return found
      if (Date.now() > deadline) throw new Error(`no ping for ${authReqId} in ${ms} ms: ${JSON.stringify(pings)}`)
      await new Promise((r) => {
        const done = () => { waiters.delete(done); clearTimeout(t); r() }
        const t = setTimeout(done, 200)
        waiters.add(done)
      })
    }
  }

  it('registers for ping, is dark before bob consents, then pings on his approval and delivers once; latency over rounds', { timeout: 300_000 }, async () => {
    const registered = await oauth.processDynamicClientRegistrationResponse(await oauth.dynamicClientRegistrationRequest(as, {
      client_name: 'Notes web app',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', CIBA],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'notes',
      backchannel_token_delivery_mode: 'ping',
      backchannel_client_notification_endpoint: new URL('/cb', redirectUri).href,
    }, { ...insecure, initialAccessToken: server.initialToken }))
    assert.equal(registered.backchannel_token_delivery_mode, 'ping')
    const c = { client_id: registered.client_id }
    const auth = oauth.ClientSecretBasic(registered.client_secret)
    const dpopKeys = await jose.generateKeyPair('ES256', { extractable: true })
    const DPoP = oauth.DPoP(c, dpopKeys)
    const ask = async (binding, notificationToken, details = deleteNote(NOTES, 'n2')) => oauth.processBackchannelAuthenticationResponse(as, c,
      await oauth.backchannelAuthenticationRequest(as, c, auth, {
        login_hint: 'bob', scope: 'notes', binding_message: binding,
        client_notification_token: notificationToken,
        authorization_details: JSON.stringify(details),
      }, insecure))
    const bob = await new Person(server.issuer).signIn('bob')

    // Before bob consented to this client, its request reaches nobody: the
    // same answer, nothing on his page, no ping (CIBA's unknown_user_id is
    // never said).
    const dark = await ask('Before consent', 'dark-token-0001')
    assert.ok(dark.auth_req_id && dark.expires_in > 0 && dark.interval === 2, JSON.stringify(dark))
    assert.deepEqual((await bob.approvals()).requests, [])

    // Bob signs in to the client once: an authorization code flow (PKCE),
    // driven with fetch and his cookies.
    const verifier = oauth.generateRandomCodeVerifier()
    const state = oauth.generateRandomState()
    const url = new URL(as.authorization_endpoint)
    url.search = new URLSearchParams({
      response_type: 'code', client_id: c.client_id, redirect_uri: redirectUri, scope: 'notes', state,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', resource: NOTES,
    }).toString()
    const consentPage = await bob.fetch(url.href)
    assert.equal(consentPage.status, 200)
    const html = await consentPage.text()
    assert.ok(html.includes('Notes web app'), 'the consent page names the client')
    const field = (name) => unescapeHtml(html.match(new RegExp(`name="${name}" value="([^"]*)"`))[1])
    const decided = await bob.post('/authorize/decision', {
      csrf_token: field('csrf_token'), request: field('request'), attempt: field('attempt'), decision: 'approve',
    })
    assert.equal(decided.status, 303)
    const params = oauth.validateAuthResponse(as, c, new URL(decided.headers.get('location')), state)
    await oauth.processAuthorizationCodeResponse(as, c,
      await oauth.authorizationCodeGrantRequest(as, c, auth, params, redirectUri, verifier, insecure))

    // A ping-mode request must carry a bearer token to ping with.
    await assert.rejects(oauth.processBackchannelAuthenticationResponse(as, c,
      await oauth.backchannelAuthenticationRequest(as, c, auth, { login_hint: 'bob', scope: 'notes' }, insecure)), (err) => {
      assert.equal(err.error, 'invalid_request')
      return true
    })

    const latency = { fromApprovalToPing: [], fromApprovalToToken: [], fromApprovalSentToPing: [] }
    for (let round = 0; round < ROUNDS; round++) {
      const notificationToken = `nt-${round}-${randomBytes(12).toString('base64url')}`
      const binding = `Delete note n2 (round ${round})`
      const started = await ask(binding, notificationToken)
      const request = await bob.request(binding)
      assert.deepEqual(request.actions, ['Call the tool delete_note with {"id":"n2"}'])

      const sent = performance.now()
      const approved = await bob.approve(request)
      const answered = performance.now()
      assert.equal(approved.status, 303)
      const ping = await pingFor(started.auth_req_id)
      // CIBA Core §10.2: a POST with the client's token as a bearer token
      // and the auth_req_id alone in a JSON body.
      assert.equal(ping.method, 'POST')
      assert.equal(ping.path, '/cb')
      assert.equal(ping.authorization, `Bearer ${notificationToken}`)
      assert.match(ping.contentType, /^application\/json/)
      assert.deepEqual(ping.body, { auth_req_id: started.auth_req_id })

      // Notified: one token request, with a DPoP proof (approved details).
      const response = await oauth.backchannelAuthenticationGrantRequest(as, c, auth, started.auth_req_id, { ...insecure, DPoP })
      const tokens = await oauth.processBackchannelAuthenticationGrantResponse(as, c, response)
      const inHand = performance.now()
      latency.fromApprovalToPing.push(ping.at - answered)
      latency.fromApprovalSentToPing.push(ping.at - sent)
      latency.fromApprovalToToken.push(inHand - answered)

      if (round === 0) {
        assert.equal(tokens.token_type, 'dpop')
        assert.equal(tokens.refresh_token, undefined)
        assert.ok(tokens.expires_in <= 300)
        const claims = jose.decodeJwt(tokens.access_token)
        assert.deepEqual(claims.authorization_details, deleteNote(NOTES, 'n2'))
        assert.equal(claims.client_id, c.client_id)
        assert.equal(claims.act, undefined, 'no agent acts: the client itself, for bob')
        assert.equal(claims.cnf.jkt, await DPoP.calculateThumbprint())
        // Delivered once, and said so at once (slow_down is only for a
        // request still pending).
        await assert.rejects(oauth.processBackchannelAuthenticationGrantResponse(as, c,
          await oauth.backchannelAuthenticationGrantRequest(as, c, auth, started.auth_req_id, { ...insecure, DPoP })), (err) => {
          assert.equal(err.error, 'invalid_grant')
          return true
        })
      }
    }
    // One ping per answered request, none for the dark one.
    assert.equal(pings.length, ROUNDS, JSON.stringify(pings.map((p) => p.body)))
    assert.ok(!pings.some((p) => p.body?.auth_req_id === dark.auth_req_id))

    // A denial pings too; the token request then says access_denied.
    const denied = await ask('Deny me', 'nt-deny-0001')
    assert.equal((await bob.deny(await bob.request('Deny me'))).status, 303)
    await pingFor(denied.auth_req_id)
    await assert.rejects(oauth.processBackchannelAuthenticationGrantResponse(as, c,
      await oauth.backchannelAuthenticationGrantRequest(as, c, auth, denied.auth_req_id, { ...insecure, DPoP })), (err) => {
      assert.equal(err.error, 'access_denied')
      return true
    })

    console.log(`CIBA ping latency over ${ROUNDS} rounds (debug build, SQLite, loopback; the approval is bob's password POST):`)
    console.log(`  approval POST answered -> ping received: ${stats(latency.fromApprovalToPing)}`)
    console.log(`  approval POST sent     -> ping received: ${stats(latency.fromApprovalSentToPing)}`)
    console.log(`  approval POST answered -> token in hand: ${stats(latency.fromApprovalToToken)}`)
  })
})

// ---------------------------------------------------------------------------
// 3. The approvals page in Chromium

describe('the approvals page in Chromium: live, approve with a passkey, deny in one click', () => {
  let server, agent, config
  const polls = new AbortController()

  before(async () => {
    // WebAuthn's relying-party id cannot be an IP address: localhost.
    ;({ server, agents: { 'notes-bot': agent } } = await startStack({ host: 'localhost', agents: [{ name: 'notes-bot', scope: 'notes' }] }))
    config = await client.discovery(
      new URL(server.issuer), agent.id, { token_endpoint_auth_method: 'private_key_jwt' },
      client.PrivateKeyJwt({ key: agent.auth.privateKey, kid: agent.authKid }),
      { execute: [client.allowInsecureRequests] },
    )
  })

  after(async () => {
    polls.abort()
    await server?.stop()
  })

  it('a request appears while the page is open; the passkey approves it; the next is denied', { timeout: 120_000 }, async () => {
    const owner = await ownerWithPasskey(server.issuer, 'alice')
    const { page } = owner
    try {
      await page.goto(`${server.issuer}/account/approvals`)
      await page.waitForSelector('#none-pending')
      await shot(page, 'approvals-empty')
      // Count the page's own reloads: the test never reloads it.
      let loads = 0
      page.on('load', () => { loads += 1 })

      const DPoP = client.getDPoPHandle(config, agent.dpop)
      const details = deleteNote(NOTES, 'n2')
      const started = await client.initiateBackchannelAuthentication(config, {
        login_hint: 'alice', binding_message: 'Delete note n2 (code 4711)', scope: 'notes',
        authorization_details: JSON.stringify(details),
      })
      const polled = background(client.pollBackchannelAuthenticationGrant(config, started, undefined, { DPoP, signal: polls.signal }))
      const section = page.locator('section.approval', { hasText: 'Delete note n2 (code 4711)' })
      await section.waitFor({ timeout: 10_000 })
      assert.ok(loads >= 1, 'the page reloaded itself on the server-sent event')
      const text = await section.textContent()
      assert.ok(text.includes('notes-bot'), 'names the agent')
      assert.ok(text.includes('Call the tool delete_note with {"id":"n2"}'), text)
      await shot(page, 'approvals')

      const before = await owner.signCount()
      await approveWithPasskey(page, 'Delete note n2 (code 4711)')
      await page.waitForSelector('#none-pending')
      assert.equal(await owner.signCount(), before + 1, 'the authenticator signed once')
      await shot(page, 'approvals-approved')
      const tokens = await polled
      assert.equal(tokens.token_type.toLowerCase(), 'dpop')
      assert.deepEqual(jose.decodeJwt(tokens.access_token).authorization_details, details)
      assert.equal(tokens.refresh_token, undefined)

      // The second request: live again, denied with one click.
      const second = await client.initiateBackchannelAuthentication(config, {
        login_hint: 'alice', binding_message: 'Delete note n1 (code 0815)', scope: 'notes',
        authorization_details: JSON.stringify(deleteNote(NOTES, 'n1')),
      })
      const secondPolled = background(client.pollBackchannelAuthenticationGrant(config, second, undefined, { DPoP, signal: polls.signal }))
      const pending = page.locator('section.approval', { hasText: 'Delete note n1 (code 0815)' })
      await pending.waitFor({ timeout: 10_000 })
      await shot(page, 'approvals-to-deny')
      await Promise.all([
        page.waitForResponse((r) => /\/deny$/.test(r.url()) && r.status() === 303),
        pending.locator('button:has-text("Deny")').click(),
      ])
      await page.waitForSelector('#none-pending')
      await shot(page, 'approvals-denied')
      await assert.rejects(secondPolled, (err) => {
        assert.equal(err.error, 'access_denied')
        return true
      })
    } finally {
      await owner.context.close()
    }
  })
})

// ---------------------------------------------------------------------------
// 4. The whole loop with the example MCP server

describe('the example MCP server: -31403, CIBA for exactly those details, one call', () => {
  let server, mcp, agent
  const polls = new AbortController()

  before(async () => {
    const mcpPort = await freePort()
    const resource = `http://127.0.0.1:${mcpPort}/mcp`
    ;({ server, agents: { 'mcp-bot': agent } } = await startStack({
      host: 'localhost', resource, scopes: ['mcp', 'mcp:admin'], agents: [{ name: 'mcp-bot', scope: 'mcp' }],
    }))
    mcp = await startMcpServer({ issuer: server.issuer, port: mcpPort })
    assert.equal(mcp.url, resource)
  })

  after(async () => {
    polls.abort()
    await mcp?.stop()
    await server?.stop()
  })

  /**
   * A fetch for the MCP SDK's transport that sends `token` the way
   * oauth4webapi sends it to a protected resource: with a DPoP proof
   * (htm, htu, ath) per request. The last response's status and parsed
   * challenge are kept, since the SDK reduces a 401 to an error message.
   */
  function tokenFetch(token, DPoP, seen) {
    return async (url, init = {}) => {
      let response
      seen.challenges = undefined
      try {
        response = await oauth.protectedResourceRequest(token, init.method ?? 'GET', new URL(url), new Headers(init.headers), init.body ?? null, {
          ...insecure, DPoP, signal: init.signal,
        })
      } catch (err) {
        if (!(err instanceof oauth.WWWAuthenticateChallengeError)) throw err
        seen.challenges = err.cause
        response = err.response
      }
      seen.last = { method: init.method, status: response.status }
      return response
    }
  }

  async function connect(token, DPoP, seen) {
    const mcpClient = new Client({ name: 'ciba-agent', version: '1.0.0' })
    // A GET (the SDK's server-sent event stream) is not what an approval
    // token is for: the server refuses it, and the SDK only reports it.
    mcpClient.onerror = () => {}
    await mcpClient.connect(new StreamableHTTPClientTransport(new URL(mcp.url), { fetch: tokenFetch(token, DPoP, seen) }))
    return mcpClient
  }

  it('asks its owner for the call the server named, and makes it once', { timeout: 120_000 }, async () => {
    const issuer = new URL(server.issuer)
    const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
    const c = { client_id: agent.id, token_endpoint_auth_method: 'private_key_jwt' }
    const auth = oauth.PrivateKeyJwt({ key: agent.auth.privateKey, kid: agent.authKid })
    const DPoP = oauth.DPoP(c, agent.dpop)

    // An ordinary token (client_credentials, DPoP-bound to the agent's key).
    const ordinary = await oauth.processClientCredentialsResponse(as, c,
      await oauth.clientCredentialsGrantRequest(as, c, auth, new URLSearchParams({ resource: mcp.url, scope: 'mcp' }), { ...insecure, DPoP }))
    const seen = {}
    const plain = await connect(ordinary.access_token, DPoP, seen)
    const { tools } = await plain.listTools()
    assert.ok(tools.some((t) => t.name === 'delete_note'))

    // delete_note with it: -31403, whose data names what to ask for.
    let data
    await assert.rejects(plain.callTool({ name: 'delete_note', arguments: { id: 'n2' } }), (err) => {
      assert.ok(err instanceof McpError, err)
      assert.equal(err.code, -31403)
      data = err.data
      return true
    })
    assert.deepEqual(data.authorization_details, deleteNote(mcp.url, 'n2'))
    assert.deepEqual(data.authorization_servers, [server.issuer])
    assert.equal(data.resource, mcp.url)
    assert.equal(data.dpop_required, true)

    // The agent asks its owner, at the authorization server the error
    // named, for exactly those details.
    const named = new URL(data.authorization_servers[0])
    const as2 = await oauth.processDiscoveryResponse(named, await oauth.discoveryRequest(named, { ...insecure, algorithm: 'oauth2' }))
    const owner = await ownerWithPasskey(server.issuer, 'alice')
    try {
      await owner.page.goto(`${server.issuer}/account/approvals`)
      await owner.page.waitForSelector('#none-pending')
      const started = await oauth.processBackchannelAuthenticationResponse(as2, c,
        await oauth.backchannelAuthenticationRequest(as2, c, auth, {
          login_hint: 'alice', binding_message: 'Delete note n2 (code 2207)',
          authorization_details: JSON.stringify(data.authorization_details),
        }, insecure))
      const polled = background(pollGrant(as2, c, auth, started, { DPoP, signal: polls.signal }))
      const section = owner.page.locator('section.approval', { hasText: 'Delete note n2 (code 2207)' })
      await section.waitFor({ timeout: 10_000 })
      assert.ok((await section.textContent()).includes('Call the tool delete_note with {"id":"n2"}'))
      await shot(owner.page, 'approvals-mcp')
      await approveWithPasskey(owner.page, 'Delete note n2 (code 2207)')
      await owner.page.waitForSelector('#none-pending')
      const approval = await polled
      assert.equal(approval.token_type, 'dpop')
      assert.equal(approval.refresh_token, undefined)
      const claims = jose.decodeJwt(approval.access_token)
      assert.deepEqual(claims.authorization_details, data.authorization_details)
      assert.equal(claims.aud, mcp.url)
      assert.equal(claims.cnf.jkt, await DPoP.calculateThumbprint())

      // With the approval token: connecting and listing spend nothing; a
      // call it does not cover is 403 and spends nothing either; the call
      // it covers runs once; the same call again is 401 "already used".
      const approvedSeen = {}
      const approved = await connect(approval.access_token, DPoP, approvedSeen)
      await approved.listTools()
      await assert.rejects(approved.callTool({ name: 'delete_note', arguments: { id: 'n3' } }))
      assert.equal(approvedSeen.last.status, 403)
      assert.equal(approvedSeen.challenges?.[0]?.parameters.error, 'insufficient_scope')
      const done = await approved.callTool({ name: 'delete_note', arguments: { id: 'n2' } })
      assert.equal(done.isError ?? false, false, JSON.stringify(done))
      assert.equal(done.content[0].text, 'deleted n2')
      await assert.rejects(approved.callTool({ name: 'delete_note', arguments: { id: 'n2' } }))
      assert.equal(approvedSeen.last.status, 401)
      const challenge = approvedSeen.challenges?.find((ch) => ch.parameters.error)
      assert.equal(challenge?.parameters.error, 'invalid_token', JSON.stringify(approvedSeen.challenges))
      assert.match(challenge.parameters.error_description, /already used/)

      // The ordinary token sees the note gone.
      const notes = JSON.parse((await plain.callTool({ name: 'list_notes', arguments: {} })).content[0].text)
      assert.deepEqual(notes.map((n) => n.id), ['n1', 'n3'])
      await approved.close()
      await plain.close()
    } finally {
      await owner.context.close()
    }
  })
})
