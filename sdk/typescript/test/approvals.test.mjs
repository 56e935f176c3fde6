// Per-call approval (issue 32): an MCP server written with the official
// SDK whose delete_note tool needs its owner's approval; the agent is
// refused with the JSON-RPC error -31403 naming the approval, asks its
// owner by CIBA, the owner approves on her approvals page (with her
// password), and the DPoP-bound token makes that one call, once.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import express from 'express'
import { z } from 'zod'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { Agent, ResourceVerifier, generateAgentKey, covers, argumentsDigest, APPROVAL_REQUIRED, MemorySpentStore } from '../src/index.js'
import { requireAgentAuth } from '../src/mcp.js'
import { decide } from '../src/approvals.js'
import { AuthError } from '../src/verifier.js'
import { freePort, startServer } from './server.mjs'
import { approveBackchannel } from './human.mjs'

const PASSWORD = 'correct horse battery staple'
const HDRS = { accept: 'application/json, text/event-stream', 'content-type': 'application/json' }
const call = (id, name, args) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } })

let server, listener, resource, agent
const deleted = []

function notes() {
  const s = new McpServer({ name: 'notes', version: '1.0.0' })
  s.registerTool('delete_note', { description: 'Delete a note', inputSchema: { id: z.string() } }, async ({ id }) => {
    deleted.push(id)
    return { content: [{ type: 'text', text: `deleted ${id}` }] }
  })
  s.registerTool('whoami', { description: 'Who is calling' }, async () => ({ content: [{ type: 'text', text: 'someone' }] }))
  return s
}

before(async () => {
  const port = await freePort()
  resource = `http://127.0.0.1:${port}/mcp`
  let id, key
  server = await startServer({
    users: { alice: PASSWORD },
    args: ['--insecure-fetch-for-tests-only'],
    async prepare({ run, dir }) {
      const file = join(dir, 'resources.toml')
      writeFileSync(file, `[[resource]]\nuri = "${resource}"\nname = "Notes"\nscopes = ["notes"]\n\n`
        + '[[resource.authorization_details]]\ntype = "mcp_tool_call"\ndescription = "One call of one tool"\n'
        + 'render = "Call the tool {tool} with {arguments}"\n'
        + 'fields.tool = { kind = "string", required = true, max_length = 128 }\nfields.arguments = { kind = "object" }\n')
      key = await generateAgentKey({ kid: 'notes-agent-key' })
      writeFileSync(join(dir, 'agent.jwk'), JSON.stringify(key.publicJwk))
      id = await run(['agent', 'create', '--owner', 'alice', '--name', 'note taker', '--scope', 'notes', '--jwk', join(dir, 'agent.jwk')])
      return ['--resources-file', file]
    },
  })
  agent = await Agent.connect({ issuer: server.issuer, clientId: id, key })

  const app = express()
  app.use(express.json())
  const verifier = new ResourceVerifier({ issuer: server.issuer, audience: resource })
  app.post('/mcp', requireAgentAuth({ verifier, resourceUrl: resource, requiredScopes: ['notes'], approvals: { tools: ['delete_note'] } }), async (req, res) => {
    const s = notes()
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
    res.on('close', () => { transport.close(); s.close() })
    await s.connect(transport)
    await transport.handleRequest(req, res, req.body)
  })
  await new Promise((r) => { listener = app.listen(port, '127.0.0.1', r) })
})

after(async () => {
  await new Promise((r) => listener?.close(r) ?? r())
  await server?.stop()
})

/** A DPoP-bound POST by the agent; a challenge (oauth4webapi throws on 401/403 ones) gives its response. */
const post = (token, body) => agent.fetch(resource, { token, method: 'POST', headers: HDRS, body: JSON.stringify(body) })
  .catch((err) => { if (err?.response instanceof Response) return err.response; throw err })

