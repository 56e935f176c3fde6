// agentauth for the official MCP TypeScript SDK (@modelcontextprotocol/sdk
// 1.x): a verifier for its `requireBearerAuth` middleware, a middleware
// that also takes DPoP-bound tokens (which `requireBearerAuth` cannot:
// it sees only the token, never the request), and its RFC 9728 metadata
// router filled from the authorization server's own metadata.
import { InvalidTokenError, InsufficientScopeError, ServerError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { AuthError, ResourceVerifier, requireScopes } from './verifier.js'
import { MemorySpentStore, RpcAnswer, approvesToolCalls, decide } from './approvals.js'

export { getOAuthProtectedResourceMetadataUrl }

/** The SDK's AuthInfo for a verified request. */
export function authInfo(verified, audience) {
  return {
    token: verified.token,
    clientId: verified.clientId,
    scopes: verified.scopes,
    expiresAt: verified.expiresAt,
    resource: new URL(audience),
    extra: {
      kind: verified.kind,
      subject: verified.subject,
      agentId: verified.agentId,
      owner: verified.owner,
      actors: verified.actors,
      jkt: verified.jkt,
      claims: verified.claims,
    },
  }
}

/** The SDK's error classes for ours: they decide its status codes (anything else is a 500). */
function sdkError(err) {
  if (!(err instanceof AuthError)) return err
  if (err.code === 'insufficient_scope') return new InsufficientScopeError(err.description)
  if (err.code === 'unavailable') return new ServerError(err.description)
  return new InvalidTokenError(err.description)
}

const verifierOf = (options) => (options instanceof ResourceVerifier ? options : new ResourceVerifier(options))

/**
 * An `OAuthTokenVerifier` for `requireBearerAuth({ verifier })`: bearer
 * access tokens only (the middleware parses only `Bearer`), so a
 * DPoP-bound token or a passport (always bound) is refused here; use
 * `requireAgentAuth` for those.
 * @param {ResourceVerifier | import('../index.d.ts').ResourceVerifierOptions} options
 */
export function mcpTokenVerifier(options) {
  const verifier = verifierOf(options)
  return {
    async verifyAccessToken(token) {
      try {
        const verified = await verifier.verify({ method: 'POST', url: verifier.audience, headers: { authorization: `Bearer ${token}` } })
        return authInfo(verified, verifier.audience)
      } catch (err) {
        throw sdkError(err)
      }
    },
  }
}

/**
 * Express middleware in the place of `requireBearerAuth` that takes
 * bearer and DPoP-bound tokens (and passports when the verifier accepts
 * them), sets `req.auth` to the SDK's AuthInfo (the SDK's transports hand
 * it to tool handlers as `extra.authInfo`), and answers failures with
 * agentauth's challenges (`Bearer` first, then `DPoP` with `algs`).
 *
 * `resourceUrl`: the MCP endpoint as clients address it; the DPoP `htu`
 * is checked against it (its origin plus the request path), never `Host`.
 *
 * `approvals`: per-call approvals (issue 32). `tools` names the tools each
 * call of which needs its owner's approval: an ordinary token calling one
 * is answered with the JSON-RPC error -31403 (`APPROVAL_REQUIRED`) naming
 * the `authorization_details` to ask for; a DPoP-bound token carrying them
 * makes that call once (its `jti` kept in `store` until `exp` + leeway),
 * and passes initialize, ping, notifications/* and tools/list without
 * being spent. `store` defaults to a bounded in-memory `MemorySpentStore`
 * (one process; it fails closed, 503, when full): several instances
 * serving one resource must share one store. The JSON-RPC body is read
 * here when no body parser ran before (`req.body` is then set).
 * @param {{ verifier: ResourceVerifier | import('../index.d.ts').ResourceVerifierOptions, resourceUrl: string | URL, requiredScopes?: string[], resourceMetadataUrl?: string, approvals?: { tools: Iterable<string>, store?: { spend(jti: string, until: number): boolean | Promise<boolean> }, retryAfter?: number } }} options
 */
export function requireAgentAuth({ verifier: v, resourceUrl, requiredScopes = [], resourceMetadataUrl, approvals }) {
  const verifier = verifierOf(v)
  const base = new URL(resourceUrl)
  const metadata = resourceMetadataUrl ?? getOAuthProtectedResourceMetadataUrl(base)
  const approvalTools = new Set(approvals?.tools ?? [])
  const spent = approvals?.store ?? new MemorySpentStore()
  return async (req, res, next) => {
    let approval = false
    try {
      const url = new URL(req.originalUrl ?? req.url, base.origin)
      // Over mutual TLS, the client certificate (a bridge certificate may bind the token).
      const clientCertificate = req.socket?.getPeerCertificate?.()?.raw
      const verified = await verifier.verify({ method: req.method, url: url.href, headers: req.headers, clientCertificate })
      approval = approvesToolCalls(verified.claims)
      // An approval token may carry no scope: the approval is the grant.
      if (!approval) requireScopes(verified, requiredScopes)
      if (approval || approvalTools.size) {
        const body = req.method === 'POST' ? await jsonBody(req) : undefined
        if (body === INVALID) return res.status(400).json({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'the body is not JSON' } })
        const answer = await decide({ verified, body, approvalTools, spent, resource: verifier.audience, issuer: verifier.issuer, leeway: verifier.leeway, retryAfter: approvals?.retryAfter })
        if (answer instanceof RpcAnswer) return res.status(answer.status).json(answer.body)
      }
      req.auth = authInfo(verified, verifier.audience)
      next()
    } catch (err) {
      if (!(err instanceof AuthError)) return next(err)
      // Outside an approval there is no scope to step up to: no `scope=`.
      const scope = approval ? undefined : requiredScopes.join(' ') || undefined
      const { status, headers, body } = err.challenge({ resourceMetadata: metadata, scope })
      res.status(status).set(headers).json(body)
    }
  }
}

const INVALID = Symbol('invalid JSON')

/** The parsed JSON-RPC body: a body parser's, or read here (and left in `req.body` for the transport). */
async function jsonBody(req) {
  if (req.body !== undefined) return req.body
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    req.body = JSON.parse(text)
  } catch {
    return INVALID
  }
  return req.body
}

/**
 * The SDK's `mcpAuthMetadataRouter`, given the authorization server's
 * RFC 8414 metadata as agentauth serves it (fetched once, its `issuer`
 * checked), so that the MCP server's RFC 9728 metadata names it.
 * @param {{ issuer: string, resourceServerUrl: string | URL, scopesSupported?: string[], resourceName?: string, fetch?: typeof fetch }} options
 */
export async function agentauthMetadataRouter({ issuer, resourceServerUrl, scopesSupported, resourceName, fetch: f = fetch }) {
  const response = await f(new URL('/.well-known/oauth-authorization-server', issuer))
  if (!response.ok) throw new Error(`authorization server metadata: HTTP ${response.status}`)
  const oauthMetadata = await response.json()
  if (oauthMetadata.issuer !== issuer) throw new Error(`the metadata names issuer ${oauthMetadata.issuer}, not ${issuer}`)
  return mcpAuthMetadataRouter({ oauthMetadata, resourceServerUrl: new URL(resourceServerUrl), scopesSupported, resourceName })
}
