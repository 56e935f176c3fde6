// Every example of README.md, as written there, run against the real
// server: the resource server and the MCP server are started, the site
// starts a login, the agent calls the resource with a DPoP-bound token
// and answers the login, the site sees it approved.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as jose from 'jose'
import { freePort, startServer } from './server.mjs'
import { approveBackchannel } from './human.mjs'
import { Agent, loadAgentKey } from '../src/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const root = resolve(here, '..')
// Beside node_modules, so that `agentauth` (the package itself) and its dependencies resolve.
const out = join(root, 'test-output')
const POW_LOGIN = 'urn:agentauth:params:grant-type:pow-login'

const examples = {}
for (const m of readFileSync(join(root, 'README.md'), 'utf8').matchAll(/```js\n\/\/ example: (\S+)\n([\s\S]*?)```/g)) examples[m[1]] = m[2]

let server, env, agentJwk, agentId, helperId, site, children = []

/** Runs an example; resolves to a handle whose `output()` grows as it prints. */
function run(name, extra = {}) {
  mkdirSync(out, { recursive: true })
  const file = join(out, `readme-${name}.mjs`)
  writeFileSync(file, examples[name])
  const child = spawn(process.execPath, [file], { env: { ...process.env, ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let text = ''
  child.stdout.on('data', (d) => { text += d })
  child.stderr.on('data', (d) => { text += d })
  const exited = new Promise((r) => child.on('exit', r))
  return { child, exited, output: () => text }
}

async function waitFor(output, re, ms = 20_000) {
  const deadline = Date.now() + ms
  while (!re.test(output())) {
    if (Date.now() > deadline) throw new Error(`waited for ${re}: ${output()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return output().match(re)
}

async function listening(url) {
  const deadline = Date.now() + 20_000
  for (;;) {
    try { return await fetch(url, { method: 'POST' }) } catch {}
    if (Date.now() > deadline) throw new Error(`${url} did not start`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

before(async () => {
  const [apiPort, mcpPort, notesPort] = [await freePort(), await freePort(), await freePort()]
  const notesUrl = `http://127.0.0.1:${notesPort}/mcp`
  const resource = `http://127.0.0.1:${apiPort}/api`
  const mcpUrl = `http://127.0.0.1:${mcpPort}/mcp`
  server = await startServer({
    users: { alice: 'correct horse battery' },
    args: ['--pow-difficulty', '8'],
    async prepare({ run: cli, dir }) {
      const keys = await jose.generateKeyPair('ES256', { extractable: true })
      agentJwk = { ...(await jose.exportJWK(keys.privateKey)), kid: 'readme-key', alg: 'ES256' }
      const { d, ...publicJwk } = agentJwk
      writeFileSync(join(dir, 'agent.jwk'), JSON.stringify(publicJwk))
      agentId = await cli(['agent', 'create', '--owner', 'alice', '--name', 'readme', '--scope', 'read mcp notes', '--jwk', join(dir, 'agent.jwk')])
      const other = await jose.generateKeyPair('ES256', { extractable: true })
      writeFileSync(join(dir, 'helper.jwk'), JSON.stringify({ ...(await jose.exportJWK(other.publicKey)), kid: 'h', alg: 'ES256' }))
      helperId = await cli(['agent', 'create', '--owner', 'alice', '--name', 'helper', '--scope', 'read', '--jwk', join(dir, 'helper.jwk')])
      site = JSON.parse(await cli(['client', 'create', '--name', 'Readme Site', '--grant-type', POW_LOGIN, '--scope', 'read', '--json']))
      const file = join(dir, 'resources.toml')
      writeFileSync(file, `[[resource]]\nuri = "${resource}"\nname = "API"\nscopes = ["read"]\n\n[[resource]]\nuri = "${mcpUrl}"\nname = "MCP"\nscopes = ["mcp"]\n\n`
        + `[[resource]]\nuri = "${notesUrl}"\nname = "Notes"\nscopes = ["notes"]\n\n[[resource.authorization_details]]\ntype = "mcp_tool_call"\n`
        + 'description = "One call of one tool"\nrender = "Call the tool {tool} with {arguments}"\nfields.tool = { kind = "string", required = true, max_length = 128 }\nfields.arguments = { kind = "object" }\n')
      return ['--resources-file', file]
    },
  })
  env = {
    ISSUER: server.issuer, RESOURCE: resource, MCP_URL: mcpUrl, AGENT_ID: agentId, HELPER_ID: helperId,
    AGENT_KEY: JSON.stringify(agentJwk), SITE_CLIENT_ID: site.client_id, SITE_CLIENT_SECRET: site.client_secret,
  }
  env.API_PORT = String(apiPort)
  env.MCP_PORT = String(mcpPort)
  env.NOTES_PORT = String(notesPort)
  env.NOTES_URL = notesUrl
})

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
  await server?.stop()
})

describe('README examples', () => {
  it('found all six', () => assert.deepEqual(Object.keys(examples).sort(), ['agent', 'approval-agent', 'approval-tools', 'mcp-server', 'resource-server', 'site']))

  it('resource server, site and agent: a DPoP-bound call, a passport, a proof-of-work login, a bridge certificate', async () => {
    const api = run('resource-server', { PORT: env.API_PORT })
    const unauthenticated = await listening(env.RESOURCE)
    assert.equal(unauthenticated.status, 401, api.output())
    assert.match(unauthenticated.headers.get('www-authenticate'), /^Bearer realm="agentauth", DPoP algs=/)

    const siteRun = run('site')
    const [, id] = await waitFor(siteRun.output, /login request (\S+): hand it to the agent/)
    const agentRun = run('agent', { LOGIN_REQUEST: id })
    assert.equal(await agentRun.exited, 0, agentRun.output())
    const lines = agentRun.output().trim().split('\n')
    assert.equal(lines[0], `200 hello ${agentId} (DPoP)`)
    assert.equal(lines[1], 'approved')
    assert.equal(lines[2], '3 2', 'a three-part passport, a two-certificate chain')
    assert.equal(await siteRun.exited, 0, siteRun.output())
    const key = await loadAgentKey(agentJwk)
    const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(key.publicKey))
    assert.match(siteRun.output(), new RegExp(`approved agent ${agentId} \\(readme\\) of \\S+, key ${jkt}`))
  })

  it('MCP server: metadata, challenge, and a tool call with a bearer token', async () => {
    const mcp = run('mcp-server', { PORT: env.MCP_PORT })
    const refused = await listening(env.MCP_URL)
    assert.equal(refused.status, 401, mcp.output())
    assert.match(refused.headers.get('www-authenticate'), /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/)
    const prm = await (await fetch(new URL('/.well-known/oauth-protected-resource/mcp', env.MCP_URL))).json()
    assert.deepEqual(prm.authorization_servers, [server.issuer])
    assert.equal(prm.resource, env.MCP_URL)
    const agent = await Agent.connect({ issuer: server.issuer, clientId: agentId, key: await loadAgentKey(agentJwk) })
    const { access_token } = await agent.clientCredentials({ resource: env.MCP_URL, scope: 'mcp', dpop: false })
    const r = await fetch(env.MCP_URL, {
      method: 'POST',
      headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
    })
    const text = await r.text()
    assert.equal(r.status, 200, text)
    assert.match(text, new RegExp(`"text":"${agentId}"`))
  })

  it('per-call approval: -31403, the owner approves by CIBA, the call is made with the approval token', async () => {
    const notes = run('approval-tools', { PORT: env.NOTES_PORT })
    const refused = await listening(env.NOTES_URL)
    assert.equal(refused.status, 401, notes.output())
    const agentRun = run('approval-agent')
    await waitFor(agentRun.output, /asking alice/)
    await approveBackchannel(server.issuer, 'alice', 'correct horse battery', 'Delete note n1')
    assert.equal(await agentRun.exited, 0, agentRun.output())
    assert.match(agentRun.output(), /"text":"deleted n1"/)
  })
})
