// An MCP server written with the official TypeScript SDK (1.x), protected
// by agentauth, reached by the SDK's own client with nothing but the URL:
// RFC 9728 discovery, dynamic registration, the real sign-in and consent
// pages (posted as a browser would), the token, a tool call, a refresh.
// The same flow with no package of ours (the SDK's router and bearer
// middleware, a jose verifier), what a verifier without a typ check lets
// through, and what requireAgentAuth adds (DPoP, passports, challenges).
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import express from 'express'
import * as jose from 'jose'
import * as oauth from 'oauth4webapi'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { mcpAuthMetadataRouter } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js'
import { ResourceVerifier } from '../src/index.js'
import { mcpTokenVerifier, requireAgentAuth, agentauthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '../src/mcp.js'
import { freePort, startServer } from './server.mjs'
import { Human } from './human.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }
const PASSWORD = 'correct horse battery'
const PASSPORT_GRANT = 'urn:agentauth:params:grant-type:passport'

let server, port, base, listener, agent, as

/** A fresh SDK server per request (stateless Streamable HTTP): whoami reports its AuthInfo. */
function mcpServer() {
  const s = new McpServer({ name: 'agentauth-sdk-test', version: '1.0.0' })
  s.registerTool('whoami', { description: 'Who is calling' }, async ({ authInfo }) => ({
    content: [{ type: 'text', text: JSON.stringify({ clientId: authInfo?.clientId, scopes: authInfo?.scopes, ...authInfo?.extra, claims: undefined }) }],
  }))
  return s
}

async function handle(req, res) {
  const s = mcpServer()
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
  res.on('close', () => { transport.close(); s.close() })
  await s.connect(transport)
  await transport.handleRequest(req, res, req.body)
}

before(async () => {
  port = await freePort()
  base = `http://127.0.0.1:${port}`
  const resource = `${base}/mcp`
  server = await startServer({
    users: { alice: PASSWORD },
    // The consent page reads the MCP server's RFC 9728 metadata from loopback.
    args: ['--insecure-fetch-for-tests-only'],
    async prepare({ run, dir }) {
      const file = join(dir, 'resources.toml')
      writeFileSync(file, `[[resource]]\nuri = "${resource}"\nname = "TS SDK test server"\nscopes = ["mcp"]\naccept_passports = true\n\n`
        + `[[resource]]\nuri = "${base}/bare"\nname = "SDK only"\nscopes = ["mcp"]\n`)
      const keys = await jose.generateKeyPair('ES256', { extractable: true })
      const jwk = { ...(await jose.exportJWK(keys.publicKey)), kid: 'a-key', alg: 'ES256' }
      writeFileSync(join(dir, 'a.jwk'), JSON.stringify(jwk))
      const id = await run(['agent', 'create', '--owner', 'alice', '--name', 'shopper', '--scope', 'mcp', '--jwk', join(dir, 'a.jwk')])
      agent = { id, keys, client: { client_id: id, token_endpoint_auth_method: 'private_key_jwt' }, auth: oauth.PrivateKeyJwt({ key: keys.privateKey, kid: 'a-key' }) }
      return ['--resources-file', file]
    },
  })
  as = await oauth.processDiscoveryResponse(new URL(server.issuer), await oauth.discoveryRequest(new URL(server.issuer), { ...insecure, algorithm: 'oauth2' }))

  const verifier = new ResourceVerifier({ issuer: server.issuer, audience: resource })
  const app = express()
  app.use(express.json())
  // RFC 9728 metadata at /.well-known/oauth-protected-resource/mcp, naming agentauth.
  app.use(await agentauthMetadataRouter({ issuer: server.issuer, resourceServerUrl: resource, scopesSupported: ['mcp'], resourceName: 'TS SDK test server' }))
  const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(new URL(resource))
  // 1. The SDK's own middleware with our verifier.
  app.post('/mcp', requireBearerAuth({ verifier: mcpTokenVerifier(verifier), requiredScopes: ['mcp'], resourceMetadataUrl, expectedResource: new URL(resource) }), handle)
  // 2. Ours in its place: DPoP and passports too (the passport policy grants `mcp` to alice's agents).
  const open = new ResourceVerifier({ issuer: server.issuer, audience: resource, acceptPassports: true, passportScopes: (p) => (p.owner ? ['mcp'] : []) })
  app.post('/dpop', requireAgentAuth({ verifier: open, resourceUrl: `${base}/dpop`, requiredScopes: ['mcp'] }), handle)
  // 3. The SDK's middleware with only jose, as the SDK's docs leave it to the user.
  const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))
  const naive = (checkTyp) => ({
    async verifyAccessToken(token) {
      try {
        const { payload } = await jose.jwtVerify(token, jwks, { issuer: server.issuer, audience: resource, ...(checkTyp ? { typ: 'at+jwt' } : {}) })
        return { token, clientId: payload.client_id ?? payload.sub, scopes: String(payload.scope ?? '').split(' ').filter(Boolean), expiresAt: payload.exp }
      } catch (err) {
        throw new InvalidTokenError(err.message)
      }
    },
  })
  app.post('/naive', requireBearerAuth({ verifier: naive(false) }), (req, res) => res.json({ clientId: req.auth.clientId }))
  app.post('/typed', requireBearerAuth({ verifier: naive(true) }), (req, res) => res.json({ clientId: req.auth.clientId }))
  // 4. No package of ours at all: the SDK's metadata router and bearer
  // middleware, a jose verifier that checks typ, in front of an SDK server.
  const bare = `${base}/bare`
  const oauthMetadata = await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()
  app.use(mcpAuthMetadataRouter({ oauthMetadata, resourceServerUrl: new URL(bare), scopesSupported: ['mcp'] }))
  const bareVerifier = {
    async verifyAccessToken(token) {
      try {
        const { payload } = await jose.jwtVerify(token, jwks, { issuer: server.issuer, audience: bare, typ: 'at+jwt' })
        return { token, clientId: payload.client_id, scopes: String(payload.scope ?? '').split(' ').filter(Boolean), expiresAt: payload.exp, extra: { subject: payload.sub, kind: 'access' } }
      } catch (err) {
        throw new InvalidTokenError(err.message)
      }
    },
  }
  app.post('/bare', requireBearerAuth({ verifier: bareVerifier, requiredScopes: ['mcp'], resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(new URL(bare)) }), handle)
  listener = await new Promise((r) => { const l = app.listen(port, '127.0.0.1', () => r(l)) })
})

