import type { JWTPayload, JWTVerifyGetKey, RemoteJWKSetOptions } from 'jose'

export declare const ACCESS_TOKEN_TYP: 'at+jwt'
export declare const PASSPORT_TYP: 'agent-passport+jwt'
export declare const DPOP_TYP: 'dpop+jwt'
export declare const DPOP_ALGS: string[]
export declare const TOKEN_ALGS: string[]

/** RFC 8693 §4.1 actor, as the token carries it (its earlier `act` removed). */
export interface Actor {
  sub: string
  iss?: string
  client_id?: string
  /** agentauth: set when the actor is one of the issuer's agents. */
  agent_id?: string
  [claim: string]: unknown
}

/** RFC 9068 access-token claims, with agentauth's additions. */
export interface AccessTokenClaims extends JWTPayload {
  iss: string
  sub: string
  aud: string | string[]
  client_id: string
  scope?: string
  jti: string
  iat: number
  exp: number
  cnf?: { jkt: string; 'x5t#S256'?: string }
  act?: Actor & { act?: unknown }
  may_act?: Actor
  agent_id?: string
  owner?: string
  authorization_details?: Array<{ type: string; [k: string]: unknown }>
}

/** An agent passport's claims (`typ: agent-passport+jwt`). */
export interface PassportClaims extends JWTPayload {
  iss: string
  sub: string
  aud?: string | string[]
  owner: string
  agent_name: string
  scope?: string
  cnf: { jkt: string; 'x5t#S256'?: string }
  jti: string
  iat: number
  exp: number
  agent_id: string
}

export interface Verified {
  kind: 'access' | 'passport'
  token: string
  /** A passport's claims are given in the access-token shape (scope from your policy only). */
  claims: AccessTokenClaims
  /** The passport as signed, when `kind` is `passport`. */
  passport?: PassportClaims
  scopes: string[]
  clientId: string
  subject: string
  agentId?: string
  owner?: string
  /** The `act` chain, the current actor first. Empty when nobody acts for `subject`. */
  actors: Actor[]
  /** The proven key's thumbprint, for DPoP-bound tokens. */
  jkt?: string
  expiresAt: number
}

/** A store of spent DPoP proofs: true the first time a key is spent. */
export interface ReplayCache {
  spend(key: string, seconds: number): boolean | Promise<boolean>
}

export declare class MemoryReplayCache implements ReplayCache {
  constructor(options?: { maxEntries?: number })
  spend(key: string, seconds: number): boolean
  sweep(now?: number): void
}

/** Resource-side DPoP nonces (RFC 9449 §8), when the resource hands them out. */
export interface NonceSource {
  current(): string | Promise<string>
  isValid(nonce: string): boolean | Promise<boolean>
}

export interface ResourceVerifierOptions {
  /** The authorization server's issuer identifier, exactly. */
  issuer: string
  /** This resource's URI (the tokens' `aud`). */
  audience: string
  /** A jose key getter (e.g. `createLocalJWKSet(jwks)`); else `jwksUri`; else discovered. */
  jwks?: JWTVerifyGetKey
  jwksUri?: string
  /** Passed to jose's `createRemoteJWKSet` (cooldown, cache age, custom fetch). */
  jwksOptions?: RemoteJWKSetOptions
  /** Algorithms tokens may be signed with (default: the ones the server can use). */
  algorithms?: string[]
  /** Accept agent passports as callers' credentials (default false). */
  acceptPassports?: boolean
  /** The scopes an accepted passport's agent is granted here (default none). */
  passportScopes?: (passport: PassportClaims) => string[]
  /** Refuse tokens that are not DPoP-bound. */
  requireDpop?: boolean
  /** DPoP proof `iat` window, seconds either way (default 60). */
  iatWindow?: number
  /** Clock skew allowed on `exp`/`nbf`, seconds (default 30). */
  leeway?: number
  replayCache?: ReplayCache
  /**
   * Keep signature-checked tokens (by SHA-256 of the token) for `ttl`
   * seconds (default 300), at most `maxEntries` (10,000), while their key
   * is still published; time checks run on every use. `false`: check every
   * signature every time.
   */
  tokenCache?: false | { maxEntries?: number; ttl?: number }
  /**
   * Check token status lists (draft-ietf-oauth-status-list), so that a
   * token revoked at agentauth is refused within its list's `ttl`. Off by
   * default. Seconds: `maxTtl` (300), `grace` (60) a stale list is used
   * while it cannot be fetched, `retryInterval` (1), `fetchTimeout` (2).
   */
  statusLists?: boolean | { maxTtl?: number; grace?: number; retryInterval?: number; fetchTimeout?: number; maxListLength?: number; requireStatus?: boolean }
  nonces?: NonceSource
  /** The clock, in seconds since the epoch. */
  now?: () => number
  fetch?: typeof fetch
}

export type AuthErrorCode = 'missing_token' | 'invalid_request' | 'invalid_token' | 'invalid_dpop_proof' | 'use_dpop_nonce' | 'insufficient_scope' | 'unavailable'

