// The official MCP SDKs as their users write clients, against the example
// MCP server protected by agentauth (issue 30), each given only the
// server's URL and finding everything else itself (RFC 9728, RFC 8414).
// The human step (sign-in, consent) is played in Chromium.
//
// - Python `mcp` (python/mcp_client.py, a subprocess): OAuthClientProvider
//   registers dynamically, runs the code flow with PKCE and RFC 9207 `iss`
//   through our pages, calls whoami, meets 403 insufficient_scope on the
//   admin tool and steps up on its own (a second consent showing only the
//   new scope), then refreshes. ClientCredentialsOAuthProvider gets a token
//   with no user for a client made with the CLI; on the admin tool's 403 it
//   asks for the wider scope, which agentauth refuses (invalid_scope).
// - TypeScript 1.x (@modelcontextprotocol/sdk): ClientCredentialsProvider
//   gets a token with no user for a CLI-made client and calls whoami; on
//   the 403 it asks again for its configured scope and gives up. (Its code
//   flow is in mcp.test.mjs.)
// - TypeScript 2.x (@modelcontextprotocol/client) with DPoP (its provider's
//   dpop()), against the example in --dpop-required mode and agentauth
//   with --dpop-nonce: the code exchange meets `use_dpop_nonce` and is
//   retried with the nonce, the tokens are bound to the SDK's key (cnf.jkt,
//   token_type DPoP) and presented with the DPoP scheme, a bearer token is
//   refused, step-up keeps the binding, and a refresh with a proof works.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { decodeJwt } from 'jose'
import { Client as Client1 } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as Transport1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js'
import { Client as Client2, DpopSession, StreamableHTTPClientTransport as Transport2, UnauthorizedError } from '@modelcontextprotocol/client'
import { freePort, startServer } from '../lib/server.mjs'
import { MemoryProvider, startMcpServer } from '../lib/mcp.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const out = resolve(here, '../test-output')
const PYTHON = process.env.PYTHON ?? resolve(here, '../.venv/bin/python')
const PY_CLIENT = resolve(here, '../python/mcp_client.py')
const PASSWORD = 'correct horse battery'

let browser

before(async () => {
  mkdirSync(out, { recursive: true })
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

after(async () => { await browser?.close() })

/** agentauth and the example MCP server in front of it; `prepare` may add serve flags. */
async function stack({ mcpArgs = [], args = [], prepare } = {}) {
  const mcpPort = await freePort()
  const resource = `http://127.0.0.1:${mcpPort}/mcp`
  const server = await startServer({
    users: { alice: PASSWORD },
    // The consent page fetches the example's RFC 9728 metadata from loopback.
    args: ['--insecure-fetch-for-tests-only', ...args],
    prepare: prepare && ((cx) => prepare({ ...cx, resource })),
  })
  const mcp = await startMcpServer({ issuer: server.issuer, port: mcpPort, args: mcpArgs })
  return { server, mcp, async stop() { await mcp.stop(); await server.stop() } }
}

/**
 * Opens `url` in `page`, signs in as alice when asked, checks the consent
 * page with `inspect`, approves, and returns the redirect back to `until`.
 */
async function approve(page, url, { until, issuer, inspect, shot }) {
  await page.goto(String(url))
  if (/\/login\?/.test(page.url())) {
    await page.fill('#username', 'alice')
    await page.fill('#password', PASSWORD)
    await Promise.all([page.waitForURL(/\/authorize\?/), page.click('button[type=submit]')])
  }
  if (inspect) await inspect(page)
  if (shot) await page.screenshot({ path: `${out}/${shot}`, fullPage: true })
  await Promise.all([page.waitForURL((u) => u.href.startsWith(until)), page.click('button[value=approve]')])
  const back = new URL(page.url())
  assert.equal(back.searchParams.get('iss'), issuer, 'RFC 9207 iss')
  assert.ok(back.searchParams.get('code'), back.href)
  return back
}

const listText = async (p, id) => (await p.locator(`#${id}`).count()) ? p.textContent(`#${id}`) : ''

/** The step-up consent: no second sign-in, only the new scope asked for, the old one kept. */
async function onlyAdminIsNew(p) {
  assert.ok(!/\/login/.test(p.url()), 'no second sign-in')
  const fresh = await listText(p, 'new-scopes')
  const kept = await listText(p, 'kept-scopes')
  assert.ok(fresh.includes('mcp:admin') && fresh.includes("Use the example's admin tool"), fresh)
  assert.ok(!/\(mcp\)/.test(fresh), `only the new scope is asked for: ${fresh}`)
  assert.ok(kept.includes('(mcp)'), `the earlier scope is listed as kept: ${kept}`)
}

async function introspect(server, token) {
  const { client_id, client_secret } = server.introspector
  const response = await fetch(`${server.issuer}/introspect`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${encodeURIComponent(client_id)}:${encodeURIComponent(client_secret)}`).toString('base64')}` },
    body: new URLSearchParams({ token }),
  })
  assert.equal(response.status, 200)
  return response.json()
}

