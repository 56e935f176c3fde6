// Real MCP clients against the example MCP server protected by agentauth
// (issue 14), both running as processes:
//
// - @modelcontextprotocol/sdk (the official TypeScript client), given only
//   the server's URL: 401 → RFC 9728 → RFC 8414 → dynamic registration →
//   authorization code with PKCE through our pages in Chromium → whoami →
//   refresh → 403 insufficient_scope → a step-up consent that shows only
//   the new scope → the admin tool.
// - @modelcontextprotocol/conformance: every scenario its `list
//   --authorization` names, run by its `authorization` command against
//   agentauth (the human step played in Chromium), each required to leave
//   checks with no FAILURE and no SKIPPED; and its
//   `server` scenarios that apply against the example server (through a
//   proxy that adds a token: the tool has no way to send one).
//
// Screenshots of the consent pages go to conformance/test-output/.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { createServer, request as httpRequest } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { chromium } from 'playwright-core'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js'
import { freePort, startServer } from '../lib/server.mjs'
import { MemoryProvider, startMcpServer } from '../lib/mcp.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const out = resolve(here, '../test-output')
const PASSWORD = 'correct horse battery'
const require = createRequire(import.meta.url)
const CONFORMANCE = join(dirname(require.resolve('@modelcontextprotocol/conformance/package.json')), 'dist/index.js')
const SHIM = resolve(here, '../lib/node20-shim/register.mjs')

let server, mcp, browser, callback, redirectUri, tls

/**
 * A throwaway CA and a certificate for 127.0.0.1 (openssl): the SDK takes
 * only an https client ID metadata document URL, so the document is served
 * over TLS on loopback, and agentauth trusts the CA through SSL_CERT_FILE.
 */
function testCertificates() {
  const dir = mkdtempSync(join(tmpdir(), 'agentauth-tls-'))
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=agentauth test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  ssl('req', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=127.0.0.1')
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
  ssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem',
    '-days', '2', '-extfile', 'ext.cnf')
  return { dir, ca: join(dir, 'ca.pem'), key: readFileSync(join(dir, 'leaf.key')), cert: readFileSync(join(dir, 'leaf.pem')) }
}

before(async () => {
  mkdirSync(out, { recursive: true })
  tls = testCertificates()
  const mcpPort = await freePort()
  const resource = `http://127.0.0.1:${mcpPort}/mcp`
  server = await startServer({
    users: { alice: PASSWORD },
    // --insecure-fetch-for-tests-only: the consent page fetches the example's RFC 9728
    // metadata from a loopback address (and client documents too).
    args: ['--resource', resource, '--scopes', 'mcp mcp:admin', '--insecure-fetch-for-tests-only'],
    env: { SSL_CERT_FILE: tls.ca },
  })
  mcp = await startMcpServer({ issuer: server.issuer, port: mcpPort })
  assert.equal(mcp.url, resource)
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
  await mcp?.stop()
  await server?.stop()
  if (tls) rmSync(tls.dir, { recursive: true, force: true })
})

/**
 * Opens `url` in `page` (signing in as alice when asked), checks the
 * consent page with `inspect`, approves, and returns the redirect back,
 * whose `state` and `iss` it checks (the SDK checks neither).
 */
async function approve(page, url, { until, state, inspect, shot }) {
  await page.goto(url.href ?? url)
  if (/\/login\?/.test(page.url())) {
    await page.fill('#username', 'alice')
    await page.fill('#password', PASSWORD)
    await Promise.all([page.waitForURL(/\/authorize\?/), page.click('button[type=submit]')])
  }
  if (inspect) await inspect(page)
  if (shot) await page.screenshot({ path: `${out}/${shot}`, fullPage: true })
  await Promise.all([page.waitForURL((u) => u.href.startsWith(until)), page.click('button[value=approve]')])
  const back = new URL(page.url())
  if (state !== undefined) assert.equal(back.searchParams.get('state'), state, 'state round-trips')
  assert.equal(back.searchParams.get('iss'), server.issuer, 'RFC 9207 iss')
  assert.ok(back.searchParams.get('code'), back.href)
  return back
}

const listText = async (page, id) => (await page.locator(`#${id}`).count()) ? page.textContent(`#${id}`) : ''