export declare class AuthError extends Error {
  code: AuthErrorCode
  description: string
  scopes?: string[]
  nonce?: string
  /** Seconds, for `unavailable` (503). */
  retryAfter?: number
  readonly status: number
  challenge(context?: { resourceMetadata?: string; scope?: string }): {
    status: number
    headers: Record<string, string>
    body: { error: string; error_description: string }
  }
}

export type HeadersLike = Headers | Record<string, string | string[] | undefined>

export declare class ResourceVerifier {
  constructor(options: ResourceVerifierOptions)
  readonly issuer: string
  readonly audience: string
  /**
   * `clientCertificate`: over mutual TLS, the client's certificate (DER or
   * X509Certificate); a token bound to it (`cnf.x5t#S256`, a bridge
   * certificate) may then come under `Bearer` (RFC 8705 §3).
   */
  verify(request: { method: string; url: string | URL; headers: HeadersLike; clientCertificate?: Uint8Array | import('node:crypto').X509Certificate }): Promise<Verified>
  verifyToken(token: string): Promise<{ kind: 'access' | 'passport'; claims: AccessTokenClaims; passport?: PassportClaims }>
  verifyProof(proof: string, expect: { method: string; url: string; accessToken?: string; now: number }): Promise<{ jkt: string; jti: string; iat: number; nonce?: string }>
}

export declare function requireScopes(verified: Pick<Verified, 'scopes'>, required: string[]): void
export declare function actorChain(act: unknown): Actor[]
export declare function bearerOrDpop(authorization: string | string[] | undefined): { token: string; dpop: boolean }
export declare function ath(accessToken: string): string
/** RFC 8705 §3.1: whether the certificate is the one `cnf.x5t#S256` names. */
export declare function certificateMatches(cnf: { 'x5t#S256'?: string } | undefined, certificate: Uint8Array | import('node:crypto').X509Certificate): boolean
export declare function replayRetention(iat: number, now: number, iatWindow: number): number

// ---- agent ----
import type { AuthorizationServer, TokenEndpointResponse } from 'oauth4webapi'

export declare const PASSPORT_GRANT: 'urn:agentauth:params:grant-type:passport'
export declare const PASSPORT_TOKEN_TYPE: 'urn:agentauth:params:token-type:passport'
export declare const TOKEN_EXCHANGE_GRANT: 'urn:ietf:params:oauth:grant-type:token-exchange'
export declare const ACCESS_TOKEN_TYPE: 'urn:ietf:params:oauth:token-type:access_token'
export declare const BRIDGE_CERT_GRANT: 'urn:agentauth:params:grant-type:bridge-cert'
export declare const POW_LOGIN_GRANT: 'urn:agentauth:params:grant-type:pow-login'

export interface AgentKey {
  privateKey: CryptoKey
  publicKey: CryptoKey
  kid: string
}

/** A key pair and its public JWK (with kid and alg) for `agentauth agent create --jwk` or `/register`. */
export declare function generateAgentKey(options?: { alg?: string; kid?: string; extractable?: boolean }): Promise<AgentKey & { publicJwk: JsonWebKey & { kid: string; alg: string }; alg: string }>
/** An agent's key pair from its private JWK (with kid). */
export declare function loadAgentKey(privateJwk: JsonWebKey & { kid: string; alg?: string }, defaultAlg?: string): Promise<AgentKey>
/** Whether an issuer is on loopback (http:// is allowed only there by default). */
export declare function isLoopback(issuer: string): boolean
/** A nonce with SHA-256(challenge ‖ nonce) starting with `bits` zero bits. */
export declare function solveChallenge(challenge: string, bits: number): string

export interface AgentOptions {
  clientId: string
  key: AgentKey
  /** DPoP keys; default: `key` (agentauth takes proofs only by registered or bridge-certified keys). */
  dpopKeys?: CryptoKeyPair
  /** Allow http:// (default: only for a loopback issuer). */
  insecure?: boolean
  fetch?: typeof fetch
}