/**
 * Runs python/mcp_client.py; `onAuthorize(url)` plays the human step for
 * each authorization URL it prints, one at a time (the SDK can print the
 * next URL before the browser is done with the last redirect). Resolves to
 * its events once it exits.
 */
function python(args, { onAuthorize } = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(PYTHON, [PY_CLIENT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    const events = []
    let human = Promise.resolve()
    let failure
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
      let i
      while ((i = stdout.indexOf('\n')) >= 0) {
        const line = stdout.slice(0, i).trim()
        stdout = stdout.slice(i + 1)
        if (!line) continue
        const event = JSON.parse(line)
        events.push(event)
        if (event.event === 'authorize') {
          const url = new URL(event.url)
          human = human.then(async () => { if (!failure) await onAuthorize(url) }).catch((e) => { failure ??= e; child.kill() })
        }
      }
    })
    child.stderr.on('data', (d) => { stderr += d })
    child.on('error', reject)
    child.on('exit', async (code) => {
      await human
      if (failure) reject(failure)
      else resolvePromise({ code, events, stderr })
    })
  })
}

describe('Python mcp 2.3.0', () => {
  let s
  before(async () => {
    s = await stack({ args: ['--scopes', 'mcp mcp:admin'], prepare: ({ resource }) => ['--resource', resource] })
  })
  after(async () => { await s?.stop() })

  it('code flow: discovers, registers, signs in, calls whoami, steps up for the admin tool, refreshes', async () => {
    const { server, mcp } = s
    const context = await browser.newContext()
    const page = await context.newPage()
    const urls = []
    const run = await python(['code', mcp.url], {
      async onAuthorize(url) {
        urls.push(url)
        const until = url.searchParams.get('redirect_uri')
        if (urls.length === 1) {
          await approve(page, url, {
            until, issuer: server.issuer, shot: 'python-consent.png',
            inspect: async (p) => {
              const text = await p.textContent('main')
              assert.ok(text.includes('MCP Python SDK test client'), 'names the client')
              assert.ok(text.includes('agentauth example MCP server'), 'names the resource as its metadata does')
            },
          })
        } else {
          await approve(page, url, { until, issuer: server.issuer, shot: 'python-step-up-consent.png', inspect: onlyAdminIsNew })
        }
      },
    })
    await context.close()
    assert.equal(run.code, 0, run.stderr)
    const events = run.events
    assert.equal(events.at(-1).event, 'done', run.stderr)

    // Two authorizations: the first for `mcp` (and offline_access, which the
    // SDK adds as agentauth lists it), the step-up for the union.
    assert.equal(urls.length, 2, JSON.stringify(urls))
    const [first, stepUp] = urls
    assert.ok(first.href.startsWith(`${server.issuer}/authorize?`), first.href)
    assert.equal(first.searchParams.get('resource'), mcp.url, 'RFC 8707 resource from RFC 9728 metadata')
    assert.equal(first.searchParams.get('code_challenge_method'), 'S256')
    assert.deepEqual(first.searchParams.get('scope').split(' ').sort(), ['mcp', 'offline_access'])
    assert.deepEqual(stepUp.searchParams.get('scope').split(' ').sort(), ['mcp', 'mcp:admin', 'offline_access'])
    assert.equal(stepUp.searchParams.get('client_id'), first.searchParams.get('client_id'), 'one registration')

    const http = events.filter((e) => e.event === 'http')
    const tokenRequests = http.filter((e) => e.grant_type)
    assert.deepEqual(tokenRequests.map((e) => [e.grant_type, e.status]),
      [['authorization_code', 200], ['authorization_code', 200], ['refresh_token', 200]])
    assert.ok(http.some((e) => e.url === `${server.issuer}/register` && e.status === 201), 'registered dynamically')
    const denied = http.find((e) => e.status === 403)
    assert.match(denied?.challenge ?? '', /error="insufficient_scope"/)
    assert.match(denied.challenge, /scope="mcp mcp:admin"/)

    assert.deepEqual(events.find((e) => e.event === 'tools').names, ['admin_echo', 'delete_note', 'list_notes', 'whoami'])
    const tools = events.filter((e) => e.event === 'tool')
    assert.deepEqual(tools.map((t) => [t.name, t.is_error]), [['whoami', false], ['admin_echo', false], ['whoami', false]])
    const me = JSON.parse(tools[0].text)
    assert.equal(me.client_id, first.searchParams.get('client_id'))
    assert.deepEqual(me.scopes, ['mcp'])
    assert.equal(tools[1].text, 'stepped up')
    const refreshed = JSON.parse(tools[2].text)
    assert.equal(refreshed.sub, me.sub)
    assert.deepEqual(refreshed.scopes.sort(), ['mcp', 'mcp:admin'], 'the refresh keeps the stepped-up scope')

    const [basic, stepped, afterRefresh] = events.filter((e) => e.event === 'tokens')
    assert.ok(basic.refresh_token, 'offline_access gave a refresh token')
    assert.notEqual(afterRefresh.access_token, stepped.access_token)
    assert.notEqual(afterRefresh.refresh_token, stepped.refresh_token, 'the refresh token rotated')
    const introspection = await introspect(server, afterRefresh.access_token)
    assert.equal(introspection.active, true)
    assert.equal(introspection.aud, mcp.url)
    assert.deepEqual(introspection.scope.split(' ').sort(), ['mcp', 'mcp:admin'])
  })

  it('client credentials: a token with no user for a CLI-made client, and no step-up past its scope', async () => {
    const { server, mcp } = s
    const made = JSON.parse(await server.cli(['client', 'create', '--name', 'python-m2m', '--grant-type', 'client_credentials', '--scope', 'mcp', '--json']))
    const run = await python(['client-credentials', mcp.url, made.client_id, made.client_secret, server.issuer])
    assert.equal(run.code, 0, run.stderr)
    const events = run.events
    assert.equal(events.at(-1).event, 'done', run.stderr)
    const tokenRequests = events.filter((e) => e.event === 'http' && e.grant_type)
    assert.deepEqual(tokenRequests.map((e) => [e.grant_type, e.authorization, e.scope, e.status]),
      [['client_credentials', 'Basic', 'mcp', 200], ['client_credentials', 'Basic', 'mcp mcp:admin', 400]])
    const me = JSON.parse(events.find((e) => e.event === 'tool' && e.name === 'whoami').text)
    assert.equal(me.client_id, made.client_id)
    assert.deepEqual(me.scopes, ['mcp'])
    const { access_token } = events.find((e) => e.event === 'tokens')
    const introspection = await introspect(server, access_token)
    assert.equal(introspection.active, true)
    assert.equal(introspection.aud, mcp.url, 'RFC 8707 resource from RFC 9728 metadata')
    // The admin tool: 403 insufficient_scope, the SDK asks for `mcp mcp:admin`, agentauth refuses.
    assert.ok(!events.some((e) => e.event === 'tool' && e.name === 'admin_echo'))
    const failure = events.find((e) => e.event === 'error')
    assert.equal(failure?.name, 'admin_echo', JSON.stringify(events))
    assert.match(failure.message, /invalid_scope/)
  })
})

