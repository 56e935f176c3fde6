// The site of examples/site.rs in JavaScript (Node 20+, `jose` from npm):
// ask agentauth for a proof-of-work login, wait on the event stream,
// verify the agent's passport against agentauth's JWKS.
//
//   npm install jose
//   SITE_CLIENT_ID=... SITE_CLIENT_SECRET=... node examples/site.mjs http://127.0.0.1:8080 [agent-id]
//   # then: LOGIN_REQUEST=<printed id> cargo run --example agent
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
