// The agent's side: its keys, private_key_jwt client authentication and
// DPoP proofs (oauth4webapi's, server nonces retried as RFC 9449 §8 says),
// the passport grant, token exchange (RFC 8693), DPoP-bound resource
// calls, answering a proof-of-work login request, and a bridge
// certificate. No JOSE code here: every proof and assertion is
// oauth4webapi's, every key jose's.
import { createHash } from 'node:crypto'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

export const PASSPORT_GRANT = 'urn:agentauth:params:grant-type:passport'
export const PASSPORT_TOKEN_TYPE = 'urn:agentauth:params:token-type:passport'
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
export const BRIDGE_CERT_GRANT = 'urn:agentauth:params:grant-type:bridge-cert'
export const CIBA_GRANT = 'urn:openid:params:grant-type:ciba'

// RFC 8693 §2.2.1: a passport or a certificate is not an access token, so `N_A`.
const recognizedTokenTypes = { n_a: () => {}, N_A: () => {} }

/**
 * A key pair for an agent (client authentication, or DPoP), and its public
 * JWK with `kid` and `alg`, as `agentauth agent create --jwk` and `/register`
 * take it.
 * @param {{ alg?: string, kid?: string, extractable?: boolean }} [options]
 */
export async function generateAgentKey({ alg = 'ES256', kid = crypto.randomUUID(), extractable = false } = {}) {
  const pair = await jose.generateKeyPair(alg, { extractable: true })
  const jwk = { ...(await jose.exportJWK(pair.publicKey)), kid, alg }
  // The private key stays non-extractable unless asked (it was made extractable only to export the public half).
  const privateKey = extractable ? pair.privateKey : await jose.importJWK(await jose.exportJWK(pair.privateKey), alg, { extractable: false })
  return { privateKey, publicKey: pair.publicKey, publicJwk: jwk, kid, alg }
}

/**
 * An agent's key from its private JWK (with `kid`; `alg` or `defaultAlg`),
 * as kept in a secret store: the pair `Agent.connect` takes.
 */
export async function loadAgentKey(privateJwk, defaultAlg = 'ES256') {
  const alg = privateJwk.alg ?? defaultAlg
  const { d, p, q, dp, dq, qi, ...publicJwk } = privateJwk
  if (!d) throw new TypeError('loadAgentKey needs the private JWK (with d)')
  const privateKey = await jose.importJWK(privateJwk, alg, { extractable: false })
  const publicKey = await jose.importJWK(publicJwk, alg, { extractable: true })
  return { privateKey, publicKey, kid: privateJwk.kid }
}

/** http:// is allowed for loopback issuers only (development), as the MCP SDK allows it. */
export function isLoopback(issuer) {
  const { hostname } = new URL(issuer)
  return hostname === 'localhost' || hostname === '127.0.0.1' || hostname === '[::1]'
}

/** The proof of work of a login request: a nonce with SHA-256(challenge ‖ nonce) starting with `bits` zero bits. */
export function solveChallenge(challenge, bits) {
  for (let n = 0; ; n++) {
    const digest = createHash('sha256').update(challenge + n).digest()
    let zeros = 0
    for (const byte of digest) {
      if (byte === 0) { zeros += 8; continue }
      zeros += Math.clz32(byte) - 24
      break
    }
    if (zeros >= bits) return String(n)
  }
}

/** Runs `attempt` once more when the server asks for a DPoP nonce (oauth4webapi has kept it). */
async function withNonceRetry(attempt) {
  try {
    return await attempt()
  } catch (err) {
    if (oauth.isDPoPNonceError(err)) return attempt()
    throw err
  }
}

export class Agent {
  /**
   * @param {{ as: oauth.AuthorizationServer, clientId: string, key: { privateKey: CryptoKey, publicKey: CryptoKey, kid: string }, dpopKeys?: CryptoKeyPair, insecure?: boolean, fetch?: typeof fetch }} options
   */
  constructor({ as, clientId, key, dpopKeys, insecure = isLoopback(as.issuer), fetch: f }) {
    this.as = as
    this.issuer = as.issuer
    this.client = { client_id: clientId, token_endpoint_auth_method: 'private_key_jwt' }
    this.clientAuth = oauth.PrivateKeyJwt({ key: key.privateKey, kid: key.kid })
    // agentauth takes an agent's DPoP proofs only by one of its registered
    // keys (or a key a bridge certificate of it certifies): by default the
    // key it authenticates with.
    this.dpopKeys = dpopKeys ?? { privateKey: key.privateKey, publicKey: key.publicKey }
    this.dpop = oauth.DPoP(this.client, this.dpopKeys)
    this.options = { ...(insecure ? { [oauth.allowInsecureRequests]: true } : {}), ...(f ? { [oauth.customFetch]: f } : {}) }
  }