describe('@modelcontextprotocol/sdk 1.32.2 client credentials', () => {
  let s
  before(async () => {
    s = await stack({ args: ['--scopes', 'mcp mcp:admin'], prepare: ({ resource }) => ['--resource', resource] })
  })
  after(async () => { await s?.stop() })

  it('ClientCredentialsProvider: a token with no user for a CLI-made client, and no step-up past its scope', async () => {
    const { server, mcp } = s
    const made = JSON.parse(await server.cli(['client', 'create', '--name', 'ts-m2m', '--grant-type', 'client_credentials', '--scope', 'mcp', '--json']))
    const provider = new ClientCredentialsProvider({ clientId: made.client_id, clientSecret: made.client_secret, expectedIssuer: server.issuer, scope: 'mcp' })
    const tokenRequests = []
    const recording = async (input, init) => {
      const response = await fetch(input, init)
      if (String(input) === `${server.issuer}/token`) {
        tokenRequests.push({ body: new URLSearchParams(String(init.body)), auth: new Headers(init.headers).get('authorization')?.split(' ')[0], status: response.status })
      }
      return response
    }
    const client = new Client1({ name: 'sdk-m2m', version: '1.0.0' })
    const transport = new Transport1(new URL(mcp.url), { authProvider: provider, fetch: recording })
    await client.connect(transport)
    const me = JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text)
    assert.equal(me.client_id, made.client_id)
    assert.deepEqual(me.scopes, ['mcp'])
    assert.equal(tokenRequests.length, 1)
    const [granted] = tokenRequests
    assert.equal(granted.body.get('grant_type'), 'client_credentials')
    assert.equal(granted.auth, 'Basic')
    assert.equal(granted.body.get('resource'), mcp.url, 'RFC 8707 resource from RFC 9728 metadata')
    assert.equal(granted.status, 200)
    const introspection = await introspect(server, provider.tokens().access_token)
    assert.equal(introspection.active, true)
    assert.equal(introspection.client_id, made.client_id)

    // 403 insufficient_scope: SDK 1.x asks again for its configured scope
    // (not the challenge's), gets `mcp` again, and gives up on the second 403.
    await assert.rejects(client.callTool({ name: 'admin_echo', arguments: { text: 'no' } }), (e) => e.code === 403)
    assert.deepEqual(tokenRequests.map((r) => [r.body.get('scope'), r.status]), [['mcp', 200], ['mcp', 200]])
    await client.close()
  })
})