export declare class Agent {
  constructor(options: AgentOptions & { as: AuthorizationServer })
  static connect(options: AgentOptions & { issuer: string }): Promise<Agent>
  readonly issuer: string
  readonly clientId: string
  /** oauth4webapi's DPoP handle for the agent's key. */
  readonly dpop: ReturnType<typeof import('oauth4webapi').DPoP>
  thumbprint(): Promise<string>
  grant(grantType: string, params: Record<string, string>, options?: { dpop?: boolean }): Promise<TokenEndpointResponse>
  passport(options?: { audience?: string; scope?: string }): Promise<{ passport: string; expiresIn: number; scope?: string }>
  exchange(options: { subjectToken: string; subjectTokenType?: string; resource?: string; audience?: string; scope?: string; dpop?: boolean }): Promise<TokenEndpointResponse>
  clientCredentials(options?: { resource?: string; scope?: string; dpop?: boolean }): Promise<TokenEndpointResponse>
  fetch(url: string | URL, init: { token: string; method?: string; headers?: HeadersInit; body?: BodyInit | null; dpop?: boolean }): Promise<Response>
  answerLoginRequest(id: string, options?: { decide?: (request: LoginChallenge) => boolean | Promise<boolean>; passport?: string }): Promise<{ login_request_id: string; status: string }>
  bridgeCertificate(options?: { scope?: string; usage?: 'clientAuth' | 'codeSigning'; keys?: CryptoKeyPair }): Promise<{ certificateChain: string; issuedTokenType: string; expiresIn: number; keys: CryptoKeyPair; jkt: string }>
  /** OpenID CIBA (poll mode): asks the owner to approve exactly these RFC 9396 details. */
  askOwner(options: { loginHint: string; authorizationDetails: AuthorizationDetail[]; bindingMessage?: string; scope?: string; resource?: string }): Promise<{ auth_req_id: string; expires_in: number; interval?: number }>
  /** Polls the CIBA grant (DPoP-bound to the agent's key) until the owner answers; throws oauth4webapi's ResponseBodyError on `access_denied`/`expired_token`. `timeout` in seconds. */
  waitForApproval(started: { auth_req_id: string; interval?: number }, options?: { timeout?: number; signal?: AbortSignal }): Promise<TokenEndpointResponse>
  /** Both, for the `data` of an MCP server's -31403 (`APPROVAL_REQUIRED`) error. */
  approvalFor(data: ApprovalRequiredData, options: { loginHint: string; bindingMessage?: string; timeout?: number; signal?: AbortSignal }): Promise<TokenEndpointResponse>
}

// ---- per-call approvals (issue 32) ----
export declare const CIBA_GRANT: 'urn:openid:params:grant-type:ciba'
export declare const MCP_TOOL_CALL: 'mcp_tool_call'
/** JSON-RPC error code of "this call needs its owner's approval". */
export declare const APPROVAL_REQUIRED: -31403

/** An RFC 9396 authorization_details entry (`mcp_tool_call`: `tool`, `arguments`, `locations`). */
export interface AuthorizationDetail {
  type: string
  locations?: string[]
  tool?: string
  arguments?: Record<string, unknown>
  [k: string]: unknown
}

/** The `data` of the -31403 error. */
export interface ApprovalRequiredData {
  authorization_details: AuthorizationDetail[]
  authorization_servers: string[]
  resource: string
  dpop_required: boolean
}

/**
 * Where spent approval tokens are kept: `spend(jti, until)` (`until`:
 * seconds since the epoch) is true the first time, false while kept; throw
 * when it cannot record (the request is answered 503 with Retry-After).
 * Several instances serving one resource must share one store.
 */
export interface SpentStore {
  spend(jti: string, until: number): boolean | Promise<boolean>
}

/** The default: one process, bounded; throws `SpentStoreError` when full of live entries (fail closed). */
export declare class MemorySpentStore implements SpentStore {
  constructor(options?: { maxEntries?: number })
  spend(jti: string, until: number): boolean
}
export declare class SpentStoreError extends Error {}

/** Hex SHA-256 of the RFC 8785 form of a call's arguments (absent: `{}`); null for anything but an object. */
export declare function argumentsDigest(args: unknown): string | null
/** The entry that approves one call. */
export declare function entry(resource: string, tool: string, args?: Record<string, unknown>): AuthorizationDetail
export declare function approvesToolCalls(claims: Record<string, unknown>): boolean
/** Whether one of the token's `mcp_tool_call` entries approves this call at this resource. */
export declare function covers(claims: Record<string, unknown>, resource: string, tool: string, args: unknown): boolean
export declare function approvalRequiredError(id: string | number | null | undefined, call: { resource: string; issuer: string; tool: string; arguments?: Record<string, unknown> }): {
  jsonrpc: '2.0'
  id: string | number | null
  error: { code: -31403; message: string; data: ApprovalRequiredData }
}

export interface LoginChallenge {
  challenge: string
  difficulty: number
  scope?: string
  site: { client_id: string; name: string; uri?: string; verified: boolean; display_name: string }
  site_verified: boolean
  [k: string]: unknown
}

// ---- site ----
export interface LoginRequest {
  login_request_id: string
  expires_in: number
  interval: number
  events_uri: string
}

export interface LoginOutcome {
  status: 'approved' | 'denied' | 'expired' | string
  passport?: string
  claims?: PassportClaims
  delivered?: boolean
}

export declare class LoginError extends Error {
  status: string
  details?: { error?: string; error_description?: string }
}

export interface SiteOptions {
  clientId: string
  clientSecret: string
  insecure?: boolean
  fetch?: typeof fetch
}

export declare class Site {
  constructor(options: SiteOptions & { as: AuthorizationServer })
  static connect(options: SiteOptions & { issuer: string }): Promise<Site>
  readonly clientId: string
  startLogin(options?: { agent?: string; scope?: string }): Promise<LoginRequest>
  waitByEvents(request: LoginRequest, options?: { signal?: AbortSignal }): Promise<LoginOutcome>
  waitByPolling(request: LoginRequest, options?: { signal?: AbortSignal }): Promise<LoginOutcome>
  verifyPassport(passport: string): Promise<PassportClaims>
  /** An agent's request: `DPoP <passport>` and a proof by its key, spent once. */
  verifyRequest(request: { method: string; url: string | URL; headers: HeadersLike }): Promise<Verified>
}
