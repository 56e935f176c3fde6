// The core server driven by oauth4webapi (a strict third-party OAuth
// client) and jose (JWT verification against our JWKS).
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { startServer } from '../lib/server.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }
// The one resource the server is started with. With exactly one resource
// and no --default-audience, a request that names none is for it.
const MCP = 'https://mcp.example.com/mcp'
let server
let as

before(async () => {
  server = await startServer({ args: ['--resource', MCP] })
  const issuer = new URL(server.issuer)
  as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
})

after(async () => {
  await server?.stop()
})

// Registrations carry the operator's initial access token: such clients
// may use client_credentials (anonymous ones may not, by default).
async function register(metadata, { anonymous = false } = {}) {
  const options = anonymous ? insecure : { ...insecure, initialAccessToken: server.initialToken }
  const response = await oauth.dynamicClientRegistrationRequest(as, metadata, options)
  return oauth.processDynamicClientRegistrationResponse(response)
}

/** Introspects as the operator's introspector client. */
async function introspect(token) {
  const client = { client_id: server.introspector.client_id }
  const auth = oauth.ClientSecretBasic(server.introspector.client_secret)
  return oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, token, insecure))
}

async function clientCredentials(client, clientAuth, parameters = {}) {
  const response = await oauth.clientCredentialsGrantRequest(as, client, clientAuth, new URLSearchParams(parameters), insecure)
  return oauth.processClientCredentialsResponse(as, client, response)
}

async function verifyAccessToken(token, audience) {
  const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri), { [jose.customFetch]: fetch })
  return jose.jwtVerify(token, jwks, { issuer: as.issuer, audience, typ: 'at+jwt', algorithms: ['RS256'] })
}

describe('discovery (RFC 8414)', () => {
  it('serves metadata whose issuer matches byte for byte', () => {
    assert.equal(as.issuer, server.issuer)
    assert.equal(as.token_endpoint, `${server.issuer}/token`)
    assert.ok(as.grant_types_supported.includes('client_credentials'))
    for (const m of ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none']) {
      assert.ok(as.token_endpoint_auth_methods_supported.includes(m), m)
    }
  })

  it('publishes public keys only', async () => {
    const jwks = await (await fetch(as.jwks_uri)).json()
    assert.ok(jwks.keys.length >= 1)
    for (const key of jwks.keys) {
      assert.equal(key.alg, 'RS256')
      assert.equal(key.use, 'sig')
      assert.ok(key.kid)
      for (const p of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(key[p], undefined)
    }
  })
})

describe('client_credentials (RFC 6749 §4.4, RFC 9068)', () => {
  it('client_secret_basic: registers, gets a token, the token verifies with jose', async () => {
    const client = await register({ client_name: 'basic', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read write' })
    assert.ok(client.client_secret)
    const tokens = await clientCredentials(client, oauth.ClientSecretBasic(client.client_secret), { scope: 'read' })
    assert.equal(tokens.token_type, 'bearer')
    assert.equal(tokens.scope, 'read')
    const { payload, protectedHeader } = await verifyAccessToken(tokens.access_token, MCP)
    assert.equal(protectedHeader.typ, 'at+jwt')
    assert.equal(payload.sub, client.client_id)
    assert.equal(payload.client_id, client.client_id)
    assert.equal(payload.scope, 'read')
    assert.ok(payload.jti)
    assert.equal(payload.exp - payload.iat, tokens.expires_in)
  })

  it('client_secret_post', async () => {
    const client = await register({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post', scope: 'read' })
    const tokens = await clientCredentials(client, oauth.ClientSecretPost(client.client_secret))
    await verifyAccessToken(tokens.access_token, MCP)
  })

  it('private_key_jwt (ES256 and RS256), and a replayed assertion is refused', async () => {
    for (const alg of ['ES256', 'RS256']) {
      const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true })
      const jwk = { ...(await jose.exportJWK(publicKey)), kid: `k-${alg}`, alg, use: 'sig' }
      const client = await register({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] }, scope: 'read' })
      assert.equal(client.client_secret, undefined)
      const tokens = await clientCredentials(client, oauth.PrivateKeyJwt({ key: privateKey, kid: jwk.kid }))
      await verifyAccessToken(tokens.access_token, MCP)

      const now = Math.floor(Date.now() / 1000)
      const assertion = await new jose.SignJWT({})
        .setProtectedHeader({ alg, kid: jwk.kid })
        .setIssuer(client.client_id).setSubject(client.client_id).setAudience(as.issuer)
        .setJti(`replay-${alg}`).setIssuedAt(now).setExpirationTime(now + 60)
        .sign(privateKey)
      const body = new URLSearchParams({
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      })
      const first = await fetch(as.token_endpoint, { method: 'POST', body })
      assert.equal(first.status, 200)
      const second = await fetch(as.token_endpoint, { method: 'POST', body })
      assert.equal(second.status, 401)
      assert.equal((await second.json()).error, 'invalid_client')
    }
  })

  it('resource indicators become the audience (RFC 8707); a relative one is invalid_target', async () => {
    const client = await register({ grant_types: ['client_credentials'], scope: 'read' })
    const auth = oauth.ClientSecretBasic(client.client_secret)
    const tokens = await clientCredentials(client, auth, { resource: 'https://mcp.example.com/mcp' })
    const { payload } = await verifyAccessToken(tokens.access_token, 'https://mcp.example.com/mcp')
    assert.equal(payload.aud, 'https://mcp.example.com/mcp')
    await assert.rejects(clientCredentials(client, auth, { resource: '/mcp' }), (err) => {
      assert.ok(err instanceof oauth.ResponseBodyError, err)
      assert.equal(err.error, 'invalid_target')
      assert.equal(err.status, 400)
      return true
    })
  })

  it('an unregistered resource is invalid_target; an anonymous registration gets no client_credentials', async () => {
    const client = await register({ grant_types: ['client_credentials'], scope: 'read' })
    await assert.rejects(clientCredentials(client, oauth.ClientSecretBasic(client.client_secret), { resource: 'https://evil.example/' }), (err) => {
      assert.ok(err instanceof oauth.ResponseBodyError, err)
      assert.equal(err.error, 'invalid_target')
      return true
    })
    const anonymous = await register({ grant_types: ['client_credentials'], scope: 'read' }, { anonymous: true })
    await assert.rejects(clientCredentials(anonymous, oauth.ClientSecretBasic(anonymous.client_secret)), (err) => {
      assert.ok(err instanceof oauth.ResponseBodyError, err)
      assert.equal(err.error, 'unauthorized_client')
      return true
    })
  })

  it('a scope beyond the registration is invalid_scope', async () => {
    const client = await register({ grant_types: ['client_credentials'], scope: 'read' })
    await assert.rejects(clientCredentials(client, oauth.ClientSecretBasic(client.client_secret), { scope: 'read admin' }), (err) => {
      assert.equal(err.error, 'invalid_scope')
      return true
    })
  })

  it('a wrong secret is 401 invalid_client with a Basic challenge', async () => {
    const client = await register({ grant_types: ['client_credentials'], scope: 'read' })
    const response = await oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic('wrong'), new URLSearchParams(), insecure)
    assert.equal(response.status, 401)
    assert.match(response.headers.get('www-authenticate'), /^Basic /)
    assert.equal((await response.clone().json()).error, 'invalid_client')
    await assert.rejects(oauth.processClientCredentialsResponse(as, client, response))
  })
})

