// A real browser (Debian's Chromium via playwright-core) signs in, reads the
// consent page and approves; oauth4webapi then completes the code exchange
// with PKCE and a refresh. A second run denies and sees access_denied.
// Screenshots of the login and consent pages go to conformance/test-output/.
// openid-client (OIDC discovery, as MCP clients built on it use it) then
// registers with no scope and no grant_types, and retries a refresh.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as oauth from 'oauth4webapi'
import * as openid from 'openid-client'
import { chromium } from 'playwright-core'
import { freePort, startServer } from '../lib/server.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }
const out = resolve(dirname(fileURLToPath(import.meta.url)), '../test-output')
const PASSWORD = 'correct horse battery'

let server, as, browser, callback, redirectUri

before(async () => {
  mkdirSync(out, { recursive: true })
  server = await startServer({ users: { alice: PASSWORD }, args: ['--resource', 'https://mcp.example.com/mcp', '--scopes', 'tools:read'] })
  const issuer = new URL(server.issuer)
  as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
  // The client's redirect target: a loopback listener, as a native MCP client has.
  const port = await freePort()
  redirectUri = `http://127.0.0.1:${port}/callback`
  callback = createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('done') })
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

async function registerClient() {
  return oauth.processDynamicClientRegistrationResponse(
    await oauth.dynamicClientRegistrationRequest(as, {
      client_name: 'Browser Test MCP Client',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      scope: 'tools:read offline_access',
    }, insecure),
  )
}

/** Drives login and consent in Chromium; returns the callback URL. */
async function authorize(client, decision, shots) {
  const verifier = oauth.generateRandomCodeVerifier()
  const state = oauth.generateRandomState()
  const url = new URL(as.authorization_endpoint)
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: client.client_id,
    redirect_uri: redirectUri,
    scope: 'tools:read offline_access',
    state,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    resource: 'https://mcp.example.com/mcp',
  }).toString()
  const callbackUrl = await signInAndDecide(url, 'Browser Test MCP Client', decision, shots)
  return { callbackUrl, verifier, state }
}

/** Signs in as alice at `url`, checks the consent page, and decides. */
async function signInAndDecide(url, clientName, decision, shots) {
  const context = await browser.newContext()
  const page = await context.newPage()
  await page.goto(url.href)
  assert.match(page.url(), /\/login\?/)
  if (shots) await page.screenshot({ path: `${out}/login.png`, fullPage: true })
  await page.fill('#username', 'alice')
  await page.fill('#password', PASSWORD)
  await Promise.all([page.waitForURL(/\/authorize\?/), page.click('button[type=submit]')])

  const text = await page.textContent('main')
  assert.ok(text.includes(clientName), 'consent names the client')
  assert.ok(text.includes('127.0.0.1'), 'consent names the redirect host')
  assert.ok(text.includes('https://mcp.example.com/mcp'), 'consent names the resource')
  // Every client here may refresh, offline_access asked or not: the page
  // says that access outlives the session, and for how long.
  assert.ok(text.includes('This access outlives your session'), 'consent says access outlives the session')
  if (shots) await page.screenshot({ path: `${out}/consent.png`, fullPage: true })

  await Promise.all([
    page.waitForURL((u) => u.href.startsWith(redirectUri)),
    page.click(`button[value=${decision}]`),
  ])
  const callbackUrl = new URL(page.url())
  await context.close()
  return callbackUrl
}