  /**
   * Discovers the issuer (RFC 8414) and returns the agent. `key` is its
   * registered key pair with its `kid` (what `generateAgentKey` returns);
   * `insecure` allows http:// (default: only for a loopback issuer).
   * @param {{ issuer: string, clientId: string, key: { privateKey: CryptoKey, publicKey: CryptoKey, kid: string }, dpopKeys?: CryptoKeyPair, insecure?: boolean, fetch?: typeof fetch }} options
   */
  static async connect({ issuer, insecure = isLoopback(issuer), fetch: f, ...rest }) {
    const url = new URL(issuer)
    const options = { ...(insecure ? { [oauth.allowInsecureRequests]: true } : {}), ...(f ? { [oauth.customFetch]: f } : {}), algorithm: 'oauth2' }
    const as = await oauth.processDiscoveryResponse(url, await oauth.discoveryRequest(url, options))
    return new Agent({ as, insecure, fetch: f, ...rest })
  }

  get clientId() { return this.client.client_id }

  /** RFC 7638 thumbprint of the DPoP key (the `cnf.jkt` of what the agent gets). */
  thumbprint() { return this.dpop.calculateThumbprint() }

  /** A token request by this agent, with its DPoP key unless `dpop: false`; a server nonce is retried. */
  async grant(grantType, params, { dpop = true, DPoP } = {}) {
    return withNonceRetry(async () => {
      const response = await oauth.genericTokenEndpointRequest(this.as, this.client, this.clientAuth, grantType,
        new URLSearchParams(params), { ...this.options, ...(dpop ? { DPoP: DPoP ?? this.dpop } : {}) })
      return oauth.processGenericTokenEndpointResponse(this.as, this.client, response, { recognizedTokenTypes })
    })
  }

  /**
   * The passport grant: who this agent is, bound to its DPoP key, for one
   * site (`audience`: a site's client id, a resource's URI, another agent's id).
   * @returns {Promise<{ passport: string, expiresIn: number, scope?: string }>}
   */
  async passport({ audience, scope } = {}) {
    const r = await this.grant(PASSPORT_GRANT, { ...(audience ? { audience } : {}), ...(scope ? { scope } : {}) })
    return { passport: r.access_token, expiresIn: r.expires_in, scope: r.scope }
  }

  /**
   * Token exchange (RFC 8693): an access token for `resource` acting for
   * the subject of `subjectToken` (another agent's passport naming this
   * agent, say); DPoP-bound to this agent's key unless `dpop: false`.
   */
  async exchange({ subjectToken, subjectTokenType = PASSPORT_TOKEN_TYPE, resource, audience, scope, dpop = true }) {
    const params = { subject_token: subjectToken, subject_token_type: subjectTokenType }
    if (resource) params.resource = resource
    if (audience) params.audience = audience
    if (scope) params.scope = scope
    return this.grant(TOKEN_EXCHANGE_GRANT, params, { dpop })
  }

  /** Client credentials for the agent itself (RFC 6749 §4.4), DPoP-bound unless `dpop: false`. */
  async clientCredentials({ resource, scope, dpop = true } = {}) {
    return withNonceRetry(async () => {
      const params = new URLSearchParams({ ...(resource ? { resource } : {}), ...(scope ? { scope } : {}) })
      const response = await oauth.clientCredentialsGrantRequest(this.as, this.client, this.clientAuth, params, { ...this.options, ...(dpop ? { DPoP: this.dpop } : {}) })
      return oauth.processClientCredentialsResponse(this.as, this.client, response)
    })
  }

  /**
   * A request to a resource with a token: `DPoP` scheme and a fresh proof
   * (its `ath` naming the token), retried once on `use_dpop_nonce`. Other
   * 401s throw oauth4webapi's `WWWAuthenticateChallengeError`.
   * @param {string | URL} url
   * @param {{ token: string, method?: string, headers?: HeadersInit, body?: BodyInit | null, dpop?: boolean }} init
   */
  async fetch(url, { token, method = 'GET', headers, body = null, dpop = true }) {
    return withNonceRetry(() => oauth.protectedResourceRequest(token, method, new URL(url), new Headers(headers), body,
      { ...this.options, ...(dpop ? { DPoP: this.dpop } : {}) }))
  }

  /**
   * Answers a proof-of-work login request (a site's `login_request_id`):
   * reads the challenge with a passport naming no site, lets `decide`
   * look at it (the site's `display_name`, `verified`, the scopes; return
   * false to deny), solves it, approves. Returns the server's answer.
   * @param {string} id
   * @param {{ decide?: (request: any) => boolean | Promise<boolean>, passport?: string }} [options]
   */
  async answerLoginRequest(id, { decide, passport } = {}) {
    passport ??= (await this.passport()).passport
    const url = new URL(`${this.issuer}/login-requests/${encodeURIComponent(id)}`)
    const read = await this.fetch(url, { token: passport })
    const request = await read.json()
    if (!read.ok) throw Object.assign(new Error(`login request ${id}: ${request.error_description ?? request.error ?? read.status}`), { response: request })
    const form = { 'content-type': 'application/x-www-form-urlencoded' }
    if (decide && !(await decide(request))) {
      const r = await this.fetch(new URL(`${url}/deny`), { token: passport, method: 'POST', headers: form, body: new URLSearchParams({ challenge: request.challenge }).toString() })
      return r.json()
    }
    const nonce = solveChallenge(request.challenge, request.difficulty)
    const r = await this.fetch(new URL(`${url}/approve`), { token: passport, method: 'POST', headers: form, body: new URLSearchParams({ challenge: request.challenge, nonce }).toString() })
    const answer = await r.json()
    if (!r.ok) throw Object.assign(new Error(`login request ${id}: ${answer.error_description ?? answer.error ?? r.status}`), { response: answer })
    return answer
  }