after(async () => {
  listener?.close()
  listener?.closeAllConnections?.()
  await server?.stop()
})

/** The SDK client's OAuthClientProvider, kept in memory; `redirectToAuthorization` only records the URL. */
class MemoryProvider {
  constructor(redirectUrl) {
    this.redirectUrl = redirectUrl
    this.clientMetadata = { client_name: 'TS SDK test client', redirect_uris: [redirectUrl], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none' }
  }
  clientInformation() { return this.client }
  saveClientInformation(c) { this.client = c }
  tokens() { return this._tokens }
  saveTokens(t) { this._tokens = t }
  redirectToAuthorization(url) { this.authorizationUrl = url }
  saveCodeVerifier(v) { this.verifier = v }
  codeVerifier() { return this.verifier }
}

const whoami = async (client) => JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text)

/** The SDK client, given only `mcpUrl`: discovery, registration, our pages, token, whoami, refresh. */
async function codeFlow(mcpUrl) {
  const provider = new MemoryProvider('http://127.0.0.1:1/callback')
  const url = new URL(mcpUrl)
  let client = new Client({ name: 'sdk-test', version: '1.0.0' })
  await assert.rejects(client.connect(new StreamableHTTPClientTransport(url, { authProvider: provider })), UnauthorizedError)
  const authorization = provider.authorizationUrl
  assert.ok(authorization.href.startsWith(`${server.issuer}/authorize?`), authorization.href)
  assert.equal(authorization.searchParams.get('resource'), url.href, 'RFC 8707 resource from the RFC 9728 metadata')
  assert.ok(provider.clientInformation()?.client_id, 'registered dynamically')

  const back = await new Human('alice', PASSWORD).authorize(authorization, {
    onConsent: (html) => assert.ok(html.includes('TS SDK test client'), 'the consent page names the client'),
  })
  assert.equal(back.searchParams.get('iss'), server.issuer, 'RFC 9207 iss')
  const transport = new StreamableHTTPClientTransport(url, { authProvider: provider })
  await transport.finishAuth(back.searchParams.get('code'))

  client = new Client({ name: 'sdk-test', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(url, { authProvider: provider }))
  const me = await whoami(client)
  assert.equal(me.clientId, provider.clientInformation().client_id)
  assert.deepEqual(me.scopes, ['mcp'])
  assert.equal(me.kind, 'access')

  // Refresh: the access token goes bad; on the 401 the SDK refreshes and retries.
  const before = provider.tokens()
  assert.ok(before.refresh_token, 'a refresh token (offline_access)')
  provider._tokens = { ...before, access_token: 'not-a-token' }
  const again = await whoami(client)
  assert.equal(again.clientId, me.clientId)
  assert.notEqual(provider.tokens().access_token, 'not-a-token')
  assert.notEqual(provider.tokens().refresh_token, before.refresh_token, 'the refresh token rotated')
  await client.close()
}

describe('the official TypeScript MCP SDK, server and client, with agentauth', () => {
  it('discovery, registration, sign-in and consent pages, token, tool call, refresh', () => codeFlow(`${base}/mcp`))

  it('the same with no package of ours: the SDK router and bearer middleware, a jose verifier', () => codeFlow(`${base}/bare`))

  it('requireAgentAuth: a DPoP-bound agent token and a passport reach the tool; bearer-only clients get our challenge', async () => {
    const DPoP = oauth.DPoP(agent.client, agent.keys)
    const response = await oauth.genericTokenEndpointRequest(as, agent.client, agent.auth, PASSPORT_GRANT, new URLSearchParams({ audience: `${base}/mcp` }), { ...insecure, DPoP })
    const passport = await response.json()
    assert.equal(response.status, 200, JSON.stringify(passport))
    const call = async (path, token, { dpop = true } = {}) => {
      const headers = new Headers({ 'content-type': 'application/json', accept: 'application/json, text/event-stream' })
      if (dpop) await DPoP.addProof(new URL(`${base}${path}`), headers, 'POST', token)
      headers.set('authorization', `${dpop ? 'DPoP' : 'Bearer'} ${token}`)
      return fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }) })
    }
    const result = async (r) => {
      const text = await r.text()
      assert.equal(r.status, 200, text)
      const json = JSON.parse(text.split('\n').find((l) => l.startsWith('data: '))?.slice(6) ?? text)
      return JSON.parse(json.result.content[0].text)
    }
    // The passport, proven, with the scopes of the resource's policy.
    const asPassport = await result(await call('/dpop', passport.access_token))
    assert.equal(asPassport.kind, 'passport')
    assert.equal(asPassport.agentId, agent.id)
    assert.deepEqual(asPassport.scopes, ['mcp'])
    // A DPoP-bound access token (client credentials with a proof).
    const cc = await oauth.clientCredentialsGrantRequest(as, agent.client, agent.auth, new URLSearchParams({ resource: `${base}/mcp`, scope: 'mcp' }), { ...insecure, DPoP })
    const bound = await oauth.processClientCredentialsResponse(as, agent.client, cc)
    assert.equal(bound.token_type, 'dpop')
    const asAccess = await result(await call('/dpop', bound.access_token))
    assert.equal(asAccess.kind, 'access')
    assert.equal(asAccess.jkt, await DPoP.calculateThumbprint())
    // requireBearerAuth (at /mcp) sees only the token: a bound token or a passport is refused there.
    for (const token of [bound.access_token, passport.access_token]) {
      const r = await call('/mcp', token, { dpop: false })
      assert.equal(r.status, 401)
      assert.match(r.headers.get('www-authenticate'), /^Bearer error="invalid_token"/)
    }
    // Unauthenticated: both challenges, DPoP with algs.
    const r = await fetch(`${base}/dpop`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    assert.equal(r.status, 401)
    assert.match(r.headers.get('www-authenticate'), /^Bearer realm="agentauth", resource_metadata=".*\/\.well-known\/oauth-protected-resource\/dpop", scope="mcp", DPoP .*algs="ES256 EdDSA Ed25519 RS256 PS256"$/)
  })

  it('the SDK bearer middleware with bare jose works, and without a typ check takes a passport as an access token', async () => {
    const DPoP = oauth.DPoP(agent.client, agent.keys)
    const response = await oauth.genericTokenEndpointRequest(as, agent.client, agent.auth, PASSPORT_GRANT, new URLSearchParams({ audience: `${base}/mcp` }), { ...insecure, DPoP })
    const passport = await response.json()
    const call = (path, token) => fetch(`${base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' })
    // The pitfall: no typ check, the passport (audience = this resource) passes with no DPoP proof.
    assert.equal((await call('/naive', passport.access_token)).status, 200)
    // With typ at+jwt it is refused, as our verifier refuses it.
    assert.equal((await call('/typed', passport.access_token)).status, 401)
    // A real access token passes both (client credentials by the agent itself).
    const cc = await oauth.clientCredentialsGrantRequest(as, agent.client, agent.auth, new URLSearchParams({ resource: `${base}/mcp`, scope: 'mcp' }), insecure)
    const { access_token } = await oauth.processClientCredentialsResponse(as, agent.client, cc)
    assert.equal((await call('/naive', access_token)).status, 200)
    assert.equal((await call('/typed', access_token)).status, 200)
    assert.equal((await call('/mcp', 'x.y.z')).status, 401)
  })
})
