// The agent and site roles against the real server running with DPoP
// server nonces (--dpop-nonce): passport → token exchange → DPoP-bound
// call to a resource protected by the verifier; a bridge certificate; and
// a site logging an agent in by proof of work, by events and by polling.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { X509Certificate, createHash, KeyObject } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import express from 'express'
import { requireAgentAuth } from '../src/mcp.js'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Agent, Site, ResourceVerifier, AuthError, generateAgentKey } from '../src/index.js'
import { freePort, startServer } from './server.mjs'

const POW_LOGIN = 'urn:agentauth:params:grant-type:pow-login'
let server, resource, resourceServer, deployer, deployerKey, helper, site, siteClient

async function register(run, dir, name) {
  const key = await generateAgentKey({ kid: `${name}-key` })
  const file = join(dir, `${name}.jwk`)
  writeFileSync(file, JSON.stringify(key.publicJwk))
  const id = await run(['agent', 'create', '--owner', 'alice', '--name', name, '--scope', 'read write', '--jwk', file])
  return { id, key }
}

before(async () => {
  const port = await freePort()
  resource = `http://127.0.0.1:${port}/api`
  let agents
  server = await startServer({
    users: { alice: 'correct horse battery' },
    args: ['--dpop-nonce', '--pow-difficulty', '8', '--login-poll-interval', '1'],
    async prepare({ run, dir }) {
      agents = { deployer: await register(run, dir, 'deployer'), helper: await register(run, dir, 'helper') }
      siteClient = JSON.parse(await run(['client', 'create', '--name', 'Example Site', '--grant-type', POW_LOGIN, '--scope', 'read', '--json']))
      const file = join(dir, 'resources.toml')
      writeFileSync(file, `[[resource]]\nuri = "${resource}"\nname = "API"\nscopes = ["read", "write"]\n`)
      return ['--resources-file', file]
    },
  })
  const connect = ({ id, key }) => Agent.connect({ issuer: server.issuer, clientId: id, key, insecure: true })
  deployerKey = agents.deployer.key
  deployer = await connect(agents.deployer)
  helper = await connect(agents.helper)
  site = await Site.connect({ issuer: server.issuer, clientId: siteClient.client_id, clientSecret: siteClient.client_secret, insecure: true })

  // A resource protected by the verifier: answers with who called.
  const verifier = new ResourceVerifier({ issuer: server.issuer, audience: resource })
  // /api/nonce hands out its own DPoP nonces (RFC 9449 §9): one per minute here.
  const minute = () => `n-${Math.floor(Date.now() / 60_000)}`
  const withNonces = new ResourceVerifier({ issuer: server.issuer, audience: resource, nonces: { current: minute, isValid: (n) => n === minute() } })
  resourceServer = createServer(async (req, res) => {
    try {
      const v = await (req.url.startsWith('/api/nonce') ? withNonces : verifier).verify({ method: req.method, url: `${resource}${req.url.replace(/^\/api/, '')}`, headers: req.headers })
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ subject: v.subject, actors: v.actors.map((a) => a.sub), jkt: v.jkt, scopes: v.scopes }))
    } catch (err) {
      if (!(err instanceof AuthError)) throw err
      const { status, headers, body } = err.challenge()
      res.writeHead(status, { ...headers, 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
  })
  await new Promise((r) => resourceServer.listen(port, '127.0.0.1', r))
})

after(async () => {
  resourceServer?.close()
  await server?.stop()
})

