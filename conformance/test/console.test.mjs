// The owner's console in a real browser (issue 17): Debian's Chromium via
// playwright-core, with Chromium's virtual authenticator (DevTools
// WebAuthn domain) as the passkey. Alice registers a passkey, signs out,
// signs in with it, and completes an authorization code flow by passkey;
// she creates an agent in the browser with a pasted JWK, the agent gets a
// token from a script (client_credentials, private_key_jwt, which the
// operator allowed console agents at the MCP server), she disables it in
// the browser and the token turns inactive at introspection and the
// agent's next request is refused; re-enabled, it gets new tokens once
// the kill's cut-off has passed, and the old token stays dead. Bob cannot see or change the agent; a
// cross-site form and a framing page get nowhere; the operator pages
// refuse a non-admin. Screenshots of each page: conformance/test-output/.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as jose from 'jose'
import * as oauth from 'oauth4webapi'
import { chromium } from 'playwright-core'
import { freePort, startServer } from '../lib/server.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }
const out = resolve(dirname(fileURLToPath(import.meta.url)), '../test-output')
const PASSWORD = 'correct horse battery'
const MCP = 'https://mcp.example.com/mcp'

let server, as, browser, callback, redirectUri, evil, evilOrigin
const shots = []

async function shot(page, name) {
  const path = `${out}/console-${name}.png`
  await page.screenshot({ path, fullPage: true })
  shots.push(path)
}

before(async () => {
  mkdirSync(out, { recursive: true })
  server = await startServer({
    host: 'localhost',
    users: { alice: PASSWORD, bob: PASSWORD },
    admins: { olive: PASSWORD },
    // offline_access is the authorization server's own scope (issue 30),
    // advertised and accepted whatever the resources offer: no resource
    // lists it.
    args: ['--scopes', 'tools:read tools:write'],
    // The operator lets agents made in the console act on their own at
    // the MCP server (kind owner_agent, README: Resources); by default
    // they could not use client_credentials at all.
    prepare: ({ dir }) => {
      const file = `${dir}/resources.toml`
      writeFileSync(file, `[[resource]]
uri = "${MCP}"
name = "Example MCP server"
scopes = ["tools:read", "tools:write"]
client_credentials = ["operator", "initial_token", "agent", "owner_agent"]
`)
      return ['--resources-file', file]
    },
  })
  const issuer = new URL(server.issuer)
  as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
  const port = await freePort()
  redirectUri = `http://127.0.0.1:${port}/callback`
  callback = createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('done') })
  await new Promise((r) => callback.listen(port, '127.0.0.1', r))
  // Another site: it frames the console and posts forms at it.
  const evilPort = await freePort()
  evilOrigin = `http://127.0.0.1:${evilPort}`
  evil = createServer((req, res) => {
    const url = new URL(req.url, evilOrigin)
    res.writeHead(200, { 'content-type': 'text/html' })
    if (url.pathname === '/frame') {
      res.end(`<h1>prize inside</h1><iframe id="victim" src="${server.issuer}/account/agents"></iframe>`)
    } else {
      res.end(`<form id="f" method="post" action="${server.issuer}${url.searchParams.get('action')}"></form><script>document.getElementById('f').submit()</script>`)
    }
  })
  await new Promise((r) => evil.listen(evilPort, '127.0.0.1', r))
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

after(async () => {
  await browser?.close()
  callback?.close()
  evil?.close()
  await server?.stop()
  if (shots.length) console.log(`screenshots:\n  ${shots.join('\n  ')}`)
})

/** A page whose every response from our server must refuse framing. */
async function newPage(context) {
  const page = await context.newPage()
  page.on('response', (r) => {
    if (r.url().startsWith(server.issuer) && r.headers()['content-type']?.startsWith('text/html')) {
      assert.equal(r.headers()['x-frame-options'], 'DENY', r.url())
      assert.match(r.headers()['content-security-policy'], /frame-ancestors 'none'/, r.url())
    }
  })
  return page
}

async function signIn(page, username) {
  await page.goto(`${server.issuer}/login`)
  await page.fill('#username', username)
  await page.fill('#password', PASSWORD)
  await Promise.all([page.waitForURL(/\/account$/), page.click('form[action="/login"] button[type=submit]')])
}

async function signOut(page) {
  await page.goto(`${server.issuer}/account`)
  await Promise.all([page.waitForURL(/\/login$/), page.click('form[action="/logout"] button')])
}

