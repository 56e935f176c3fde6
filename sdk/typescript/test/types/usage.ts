// Compiled by `tsc` (npm run typecheck, and test/types.test.mjs): the
// package's declarations as a TypeScript user meets them.
import { createServer } from 'node:http'
import { Agent, AuthError, ResourceVerifier, Site, generateAgentKey, requireScopes, type Verified } from 'agentauth'
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

const key = await generateAgentKey()
const agent = await Agent.connect({ issuer: 'https://as.example', clientId: 'a1', key })
const { passport } = await agent.passport({ audience: 'site' })
const exchanged = await agent.exchange({ subjectToken: passport, resource: 'https://rs.example/mcp' })
const response: Response = await agent.fetch('https://rs.example/mcp', { token: exchanged.access_token })
const answer = await agent.answerLoginRequest('id', { decide: (r) => r.site.verified })
const cert = await agent.bridgeCertificate({ usage: 'clientAuth' })
console.log(response.status, answer.status, cert.certificateChain, key.publicJwk.kid)

const site = await Site.connect({ issuer: 'https://as.example', clientId: 's', clientSecret: 'x' })
const request = await site.startLogin({ scope: 'read' })
const outcome = await site.waitByPolling(request)
console.log(outcome.claims?.agent_name, outcome.claims?.cnf.jkt)
