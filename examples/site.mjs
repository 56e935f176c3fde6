// The site of examples/site.rs in JavaScript (Node 20+, `jose` from npm):
// ask agentauth for a proof-of-work login, wait on the event stream,
// verify the agent's passport against agentauth's JWKS.
//
//   npm install jose
//   SITE_CLIENT_ID=... SITE_CLIENT_SECRET=... node examples/site.mjs http://127.0.0.1:8080 [agent-id]
//   # then: LOGIN_REQUEST=<printed id> cargo run --example agent
//
// With SITE_EVENTS_PORT set, the site also keeps the agent's session and
// receives security events (OpenID SSF 1.0 push, RFC 8935) on
// http://127.0.0.1:$SITE_EVENTS_PORT/events, until it is stopped. Register
// it with the server first (the operator's job):
//
//   agentauth receiver add --endpoint https://site.example/events \
//     --aud "$SITE_CLIENT_ID"      # plus AGENTAUTH_RECEIVER_AUTHORIZATION
//
// Each push is one SET, verified with jose against the issuer's JWKS (from
// /.well-known/ssf-configuration): `typ` secevent+jwt, our issuer, the
// audience SITE_EVENTS_AUDIENCE (default: SITE_CLIENT_ID); duplicates (same
// `jti`) are acknowledged and ignored. A CAEP session-revoked or
// credential-change about a logged-in agent ends its session ("session
// ended: agent … (…)"). The answer is 202, or 400 with an RFC 8935 §2.3
// error object for a SET that does not verify. With SITE_EVENTS_AUTHORIZATION
// set, a push without exactly that Authorization header gets 401.
import { createServer } from 'node:http'
import { createRemoteJWKSet, jwtVerify } from 'jose'

const issuer = process.argv[2] ?? 'http://127.0.0.1:8080'
const agent = process.argv[3]
const { SITE_CLIENT_ID: id, SITE_CLIENT_SECRET: secret } = process.env
if (!id || !secret) throw new Error('set SITE_CLIENT_ID and SITE_CLIENT_SECRET')
const basic = 'Basic ' + Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')

// 1. Ask for a login.
const created = await fetch(`${issuer}/login-requests`, {
  method: 'POST',
  headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ scope: 'read', ...(agent ? { agent } : {}) }),
})
const request = await created.json()
if (created.status !== 201) throw new Error(`login request: ${JSON.stringify(request)}`)
console.log(`login request ${request.login_request_id} (expires in ${request.expires_in} s); hand it to the agent`)

// 2. One `outcome` event, then the stream ends.
const events = await fetch(request.events_uri, { headers: { authorization: basic, accept: 'text/event-stream' } })
const decoder = new TextDecoder()
let buffer = ''
let outcome
for await (const chunk of events.body) {
  buffer += decoder.decode(chunk, { stream: true })
  const event = buffer.split('\n\n').find((e) => e.includes('event: outcome'))
  const data = event?.split('\n').find((l) => l.startsWith('data: '))
  if (data) {
    outcome = JSON.parse(data.slice(6))
    break
  }
}
if (!outcome) throw new Error('the stream ended without an outcome (reconnect to learn it)')
console.log(`outcome ${outcome.status}`)
if (!outcome.passport) process.exit(outcome.status === 'approved' ? 0 : 1)

// 3. Verify the passport: our JWKS, its type, our issuer, this site.
const metadata = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json()
const { payload } = await jwtVerify(outcome.passport, createRemoteJWKSet(new URL(metadata.jwks_uri)), {
  issuer,
  audience: id,
  typ: 'agent-passport+jwt',
})
console.log(`logged in: agent ${payload.sub} (${payload.agent_name}) of owner ${payload.owner}, scope ${payload.scope}, key ${payload.cnf.jkt}`)

// 4. Optionally: keep the session, and end it when the server says so.
const eventsPort = process.env.SITE_EVENTS_PORT
if (eventsPort) {
  const sessions = new Map([[payload.sub, { owner: payload.owner, since: Date.now() }]])
  const audience = process.env.SITE_EVENTS_AUDIENCE ?? id
  const expectedAuthorization = process.env.SITE_EVENTS_AUTHORIZATION
  const ssf = await (await fetch(`${issuer}/.well-known/ssf-configuration`)).json()
  if (ssf.issuer !== issuer) throw new Error(`ssf-configuration names issuer ${ssf.issuer}`)
  const setKeys = createRemoteJWKSet(new URL(ssf.jwks_uri))
  const seen = new Set() // jti of every SET accepted (RFC 8935 §2: deduplicate)
  const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked'
  const CREDENTIAL_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/credential-change'

  // The subject of an SSF 1.0 §3 `sub_id` that is ours: iss_sub, or the
  // user of a complex subject.
  const subjectOf = (s) => {
    const simple = s?.format === 'complex' ? s.user : s
    return simple?.format === 'iss_sub' && simple.iss === issuer ? simple.sub : undefined
  }
  // RFC 8935 §2.3 error codes for what jose refused.
  const errorCode = (e) => {
    if (e?.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && e.claim === 'iss') return 'invalid_issuer'
    if (e?.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && e.claim === 'aud') return 'invalid_audience'
    if (e?.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' || e?.code === 'ERR_JWKS_NO_MATCHING_KEY') return 'invalid_key'
    return 'invalid_request'
  }

  createServer(async (req, res) => {
    const answer = (status, body) => {
      res.writeHead(status, body ? { 'content-type': 'application/json' } : {})
      res.end(body ? JSON.stringify(body) : undefined)
    }
    const refuse = (err, description) => answer(400, { err, description })
    if (req.method !== 'POST' || new URL(req.url, 'http://x').pathname !== '/events') return answer(404)
    if (expectedAuthorization && req.headers.authorization !== expectedAuthorization) return answer(401)
    if (!(req.headers['content-type'] ?? '').toLowerCase().startsWith('application/secevent+jwt')) {
      return refuse('invalid_request', 'the body must be application/secevent+jwt')
    }
    let set = ''
    for await (const chunk of req) {
      set += chunk
      if (set.length > 64 * 1024) return refuse('invalid_request', 'SET too large')
    }
    let claims
    try {
      ({ payload: claims } = await jwtVerify(set.trim(), setKeys, { issuer, audience, typ: 'secevent+jwt' }))
    } catch (e) {
      return refuse(errorCode(e), String(e.message ?? e))
    }
    // SSF 1.0 §4.1: no `sub`, no `exp`; `jti` and `events` present.
    if (claims.sub !== undefined || claims.exp !== undefined || typeof claims.jti !== 'string' || typeof claims.events !== 'object') {
      return refuse('invalid_request', 'not an SSF SET')
    }
    if (seen.has(claims.jti)) return answer(202) // a re-delivery: already done
    seen.add(claims.jti)
    const agentId = subjectOf(claims.sub_id)
    const ends = Object.entries(claims.events).some(([type, e]) =>
      type === SESSION_REVOKED || (type === CREDENTIAL_CHANGE && e?.change_type === 'revoke'))
    if (ends && agentId && sessions.delete(agentId)) {
      const why = Object.values(claims.events)[0]?.reason_admin?.en ?? 'no reason given'
      console.log(`session ended: agent ${agentId} (${why})`)
    }
    answer(202)
  }).listen(Number(eventsPort), '127.0.0.1', () => {
    console.log(`receiving security events on http://127.0.0.1:${eventsPort}/events`)
  })
}