describe('agent', () => {
  it('passport → token exchange → DPoP-bound call (server nonces retried)', async () => {
    const { passport } = await deployer.passport({ audience: helper.clientId, scope: "read" })
    const tokens = await helper.exchange({ subjectToken: passport, resource })
    assert.equal(tokens.token_type, 'dpop')
    const response = await helper.fetch(resource, { token: tokens.access_token })
    const body = await response.json()
    assert.equal(response.status, 200, JSON.stringify(body))
    assert.equal(body.subject, deployer.clientId)
    assert.deepEqual(body.actors, [helper.clientId])
    assert.equal(body.jkt, await helper.thumbprint())
    assert.deepEqual(body.scopes, ['read'])
    // The deployer cannot use the helper's token: its proofs are by another key.
    await assert.rejects(deployer.fetch(resource, { token: tokens.access_token }), (err) => err.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE')
  })

  it('a resource that asks for its own DPoP nonce: the agent retries with it', async () => {
    const tokens = await helper.clientCredentials({ resource, scope: 'read' })
    const response = await helper.fetch(`${resource}/nonce`, { token: tokens.access_token })
    assert.equal(response.status, 200, await response.clone().text())
    // Without a nonce, straight from the verifier: 401 use_dpop_nonce and the nonce in DPoP-Nonce.
    const headers = new Headers()
    const { DPoP } = await import('oauth4webapi')
    const fresh = DPoP(helper.client, helper.dpopKeys)
    await fresh.addProof(new URL(`${resource}/nonce`), headers, 'GET', tokens.access_token)
    headers.set('authorization', `DPoP ${tokens.access_token}`)
    const r = await fetch(`${resource}/nonce`, { headers })
    assert.equal(r.status, 401)
    assert.match(r.headers.get('www-authenticate'), /^DPoP error="use_dpop_nonce"/)
    assert.match(r.headers.get('dpop-nonce'), /^n-\d+$/)
  })

  it('a bridge certificate for a fresh Ed25519 key; the token bound to it passes over mutual TLS as Bearer', async () => {
    const cert = await deployer.bridgeCertificate()
    const pems = cert.certificateChain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)
    assert.equal(pems.length, 2, cert.certificateChain)
    const [leaf, ca] = pems.map((p) => new X509Certificate(p))
    assert.ok(leaf.verify(ca.publicKey), 'the leaf is signed by the bridge CA')
    const leafKey = leaf.publicKey.export({ format: 'jwk' })
    const ours = await crypto.subtle.exportKey('jwk', cert.keys.publicKey)
    assert.equal(leafKey.x, ours.x, 'the certificate certifies our key')
    assert.ok(cert.expiresIn > 0)

    // The certified key may make the agent's DPoP proofs; its tokens are then
    // bound to the key and to the certificate (cnf.jkt and cnf.x5t#S256).
    const bridged = new Agent({ as: deployer.as, clientId: deployer.clientId, key: deployerKey, dpopKeys: cert.keys })
    const tokens = await bridged.clientCredentials({ resource, scope: 'read' })
    const verifier = new ResourceVerifier({ issuer: server.issuer, audience: resource })
    const bearer = { authorization: `Bearer ${tokens.access_token}` }
    // Over mutual TLS with that certificate, the Bearer scheme is enough (RFC 8705 §3).
    const v = await verifier.verify({ method: 'GET', url: resource, headers: bearer, clientCertificate: leaf })
    assert.equal(v.claims.cnf['x5t#S256'], createHash('sha256').update(leaf.raw).digest('base64url'))
    // Another certificate, or none: refused.
    await assert.rejects(verifier.verify({ method: 'GET', url: resource, headers: bearer, clientCertificate: ca }), (e) => e.code === 'invalid_token')
    await assert.rejects(verifier.verify({ method: 'GET', url: resource, headers: bearer }), (e) => e.code === 'invalid_token')
    // And with DPoP, the proof by the certified key.
    const r = await bridged.fetch(resource, { token: tokens.access_token })
    assert.equal(r.status, 200, await r.text())
  })
})