describe('authorization code flow in a real browser', () => {
  it('approves; oauth4webapi exchanges the code with PKCE and refreshes', async () => {
    const client = await registerClient()
    const { callbackUrl, verifier, state } = await authorize(client, 'approve', true)
    // RFC 9207: oauth4webapi checks iss because metadata says it is sent.
    const params = oauth.validateAuthResponse(as, client, callbackUrl, state)
    const tokens = await oauth.processAuthorizationCodeResponse(
      as, client,
      await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, redirectUri, verifier, insecure),
    )
    assert.equal(tokens.token_type, 'bearer')
    assert.ok(tokens.refresh_token)
    const refreshed = await oauth.processRefreshTokenResponse(
      as, client, await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token, insecure),
    )
    assert.ok(refreshed.access_token)
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'rotated')
    console.log(`screenshots: ${out}/login.png ${out}/consent.png`)
  })

  it('with DPoP: the code exchange and refresh are bound to the client key (RFC 9449 §5)', async () => {
    const client = await registerClient()
    const DPoP = oauth.DPoP(client, await oauth.generateKeyPair('ES256'))
    const { callbackUrl, verifier, state } = await authorize(client, 'approve', false)
    const params = oauth.validateAuthResponse(as, client, callbackUrl, state)
    const tokens = await oauth.processAuthorizationCodeResponse(
      as, client,
      await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, redirectUri, verifier, { ...insecure, DPoP }),
    )
    assert.equal(tokens.token_type, 'dpop')
    const refreshed = await oauth.processRefreshTokenResponse(
      as, client, await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token, { ...insecure, DPoP }),
    )
    assert.equal(refreshed.token_type, 'dpop')
    // The refresh token of this public client is bound: another key fails.
    const thief = oauth.DPoP(client, await oauth.generateKeyPair('ES256'))
    const stolen = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), refreshed.refresh_token, { ...insecure, DPoP: thief })
    assert.equal(stolen.status, 400)
    assert.equal((await stolen.json()).error, 'invalid_dpop_proof')
  })

  it('denies; the client sees access_denied', async () => {
    const client = await registerClient()
    const { callbackUrl, state } = await authorize(client, 'deny', false)
    assert.throws(() => oauth.validateAuthResponse(as, client, callbackUrl, state), (err) => {
      assert.ok(err instanceof oauth.AuthorizationResponseError, err)
      assert.equal(err.error, 'access_denied')
      return true
    })
  })
})

describe('openid-client, as MCP clients use it (issue 12)', () => {
  it('OIDC discovery, a scope-less registration, consent, code, refresh, and a retried refresh', async () => {
    const execute = [openid.allowInsecureRequests]
    // Discovery through /.well-known/openid-configuration (the default),
    // then RFC 7591 with neither scope nor grant_types.
    const config = await openid.dynamicClientRegistration(
      new URL(server.issuer),
      { client_name: 'Scope-less MCP Client', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' },
      openid.None(),
      { execute },
    )
    assert.equal(config.serverMetadata().issuer, server.issuer)
    const registered = config.clientMetadata()
    assert.equal(registered.scope, 'tools:read offline_access', 'the resources\' scopes and the server\'s offline_access')
    assert.ok(registered.grant_types.includes('refresh_token'))

    const verifier = openid.randomPKCECodeVerifier()
    const state = openid.randomState()
    const url = openid.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      code_challenge: await openid.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      resource: 'https://mcp.example.com/mcp',
    })
    const callbackUrl = await signInAndDecide(url, 'Scope-less MCP Client', 'approve', false)
    const tokens = await openid.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state })
    assert.equal(tokens.scope, 'tools:read', 'offline_access is never in a token (SEP-2207)')
    assert.ok(tokens.refresh_token)

    // A retry of the same refresh inside the grace window (a timeout, a
    // second egress address) gets the same pair, and the family lives on.
    const first = await openid.refreshTokenGrant(config, tokens.refresh_token)
    const retried = await openid.refreshTokenGrant(config, tokens.refresh_token)
    assert.equal(retried.refresh_token, first.refresh_token)
    assert.equal(retried.access_token, first.access_token)
    const next = await openid.refreshTokenGrant(config, first.refresh_token)
    assert.ok(next.access_token)
    assert.notEqual(next.refresh_token, first.refresh_token)
  })
})

describe('cross-origin browser clients (CORS, issue 12)', () => {
  it('a page on another origin reads metadata and /token answers (preflighted), but not the HTML pages', async () => {
    const page = await browser.newPage()
    // The loopback callback listener is another origin (another port).
    await page.goto(redirectUri)
    const result = await page.evaluate(async (issuer) => {
      const meta = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json()
      // The DPoP header makes this a preflighted request.
      const r = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', DPoP: 'not.a.proof' },
        body: 'grant_type=client_credentials&client_id=nobody',
      })
      let login
      try {
        await fetch(`${issuer}/login`)
        login = 'readable'
      } catch {
        login = 'blocked'
      }
      return { issuer: meta.issuer, status: r.status, body: await r.json(), login }
    }, server.issuer)
    await page.close()
    assert.equal(result.issuer, server.issuer)
    // The preflight passed (the DPoP header was sent) and the JSON error
    // body is readable from the other origin.
    assert.equal(result.status, 401)
    assert.equal(result.body.error, 'invalid_client')
    assert.equal(result.login, 'blocked', 'HTML pages answer no CORS')
  })
})
