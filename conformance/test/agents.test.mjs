// Agents (issue 13) driven by third-party libraries: jose verifies a
// passport against our JWKS like any site would; oauth4webapi's generic
// grant request runs the passport grant, token exchange (RFC 8693) and
// the JWT bearer grant (RFC 7523) from a stand-in CI issuer.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { freePort, startServer } from '../lib/server.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }
const PASSPORT_GRANT = 'urn:agentauth:params:grant-type:passport'
const PASSPORT_TYPE = 'urn:agentauth:params:token-type:passport'
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
const MCP = 'https://mcp.example.com/mcp'

let server, as, ciIssuer, ciKeys, agentKeys, agentId, helperKeys, helperId

/** Creates an agent with a fresh ES256 key through the CLI. */
async function createAgent(run, dir, name) {
  const keys = await jose.generateKeyPair('ES256', { extractable: true })
  const jwk = { ...(await jose.exportJWK(keys.publicKey)), kid: `${name}-key`, alg: 'ES256' }
  const file = join(dir, `${name}.jwk`)
  writeFileSync(file, JSON.stringify(jwk))
  const id = await run(['agent', 'create', '--owner', 'alice', '--name', name, '--scope', 'read write', '--jwk', file])
  return { keys, id }
}

before(async () => {
  // A stand-in CI issuer: its JWKS on a loopback port.
  ciKeys = await jose.generateKeyPair('ES256', { extractable: true })
  const ciJwk = { ...(await jose.exportJWK(ciKeys.publicKey)), kid: 'ci-1', alg: 'ES256' }
  const port = await freePort()
  ciIssuer = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ keys: [ciJwk] }))
  })
  await new Promise((r) => ciIssuer.listen(port, '127.0.0.1', r))

  server = await startServer({
    users: { alice: 'correct horse battery' },
    args: ['--resource', MCP, '--insecure-fetch-for-tests-only'],
    async prepare({ run, dir }) {
      ;({ keys: agentKeys, id: agentId } = await createAgent(run, dir, 'deployer'))
      ;({ keys: helperKeys, id: helperId } = await createAgent(run, dir, 'helper'))
      const file = join(dir, 'federation.toml')
      writeFileSync(file, `
[[workload]]
issuer = "https://ci.example"
jwks_uri = "http://127.0.0.1:${port}/jwks"

[[workload.rule]]
agent = "${agentId}"
claims = { repository = "acme/app", ref = "refs/heads/main" }
`)
      return ['--federation-file', file]
    },
  })
  const issuer = new URL(server.issuer)
  as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
})

after(async () => {
  await server?.stop()
  ciIssuer?.close()
})

const agentClient = (id) => ({ client_id: id, token_endpoint_auth_method: 'private_key_jwt' })
const agentAuth = (keys, name) => oauth.PrivateKeyJwt({ key: keys.privateKey, kid: `${name}-key` })

async function grant(client, auth, grantType, params, options = {}) {
  const response = await oauth.genericTokenEndpointRequest(as, client, auth, grantType, new URLSearchParams(params), { ...insecure, ...options })
  // RFC 8693 §2.2.1: a passport is not an access token, so `N_A`.
  const recognizedTokenTypes = { n_a: () => {}, N_A: () => {} }
  return oauth.processGenericTokenEndpointResponse(as, client, response, { recognizedTokenTypes })
}

describe('agents with third-party clients (issue 13)', () => {
  it('advertises the agent grants', () => {
    for (const g of [PASSPORT_GRANT, EXCHANGE, JWT_BEARER]) assert.ok(as.grant_types_supported.includes(g), g)
  })

  it('a passport from the passport grant verifies with jose against our JWKS', async () => {
    const DPoP = oauth.DPoP(agentClient(agentId), agentKeys)
    const response = await oauth.genericTokenEndpointRequest(as, agentClient(agentId), agentAuth(agentKeys, 'deployer'), PASSPORT_GRANT,
      new URLSearchParams({ audience: 'https://site.example', scope: 'read' }), { ...insecure, DPoP })
    const body = await response.json()
    assert.equal(response.status, 200, JSON.stringify(body))
    assert.equal(body.issued_token_type, PASSPORT_TYPE)
    assert.equal(body.token_type, 'N_A')
    const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))
    const { payload, protectedHeader } = await jose.jwtVerify(body.access_token, jwks, {
      issuer: as.issuer, audience: 'https://site.example', typ: 'agent-passport+jwt', algorithms: ['RS256'],
    })
    assert.equal(protectedHeader.typ, 'agent-passport+jwt')
    assert.equal(payload.sub, agentId)
    assert.equal(payload.agent_name, 'deployer')
    assert.equal(payload.scope, 'read')
    assert.equal(payload.cnf.jkt, await DPoP.calculateThumbprint())
  })

  it('token exchange (RFC 8693): one agent acts for another of the same owner', async () => {
    const passport = await grant(agentClient(agentId), agentAuth(agentKeys, 'deployer'), PASSPORT_GRANT, { audience: helperId, scope: 'read' })
    assert.equal(passport.issued_token_type, PASSPORT_TYPE)
    const exchanged = await grant(agentClient(helperId), agentAuth(helperKeys, 'helper'), EXCHANGE, {
      subject_token: passport.access_token, subject_token_type: PASSPORT_TYPE, resource: MCP,
    })
    assert.equal(exchanged.issued_token_type, ACCESS_TOKEN_TYPE)
    assert.equal(exchanged.token_type, 'bearer')
    const { payload } = await jose.jwtVerify(exchanged.access_token, jose.createRemoteJWKSet(new URL(as.jwks_uri)), {
      issuer: as.issuer, audience: MCP, typ: 'at+jwt',
    })
    assert.equal(payload.sub, agentId)
    assert.equal(payload.act.sub, helperId)
    assert.equal(payload.scope, 'read')
    // Wider scope than the subject token: refused as RFC 8693 says.
    await assert.rejects(grant(agentClient(helperId), agentAuth(helperKeys, 'helper'), EXCHANGE, {
      subject_token: passport.access_token, subject_token_type: PASSPORT_TYPE, resource: MCP, scope: 'read write',
    }), (err) => { assert.equal(err.error, 'invalid_scope'); return true })
  })

  it('the JWT bearer grant (RFC 7523): a CI job token gets the mapped agent a token, once', async () => {
    const assertion = await new jose.SignJWT({ repository: 'acme/app', ref: 'refs/heads/main' })
      .setProtectedHeader({ alg: 'ES256', kid: 'ci-1' })
      .setIssuer('https://ci.example').setAudience(as.issuer).setSubject('repo:acme/app:ref:refs/heads/main')
      .setJti(crypto.randomUUID()).setIssuedAt().setExpirationTime('5m')
      .sign(ciKeys.privateKey)
    // No client credentials: the assertion is the credential.
    const client = { client_id: agentId }
    const tokens = await grant(client, oauth.None(), JWT_BEARER, { assertion, resource: MCP })
    const { payload } = await jose.jwtVerify(tokens.access_token, jose.createRemoteJWKSet(new URL(as.jwks_uri)), {
      issuer: as.issuer, audience: MCP, typ: 'at+jwt',
    })
    assert.equal(payload.agent_id, agentId)
    await assert.rejects(grant(client, oauth.None(), JWT_BEARER, { assertion, resource: MCP }), (err) => {
      assert.equal(err.error, 'invalid_grant')
      return true
    })
  })
})