describe('mutual TLS with a bridge certificate', () => {
  it('requireAgentAuth behind https with client certificates: the bound token under Bearer', async () => {
    // A throwaway server certificate (the test's own TLS server; openssl CLI).
    const dir = mkdtempSync(join(tmpdir(), 'agentauth-mtls-'))
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' })
    const bundle = await (await fetch(`${server.issuer}/.well-known/ca-bundle.pem`)).text()
    const cert = await deployer.bridgeCertificate()
    const bridged = new Agent({ as: deployer.as, clientId: deployer.clientId, key: deployerKey, dpopKeys: cert.keys })
    const tokens = await bridged.clientCredentials({ resource, scope: 'read' })

    const app = express()
    app.get('/api', requireAgentAuth({ verifier: { issuer: server.issuer, audience: resource }, resourceUrl: resource, requiredScopes: ['read'] }),
      (req, res) => res.json({ clientId: req.auth.clientId, authorized: req.socket.authorized }))
    // Clients without a certificate still connect (and get 401); the
    // certificate's chain is checked against the bridge CA bundle.
    const tls = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')), ca: bundle, requestCert: true, rejectUnauthorized: false }, app)
    const port = await freePort()
    await new Promise((r) => tls.listen(port, '127.0.0.1', r))
    const privateKey = KeyObject.from(cert.keys.privateKey).export({ format: 'pem', type: 'pkcs8' })
    const get = (clientCert) => new Promise((resolveGet, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port, path: '/api', method: 'GET', ca: readFileSync(join(dir, 'cert.pem')),
        headers: { authorization: `Bearer ${tokens.access_token}` }, ...(clientCert ? { cert: cert.certificateChain, key: privateKey } : {}) }, (res) => {
        let body = ''
        res.on('data', (d) => { body += d })
        res.on('end', () => resolveGet({ status: res.statusCode, body }))
      })
      req.on('error', reject)
      req.end()
    })
    try {
      const withCert = await get(true)
      assert.equal(withCert.status, 200, withCert.body)
      assert.equal(JSON.parse(withCert.body).clientId, deployer.clientId)
      assert.equal(JSON.parse(withCert.body).authorized, true, 'the chain verifies against the bridge CA bundle')
      const without = await get(false)
      assert.equal(without.status, 401, without.body)
    } finally {
      tls.close()
      tls.closeAllConnections?.()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('site: proof-of-work login', () => {
  it('by server-sent events; then the agent calls the site with its passport and a proof', async () => {
    const request = await site.startLogin({ agent: deployer.clientId, scope: 'read' })
    const outcome = site.waitByEvents(request)
    let seen
    const answer = await deployer.answerLoginRequest(request.login_request_id, { decide: (r) => { seen = r; return true } })
    assert.equal(answer.status, 'approved')
    assert.equal(seen.site.name, 'Example Site')
    const { status, passport, claims } = await outcome
    assert.equal(status, 'approved')
    assert.equal(claims.sub, deployer.clientId)
    assert.equal(claims.agent_name, 'deployer')
    assert.equal(claims.cnf.jkt, await deployer.thumbprint())
    // The agent's next request to the site, proven with its key.
    const url = 'https://site.example/cart'
    const headers = new Headers()
    await deployer.dpop.addProof(new URL(url), headers, 'POST', passport)
    headers.set('authorization', `DPoP ${passport}`)
    const v = await site.verifyRequest({ method: 'POST', url, headers })
    assert.equal(v.kind, 'passport')
    assert.equal(v.agentId, deployer.clientId)
    assert.deepEqual(v.scopes, ['read'])
    // The same proof twice: refused.
    await assert.rejects(site.verifyRequest({ method: 'POST', url, headers }), (err) => err.code === 'invalid_dpop_proof')
  })

  it('by polling; and a denial', async () => {
    const request = await site.startLogin({ scope: 'read' })
    await helper.answerLoginRequest(request.login_request_id)
    const { status, claims } = await site.waitByPolling(request)
    assert.equal(status, 'approved')
    assert.equal(claims.sub, helper.clientId)

    const denied = await site.startLogin({ scope: 'read' })
    const events = site.waitByEvents(denied)
    await helper.answerLoginRequest(denied.login_request_id, { decide: () => false })
    assert.equal((await events).status, 'denied')
  })
})
