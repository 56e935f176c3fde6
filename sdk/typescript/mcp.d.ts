import type { RequestHandler, Router } from 'express'
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js'
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js'
import type { ResourceVerifier, ResourceVerifierOptions, Verified, SpentStore } from './index.d.ts'

export declare function getOAuthProtectedResourceMetadataUrl(serverUrl: URL): string
/** The SDK's AuthInfo; `extra` holds kind, subject, agentId, owner, actors, jkt and the claims. */
export declare function authInfo(verified: Verified, audience: string): AuthInfo
/** For `requireBearerAuth({ verifier })`: bearer access tokens only. */
export declare function mcpTokenVerifier(options: ResourceVerifier | ResourceVerifierOptions): OAuthTokenVerifier
/** `requireBearerAuth` that also takes DPoP-bound tokens (and passports when accepted). */
export declare function requireAgentAuth(options: {
  verifier: ResourceVerifier | ResourceVerifierOptions
  resourceUrl: string | URL
  requiredScopes?: string[]
  resourceMetadataUrl?: string
  /**
   * Per-call approvals: each call of `tools` needs its owner's approval
   * (-31403 for an ordinary token); an approval token is spent once in
   * `store` (default: a bounded in-memory `MemorySpentStore`; several
   * instances must share one). `retryAfter`: seconds, when the store fails.
   */
  approvals?: { tools: Iterable<string>; store?: SpentStore; retryAfter?: number }
}): RequestHandler
/** The SDK's `mcpAuthMetadataRouter` with agentauth's RFC 8414 metadata. */
export declare function agentauthMetadataRouter(options: {
  issuer: string
  resourceServerUrl: string | URL
  scopesSupported?: string[]
  resourceName?: string
  fetch?: typeof fetch
}): Promise<Router>