describe('per-call approvals', () => {
  it('compares arguments in RFC 8785 canonical form', () => {
    const claims = { authorization_details: [{ type: 'mcp_tool_call', locations: ['r'], tool: 'pay', arguments: { to: 'bob', amount: 1.0, memo: { b: 2, a: 1 } } }] }
    assert.ok(covers(claims, 'r', 'pay', { memo: { a: 1, b: 2 }, amount: 1, to: 'bob' }))
    assert.ok(!covers(claims, 'r', 'pay', { to: 'bob', amount: 2 }))
    assert.ok(!covers(claims, 'other', 'pay', { memo: { a: 1, b: 2 }, amount: 1, to: 'bob' }))
    assert.ok(!covers(claims, 'r', 'refund', { memo: { a: 1, b: 2 }, amount: 1, to: 'bob' }))
    assert.equal(argumentsDigest(undefined), argumentsDigest({}))
    assert.equal(argumentsDigest([1]), null)
  })

  it('the in-memory store spends once and fails closed when full', () => {
    const store = new MemorySpentStore({ maxEntries: 2 })
    const until = Date.now() / 1000 + 60
    assert.equal(store.spend('a', until), true)
    assert.equal(store.spend('a', until), false)
    assert.equal(store.spend('b', until), true)
    assert.throws(() => store.spend('c', until), /full/)
  })

  it('an approved call, once', async () => {
    const ordinary = (await agent.clientCredentials({ resource, scope: 'notes' })).access_token
    // Refused with the approval to ask for, and nothing deleted.
    let r = await post(ordinary, call(1, 'delete_note', { id: 'n2' }))
    assert.equal(r.status, 200)
    const { error } = await r.json()
    assert.equal(error.code, APPROVAL_REQUIRED)
    assert.deepEqual(deleted, [])
    assert.deepEqual(error.data.authorization_details, [{ type: 'mcp_tool_call', locations: [resource], tool: 'delete_note', arguments: { id: 'n2' } }])
    assert.deepEqual(error.data.authorization_servers, [server.issuer])
    assert.equal(error.data.resource, resource)
    assert.equal(error.data.dpop_required, true)
    // Ordinary calls of other tools pass.
    r = await post(ordinary, call(2, 'whoami', {}))
    assert.equal(r.status, 200)
    assert.match(await r.text(), /someone/)
    // A batch carrying a call that needs approval is refused.
    r = await post(ordinary, [call(3, 'whoami', {}), call(4, 'delete_note', { id: 'n2' })])
    assert.equal(r.status, 400)
    assert.equal((await r.json()).error.code, -32600)

    const owner = approveBackchannel(server.issuer, 'alice', PASSWORD, 'Delete n2 (ts)')
    const approval = await agent.approvalFor(error.data, { loginHint: 'alice', bindingMessage: 'Delete n2 (ts)', timeout: 60 })
    await owner
    assert.equal(approval.token_type.toLowerCase(), 'dpop')
    const token = approval.access_token

    // tools/list passes without spending it; another tool, or other
    // arguments, are outside the approval (403, no scope to step up to).
    r = await post(token, { jsonrpc: '2.0', id: 5, method: 'tools/list' })
    assert.equal(r.status, 200, await r.clone().text())
    r = await post(token, call(6, 'whoami', {}))
    assert.equal(r.status, 403)
    assert.doesNotMatch(r.headers.get('www-authenticate'), /scope=/)
    r = await post(token, call(7, 'delete_note', { id: 'n3' }))
    assert.equal(r.status, 403)
    assert.doesNotMatch(r.headers.get('www-authenticate'), /scope=/)
    assert.deepEqual(deleted, [])
    // A batch carrying the approved call is refused, and does not spend it.
    r = await post(token, [{ jsonrpc: '2.0', id: 8, method: 'ping' }, call(9, 'delete_note', { id: 'n2' })])
    assert.equal(r.status, 400)
    assert.equal((await r.json()).error.code, -32600)
    // A bearer use of the bound approval token is refused.
    r = await fetch(resource, { method: 'POST', headers: { ...HDRS, authorization: `Bearer ${token}` }, body: JSON.stringify(call(10, 'delete_note', { id: 'n2' })) })
    assert.equal(r.status, 401)
    // The call, once (arguments in another order are the same call).
    r = await post(token, call(11, 'delete_note', { id: 'n2' }))
    assert.equal(r.status, 200)
    assert.match(await r.text(), /deleted n2/)
    r = await post(token, call(12, 'delete_note', { id: 'n2' }))
    assert.equal(r.status, 401)
    assert.match(r.headers.get('www-authenticate'), /already used/)
    assert.deepEqual(deleted, ['n2'])
  })
})

describe('approval decisions without a server', () => {
  const claims = { jti: 'j1', exp: Math.floor(Date.now() / 1000) + 60, authorization_details: [{ type: 'mcp_tool_call', locations: ['r'], tool: 'delete_note', arguments: { id: 'n1' } }] }
  const base = { approvalTools: new Set(['delete_note']), resource: 'r', issuer: 'https://as', leeway: 30, body: call(1, 'delete_note', { id: 'n1' }) }

  it('an unbound approval token is refused (401)', async () => {
    await assert.rejects(decide({ ...base, verified: { claims }, spent: new MemorySpentStore() }),
      (err) => err instanceof AuthError && err.status === 401 && /DPoP-bound/.test(err.description))
  })

  it('a store that cannot record the spend gives 503 with Retry-After', async () => {
    const broken = { spend() { throw new Error('redis is down') } }
    await assert.rejects(decide({ ...base, verified: { claims, jkt: 'k' }, spent: broken, retryAfter: 7 }), (err) => {
      const { status, headers } = err.challenge()
      return status === 503 && headers['retry-after'] === '7'
    })
  })
})
