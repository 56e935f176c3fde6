// Compiled by `tsc` (npm run typecheck, and test/types.test.mjs): the
// package's declarations as a TypeScript user meets them.
import { createServer } from 'node:http'
import { Agent, AuthError, ResourceVerifier, Site, generateAgentKey, requireScopes, type Verified, type SpentStore, MemorySpentStore, approvalRequiredError, APPROVAL_REQUIRED, covers, argumentsDigest } from 'agentauth'
import { mcpTokenVerifier, requireAgentAuth, agentauthMetadataRouter } from 'agentauth/mcp'
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import express from 'express'

const verifier = new ResourceVerifier({ issuer: 'https://as.example', audience: 'https://rs.example/mcp', acceptPassports: true, statusLists: { grace: 30 }, passportScopes: (p) => (p.owner === 'u1' ? ['read'] : []) })
createServer(async (req, res) => {
  try {
    const who: Verified = await verifier.verify({ method: req.method ?? 'GET', url: 'https://rs.example/mcp', headers: req.headers })
    requireScopes(who, ['read'])
    const chain: string[] = who.actors.map((a) => a.sub)
    res.end(`${who.kind} ${who.subject} ${chain.join(' ')} ${who.jkt ?? ''}`)
  } catch (err) {
    if (!(err instanceof AuthError)) throw err
    const { status, headers } = err.challenge({ resourceMetadata: 'https://rs.example/.well-known/oauth-protected-resource/mcp' })
    res.writeHead(status, headers).end()
  }
})

const app = express()
app.use(await agentauthMetadataRouter({ issuer: 'https://as.example', resourceServerUrl: 'https://rs.example/mcp' }))
app.post('/mcp', requireBearerAuth({ verifier: mcpTokenVerifier(verifier) }))
app.post('/dpop', requireAgentAuth({ verifier, resourceUrl: 'https://rs.example/dpop', requiredScopes: ['read'] }))
const shared: SpentStore = { async spend(jti: string, until: number) { return jti.length > 0 && until > 0 } }
app.post('/notes', requireAgentAuth({ verifier, resourceUrl: 'https://rs.example/notes', approvals: { tools: ['delete_note'], store: shared } }))
app.post('/notes2', requireAgentAuth({ verifier, resourceUrl: 'https://rs.example/notes2', approvals: { tools: new Set(['delete_note']), store: new MemorySpentStore({ maxEntries: 10 }) } }))

const key = await generateAgentKey()
const agent = await Agent.connect({ issuer: 'https://as.example', clientId: 'a1', key })
const { passport } = await agent.passport({ audience: 'site' })
const exchanged = await agent.exchange({ subjectToken: passport, resource: 'https://rs.example/mcp' })
const response: Response = await agent.fetch('https://rs.example/mcp', { token: exchanged.access_token })
const answer = await agent.answerLoginRequest('id', { decide: (r) => r.site.verified })
const cert = await agent.bridgeCertificate({ usage: 'clientAuth' })
console.log(response.status, answer.status, cert.certificateChain, key.publicJwk.kid)
const refused = approvalRequiredError(1, { resource: 'https://rs.example/notes', issuer: 'https://as.example', tool: 'delete_note', arguments: { id: 'n1' } })
const code: -31403 = refused.error.code
const approval = await agent.approvalFor(refused.error.data, { loginHint: 'alice', bindingMessage: 'Delete n1' })
console.log(code === APPROVAL_REQUIRED, approval.access_token, covers({}, 'r', 't', {}), argumentsDigest({ a: 1 }))

const site = await Site.connect({ issuer: 'https://as.example', clientId: 's', clientSecret: 'x' })
const request = await site.startLogin({ scope: 'read' })
const outcome = await site.waitByPolling(request)
console.log(outcome.claims?.agent_name, outcome.claims?.cnf.jkt)