async function introspect(token) {
  const r = await fetch(`${server.issuer.replace('localhost', '127.0.0.1')}/introspect`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${server.introspector.client_id}:${server.introspector.client_secret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ token }),
  })
  assert.equal(r.status, 200)
  return r.json()
}

describe('passkeys in Chromium with a virtual authenticator', () => {
  it('registers a passkey, signs out, signs in with it, and completes a code flow by passkey', async () => {
    const context = await browser.newContext()
    const page = await newPage(context)
    const cdp = await context.newCDPSession(page)
    await cdp.send('WebAuthn.enable')
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
        hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
      },
    })

    await page.goto(`${server.issuer}/login`)
    await shot(page, 'login')
    await signIn(page, 'alice')
    await shot(page, 'account')
    await page.goto(`${server.issuer}/account/passkeys`)
    await page.fill('#passkey-name', 'Virtual laptop')
    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/passkeys/register') && r.status() === 200),
      page.click('[data-passkey=register] button'),
    ])
    await page.waitForSelector('text=Virtual laptop')
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId })
    assert.equal(credentials.length, 1)
    assert.equal(credentials[0].isResidentCredential, true)
    assert.equal(credentials[0].rpId, 'localhost')
    await shot(page, 'passkeys')

    // Signed out, then in by passkey alone: no username, no password.
    await signOut(page)
    await Promise.all([page.waitForURL(/\/account$/), page.click('[data-passkey=login] button')])
    assert.match(await page.textContent('h1'), /Signed in as alice/)
    assert.match(await page.textContent('main'), /Virtual laptop|Your agents/)

    // The authorization code flow, signed in by passkey at /login.
    await signOut(page)
    const client = await oauth.processDynamicClientRegistrationResponse(
      await oauth.dynamicClientRegistrationRequest(as, {
        client_name: 'Passkey MCP Client', redirect_uris: [redirectUri],
        grant_types: ['authorization_code'], response_types: ['code'],
        token_endpoint_auth_method: 'none', scope: 'tools:read',
      }, insecure),
    )
    const verifier = oauth.generateRandomCodeVerifier()
    const state = oauth.generateRandomState()
    const url = new URL(as.authorization_endpoint)
    url.search = new URLSearchParams({
      response_type: 'code', client_id: client.client_id, redirect_uri: redirectUri, scope: 'tools:read',
      state, code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', resource: MCP,
    }).toString()
    await page.goto(url.href)
    assert.match(page.url(), /\/login\?return_to=/)
    await Promise.all([page.waitForURL(/\/authorize\?/), page.click('[data-passkey=login] button')])
    assert.ok((await page.textContent('main')).includes('Passkey MCP Client'))
    await Promise.all([page.waitForURL((u) => u.href.startsWith(redirectUri)), page.click('button[value=approve]')])
    const params = oauth.validateAuthResponse(as, client, new URL(page.url()), state)
    const tokens = await oauth.processAuthorizationCodeResponse(as, client,
      await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, redirectUri, verifier, insecure))
    const claims = jose.decodeJwt(tokens.access_token)
    assert.equal(claims.aud, MCP)
    assert.equal((await introspect(tokens.access_token)).active, true)
    await context.close()
  })
})