describe('@modelcontextprotocol/sdk against the example MCP server', () => {
  it('discovers, registers, signs in, calls whoami, refreshes, steps up and calls the admin tool', async () => {
    const provider = new MemoryProvider({
      redirectUrl: redirectUri,
      clientMetadata: {
        client_name: 'MCP SDK test client',
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      },
    })
    const context = await browser.newContext()
    const page = await context.newPage()
    const url = new URL(mcp.url)
    const transportFor = () => new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: provider.stepUpFetch() })

    // No configuration but the URL: the first connect ends at our pages.
    let client = new Client({ name: 'sdk-test', version: '1.0.0' })
    let transport = transportFor()
    await assert.rejects(client.connect(transport), UnauthorizedError)
    const first = provider.lastAuthorizationUrl
    assert.ok(first.href.startsWith(`${server.issuer}/authorize?`), first.href)
    assert.equal(first.searchParams.get('resource'), mcp.url, 'RFC 8707 resource from RFC 9728 metadata')
    assert.equal(first.searchParams.get('code_challenge_method'), 'S256')
    assert.equal(first.searchParams.get('scope')?.split(' ').includes('mcp:admin'), false, 'asks first for the basic scope')
    assert.ok(provider.clientInformation()?.client_id, 'registered dynamically')
    const back = await approve(page, first, {
      until: redirectUri,
      state: provider.expectedState,
      shot: 'mcp-consent.png',
      inspect: async (p) => {
        const text = await p.textContent('main')
        assert.ok(text.includes('MCP SDK test client'), 'names the client')
        assert.ok(text.includes('agentauth example MCP server'), 'names the resource as its metadata does')
        assert.ok(text.includes("Use the example's tools (whoami"), 'describes the scope in the resource words')
      },
    })
    await transport.finishAuth(back.searchParams.get('code'))

    client = new Client({ name: 'sdk-test', version: '1.0.0' })
    transport = transportFor()
    await client.connect(transport)
    const { tools } = await client.listTools()
    assert.deepEqual(tools.map((t) => t.name).sort(), ['admin_echo', 'delete_note', 'list_notes', 'whoami'])
    const whoami = async () => JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text)
    const me = await whoami()
    assert.match(me.sub, /\S/)
    assert.ok(me.scopes.includes('mcp') && !me.scopes.includes('mcp:admin'), JSON.stringify(me))
    assert.equal(me.token, 'access_token')

    // Refresh: the access token goes bad; the SDK refreshes on the 401 and retries.
    const before = provider.tokens()
    assert.ok(before.refresh_token, 'offline_access gave a refresh token')
    provider._tokens = { ...before, access_token: 'not-a-token' }
    const again = await whoami()
    assert.equal(again.sub, me.sub)
    assert.notEqual(provider.tokens().refresh_token, before.refresh_token, 'the refresh token rotated')

    // The admin tool: 403 insufficient_scope, the SDK re-authorizes with the
    // wider scope, and the consent page asks only for what is new.
    const echo = () => client.callTool({ name: 'admin_echo', arguments: { text: 'stepped up' } })
    await assert.rejects(echo(), UnauthorizedError)
    const stepUp = provider.lastAuthorizationUrl
    assert.notEqual(stepUp, first)
    assert.ok(stepUp.searchParams.get('scope').split(' ').includes('mcp:admin'), stepUp.href)
    const stepped = await approve(page, stepUp, {
      until: redirectUri,
      state: provider.expectedState,
      shot: 'mcp-step-up-consent.png',
      inspect: async (p) => {
        assert.ok(!/\/login/.test(p.url()), 'no second sign-in')
        const fresh = await listText(p, 'new-scopes')
        const kept = await listText(p, 'kept-scopes')
        assert.ok(fresh.includes('mcp:admin'), fresh)
        assert.ok(fresh.includes("Use the example's admin tool"), fresh)
        assert.ok(!/\(mcp\)/.test(fresh), `only the new scope is asked for: ${fresh}`)
        assert.ok(kept.includes('(mcp)'), `the earlier scope is listed as kept: ${kept}`)
      },
    })
    await transport.finishAuth(stepped.searchParams.get('code'))
    const echoed = await echo()
    assert.equal(echoed.content[0].text, 'stepped up')
    const after = await whoami()
    assert.ok(after.scopes.includes('mcp') && after.scopes.includes('mcp:admin'), JSON.stringify(after))
    await transport.close()
    await context.close()
    console.log(`screenshots: ${out}/mcp-consent.png ${out}/mcp-step-up-consent.png`)
  })
})

