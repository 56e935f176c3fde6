// The resource-server verifier against tokens the real server issues:
// bearer and DPoP-bound access tokens (client credentials), a delegated
// token (token exchange, `act`), passports; and every way one must fail.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { startServer } from './server.mjs'
import { ResourceVerifier, AuthError, requireScopes } from '../src/index.js'

const insecure = { [oauth.allowInsecureRequests]: true }
const RESOURCE = 'https://mcp.example.com/mcp'
const OTHER = 'https://other.example.com/api'
const PASSPORT_GRANT = 'urn:agentauth:params:grant-type:passport'
const PASSPORT_TYPE = 'urn:agentauth:params:token-type:passport'
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'

let server, as, client, clientAuth, agent, helper
const recognizedTokenTypes = { n_a: () => {}, N_A: () => {} }

async function createAgent(run, dir, name) {
  const keys = await jose.generateKeyPair('ES256', { extractable: true })
  const jwk = { ...(await jose.exportJWK(keys.publicKey)), kid: `${name}-key`, alg: 'ES256' }
  const file = join(dir, `${name}.jwk`)
  writeFileSync(file, JSON.stringify(jwk))
  const id = await run(['agent', 'create', '--owner', 'alice', '--name', name, '--scope', 'read write', '--jwk', file])
  return { keys, id, client: { client_id: id, token_endpoint_auth_method: 'private_key_jwt' }, auth: oauth.PrivateKeyJwt({ key: keys.privateKey, kid: `${name}-key` }) }
}

before(async () => {
  server = await startServer({
    users: { alice: 'correct horse battery' },
    async prepare({ run, dir }) {
      // Both resources take passports (their registry entries say so).
      const resources = join(dir, 'resources.toml')
      writeFileSync(resources, [RESOURCE, OTHER].map((uri) =>
        `[[resource]]\nuri = "${uri}"\nname = "${uri}"\nscopes = ["read", "write"]\naccept_passports = true\n`).join('\n'))
      agent = await createAgent(run, dir, 'deployer')
      helper = await createAgent(run, dir, 'helper')
      client = JSON.parse(await run(['client', 'create', '--name', 'svc', '--scope', 'read write', '--json']))
      return ['--resources-file', resources, '--status-list-ttl', '1']
    },
  })
  const issuer = new URL(server.issuer)
  as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
  clientAuth = oauth.ClientSecretBasic(client.client_secret)
})

after(async () => { await server?.stop() })

async function clientCredentials({ resource = RESOURCE, scope = 'read', DPoP } = {}) {
  const c = { client_id: client.client_id }
  const params = new URLSearchParams({ scope, resource })
  let response = await oauth.clientCredentialsGrantRequest(as, c, clientAuth, params, { ...insecure, DPoP })
  try {
    return await oauth.processClientCredentialsResponse(as, c, response)
  } catch (err) {
    if (DPoP && oauth.isDPoPNonceError(err)) {
      response = await oauth.clientCredentialsGrantRequest(as, c, clientAuth, params, { ...insecure, DPoP })
      return oauth.processClientCredentialsResponse(as, c, response)
    }
    throw err
  }
}

async function passport(who, audience, DPoP) {
  const params = new URLSearchParams({ scope: 'read', ...(audience ? { audience } : {}) })
  const response = await oauth.genericTokenEndpointRequest(as, who.client, who.auth, PASSPORT_GRANT, params, { ...insecure, DPoP })
  return oauth.processGenericTokenEndpointResponse(as, who.client, response, { recognizedTokenTypes })
}

/** A DPoP proof for a request to the resource, made by oauth4webapi's DPoP handle. */
async function proofHeaders(DPoP, token, { method = 'GET', url = RESOURCE } = {}) {
  const headers = new Headers()
  await DPoP.addProof(new URL(url), headers, method, token)
  headers.set('authorization', `DPoP ${token}`)
  return headers
}

const verifier = (options = {}) => new ResourceVerifier({ issuer: server.issuer, audience: RESOURCE, ...options })

async function refused(promise, code, pattern) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof AuthError, String(err))
    assert.equal(err.code, code, err.description)
    if (pattern) assert.match(err.description, pattern)
    return true
  })
}

