// Token Status Lists (issue 31) checked by third-party code: jose verifies
// each list token against our JWKS (typ statuslist+jwt, issuer), node's
// zlib inflates `lst`, and the bits are read as the draft says (bit i of
// byte i/8, least significant first). A revocation at /revoke and an
// agent's kill from the CLI each set the bit of exactly their tokens.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { inflateSync } from 'node:zlib'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { startServer } from '../lib/server.mjs'

const insecure = { [oauth.allowInsecureRequests]: true }
const MCP = 'https://mcp.example.com/mcp'
let server, as, jwks, agent

before(async () => {
  server = await startServer({
    users: { alice: 'correct horse battery' },
    args: ['--resource', MCP, '--status-list-ttl', '1'],
    async prepare({ run, dir }) {
      const keys = await jose.generateKeyPair('ES256', { extractable: true })
      const jwk = { ...(await jose.exportJWK(keys.publicKey)), kid: 'worker-key', alg: 'ES256' }
      const file = join(dir, 'worker.jwk')
      writeFileSync(file, JSON.stringify(jwk))
      const id = await run(['agent', 'create', '--owner', 'alice', '--name', 'worker', '--scope', 'read', '--jwk', file])
      agent = { id, keys }
    },
  })
  const issuer = new URL(server.issuer)
  as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
  jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))
})

after(async () => {
  await server?.stop()
})

async function ccClient() {
  const response = await oauth.dynamicClientRegistrationRequest(as, {
    client_name: 'status worker', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic',
  }, { ...insecure, initialAccessToken: server.initialToken })
  return oauth.processDynamicClientRegistrationResponse(response)
}

async function ccToken(client, auth) {
  const response = await oauth.clientCredentialsGrantRequest(as, client, auth, new URLSearchParams({ resource: MCP }), insecure)
  return (await oauth.processClientCredentialsResponse(as, client, response)).access_token
}

/** The token's status claim, read from its verified payload. */
async function statusOf(token) {
  const { payload } = await jose.jwtVerify(token, jwks, { issuer: as.issuer, typ: 'at+jwt' })
  assert.ok(payload.status?.status_list, JSON.stringify(payload))
  return payload.status.status_list
}

/** The list at `uri`, verified with jose, and the bit at `idx`. */
async function listBit({ uri, idx }) {
  const r = await fetch(uri, { headers: { accept: 'application/statuslist+jwt' } })
  assert.equal(r.status, 200)
  assert.equal(r.headers.get('content-type'), 'application/statuslist+jwt')
  const { payload, protectedHeader } = await jose.jwtVerify(await r.text(), jwks, { issuer: as.issuer, typ: 'statuslist+jwt' })
  assert.equal(protectedHeader.typ, 'statuslist+jwt')
  assert.equal(payload.sub, uri)
  assert.equal(payload.ttl, 1)
  assert.ok(payload.exp > payload.iat)
  assert.equal(payload.status_list.bits, 1)
  const bytes = inflateSync(Buffer.from(payload.status_list.lst, 'base64url'))
  assert.ok(idx < bytes.length * 8)
  return (bytes[idx >> 3] >> (idx & 7)) & 1
}

/** Polls until the bit is 1, for at most `ms`; returns how long it took. */
async function untilSet(ref, ms) {
  const start = Date.now()
  while ((await listBit(ref)) !== 1) {
    assert.ok(Date.now() - start < ms, `bit ${ref.idx} still 0 after ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return Date.now() - start
}

describe('token status lists, read by jose and zlib', () => {
  it('metadata names the aggregation endpoint, which lists the token\'s list', async () => {
    const client = await ccClient()
    const token = await ccToken(client, oauth.ClientSecretBasic(client.client_secret))
    const ref = await statusOf(token)
    assert.equal(as.status_list_aggregation_endpoint, `${server.issuer}/statuslists`)
    const all = await (await fetch(as.status_list_aggregation_endpoint)).json()
    assert.ok(all.status_lists.includes(ref.uri), JSON.stringify(all))
    assert.equal(await listBit(ref), 0)
  })

  it('a revoked token\'s bit is set within a second; another token\'s is not', async () => {
    const client = await ccClient()
    const auth = oauth.ClientSecretBasic(client.client_secret)
    const token = await ccToken(client, auth)
    const other = await ccToken(client, auth)
    const ref = await statusOf(token)
    const response = await oauth.revocationRequest(as, client, auth, token, insecure)
    await oauth.processRevocationResponse(response)
    await untilSet(ref, 1500)
    assert.equal(await listBit(await statusOf(other)), 0)
  })

  it('an agent\'s kill from the CLI sets the bit of its token', async () => {
    const client = { client_id: agent.id, token_endpoint_auth_method: 'private_key_jwt' }
    const auth = oauth.PrivateKeyJwt({ key: agent.keys.privateKey, kid: 'worker-key' })
    const token = await ccToken(client, auth)
    const ref = await statusOf(token)
    assert.equal(await listBit(ref), 0)
    await server.cli(['agent', 'disable', agent.id])
    // The server reads revocations every half second.
    await untilSet(ref, 1500)
  })

  it('answers 304 to a matching If-None-Match, and 404 for an unknown list', async () => {
    const client = await ccClient()
    const ref = await statusOf(await ccToken(client, oauth.ClientSecretBasic(client.client_secret)))
    const first = await fetch(ref.uri)
    const etag = first.headers.get('etag')
    assert.ok(etag)
    const again = await fetch(ref.uri, { headers: { 'if-none-match': etag } })
    assert.equal(again.status, 304)
    assert.equal((await fetch(`${server.issuer}/statuslists/424242`)).status, 404)
  })
})
