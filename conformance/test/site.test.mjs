// examples/site.mjs, the proof-of-work login site in JavaScript (issue 15
// item 5), run as it is shipped against a running agentauth: it creates a
// login request, waits on the event stream and verifies the passport with
// jose. The agent here is oauth4webapi: its passport comes from the
// passport grant with a DPoP key, and it reads the challenge and approves
// with `Authorization: DPoP <passport>` and DPoP proofs it makes itself.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { freePort, startServer } from '../lib/server.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const insecure = { [oauth.allowInsecureRequests]: true }
const POW_LOGIN = 'urn:agentauth:params:grant-type:pow-login'
const PASSPORT_GRANT = 'urn:agentauth:params:grant-type:passport'

let server, as, agentKeys, agentId, site

before(async () => {
  agentKeys = await jose.generateKeyPair('ES256', { extractable: true })
  server = await startServer({
    // The site's event receiver listens on plain http on loopback.
    args: ['--insecure-fetch-for-tests-only'],
    users: { alice: 'correct horse battery' },
    async prepare({ run, dir }) {
      const jwk = { ...(await jose.exportJWK(agentKeys.publicKey)), kid: 'agent-key', alg: 'ES256' }
      const file = join(dir, 'agent.jwk')
      writeFileSync(file, JSON.stringify(jwk))
      agentId = await run(['agent', 'create', '--owner', 'alice', '--name', 'shopper', '--scope', 'read', '--jwk', file])
      site = JSON.parse(await run(['client', 'create', '--name', 'Example Site', '--grant-type', POW_LOGIN, '--scope', 'read', '--json']))
      return []
    },
  })
  const issuer = new URL(server.issuer)
  as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
})

after(async () => {
  await server?.stop()
})

/** SHA-256(challenge ‖ nonce) with `bits` leading zero bits. */
function solve(challenge, bits) {
  for (let n = 0; ; n++) {
    const d = createHash('sha256').update(challenge + n).digest()
    let zeros = 0
    for (const byte of d) {
      if (byte === 0) { zeros += 8; continue }
      zeros += Math.clz32(byte) - 24
      break
    }
    if (zeros >= bits) return String(n)
  }
}

/** Runs examples/site.mjs as shipped and logs the agent in through it. */
async function logInThroughTheSite(extraEnv = {}) {
    const client = { client_id: agentId, token_endpoint_auth_method: 'private_key_jwt' }
    const auth = oauth.PrivateKeyJwt({ key: agentKeys.privateKey, kid: 'agent-key' })
    const DPoP = oauth.DPoP(client, agentKeys)
    const response = await oauth.genericTokenEndpointRequest(as, client, auth, PASSPORT_GRANT, new URLSearchParams(), { ...insecure, DPoP })
    const passport = await response.json()
    assert.equal(response.status, 200, JSON.stringify(passport))

    // The example as shipped; copied beside node_modules so `jose` resolves.
    const out = resolve(here, '../test-output')
    mkdirSync(out, { recursive: true })
    copyFileSync(resolve(here, '../../examples/site.mjs'), join(out, 'site.mjs'))
    const child = spawn(process.execPath, [join(out, 'site.mjs'), server.issuer, agentId], {
      env: { ...process.env, SITE_CLIENT_ID: site.client_id, SITE_CLIENT_SECRET: site.client_secret, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stderr.on('data', (d) => { stderr += d })
    const exited = new Promise((r) => child.on('exit', r))
    const id = await new Promise((resolveId, reject) => {
      child.stdout.on('data', (d) => {
        stdout += d
        const m = stdout.match(/login request (\S+) /)
        if (m) resolveId(m[1])
      })
      child.on('exit', () => reject(new Error(`site exited early: ${stdout}${stderr}`)))
    })

    // The agent: read the challenge, solve it, approve.
    const url = new URL(`${server.issuer}/login-requests/${id}`)
    const read = await oauth.protectedResourceRequest(passport.access_token, 'GET', url, new Headers(), null, { ...insecure, DPoP })
    const challenge = await read.json()
    assert.equal(read.status, 200, JSON.stringify(challenge))
    assert.equal(challenge.site.name, 'Example Site')
    const nonce = solve(challenge.challenge, challenge.difficulty)
    const approve = await oauth.protectedResourceRequest(passport.access_token, 'POST', new URL(`${url}/approve`),
      new Headers({ 'content-type': 'application/x-www-form-urlencoded' }),
      new URLSearchParams({ challenge: challenge.challenge, nonce }).toString(), { ...insecure, DPoP })
    assert.equal(approve.status, 200, await approve.text())
    return { child, exited, DPoP, output: () => stdout + stderr }
}

describe('examples/site.mjs logs an agent in (issue 15)', () => {
  it('gets the passport by SSE and verifies it with jose', async () => {
    const { exited, DPoP, output } = await logInThroughTheSite()
    const code = await exited
    const stdout = output()
    assert.equal(code, 0, stdout)
    assert.match(stdout, /outcome approved/)
    assert.match(stdout, new RegExp(`logged in: agent ${agentId} \\(shopper\\)`))
    assert.match(stdout, new RegExp(`key ${await DPoP.calculateThumbprint()}`))
  })
})

/** Resolves when `output()` matches `re` (at most 20 s). */
async function waitFor(output, re) {
  const deadline = Date.now() + 20_000
  while (!re.test(output())) {
    if (Date.now() > deadline) throw new Error(`waited for ${re}: ${output()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('examples/site.mjs ends the session on a security event (issue 31)', () => {
  it('verifies the pushed SET with jose and ends the killed agent\'s session', async () => {
    const port = await freePort()
    const { child, output } = await logInThroughTheSite({ SITE_EVENTS_PORT: String(port) })
    try {
      await waitFor(output, /receiving security events/)
      const endpoint = `http://127.0.0.1:${port}/events`
      // A SET that is not ours: RFC 8935 §2.3 error, 400.
      const forged = await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/secevent+jwt' }, body: 'e30.e30.e30' })
      assert.equal(forged.status, 400)
      assert.equal((await forged.json()).err, 'invalid_request')
      await server.cli(['receiver', 'add', '--endpoint', endpoint, '--aud', site.client_id, '--insecure-fetch-for-tests-only'])
      await server.cli(['agent', 'disable', agentId])
      await waitFor(output, new RegExp(`session ended: agent ${agentId} \\(agent disabled \\(kill switch\\)\\)`))
    } finally {
      child.kill('SIGTERM')
    }
  })
})
