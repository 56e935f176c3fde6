// Verifier throughput beside bare jose on the same tokens (issue 33 item 5).
//
//   AGENTAUTH_BIN=../../target/release/agentauth node bench/verify.mjs [iterations]
//
// Starts the real server, gets a bearer and a DPoP-bound access token
// (client credentials), and times, one request after another in one
// process, with the issuer's JWKS held locally (no network in the loop):
// - bearer: `jose.jwtVerify(token, keys, { issuer, audience, typ })` vs
//   `ResourceVerifier.verify()` on the same token, with its token cache
//   (the default) and without;
// - DPoP: the two bare jose checks the request needs (`jwtVerify` of the
//   token, `jwtVerify` of the proof with its embedded key) vs `verify()`,
//   each on fresh proofs (every proof is spent once).
// The contenders run in interleaved rounds; each one's median round counts.
// Writes bench/results.md.
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as jose from 'jose'
import * as oauth from 'oauth4webapi'
import { startServer } from '../test/server.mjs'
import { ResourceVerifier } from '../src/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const N = Number(process.argv[2] ?? 5000)
const RESOURCE = 'https://mcp.example.com/mcp'
const insecure = { [oauth.allowInsecureRequests]: true }

let client
const server = await startServer({
  args: ['--resource', RESOURCE, '--scopes', 'read'],
  async prepare({ run }) {
    client = JSON.parse(await run(['client', 'create', '--name', 'bench', '--scope', 'read', '--json']))
  },
})
try {
  const issuer = new URL(server.issuer)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))
  const c = { client_id: client.client_id }
  const auth = oauth.ClientSecretBasic(client.client_secret)
  const token = async (DPoP) => (await oauth.processClientCredentialsResponse(as, c,
    await oauth.clientCredentialsGrantRequest(as, c, auth, new URLSearchParams({ resource: RESOURCE, scope: 'read' }), { ...insecure, DPoP }))).access_token
  const bearer = await token()
  const dpopKeys = await jose.generateKeyPair('ES256')
  const DPoP = oauth.DPoP(c, dpopKeys)
  const bound = await token(DPoP)
  const jwks = await (await fetch(as.jwks_uri)).json()
  const keys = jose.createLocalJWKSet(jwks)
  const alg = jose.decodeProtectedHeader(bearer).alg
  const joseOptions = { issuer: server.issuer, audience: RESOURCE, typ: 'at+jwt' }

  // The machine may be shared: the contenders run in interleaved rounds
  // and each one's median round is reported.
  const ROUNDS = 10
  const per = Math.max(1, Math.floor(N / ROUNDS))
  const log = []
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const race = async (contenders) => {
    const results = contenders.map(() => [])
    for (const [, , fn] of contenders) for (let i = 0; i < 200; i++) await fn() // warm up
    for (let r = 0; r < ROUNDS; r++) {
      for (const [i, [, prepare, fn]] of contenders.entries()) {
        await prepare?.(per)
        const start = process.hrtime.bigint()
        for (let k = 0; k < per; k++) await fn()
        results[i].push(Number(process.hrtime.bigint() - start) / per / 1000)
      }
    }
    return contenders.map(([label], i) => {
      const us = median(results[i])
      const line = `${label}: ${Math.round(1e6 / us)} ops/s (${us.toFixed(1)} µs, rounds ${results[i].map((x) => x.toFixed(0)).join(' ')})`
      console.log(line)
      log.push(line)
      return us
    })
  }
  // Fresh DPoP proofs for each round (each proof is spent once; none older than the iat window).
  const proofQueue = () => {
    let queue = []
    return {
      async prepare(n) {
        queue = []
        for (let i = 0; i < n; i++) {
          const headers = new Headers()
          await DPoP.addProof(new URL(RESOURCE), headers, 'GET', bound)
          queue.push(headers.get('dpop'))
        }
        // warm-up calls before the first prepare take extra proofs
      },
      next() {
        if (queue.length) return queue.pop()
        return null
      },
    }
  }
  const bearerHeaders = { authorization: `Bearer ${bearer}` }
  const cached = new ResourceVerifier({ issuer: server.issuer, audience: RESOURCE, jwks: keys })
  const uncached = new ResourceVerifier({ issuer: server.issuer, audience: RESOURCE, jwks: keys, tokenCache: false })
  const [bareBearer, kitBearer, kitBearerNoCache] = await race([
    ['jose.jwtVerify, bearer', null, () => jose.jwtVerify(bearer, keys, joseOptions)],
    ['ResourceVerifier.verify, bearer', null, () => cached.verify({ method: 'GET', url: RESOURCE, headers: bearerHeaders })],
    ['ResourceVerifier.verify, bearer, tokenCache: false', null, () => uncached.verify({ method: 'GET', url: RESOURCE, headers: bearerHeaders })],
  ])

  const qBare = proofQueue()
  const qKit = proofQueue()
  const qKitNoCache = proofQueue()
  const proofOf = async (q) => q.next() ?? (await q.prepare(1), q.next())
  const [bareDpop, kitDpop, kitDpopNoCache] = await race([
    ['jose.jwtVerify ×2 (token + proof), DPoP', (n) => qBare.prepare(n), async () => {
      await jose.jwtVerify(bound, keys, joseOptions)
      await jose.jwtVerify(await proofOf(qBare), jose.EmbeddedJWK, { typ: 'dpop+jwt' })
    }],
    ['ResourceVerifier.verify, DPoP', (n) => qKit.prepare(n), async () =>
      cached.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `DPoP ${bound}`, dpop: await proofOf(qKit) } })],
    ['ResourceVerifier.verify, DPoP, tokenCache: false', (n) => qKitNoCache.prepare(n), async () =>
      uncached.verify({ method: 'GET', url: RESOURCE, headers: { authorization: `DPoP ${bound}`, dpop: await proofOf(qKitNoCache) } })],
  ])

  const pct = (kit, bare) => `${kit > bare ? '+' : ''}${(((kit - bare) / bare) * 100).toFixed(1)}%`
  const row = (what, bare, kit) => `| ${what} | ${Math.round(1e6 / bare)} | ${bare.toFixed(1)} | ${Math.round(1e6 / kit)} | ${kit.toFixed(1)} | ${pct(kit, bare)} |`
  const md = `# TypeScript verifier throughput (sdk/typescript)

\`node bench/verify.mjs ${N}\` on ${new Date().toISOString().slice(0, 10)}, Node ${process.version}, jose 6.2.17,
one process, requests one after another, the issuer's JWKS held locally
(\`createLocalJWKSet\`), access tokens signed ${alg} by agentauth (client
credentials), DPoP proofs ES256 made by oauth4webapi. The contenders run
in ${ROUNDS} interleaved rounds of ${per}; the table gives each one's median
round. The baseline for a DPoP request is the two signature checks it
needs with bare jose (the token, then the proof with its embedded key),
on fresh proofs of the same key and token.

| token | bare jose ops/s | µs/op | ResourceVerifier ops/s | µs/op | overhead |
|---|---:|---:|---:|---:|---:|
${row('bearer (token cache, the default)', bareBearer, kitBearer)}
${row('bearer, \`tokenCache: false\`', bareBearer, kitBearerNoCache)}
${row('DPoP-bound (token cache, the default)', bareDpop, kitDpop)}
${row('DPoP-bound, \`tokenCache: false\`', bareDpop, kitDpopNoCache)}

The default verifier keeps signature-checked tokens (by SHA-256 of the
token, while their key is published, at most 5 minutes; the time checks
run on every use), as the Rust kit does, so a token seen before costs a
hash instead of a signature check; each DPoP proof is new, so its
signature is always checked. With \`tokenCache: false\` every request pays
every signature check, and the overhead is what the verifier adds on top
of the bare calls: reading the header (\`decodeProtectedHeader\`, to refuse
a passport before any signature check), the Authorization and DPoP header
parsing, for DPoP the \`htm\`/\`htu\`/\`iat\`/\`ath\` checks, the RFC 7638
thumbprint (jose's \`calculateJwkThumbprint\`, an asynchronous WebCrypto
digest, remembered per key) and the replay cache.

Each contender's rounds (µs per request), to show the spread on this
machine (2 cores shared with other work):

\`\`\`
${log.join('\n')}
\`\`\`
`
  writeFileSync(join(here, 'results.md'), md)
  console.log(md)
} finally {
  await server.stop()
}