describe('introspection (RFC 7662) and revocation (RFC 7009)', () => {
  it('introspects, revokes, then reports inactive', async () => {
    const client = await register({ grant_types: ['client_credentials'], scope: 'read' })
    const auth = oauth.ClientSecretBasic(client.client_secret)
    const { access_token } = await clientCredentials(client, auth)

    // The token's own client is not its audience: it learns nothing.
    const own = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, access_token, insecure))
    assert.deepEqual(own, { active: false })

    let result = await introspect(access_token)
    assert.equal(result.active, true)
    assert.equal(result.client_id, client.client_id)
    assert.equal(result.scope, 'read')
    assert.equal(result.iss, as.issuer)

    await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, auth, access_token, insecure))
    result = await introspect(access_token)
    assert.deepEqual(result, { active: false })

    const garbage = await oauth.introspectionRequest(as, client, auth, 'not-a-token', insecure)
    assert.deepEqual(await garbage.json(), { active: false })
  })
})

describe('registration management (RFC 7592)', () => {
  it('reads, updates and deletes with the registration access token', async () => {
    const client = await register({ client_name: 'managed', grant_types: ['client_credentials'], scope: 'read' })
    const headers = { authorization: `Bearer ${client.registration_access_token}` }
    let r = await fetch(client.registration_client_uri, { headers })
    assert.equal(r.status, 200)
    assert.equal((await r.json()).client_name, 'managed')

    r = await fetch(client.registration_client_uri, {
      method: 'PUT',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: client.client_id, client_name: 'renamed', grant_types: ['client_credentials'], scope: 'read' }),
    })
    assert.equal(r.status, 200)
    assert.equal((await r.json()).client_name, 'renamed')

    r = await fetch(client.registration_client_uri, { method: 'DELETE', headers })
    assert.equal(r.status, 204)
    const response = await oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic(client.client_secret), new URLSearchParams(), insecure)
    assert.equal(response.status, 401)
    assert.equal((await response.json()).error, 'invalid_client')
  })
})

describe('what MCP clients do (issue 12)', () => {
  it('OpenID-style discovery (oauth4webapi algorithm "oidc") finds the same issuer', async () => {
    const issuer = new URL(server.issuer)
    const oidc = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oidc' }))
    assert.equal(oidc.issuer, as.issuer)
    assert.equal(oidc.token_endpoint, as.token_endpoint)
    assert.ok(oidc.revocation_endpoint_auth_methods_supported.includes('none'))
  })

  it('invalid_client without the Authorization header is a response body error, not a challenge', async () => {
    const client = await register({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post', scope: 'read' })
    await assert.rejects(clientCredentials(client, oauth.ClientSecretPost('wrong secret')), (err) => {
      assert.ok(err instanceof oauth.ResponseBodyError, `${err?.constructor?.name}: ${err}`)
      assert.equal(err.error, 'invalid_client')
      assert.equal(err.status, 401)
      return true
    })
  })

  it('a public MCP-style registration without grant_types gets refresh_token', async () => {
    const client = await register({ client_name: 'mcp', redirect_uris: ['http://localhost/callback'], token_endpoint_auth_method: 'none' })
    assert.deepEqual(client.grant_types, ['authorization_code', 'refresh_token'])
  })
})