describe('@modelcontextprotocol/sdk with a client ID metadata document', () => {
  it('uses its document URL as client_id (no registration) and reaches whoami', async () => {
    const port = await freePort()
    const documentUrl = `https://127.0.0.1:${port}/oauth/client.json`
    const document = {
      client_id: documentUrl,
      client_name: 'MCP SDK document client',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    }
    let fetched = 0
    const documents = createHttpsServer({ key: tls.key, cert: tls.cert }, (req, res) => {
      fetched += 1
      res.writeHead(req.url === '/oauth/client.json' ? 200 : 404, { 'content-type': 'application/json', 'cache-control': 'max-age=300' })
      res.end(JSON.stringify(document))
    })
    await new Promise((r) => documents.listen(port, '127.0.0.1', r))
    try {
      const metadata = await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()
      assert.equal(metadata.client_id_metadata_document_supported, true)
      const provider = new MemoryProvider({ redirectUrl: redirectUri, clientMetadata: document, clientMetadataUrl: documentUrl })
      const transportFor = () => new StreamableHTTPClientTransport(new URL(mcp.url), { authProvider: provider, fetch: provider.stepUpFetch() })
      await assert.rejects(new Client({ name: 'sdk-cimd', version: '1.0.0' }).connect(transportFor()), UnauthorizedError)
      const url = provider.lastAuthorizationUrl
      assert.equal(url.searchParams.get('client_id'), documentUrl, 'the document URL is the client_id')
      const context = await browser.newContext()
      const page = await context.newPage()
      const back = await approve(page, url, {
        until: redirectUri,
        state: provider.expectedState,
        inspect: async (p) => assert.ok((await p.textContent('main')).includes('MCP SDK document client'), 'named by its document'),
      })
      await context.close()
      assert.ok(fetched >= 1, 'agentauth fetched the document')
      const transport = transportFor()
      await transport.finishAuth(back.searchParams.get('code'))
      const client = new Client({ name: 'sdk-cimd', version: '1.0.0' })
      await client.connect(transportFor())
      const me = JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text)
      assert.equal(me.client_id, documentUrl)
      await client.close()
    } finally {
      documents.close()
    }
  })
})

/** Runs the conformance CLI on Node 20 (its one Node 22 import is shimmed). */
function conformance(args, { onLine } = {}) {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, ['--import', SHIM, CONFORMANCE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    let pending = ''
    const take = (d) => {
      output += d
      pending += d
      let i
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i).trim()
        pending = pending.slice(i + 1)
        onLine?.(line)
      }
    }
    child.stdout.on('data', take)
    child.stderr.on('data', take)
    child.on('exit', (code) => resolvePromise({ code, output }))
  })
}

/** Every checks.json under `dir`, flattened. */
function checksUnder(dir) {
  const found = []
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name)
      if (statSync(p).isDirectory()) walk(p)
      else if (name === 'checks.json') found.push(...JSON.parse(readFileSync(p, 'utf8')))
    }
  }
  walk(dir)
  return found
}

/**
 * The authorization-server scenarios this release of the suite has, from
 * `list --authorization` (lines `  - <name> [<spec versions>]`).
 */
async function authorizationScenarios() {
  const { code, output } = await conformance(['list', '--authorization'])
  assert.equal(code, 0, output)
  const names = [...output.matchAll(/^\s+-\s+(\S+)/gm)].map((m) => m[1])
  assert.ok(names.length > 0, `no scenarios listed:\n${output}`)
  return names
}

/**
 * The checks of each scenario under `dir`: the suite writes one
 * `authorization-server-<scenario>-<ISO time>/checks.json` per scenario.
 */
function checksByScenario(dir, scenarios) {
  const found = new Map()
  for (const name of readdirSync(dir, { recursive: true })) {
    const path = String(name).replaceAll('\\', '/')
    if (!path.endsWith('/checks.json')) continue
    const folder = path.slice(0, -'/checks.json'.length)
    // The name, then the time: a scenario whose name extends another's
    // (x and x-y) is not taken for it.
    const scenario = scenarios.find((s) => folder.startsWith(`authorization-server-${s}-`) &&
      /^\d{4}-\d{2}-\d{2}T[\d-]+Z$/.test(folder.slice(`authorization-server-${s}-`.length)))
    assert.ok(scenario, `results of a scenario the list does not name: ${folder}`)
    found.set(scenario, [...(found.get(scenario) ?? []), ...JSON.parse(readFileSync(join(dir, path), 'utf8'))])
  }
  return found
}