describe('agents in the browser', () => {
  let agentId, agentKeys

  it('creates an agent with a pasted JWK; a script uses it; disabling it in the browser stops its token', async () => {
    const context = await browser.newContext()
    const page = await newPage(context)
    await signIn(page, 'alice')
    agentKeys = await jose.generateKeyPair('ES256', { extractable: true })
    const jwk = { ...(await jose.exportJWK(agentKeys.publicKey)), kid: 'deployer-key', alg: 'ES256', use: 'sig' }

    await page.goto(`${server.issuer}/account/agents/new`)
    await page.fill('#name', 'deployer')
    await page.fill('#scope', 'tools:read')
    await page.fill('#resources', MCP)
    await page.fill('#key', JSON.stringify(jwk, null, 2))
    await shot(page, 'agent-new')
    await Promise.all([page.waitForURL(/\/account\/agents\/[^/]+$/), page.click('form button[type=submit]')])
    agentId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop())
    assert.ok((await page.textContent('main')).includes('deployer'))

    // The script: client_credentials with private_key_jwt (RFC 7523).
    const client = { client_id: agentId, token_endpoint_auth_method: 'private_key_jwt' }
    const auth = oauth.PrivateKeyJwt({ key: agentKeys.privateKey, kid: 'deployer-key' })
    const tokenNow = () => oauth.clientCredentialsGrantRequest(as, client, auth, new URLSearchParams({ resource: MCP }), insecure)
    const tokens = await oauth.processClientCredentialsResponse(as, client, await tokenNow())
    assert.equal((await introspect(tokens.access_token)).active, true)

    await page.goto(`${server.issuer}/account/agents`)
    await page.waitForSelector(`text=deployer`)
    await shot(page, 'agents')
    await page.goto(`${server.issuer}/account/agents/${agentId}`)
    await shot(page, 'agent')

    // Disable: a confirmation step, then the kill switch.
    await Promise.all([page.waitForURL(/\/confirm\?action=disable/), page.click('text=Disable (stop every token now)')])
    await shot(page, 'agent-confirm-disable')
    await Promise.all([page.waitForURL(new RegExp(`/account/agents/${agentId}$`)), page.click('button:has-text("Disable now")')])
    assert.ok((await page.textContent('main')).includes('disabled'))
    assert.equal((await introspect(tokens.access_token)).active, false)
    const refused = await tokenNow()
    assert.equal(refused.status, 401)
    assert.equal((await refused.json()).error, 'invalid_client')

    // Enabled again for the next test (a cross-site form must not flip it).
    await page.click('button:has-text("Enable")')
    await Promise.all([page.waitForURL(new RegExp(`/account/agents/${agentId}$`)), page.click('form[method=post] button')])
    // Until the kill's cut-off has passed (two seconds), its grants answer
    // 503 with Retry-After (README: the kill switch); the token from before
    // the kill stays dead.
    let again = await tokenNow()
    for (let i = 0; again.status === 503 && i < 10; i++) {
      assert.equal(again.headers.get('retry-after'), '1')
      await new Promise((r) => setTimeout(r, 500))
      again = await tokenNow()
    }
    assert.equal(again.status, 200)
    assert.equal((await introspect(tokens.access_token)).active, false)

    // Forged requests from another site, with alice's cookies in the
    // browser: the cross-site form posts get 403, framing shows nothing.
    for (const action of [`/account/agents/${agentId}/disable`, `/account/agents/${agentId}/delete`, '/logout', '/account/password/remove']) {
      const forged = await newPage(context)
      const answered = forged.waitForResponse((r) => r.url() === `${server.issuer}${action}`)
      await forged.goto(`${evilOrigin}/post?action=${encodeURIComponent(action)}`)
      // The session cookie is SameSite=Lax and the CSRF cookie Strict, so
      // the forged post arrives signed out (303 to the login page, or to
      // the account page for /logout) or without a CSRF token (403).
      const response = await answered
      assert.ok([303, 403].includes(response.status()), `${action}: ${response.status()}`)
      await forged.close()
    }
    assert.equal((await tokenNow()).status, 200, 'still enabled')
    await page.goto(`${server.issuer}/account`)
    assert.match(await page.textContent('h1'), /Signed in as alice/, 'a forged logout did nothing')
    const framer = await context.newPage()
    await framer.goto(`${evilOrigin}/frame`)
    await framer.waitForTimeout(500)
    const victim = framer.frames().find((f) => f !== framer.mainFrame())
    assert.ok(!victim || !victim.url().startsWith(server.issuer) || (await victim.content()).indexOf('Your agents') === -1, 'the console rendered inside a frame')
    await shot(framer, 'framed-refused')
    await context.close()
  })

  it('another owner cannot see or change the agent (403)', async () => {
    const context = await browser.newContext()
    const page = await newPage(context)
    await signIn(page, 'bob')
    await page.goto(`${server.issuer}/account/agents`)
    assert.ok(!(await page.textContent('main')).includes(agentId))
    const seen = await page.goto(`${server.issuer}/account/agents/${agentId}`)
    assert.equal(seen.status(), 403)
    assert.ok((await page.textContent('main')).includes('not yours'))
    await shot(page, 'forbidden')
    assert.equal((await page.goto(`${server.issuer}/account/agents/${agentId}/confirm?action=delete`)).status(), 403)
    // Even with bob's own valid CSRF token, a post at alice's agent is 403.
    await page.goto(`${server.issuer}/account`)
    const csrf = await page.getAttribute('input[name=csrf_token]', 'value')
    const r = await page.request.post(`${server.issuer}/account/agents/${agentId}/disable`, { form: { csrf_token: csrf } })
    assert.equal(r.status(), 403)
    await context.close()
  })
})