describe('ResourceVerifier: what passes', () => {
  it('a bearer access token, keys found through discovery', async () => {
    const { access_token } = await clientCredentials()
    const v = await verifier().verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${access_token}` } })
    assert.equal(v.kind, 'access')
    assert.equal(v.clientId, client.client_id)
    assert.deepEqual(v.scopes, ['read'])
    assert.equal(v.jkt, undefined)
    requireScopes(v, ['read'])
    assert.throws(() => requireScopes(v, ['write']), (err) => {
      assert.equal(err.code, 'insufficient_scope')
      assert.deepEqual(err.scopes, ['read', 'write'])
      const { status, headers } = err.challenge({ resourceMetadata: 'https://mcp.example.com/.well-known/oauth-protected-resource/mcp' })
      assert.equal(status, 403)
      assert.match(headers['www-authenticate'], /^Bearer error="insufficient_scope".*scope="read write"/)
      return true
    })
  })

  it('a DPoP-bound access token with its proof (Fetch Headers), once', async () => {
    const keys = await jose.generateKeyPair('ES256')
    const DPoP = oauth.DPoP({ client_id: client.client_id }, keys)
    const tokens = await clientCredentials({ DPoP })
    assert.equal(tokens.token_type, 'dpop')
    const headers = await proofHeaders(DPoP, tokens.access_token)
    const v = verifier()
    const ok = await v.verify({ method: 'GET', url: RESOURCE, headers })
    assert.equal(ok.jkt, await DPoP.calculateThumbprint())
    // The same proof again: RFC 9449 §11.1.
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers }), 'invalid_dpop_proof', /already used/)
    // A fresh proof works; one for another URL or method does not.
    await v.verify({ method: 'GET', url: RESOURCE, headers: await proofHeaders(DPoP, tokens.access_token) })
    await refused(v.verify({ method: 'POST', url: RESOURCE, headers: await proofHeaders(DPoP, tokens.access_token) }), 'invalid_dpop_proof', /htm/)
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: await proofHeaders(DPoP, tokens.access_token, { url: OTHER }) }), 'invalid_dpop_proof', /htu/)
    // Bound, but presented as a bearer token.
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${tokens.access_token}` } }), 'invalid_token', /DPoP scheme/)
    // A proof by another key.
    const thief = oauth.DPoP({ client_id: 'x' }, await jose.generateKeyPair('ES256'))
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: await proofHeaders(thief, tokens.access_token) }), 'invalid_dpop_proof', /bound to/)
    // No proof at all.
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `DPoP ${tokens.access_token}` } }), 'invalid_dpop_proof', /exactly one/)
  })

  it('a delegated token: the act chain is exposed', async () => {
    const p = await passport(agent, helper.id)
    const response = await oauth.genericTokenEndpointRequest(as, helper.client, helper.auth, EXCHANGE,
      new URLSearchParams({ subject_token: p.access_token, subject_token_type: PASSPORT_TYPE, resource: RESOURCE }), insecure)
    const exchanged = await oauth.processGenericTokenEndpointResponse(as, helper.client, response, { recognizedTokenTypes })
    const v = await verifier().verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${exchanged.access_token}` } })
    assert.equal(v.subject, agent.id)
    assert.equal(v.actors[0].sub, helper.id)
  })

  it('a passport, only where accepted, only for this resource, with its proof, and only the scopes the policy grants', async () => {
    const DPoP = oauth.DPoP(agent.client, agent.keys)
    const p = await passport(agent, RESOURCE, DPoP)
    const headers = () => proofHeaders(DPoP, p.access_token)
    // Not accepted by default: refused before any cryptography.
    await refused(verifier().verify({ method: 'GET', url: RESOURCE, headers: await headers() }), 'invalid_token', /passport is not an access token/)
    const open = verifier({ acceptPassports: true, passportScopes: (pp) => (pp.owner ? ['tools:read'] : []) })
    const v = await open.verify({ method: 'GET', url: RESOURCE, headers: await headers() })
    assert.equal(v.kind, 'passport')
    assert.equal(v.agentId, agent.id)
    assert.equal(v.claims.agent_name, 'deployer')
    assert.deepEqual(v.scopes, ['tools:read'], 'the policy, not the passport scope')
    // A passport for another site, and one naming no site.
    const elsewhere = await passport(agent, OTHER, DPoP)
    await refused(open.verify({ method: 'GET', url: RESOURCE, headers: await proofHeaders(DPoP, elsewhere.access_token) }), 'invalid_token', /another site/)
    const nowhere = await passport(agent, undefined, DPoP)
    await refused(open.verify({ method: 'GET', url: RESOURCE, headers: await proofHeaders(DPoP, nowhere.access_token) }), 'invalid_token', /names no site/)
  })
})

describe('ResourceVerifier: what fails', () => {
  it('no token, another scheme, two tokens', async () => {
    await refused(verifier().verify({ method: 'GET', url: RESOURCE, headers: {} }), 'missing_token')
    await refused(verifier().verify({ method: 'GET', url: RESOURCE, headers: { authorization: 'Basic eDp5' } }), 'missing_token')
    const err = await verifier().verify({ method: 'GET', url: RESOURCE, headers: {} }).catch((e) => e)
    const { status, headers } = err.challenge({ resourceMetadata: 'https://r/.well-known/oauth-protected-resource', scope: 'read' })
    assert.equal(status, 401)
    assert.equal(headers['www-authenticate'], 'Bearer realm="agentauth", resource_metadata="https://r/.well-known/oauth-protected-resource", scope="read", DPoP resource_metadata="https://r/.well-known/oauth-protected-resource", scope="read", algs="ES256 EdDSA Ed25519 RS256 PS256"')
  })

  it('a bearer token where only DPoP-bound ones are taken; a DPoP scheme on a bearer token', async () => {
    const { access_token } = await clientCredentials()
    await refused(verifier({ requireDpop: true }).verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${access_token}` } }), 'invalid_token', /only DPoP-bound/)
    await refused(verifier().verify({ method: 'GET', url: RESOURCE, headers: { authorization: `DPoP ${access_token}` } }), 'invalid_token', /not DPoP-bound/)
    await refused(verifier().verify({ method: 'GET', url: RESOURCE, headers: { authorization: 'Bearer' } }), 'invalid_request')
  })

  it('expired (by the verifier clock, past the leeway), also when the token was cached', async () => {
    const { access_token, expires_in } = await clientCredentials()
    const headers = { authorization: `Bearer ${access_token}` }
    const later = verifier({ now: () => Math.floor(Date.now() / 1000) + expires_in + 31 })
    await refused(later.verify({ method: 'GET', url: RESOURCE, headers }), 'invalid_token', /expired/)
    // One verifier whose clock moves on: first checked (and cached), within the leeway, then expired.
    let skew = 0
    const v = verifier({ now: () => Math.floor(Date.now() / 1000) + skew })
    await v.verify({ method: 'GET', url: RESOURCE, headers })
    assert.equal(v.tokenCache.size, 1)
    skew = expires_in + 5
    await v.verify({ method: 'GET', url: RESOURCE, headers })
    skew = expires_in + 31
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers }), 'invalid_token', /expired/)
  })

  it('wrong audience, wrong issuer', async () => {
    const { access_token } = await clientCredentials({ resource: OTHER })
    await refused(verifier().verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${access_token}` } }), 'invalid_token', /another resource/)
    const { access_token: ours } = await clientCredentials()
    const elsewhere = new ResourceVerifier({ issuer: 'https://evil.example', audience: RESOURCE, jwksUri: as.jwks_uri })
    await refused(elsewhere.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${ours}` } }), 'invalid_token', /another issuer/)
  })

  it('a token signed by a foreign key: unknown kid (after a refetch), and a known kid', async () => {
    const { access_token } = await clientCredentials()
    const { payload, protectedHeader } = { payload: jose.decodeJwt(access_token), protectedHeader: jose.decodeProtectedHeader(access_token) }
    const foreign = await jose.generateKeyPair('RS256')
    const forge = (kid) => new jose.SignJWT(payload).setProtectedHeader({ ...protectedHeader, kid }).sign(foreign.privateKey)
    let fetches = 0
    const counting = (input, init) => { if (String(input) === as.jwks_uri) fetches++; return fetch(input, init) }
    const v = verifier({ jwksUri: as.jwks_uri, jwksOptions: { [jose.customFetch]: counting } })
    await v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${access_token}` } })
    assert.equal(fetches, 1)
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${await forge(protectedHeader.kid)}` } }), 'invalid_token', /invalid/)
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${await forge('not-a-kid')}` } }), 'invalid_token', /invalid/)
    assert.equal(fetches, 1, 'an unknown kid within the 30 s cooldown does not hammer the JWKS')
    // alg none and a wrong typ signed by a real-looking key are refused too.
    const none = `${jose.base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt', kid: protectedHeader.kid }))}.${access_token.split('.')[1]}.`
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${none}` } }), 'invalid_token')
  })

  it('an unknown kid makes the verifier fetch the JWKS again (key rotation)', async () => {
    const { access_token } = await clientCredentials()
    let fetches = 0
    const counting = (input, init) => { fetches++; return fetch(input, init) }
    // Cooldown 0: every unknown kid triggers a refetch.
    const v = verifier({ jwksUri: as.jwks_uri, jwksOptions: { cooldownDuration: 0, [jose.customFetch]: counting } })
    await v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${access_token}` } })
    const foreign = await jose.generateKeyPair('RS256')
    const forged = await new jose.SignJWT(jose.decodeJwt(access_token)).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: 'rotated' }).sign(foreign.privateKey)
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${forged}` } }), 'invalid_token')
    assert.equal(fetches, 2)
  })

  it('a replayed proof (the same jti with a new signature is refused too)', async () => {
    const keys = await jose.generateKeyPair('ES256', { extractable: true })
    const DPoP = oauth.DPoP({ client_id: client.client_id }, keys)
    const { access_token } = await clientCredentials({ DPoP })
    const v = verifier()
    const headers = await proofHeaders(DPoP, access_token)
    await v.verify({ method: 'GET', url: RESOURCE, headers })
    const claims = jose.decodeJwt(headers.get('dpop'))
    const jwk = await jose.exportJWK(keys.publicKey)
    const again = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(keys.privateKey)
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `DPoP ${access_token}`, dpop: again } }), 'invalid_dpop_proof', /already used/)
    // An old proof (iat outside the window), and one with the private key in its header.
    const old = await new jose.SignJWT({ ...claims, jti: 'x1', iat: claims.iat - 120 }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(keys.privateKey)
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `DPoP ${access_token}`, dpop: old } }), 'invalid_dpop_proof', /iat/)
    const leaky = await new jose.SignJWT({ ...claims, jti: 'x2' }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jose.exportJWK(keys.privateKey) }).sign(keys.privateKey)
    await refused(v.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `DPoP ${access_token}`, dpop: leaky } }), 'invalid_dpop_proof', /private/)
  })

  it('a revoked token, with status lists on (and 503 with Retry-After when the list cannot be had)', async () => {
    const { access_token } = await clientCredentials()
    const headers = { authorization: `Bearer ${access_token}` }
    const v = verifier({ statusLists: true })
    const ok = await v.verify({ method: 'GET', url: RESOURCE, headers })
    assert.ok(ok.claims.status?.status_list?.uri.startsWith(`${server.issuer}/`), JSON.stringify(ok.claims.status))
    // Without status lists the token verifies until its exp: the default.
    const offline = verifier()
    const response = await oauth.revocationRequest(as, { client_id: client.client_id }, clientAuth, access_token, insecure)
    await oauth.processRevocationResponse(response)
    const deadline = Date.now() + 5000
    for (;;) {
      const err = await v.verify({ method: 'GET', url: RESOURCE, headers }).then(() => undefined, (e) => e)
      if (err) {
        assert.equal(err.code, 'invalid_token', err.description)
        assert.match(err.description, /revoked/)
        break
      }
      assert.ok(Date.now() < deadline, 'still accepted 5 s after its revocation')
      await new Promise((r) => setTimeout(r, 100))
    }
    await offline.verify({ method: 'GET', url: RESOURCE, headers })
    // The list unreachable and never fetched: not the client's fault, 503.
    const cut = verifier({ statusLists: true, fetch: (url, init) => (String(url).includes('/statuslists/') ? Promise.reject(new Error('down')) : fetch(url, init)) })
    const { access_token: fresh } = await clientCredentials()
    const err = await cut.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${fresh}` } }).then(() => undefined, (e) => e)
    assert.equal(err?.code, 'unavailable')
    const { status, headers: answer } = err.challenge()
    assert.equal(status, 503)
    assert.equal(answer['retry-after'], '1')
  })

  it('a passport where passports are not accepted, even as a bearer token', async () => {
    const p = await passport(agent, RESOURCE)
    await refused(verifier().verify({ method: 'GET', url: RESOURCE, headers: { authorization: `Bearer ${p.access_token}` } }), 'invalid_token', /passport is not an access token/)
  })
})