describe('@modelcontextprotocol/conformance', () => {
  it('authorization: every authorization-server scenario of the suite passes against agentauth', async (t) => {
    // Read from the package, so that a newer release's scenarios run and
    // are checked without editing this file.
    const scenarios = await authorizationScenarios()
    for (const known of ['authorization-server-metadata-endpoint', 'authorization-code-grant']) {
      assert.ok(scenarios.includes(known), `${known} is listed: ${scenarios}`)
    }
    const port = await freePort()
    const callbackUrl = `http://127.0.0.1:${port}/callback`
    const registration = await fetch(`${server.issuer}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.initialToken}` },
      body: JSON.stringify({
        client_name: 'MCP conformance suite',
        redirect_uris: [callbackUrl],
        grant_types: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_method: 'none',
      }),
    })
    assert.equal(registration.status, 201)
    const { client_id } = await registration.json()
    const results = join(out, 'conformance-authorization')
    rmSync(results, { recursive: true, force: true })

    const context = await browser.newContext()
    const page = await context.newPage()
    let armed = false
    // Every human step the suite asks for (one today, in
    // authorization-code-grant), played in turn in Chromium.
    const humans = []
    let queue = Promise.resolve()
    const run = await conformance(
      ['authorization', '--url', server.issuer, '--client-id', client_id, '--resource', mcp.url, '--port', String(port), '-o', results],
      {
        onLine(line) {
          if (line.startsWith('Access the following URL')) armed = true
          else if (armed && /^https?:\/\//.test(line)) {
            armed = false
            const shot = humans.length === 0 ? 'conformance-consent.png' : `conformance-consent-${humans.length + 1}.png`
            queue = queue.then(() => approve(page, new URL(line), { until: callbackUrl, shot }))
            humans.push(queue)
          }
        },
      },
    )
    assert.ok(humans.length > 0, `the suite asked for the human step:\n${run.output}`)
    await Promise.all(humans)
    await context.close()
    assert.equal(run.code, 0, run.output)

    const byScenario = checksByScenario(results, scenarios)
    for (const scenario of scenarios) {
      const checks = byScenario.get(scenario) ?? []
      assert.ok(checks.length > 0, `${scenario} left a results directory with checks:\n${run.output}`)
      const bad = checks.filter((c) => c.status === 'FAILURE' || c.status === 'SKIPPED')
      assert.deepEqual(bad, [], `${scenario}:\n${run.output}`)
      assert.ok(checks.some((c) => c.status === 'SUCCESS'), `${scenario}: ${JSON.stringify(checks, null, 1)}`)
      t.diagnostic(`${scenario}: ${checks.map((c) => `${c.id} ${c.status}`).join(', ')}`)
    }
    // What the README lists today; a new check or scenario must not hide a lost one.
    const ids = [...byScenario.values()].flat().map((c) => c.id)
    for (const id of ['authorization-server-metadata', 'authorization-server-metadata-cimd', 'authorization-code-grant']) {
      assert.ok(ids.includes(id), `${id} ran: ${ids}`)
    }
  })

  it('server scenarios that apply, against the protected example through a token-adding proxy', async () => {
    // A client_credentials token for the example, from an operator client.
    const client = JSON.parse(await server.cli(['client', 'create', '--name', 'conformance-proxy', '--grant-type', 'client_credentials', '--scope', 'mcp', '--json']))
    const tokenResponse = await fetch(`${server.issuer}/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'mcp', resource: mcp.url }),
    })
    assert.equal(tokenResponse.status, 200)
    const { access_token } = await tokenResponse.json()
    const target = new URL(mcp.url)
    const proxyPort = await freePort()
    const proxy = createServer((req, res) => {
      const upstream = httpRequest(
        { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: { ...req.headers, host: target.host, authorization: `Bearer ${access_token}` } },
        (up) => { res.writeHead(up.statusCode, up.headers); up.pipe(res) },
      )
      upstream.on('error', () => { res.writeHead(502); res.end() })
      req.pipe(upstream)
    })
    await new Promise((r) => proxy.listen(proxyPort, '127.0.0.1', r))
    try {
      const results = join(out, 'conformance-server')
      rmSync(results, { recursive: true, force: true })
      // The example has two tools and no prompts, resources, sampling or
      // elicitation: the scenarios about those do not apply.
      for (const scenario of ['server-initialize', 'ping', 'tools-list']) {
        const run = await conformance(['server', '--url', `http://127.0.0.1:${proxyPort}/mcp`, '--scenario', scenario, '-o', results])
        assert.equal(run.code, 0, `${scenario}:\n${run.output}`)
      }
      const failed = checksUnder(results).filter((c) => c.status === 'FAILURE')
      assert.deepEqual(failed, [])
    } finally {
      proxy.close()
    }
  })
})