/**
 * MemoryProvider plus the SDK 2.x DPoP hook: one key for the life of the
 * registration. (No stepUpFetch: SDK 2.x steps up by itself.)
 */
class DpopProvider extends MemoryProvider {
  dpop() { return (this._dpop ??= DpopSession.create()) }
}

describe('@modelcontextprotocol/client 2.4.0 with DPoP and server nonces', () => {
  let s, callback, redirectUri
  before(async () => {
    s = await stack({
      mcpArgs: ['--dpop-required'],
      args: ['--dpop-nonce'],
      prepare: ({ dir, resource }) => {
        const file = join(dir, 'resources.toml')
        writeFileSync(file, `[[resource]]\nuri = "${resource}"\nname = "agentauth example MCP server"\nscopes = ["mcp", "mcp:admin"]\ndpop = "required"\n`)
        return ['--resources-file', file]
      },
    })
    const port = await freePort()
    redirectUri = `http://127.0.0.1:${port}/callback`
    callback = createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('done') })
    await new Promise((r) => callback.listen(port, '127.0.0.1', r))
  })
  after(async () => {
    callback?.close()
    await s?.stop()
  })

  it('code flow with DPoP-bound tokens: nonce retry, step-up, refresh', async () => {
    const { server, mcp } = s
    const provider = new DpopProvider({
      redirectUrl: redirectUri,
      clientMetadata: {
        client_name: 'MCP SDK 2 test client',
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      },
    })
    const session = await provider.dpop()
    // Every request the SDK makes, with what its DPoP proof said.
    const exchanges = []
    const recording = async (input, init) => {
      const headers = new Headers(init?.headers)
      const proof = headers.get('dpop')
      const response = await fetch(input, init)
      exchanges.push({
        url: String(input),
        method: init?.method ?? 'GET',
        scheme: headers.get('authorization')?.split(' ')[0],
        proof: proof ? decodeJwt(proof) : undefined,
        grantType: String(input) === `${server.issuer}/token` ? new URLSearchParams(String(init.body)).get('grant_type') : undefined,
        status: response.status,
        error: response.status === 400 ? (await response.clone().json()).error : undefined,
        nonce: response.headers.get('dpop-nonce'),
      })
      return response
    }
    const transportFor = () => new Transport2(new URL(mcp.url), { authProvider: provider, fetch: recording })
    const context = await browser.newContext()
    const page = await context.newPage()

    let client = new Client2({ name: 'sdk2-test', version: '1.0.0' })
    let transport = transportFor()
    await assert.rejects(client.connect(transport), UnauthorizedError)
    const first = provider.lastAuthorizationUrl
    assert.equal(first.searchParams.get('resource'), mcp.url)
    assert.equal(first.searchParams.get('scope')?.split(' ').includes('mcp:admin'), false, 'asks first for the basic scope')
    const back = await approve(page, first, {
      until: redirectUri, issuer: server.issuer, shot: 'sdk2-consent.png',
      inspect: async (p) => assert.ok((await p.textContent('main')).includes('MCP SDK 2 test client'), 'names the client'),
    })
    await transport.finishAuth(back.searchParams)

    // The code exchange: agentauth asks for a nonce, the SDK retries with it.
    const codeExchanges = exchanges.filter((e) => e.grantType === 'authorization_code')
    assert.deepEqual(codeExchanges.map((e) => [e.status, e.error]), [[400, 'use_dpop_nonce'], [200, undefined]])
    assert.ok(codeExchanges[0].nonce, 'DPoP-Nonce with the challenge')
    assert.equal(codeExchanges[0].proof.nonce, undefined)
    assert.equal(codeExchanges[1].proof.nonce, codeExchanges[0].nonce, 'the retry carries the nonce')
    assert.equal(provider.tokens().token_type, 'DPoP')
    const bound = await introspect(server, provider.tokens().access_token)
    assert.equal(bound.active, true)
    assert.equal(bound.token_type, 'DPoP')
    assert.equal(bound.cnf.jkt, session.thumbprint, 'bound to the SDK key')

    client = new Client2({ name: 'sdk2-test', version: '1.0.0' })
    transport = transportFor()
    await client.connect(transport)
    const whoami = async () => JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text)
    const me = await whoami()
    assert.equal(me.dpop_bound, true)
    assert.deepEqual(me.scopes, ['mcp'])
    const toResource = exchanges.filter((e) => e.url === mcp.url && e.status === 200)
    assert.ok(toResource.length > 0 && toResource.every((e) => e.scheme === 'DPoP' && e.proof?.ath), 'DPoP scheme, proof with ath')
    // The example takes only DPoP: the same token as a bearer token is refused.
    const asBearer = await fetch(mcp.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${provider.tokens().access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    })
    assert.equal(asBearer.status, 401)

    // Step-up: 403 insufficient_scope, a consent for mcp:admin alone, a
    // code exchange with a proof, and a token bound to the same key.
    const echo = () => client.callTool({ name: 'admin_echo', arguments: { text: 'stepped up' } })
    await assert.rejects(echo(), UnauthorizedError)
    const stepUp = provider.lastAuthorizationUrl
    assert.notEqual(stepUp, first)
    assert.ok(stepUp.searchParams.get('scope').split(' ').includes('mcp:admin'), stepUp.href)
    const stepped = await approve(page, stepUp, { until: redirectUri, issuer: server.issuer, shot: 'sdk2-step-up-consent.png', inspect: onlyAdminIsNew })
    await transport.finishAuth(stepped.searchParams)
    assert.equal((await echo()).content[0].text, 'stepped up')
    assert.equal((await introspect(server, provider.tokens().access_token)).cnf.jkt, session.thumbprint)

    // Refresh: the access token goes bad; the SDK refreshes on the 401 with a proof.
    const before = provider.tokens()
    assert.ok(before.refresh_token, 'offline_access gave a refresh token')
    provider._tokens = { ...before, access_token: 'not-a-token' }
    const again = await whoami()
    assert.equal(again.sub, me.sub)
    assert.deepEqual(again.scopes.sort(), ['mcp', 'mcp:admin'])
    const refresh = exchanges.filter((e) => e.grantType === 'refresh_token').at(-1)
    assert.equal(refresh?.status, 200)
    assert.ok(refresh.proof?.nonce, 'the refresh proof carries a server nonce')
    assert.notEqual(provider.tokens().refresh_token, before.refresh_token, 'the refresh token rotated')
    const renewed = await introspect(server, provider.tokens().access_token)
    assert.equal(renewed.cnf.jkt, session.thumbprint, 'still bound after the refresh')
    await transport.close()
    await context.close()
  })
})