describe('delegations on the grants page', () => {
  it('a token exchange between two of alice\'s agents shows on her account page, and she revokes it there', async () => {
    const context = await browser.newContext()
    const page = await newPage(context)
    await signIn(page, 'alice')
    const make = async (name, keys) => {
      const jwk = { ...(await jose.exportJWK(keys.publicKey)), kid: `${name}-key`, alg: 'ES256' }
      await page.goto(`${server.issuer}/account/agents/new`)
      await page.fill('#name', name)
      await page.fill('#scope', 'tools:read')
      await page.fill('#key', JSON.stringify(jwk))
      await Promise.all([page.waitForURL(/\/account\/agents\/[^/]+$/), page.click('form button[type=submit]')])
      return decodeURIComponent(new URL(page.url()).pathname.split('/').pop())
    }
    const deployerKeys = await jose.generateKeyPair('ES256', { extractable: true })
    const helperKeys = await jose.generateKeyPair('ES256', { extractable: true })
    const deployer = await make('release-bot', deployerKeys)
    const helper = await make('test-runner', helperKeys)
    const grant = async (id, keys, name, grantType, params) => {
      const client = { client_id: id, token_endpoint_auth_method: 'private_key_jwt' }
      const r = await oauth.genericTokenEndpointRequest(as, client, oauth.PrivateKeyJwt({ key: keys.privateKey, kid: `${name}-key` }),
        grantType, new URLSearchParams(params), insecure)
      const body = await r.json()
      assert.equal(r.status, 200, JSON.stringify(body))
      return body
    }
    const passport = await grant(deployer, deployerKeys, 'release-bot', 'urn:agentauth:params:grant-type:passport', { audience: helper, scope: 'tools:read' })
    const exchanged = await grant(helper, helperKeys, 'test-runner', 'urn:ietf:params:oauth:grant-type:token-exchange', {
      subject_token: passport.access_token, subject_token_type: 'urn:agentauth:params:token-type:passport', resource: MCP,
    })
    assert.equal((await introspect(exchanged.access_token)).active, true)

    await page.goto(`${server.issuer}/account`)
    const row = page.locator('tr', { hasText: 'test-runner' })
    assert.ok((await row.textContent()).includes('release-bot'), 'acting for the deployer agent')
    await shot(page, 'grants-delegation')
    // The page is already at /account, so wait for the revocation itself
    // (a 303 back here), not for the URL.
    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/account/revoke') && r.status() === 303),
      row.locator('button:has-text("Revoke")').click(),
    ])
    await page.waitForLoadState('load')
    assert.equal((await introspect(exchanged.access_token)).active, false)
    assert.equal(await page.locator('tr', { hasText: 'test-runner' }).count(), 0)
    await context.close()
  })
})

describe('operator pages', () => {
  it('refuse a non-admin and show clients, keys and CA epochs, and the audit log to an operator', async () => {
    const context = await browser.newContext()
    const page = await newPage(context)
    await signIn(page, 'alice')
    for (const path of ['/admin/clients', '/admin/keys', '/admin/audit']) {
      assert.equal((await page.goto(`${server.issuer}${path}`)).status(), 403, path)
    }
    await signOut(page)
    await signIn(page, 'olive')
    assert.equal((await page.goto(`${server.issuer}/admin/clients`)).status(), 200)
    assert.ok((await page.textContent('main')).includes('deployer'))
    await shot(page, 'admin-clients')
    assert.equal((await page.goto(`${server.issuer}/admin/keys`)).status(), 200)
    assert.match(await page.textContent('main'), /RS256/)
    await shot(page, 'admin-keys')
    await page.goto(`${server.issuer}/admin/audit?event=agent.disabled`)
    assert.ok((await page.textContent('main')).includes('agent.disabled'))
    await shot(page, 'admin-audit')
    // No secret on any operator page: the introspector's secret is not shown.
    await page.goto(`${server.issuer}/admin/clients`)
    assert.ok(!(await page.content()).includes(server.introspector.client_secret))
    await context.close()
  })
})