  /**
   * OpenID CIBA (poll mode): asks the agent's owner (`loginHint`) to
   * approve exactly these RFC 9396 `authorizationDetails` (e.g. the
   * `data.authorization_details` of an MCP server's -31403 error), with a
   * private_key_jwt assertion. Returns `auth_req_id`, `expires_in`,
   * `interval`; then `waitForApproval`. oauth4webapi's CIBA functions.
   * @param {{ loginHint: string, authorizationDetails: object[], bindingMessage?: string, scope?: string, resource?: string }} options
   */
  async askOwner({ loginHint, authorizationDetails, bindingMessage, scope, resource }) {
    const params = { login_hint: loginHint, authorization_details: JSON.stringify(authorizationDetails) }
    if (bindingMessage) params.binding_message = bindingMessage
    if (scope) params.scope = scope
    if (resource) params.resource = resource
    const response = await oauth.backchannelAuthenticationRequest(this.as, this.client, this.clientAuth, params, this.options)
    return oauth.processBackchannelAuthenticationResponse(this.as, this.client, response)
  }

  /**
   * Polls the CIBA grant (DPoP-bound to this agent's key, which agentauth
   * requires to be one of its registered keys) at the request's `interval`
   * (`slow_down` adds 5 s) until the owner answers: the token for that one
   * action, or oauth4webapi's `ResponseBodyError` (`access_denied`,
   * `expired_token`). `timeout` in seconds.
   * @param {{ auth_req_id: string, interval?: number }} started
   * @param {{ timeout?: number, signal?: AbortSignal }} [options]
   */
  async waitForApproval(started, { timeout = 300, signal } = {}) {
    let interval = started.interval ?? 5
    const deadline = Date.now() + timeout * 1000
    for (;;) {
      try {
        return await withNonceRetry(async () => {
          const response = await oauth.backchannelAuthenticationGrantRequest(this.as, this.client, this.clientAuth, started.auth_req_id, { ...this.options, DPoP: this.dpop, signal })
          return oauth.processBackchannelAuthenticationGrantResponse(this.as, this.client, response)
        })
      } catch (err) {
        if (!(err instanceof oauth.ResponseBodyError)) throw err
        if (err.error === 'slow_down') interval += 5
        else if (err.error !== 'authorization_pending' || Date.now() > deadline) throw err
      }
      signal?.throwIfAborted()
      await new Promise((r) => setTimeout(r, interval * 1000))
    }
  }

  /**
   * The whole agent side of a per-call approval: given the `data` of an
   * MCP server's -31403 error, asks the owner and waits for the token.
   * @param {{ authorization_details: object[], authorization_servers?: string[] }} data
   * @param {{ loginHint: string, bindingMessage?: string, timeout?: number, signal?: AbortSignal }} options
   */
  async approvalFor(data, { loginHint, bindingMessage, timeout, signal }) {
    if (data.authorization_servers && !data.authorization_servers.includes(this.issuer)) {
      throw new Error(`the approval is to be asked of ${data.authorization_servers.join(', ')}, not ${this.issuer}`)
    }
    const started = await this.askOwner({ loginHint, authorizationDetails: data.authorization_details, bindingMessage })
    return this.waitForApproval(started, { timeout, signal })
  }

  /**
   * A bridge certificate (issue 16) for a fresh Ed25519 key (or `keys`,
   * an Ed25519 pair), proved by a DPoP proof made with that key whose
   * `nonce` is a server nonce (the first try meets `use_dpop_nonce`, the
   * second carries it). Returns the PEM chain (leaf, then CA) and the key.
   * @param {{ scope?: string, usage?: 'clientAuth' | 'codeSigning', keys?: CryptoKeyPair }} [options]
   */
  async bridgeCertificate({ scope, usage, keys } = {}) {
    keys ??= await jose.generateKeyPair('Ed25519', { extractable: true })
    const DPoP = oauth.DPoP(this.client, keys)
    const params = { ...(scope ? { scope } : {}), ...(usage ? { certificate_usage: usage } : {}) }
    const r = await this.grant(BRIDGE_CERT_GRANT, params, { DPoP })
    return { certificateChain: r.access_token, issuedTokenType: r.issued_token_type, expiresIn: r.expires_in, keys, jkt: await DPoP.calculateThumbprint() }
  }
}
