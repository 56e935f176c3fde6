// agentauth for the official MCP TypeScript SDK (@modelcontextprotocol/sdk
// 1.x): a verifier for its `requireBearerAuth` middleware, a middleware
// that also takes DPoP-bound tokens (which `requireBearerAuth` cannot:
// it sees only the token, never the request), and its RFC 9728 metadata
// router filled from the authorization server's own metadata.
import { InvalidTokenError, InsufficientScopeError, ServerError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { AuthError, ResourceVerifier, requireScopes } from './verifier.js'

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
 * @param {{ verifier: ResourceVerifier | import('../index.d.ts').ResourceVerifierOptions, resourceUrl: string | URL, requiredScopes?: string[], resourceMetadataUrl?: string }} options
 */
export function requireAgentAuth({ verifier: v, resourceUrl, requiredScopes = [], resourceMetadataUrl }) {
  const verifier = verifierOf(v)
  const base = new URL(resourceUrl)
  const metadata = resourceMetadataUrl ?? getOAuthProtectedResourceMetadataUrl(base)
  return async (req, res, next) => {
    try {
      const url = new URL(req.originalUrl ?? req.url, base.origin)
      // Over mutual TLS, the client certificate (a bridge certificate may bind the token).
      const clientCertificate = req.socket?.getPeerCertificate?.()?.raw
      const verified = await verifier.verify({ method: req.method, url: url.href, headers: req.headers, clientCertificate })
      requireScopes(verified, requiredScopes)
      req.auth = authInfo(verified, verifier.audience)
      next()
    } catch (err) {
      if (!(err instanceof AuthError)) return next(err)
      const { status, headers, body } = err.challenge({ resourceMetadata: metadata, scope: requiredScopes.join(' ') || undefined })
      res.status(status).set(headers).json(body)
    }
  }
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
