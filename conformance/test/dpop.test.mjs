// RFC 9449 DPoP driven by oauth4webapi's own DPoP support, including the
// nonce retry it leaves to the application (isDPoPNonceError).
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { startServer } from '../lib/server.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }

async function setup(args) {
  const server = await startServer({ args })
  const issuer = new URL(server.issuer)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
  const client = await oauth.processDynamicClientRegistrationResponse(
    await oauth.dynamicClientRegistrationRequest(as, { grant_types: ['client_credentials'], scope: 'read' }, { ...insecure, initialAccessToken: server.initialToken }),
  )
  const introspector = { client_id: server.introspector.client_id }
  return { server, as, client, auth: oauth.ClientSecretBasic(client.client_secret), introspector, introspectorAuth: oauth.ClientSecretBasic(server.introspector.client_secret) }
}

async function dpopClientCredentials({ as, client, auth }, DPoP) {
  const request = () => oauth.clientCredentialsGrantRequest(as, client, auth, new URLSearchParams({ scope: 'read' }), { ...insecure, DPoP })
  try {
    return await oauth.processClientCredentialsResponse(as, client, await request())
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err
    // The handle kept the DPoP-Nonce from the error response: retry once.
    return { retried: true, ...(await oauth.processClientCredentialsResponse(as, client, await request())) }
  }
}

describe('DPoP without server nonces', () => {
  let ctx
  before(async () => { ctx = await setup([]) })
  after(async () => { await ctx?.server.stop() })

  it('advertises the proof algorithms', () => {
    assert.ok(ctx.as.dpop_signing_alg_values_supported.includes('ES256'))
    assert.ok(!ctx.as.dpop_signing_alg_values_supported.includes('none'))
  })

  for (const alg of ['ES256', 'EdDSA', 'PS256', 'RS256']) {
    it(`binds a client_credentials token to an ${alg} key (cnf.jkt, token_type DPoP)`, async () => {
      const keyPair = await oauth.generateKeyPair(alg)
      const DPoP = oauth.DPoP(ctx.client, keyPair)
      const tokens = await dpopClientCredentials(ctx, DPoP)
      assert.equal(tokens.token_type, 'dpop')
      assert.equal(tokens.retried, undefined)
      const jwks = jose.createRemoteJWKSet(new URL(ctx.as.jwks_uri))
      const { payload } = await jose.jwtVerify(tokens.access_token, jwks, { issuer: ctx.as.issuer, typ: 'at+jwt' })
      assert.equal(payload.cnf.jkt, await DPoP.calculateThumbprint())

      const introspection = await oauth.processIntrospectionResponse(
        ctx.as, ctx.introspector, await oauth.introspectionRequest(ctx.as, ctx.introspector, ctx.introspectorAuth, tokens.access_token, insecure),
      )
      assert.equal(introspection.active, true)
      assert.equal(introspection.token_type, 'DPoP')
      assert.equal(introspection.cnf.jkt, payload.cnf.jkt)
    })
  }
})

describe('DPoP with server nonces (RFC 9449 §8)', () => {
  let ctx
  before(async () => { ctx = await setup(['--dpop-nonce']) })
  after(async () => { await ctx?.server.stop() })

  it('answers use_dpop_nonce first, then accepts the retry with the nonce', async () => {
    const DPoP = oauth.DPoP(ctx.client, await oauth.generateKeyPair('ES256'))
    const tokens = await dpopClientCredentials(ctx, DPoP)
    assert.equal(tokens.retried, true)
    assert.equal(tokens.token_type, 'dpop')
    // The handle now holds a valid nonce: no second round trip.
    const again = await dpopClientCredentials(ctx, DPoP)
    assert.equal(again.retried, undefined)
  })
})
