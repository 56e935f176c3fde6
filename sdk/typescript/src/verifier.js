// The resource-server side of agentauth's tokens, as resource-kit/src/
// verifier.rs does it in Rust: an RFC 9068 access token (`typ: at+jwt`)
// checked against the issuer's JWKS, its DPoP proof when it is bound
// (RFC 9449 §4.3 and §7, with a replay cache), agent passports only where
// the resource opts in, and RFC 6750 / RFC 9449 challenges on failure.
//
// Every signature check and every JOSE parse is jose's; this file only
// decides which checks apply and in what order.
import { createHash, X509Certificate } from 'node:crypto'
import * as jose from 'jose'
import { StatusLists, StatusListUnavailable } from './status.js'

export const ACCESS_TOKEN_TYP = 'at+jwt'
export const PASSPORT_TYP = 'agent-passport+jwt'
export const DPOP_TYP = 'dpop+jwt'
/** Asymmetric algorithms accepted for DPoP proofs (never `none` or a MAC), as the server's. */
export const DPOP_ALGS = ['ES256', 'EdDSA', 'Ed25519', 'RS256', 'PS256']
/** Algorithms the issuer may sign with (`--signing-alg`); jose matches each key's `alg`. */
export const TOKEN_ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA', 'Ed25519']

/**
 * Why a request was refused; `challenge()` gives the HTTP answer.
 * `code` is `missing_token`, `invalid_request`, `invalid_token`,
 * `invalid_dpop_proof`, `use_dpop_nonce`, `insufficient_scope` or
 * `unavailable`.
 */
export class AuthError extends Error {
  constructor(code, description, { scopes, nonce, cause, retryAfter } = {}) {
    super(description, cause ? { cause } : undefined)
    this.name = 'AuthError'
    this.code = code
    this.description = description
    if (scopes) this.scopes = scopes
    if (nonce) this.nonce = nonce
    if (retryAfter) this.retryAfter = retryAfter
  }

  get status() {
    return { missing_token: 401, invalid_request: 400, invalid_token: 401, invalid_dpop_proof: 401, use_dpop_nonce: 401, insufficient_scope: 403, unavailable: 503 }[this.code] ?? 401
  }

  /**
   * The status and headers to answer with (RFC 6750 §3, RFC 9449 §7.1,
   * RFC 9728 §5.1): a `Bearer` challenge first (clients that read only the
   * first challenge, as the MCP TypeScript SDK does, still find
   * `resource_metadata` and `scope`), then a `DPoP` one with `algs`.
   * @param {{ resourceMetadata?: string, scope?: string }} [context]
   */
  challenge(context = {}) {
    const quote = (s) => String(s).replace(/["\\]/g, "'")
    const scope = this.code === 'insufficient_scope' && this.scopes ? this.scopes.join(' ') : context.scope
    const common = []
    if (context.resourceMetadata) common.push(`resource_metadata="${quote(context.resourceMetadata)}"`)
    if (scope) common.push(`scope="${quote(scope)}"`)
    const algs = `algs="${DPOP_ALGS.join(' ')}"`
    const error = () => [`error="${this.code}"`, `error_description="${quote(this.description)}"`]
    const challenge = (scheme, params, dpop) => {
      const all = [...params, ...common, ...(dpop ? [algs] : [])]
      return all.length ? `${scheme} ${all.join(', ')}` : scheme
    }
    let challenges = []
    const headers = {}
    switch (this.code) {
      case 'missing_token':
        challenges = [challenge('Bearer', ['realm="agentauth"'], false), challenge('DPoP', [], true)]
        break
      case 'invalid_request':
        challenges = [challenge('Bearer', error(), false)]
        break
      case 'invalid_dpop_proof':
        challenges = [challenge('DPoP', error(), true)]
        break
      case 'use_dpop_nonce':
        challenges = [challenge('DPoP', [`error="use_dpop_nonce"`, `error_description="a DPoP nonce is required"`], true)]
        if (this.nonce) headers['dpop-nonce'] = this.nonce
        break
      case 'unavailable':
        if (this.retryAfter) headers['retry-after'] = String(this.retryAfter)
        break
      default: // invalid_token, insufficient_scope
        challenges = [challenge('Bearer', error(), false), challenge('DPoP', error(), true)]
    }
    if (challenges.length) headers['www-authenticate'] = challenges.join(', ')
    return { status: this.status, headers, body: { error: this.code === 'missing_token' ? 'invalid_token' : this.code, error_description: this.description } }
  }
}

/**
 * A bounded in-memory replay store: `spend(key, seconds)` is true the
 * first time a key is seen within its retention, false after. Give the
 * verifier your own (Redis `SET NX EX`, say) when several processes serve
 * one resource.
 */
export class MemoryReplayCache {
  constructor({ maxEntries = 1_000_000 } = {}) {
    this.maxEntries = maxEntries
    /** @type {Map<string, number>} key → expiry (ms) */
    this.seen = new Map()
    this.lastSweep = 0
  }

  spend(key, seconds) {
    const now = Date.now()
    const until = this.seen.get(key)
    if (until !== undefined && until > now) return false
    if (now - this.lastSweep > 1000 || this.seen.size >= this.maxEntries) this.sweep(now)
    // Full of live entries: refuse rather than forget a spent proof.
    if (this.seen.size >= this.maxEntries) return false
    this.seen.delete(key)
    this.seen.set(key, now + seconds * 1000)
    return true
  }

  sweep(now = Date.now()) {
    this.lastSweep = now
    for (const [key, until] of this.seen) if (until <= now) this.seen.delete(key)
  }
}

/** RFC 9449 §4.2 `ath`: base64url(SHA-256(access token)). */
export function ath(accessToken) {
  return createHash('sha256').update(accessToken).digest('base64url')
}

/**
 * RFC 9449 §11.1: how long a spent proof must be kept, in seconds: until
 * its `iat` is no longer accepted, plus one (at least one).
 */
export function replayRetention(iat, now, iatWindow) {
  return Math.max(1, iat + Math.abs(iatWindow) - now + 1)
}

/** RFC 9449 §4.3 (9) with RFC 3986 §6 normalization; query and fragment ignored. */
function sameHtu(claimed, expected) {
  let a, b
  try {
    a = new URL(claimed)
    b = new URL(expected)
  } catch {
    return false
  }
  // WHATWG URL lowercases scheme and host and drops a default port.
  return a.protocol === b.protocol && a.host === b.host && a.pathname === b.pathname
}

/**
 * RFC 8705 §3.1: whether `certificate` (DER bytes, or a node:crypto
 * X509Certificate: the client certificate of the TLS connection) is the
 * one `cnf.x5t#S256` names.
 */
export function certificateMatches(cnf, certificate) {
  const der = certificate instanceof X509Certificate ? certificate.raw : certificate
  if (!cnf?.['x5t#S256'] || !der?.length) return false
  return createHash('sha256').update(der).digest('base64url') === cnf['x5t#S256']
}

/** RFC 7517/7518 private members: a proof's `jwk` must not carry any. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

/** RFC 6750 §2.1 / RFC 9449 §7.1: the token of the one Authorization header and its scheme. */
export function bearerOrDpop(authorization) {
  if (authorization === undefined || authorization === null) throw new AuthError('missing_token', 'no access token')
  if (Array.isArray(authorization)) {
    if (authorization.length !== 1) throw new AuthError('invalid_request', 'more than one Authorization header')
    authorization = authorization[0]
  }
  const space = authorization.indexOf(' ')
  if (space < 0) throw new AuthError('invalid_request', 'malformed Authorization header')
  const scheme = authorization.slice(0, space).toLowerCase()
  const token = authorization.slice(space + 1).trim()
  if (scheme !== 'dpop' && scheme !== 'bearer') throw new AuthError('missing_token', 'no access token')
  if (!token) throw new AuthError('invalid_request', 'malformed Authorization header')
  return { token, dpop: scheme === 'dpop' }
}

/** Reads one header from a Fetch `Headers`, a Node `IncomingHttpHeaders` or a plain object. */
function headerValues(headers, name) {
  if (!headers) return []
  if (typeof headers.get === 'function') {
    const v = headers.get(name)
    if (v === null) return []
    // Fetch joins repeated headers with ", "; a JWT has no comma, so a
    // comma means more than one.
    return v.split(',').map((s) => s.trim())
  }
  const v = headers[name] ?? headers[name.toLowerCase()]
  if (v === undefined) return []
  return (Array.isArray(v) ? v : String(v).split(',')).map((s) => s.trim())
}

/** The actors of an RFC 8693 `act` claim, the current one first, back to the first. */
export function actorChain(act) {
  const chain = []
  for (let a = act; a && typeof a === 'object'; a = a.act) {
    const { act: _earlier, ...actor } = a
    chain.push(actor)
  }
  return chain
}

const invalidToken = (why, cause) => new AuthError('invalid_token', why, { cause })

/** jose's claim errors, as the Rust kit words them. */
function fromJose(err, what) {
  switch (err?.code) {
    case 'ERR_JWT_EXPIRED':
      return invalidToken(`the ${what} has expired`, err)
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (err.claim === 'iss') return invalidToken(`the ${what} is from another issuer`, err)
      if (err.claim === 'aud') {
        return what === 'passport' && err.reason === 'missing'
          ? invalidToken('the passport names no site; ask for one whose audience is this resource', err)
          : invalidToken(what === 'passport' ? 'the passport is for another site' : `the ${what} is for another resource`, err)
      }
      if (err.claim === 'nbf') return invalidToken(`the ${what} is not valid yet`, err)
      return invalidToken(`the ${what} is invalid`, err)
    default:
      return invalidToken(`the ${what} is invalid`, err)
  }
}

/**
 * Verifies requests for one resource (one `aud`).
 *
 * Keys: `jwks` (a jose key getter such as `createLocalJWKSet(...)`), or
 * `jwksUri`, or neither (read from the issuer's RFC 8414 metadata on first
 * use); remote sets are jose's `createRemoteJWKSet`, cached and fetched
 * again when a token names an unknown `kid` (at most every 30 s).
 */
export class ResourceVerifier {
  /**
   * @param {import('../index.d.ts').ResourceVerifierOptions} options
   */
  constructor(options) {
    const { issuer, audience } = options
    if (!issuer || !audience) throw new TypeError('issuer and audience are required')
    this.issuer = issuer
    this.audience = audience
    this.iatWindow = options.iatWindow ?? 60
    this.leeway = options.leeway ?? 30
    this.acceptPassports = options.acceptPassports ?? false
    this.passportScopes = options.passportScopes
    this.requireDpop = options.requireDpop ?? false
    this.algorithms = options.algorithms ?? TOKEN_ALGS
    this.replay = options.replayCache ?? new MemoryReplayCache()
    this.nonces = options.nonces
    this.clock = options.now ?? (() => Math.floor(Date.now() / 1000))
    this.fetch = options.fetch ?? fetch
    this._jwksUri = options.jwksUri
    this._keys = options.jwks
    this._jwksOptions = options.jwksOptions
    // Signature-checked tokens by SHA-256 of the token, as the Rust kit
    // keeps them: a resource sees one token many times. An entry is used
    // only while the key that signed it is still published; the time
    // checks run on every use (issuer and audience are this verifier's
    // own, checked when the entry was made).
    // Token status lists: off by default (as in the Rust kit); on, a
    // revoked token is refused within its list's ttl.
    this.statusLists = options.statusLists
      ? new StatusLists({ issuer: this.issuer, keys: () => this.keys(), fetch: this.fetch, ...(typeof options.statusLists === 'object' ? options.statusLists : {}) })
      : undefined
    this.thumbprints = new Map()
    this.tokenCache = options.tokenCache === false ? undefined : new Map()
    this.tokenCacheSize = typeof options.tokenCache === 'object' ? options.tokenCache.maxEntries ?? 10_000 : 10_000
    this.tokenCacheTtl = (typeof options.tokenCache === 'object' ? options.tokenCache.ttl ?? 300 : 300) * 1000
  }

  /** Whether the key `kid` is still in the issuer's key set (a remote set as jose last fetched it). */
  published(kid) {
    const keys = this._keys
    if (typeof keys?.jwks !== 'function') return true // a local set does not change
    return keys.jwks()?.keys?.some((k) => k.kid === kid) ?? false
  }

  /** A cached verification of `token`, its time checks run again; undefined when there is none. */
  cached(digest, now) {
    const hit = this.tokenCache?.get(digest)
    if (!hit) return undefined
    if (hit.until <= Date.now() || !this.published(hit.kid)) {
      this.tokenCache.delete(digest)
      return undefined
    }
    const { exp, nbf } = hit.payload
    if (exp + this.leeway <= now) throw invalidToken(`the ${hit.kind === 'passport' ? 'passport' : 'access token'} has expired`)
    if (typeof nbf === 'number' && nbf > now + this.leeway) throw invalidToken('the access token is not valid yet')
    // The passport policy is asked on every use (it may read a table that changes).
    return hit.kind === 'passport' ? { kind: 'passport', passport: hit.payload, claims: this.passportAsAccess(hit.payload) } : hit.result
  }

  remember(digest, kid, kind, payload, result) {
    if (!this.tokenCache) return
    if (this.tokenCache.size >= this.tokenCacheSize) this.tokenCache.delete(this.tokenCache.keys().next().value)
    this.tokenCache.set(digest, { kid, kind, payload, result, until: Date.now() + this.tokenCacheTtl })
  }

  /** The key getter, made on first use (discovering `jwks_uri` when not given). */
  async keys() {
    if (this._keys) return this._keys
    this._keysPromise ??= (async () => {
      let uri = this._jwksUri
      if (!uri) {
        const url = new URL('/.well-known/oauth-authorization-server' + new URL(this.issuer).pathname.replace(/\/$/, ''), this.issuer)
        const response = await this.fetch(url, { headers: { accept: 'application/json' } })
        if (!response.ok) throw new Error(`authorization server metadata: HTTP ${response.status}`)
        const metadata = await response.json()
        if (metadata.issuer !== this.issuer) throw new Error(`authorization server metadata names issuer ${metadata.issuer}, not ${this.issuer}`)
        uri = metadata.jwks_uri
      }
      this._keys = jose.createRemoteJWKSet(new URL(uri), this._jwksOptions)
      return this._keys
    })().catch((e) => {
      this._keysPromise = undefined
      throw e
    })
    return this._keysPromise
  }

  /**
   * The token's claims after the signature, `typ`, issuer, audience and
   * time checks. A passport is refused before any cryptography unless
   * passports are accepted.
   * @param {string} token
   */
  async verifyToken(token) {
    let header
    try {
      header = jose.decodeProtectedHeader(token)
    } catch (err) {
      throw invalidToken('the access token is invalid', err)
    }
    if (typeof header.kid !== 'string') throw invalidToken('the access token is invalid')
    const typ = String(header.typ ?? '').toLowerCase().replace(/^application\//, '')
    const passport = typ === PASSPORT_TYP
    if (passport && !this.acceptPassports) {
      throw invalidToken('an agent passport is not an access token at this resource')
    }
    const digest = this.tokenCache && createHash('sha256').update(token).digest('base64url')
    if (digest) {
      const hit = this.cached(digest, this.clock())
      if (hit) return hit
    }
    const what = passport ? 'passport' : 'access token'
    let keys
    try {
      keys = await this.keys()
    } catch (err) {
      throw new AuthError('unavailable', 'the issuer keys could not be read', { cause: err })
    }
    let payload
    try {
      ;({ payload } = await jose.jwtVerify(token, keys, {
        // jose compares typ case-insensitively and with or without "application/".
        typ: passport ? PASSPORT_TYP : ACCESS_TOKEN_TYP,
        issuer: this.issuer,
        audience: this.audience,
        algorithms: this.algorithms,
        clockTolerance: this.leeway,
        currentDate: new Date(this.clock() * 1000),
        requiredClaims: passport ? ['sub', 'exp', 'iat', 'jti', 'cnf'] : ['sub', 'exp', 'iat', 'jti', 'client_id'],
      }))
    } catch (err) {
      if (err?.code === 'ERR_JWKS_TIMEOUT') throw new AuthError('unavailable', 'the issuer keys could not be read', { cause: err })
      throw fromJose(err, what)
    }
    let result
    if (passport) {
      if (typeof payload.cnf?.jkt !== 'string') throw invalidToken('the passport is invalid')
      result = { kind: 'passport', passport: payload, claims: this.passportAsAccess(payload) }
    } else {
      result = { kind: 'access', claims: payload }
    }
    if (digest) this.remember(digest, header.kid, result.kind, payload, result)
    return result
  }

  /** The token's entry in its status list (draft-ietf-oauth-status-list): 0 passes. */
  async checkStatus(verified) {
    const what = verified.kind === 'passport' ? 'passport' : 'access token'
    let status
    try {
      status = await this.statusLists.status(verified.passport ?? verified.claims, this.clock())
    } catch (err) {
      if (err instanceof StatusListUnavailable) throw new AuthError('unavailable', err.message, { cause: err.cause, retryAfter: err.retryAfter })
      throw invalidToken(err.message, err)
    }
    if (status !== undefined && status !== 0) throw invalidToken(`the ${what} has been ${status === 2 ? 'suspended' : 'revoked'}`)
  }

  /** An accepted passport's claims in the access-token shape: the resource's scopes, never its own. */
  passportAsAccess(p) {
    const scopes = (this.passportScopes?.(p) ?? []).filter((s) => s)
    const claims = {
      iss: p.iss, aud: p.aud, sub: p.sub, client_id: p.sub, jti: p.jti, iat: p.iat, exp: p.exp,
      cnf: p.cnf, agent_id: p.agent_id, owner: p.owner, agent_name: p.agent_name,
    }
    if (p.status) claims.status = p.status
    if (scopes.length) claims.scope = scopes.join(' ')
    return claims
  }

  /**
   * RFC 9449 §4.3 checks 2–12 of one proof; the caller spends its `jti`.
   * @returns {Promise<{ jkt: string, jti: string, iat: number, nonce?: string }>}
   */
  async verifyProof(proof, { method, url, accessToken, now }) {
    const invalid = (why, cause) => new AuthError('invalid_dpop_proof', why, { cause })
    let header
    try {
      header = jose.decodeProtectedHeader(proof)
    } catch (err) {
      throw invalid('DPoP proof is not a JWT', err)
    }
    if (header.typ !== DPOP_TYP) throw invalid('DPoP proof typ must be dpop+jwt')
    if (!DPOP_ALGS.includes(header.alg)) throw invalid('DPoP proof alg is not supported')
    if (!header.jwk || typeof header.jwk !== 'object') throw invalid('DPoP proof has no jwk')
    if (PRIVATE_MEMBERS.some((m) => m in header.jwk)) throw invalid('DPoP proof jwk must not contain a private key')
    let payload
    try {
      // jose's EmbeddedJWK imports the header's key (public only) for the header's alg.
      ;({ payload } = await jose.jwtVerify(proof, jose.EmbeddedJWK, {
        typ: DPOP_TYP,
        algorithms: DPOP_ALGS,
        requiredClaims: ['jti', 'htm', 'htu', 'iat'],
        // iat is checked below against our own window, both ways.
        currentDate: new Date(now * 1000),
        maxTokenAge: undefined,
      }))
    } catch (err) {
      throw invalid('DPoP proof signature or claims are invalid', err)
    }
    const { jti, htm, htu, iat, nonce } = payload
    if (typeof jti !== 'string' || jti.length < 1 || jti.length > 256) throw invalid('DPoP proof jti must be 1 to 256 characters')
    if (htm !== method) throw invalid('DPoP proof htm does not match the request method')
    if (typeof htu !== 'string' || !sameHtu(htu, url)) throw invalid('DPoP proof htu does not match the request URL')
    if (this.nonces && !(typeof nonce === 'string' && (await this.nonces.isValid(nonce)))) {
      throw new AuthError('use_dpop_nonce', 'a DPoP nonce is required', { nonce: await this.nonces.current() })
    }
    if (typeof iat !== 'number' || Math.abs(iat - now) > this.iatWindow) throw invalid('DPoP proof iat is outside the acceptable window')
    if (accessToken !== undefined && payload.ath !== ath(accessToken)) throw invalid('DPoP proof ath does not match the access token')
    const jkt = await this.thumbprint(header.jwk)
    return { jkt, jti, iat, nonce }
  }

  /**
   * RFC 7638 thumbprint of a proof key (jose's), remembered by the
   * members it is computed from: a client sends the same key with every
   * proof, and the digest is an asynchronous WebCrypto call.
   */
  async thumbprint(jwk) {
    const members = [jwk.kty, jwk.crv, jwk.x, jwk.y, jwk.n, jwk.e].map((m) => (typeof m === 'string' ? m : '')).join('|')
    let jkt = this.thumbprints.get(members)
    if (jkt === undefined) {
      jkt = await jose.calculateJwkThumbprint(jwk, 'sha256')
      if (this.thumbprints.size >= 10_000) this.thumbprints.delete(this.thumbprints.keys().next().value)
      this.thumbprints.set(members, jkt)
    }
    return jkt
  }

  /**
   * Verifies a request: RFC 6750 §2.1 / RFC 9449 §7.1 token extraction,
   * RFC 9068 §4 checks, then for bound tokens RFC 9449 §4.3 and §7.
   * `url` is the resource URL as the client addressed it (from your
   * configuration, not the `Host` header).
   * @param {{ method: string, url: string | URL, headers: any }} request
   * @returns {Promise<import('../index.d.ts').Verified>}
   */
  async verify({ method, url, headers, clientCertificate }) {
    const authorization = headerValues(headers, 'authorization')
    const { token, dpop } = bearerOrDpop(authorization.length ? authorization : undefined)
    const now = this.clock()
    const verified = await this.verifyToken(token)
    if (this.statusLists) await this.checkStatus(verified)
    const cnf = verified.claims.cnf
    let jkt
    if (cnf && !dpop && clientCertificate && certificateMatches(cnf, clientCertificate)) {
      // RFC 8705 §3: the certificate the token is bound to, over mutual TLS.
    } else if (cnf && !dpop) {
      throw invalidToken('a DPoP-bound token must use the DPoP scheme (or, over mutual TLS, the certificate it is bound to)')
    } else if (!cnf && dpop) {
      throw invalidToken('the token is not DPoP-bound')
    } else if (!cnf && this.requireDpop) {
      throw invalidToken('this resource takes only DPoP-bound tokens')
    } else if (cnf) {
      const proofs = headerValues(headers, 'dpop')
      if (proofs.length !== 1 || !proofs[0]) throw new AuthError('invalid_dpop_proof', 'exactly one DPoP proof is required')
      const proven = await this.verifyProof(proofs[0], { method: method.toUpperCase(), url: String(url), accessToken: token, now })
      if (proven.jkt !== cnf.jkt) throw new AuthError('invalid_dpop_proof', 'the proof key is not the key the token is bound to')
      const fresh = await this.replay.spend(`${proven.jkt}:${proven.jti}`, replayRetention(proven.iat, now, this.iatWindow))
      if (!fresh) throw new AuthError('invalid_dpop_proof', 'DPoP proof jti was already used')
      jkt = proven.jkt
    }
    const claims = verified.claims
    return {
      kind: verified.kind,
      token,
      claims,
      passport: verified.passport,
      scopes: typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : [],
      clientId: claims.client_id,
      subject: claims.sub,
      agentId: claims.agent_id,
      owner: claims.owner,
      actors: actorChain(claims.act),
      jkt,
      expiresAt: claims.exp,
    }
  }
}

/**
 * RFC 6750 §3.1: throws `insufficient_scope` naming what the token has
 * plus what it lacks (so that a step-up keeps the earlier scopes).
 */
export function requireScopes(verified, required) {
  const missing = required.filter((s) => !verified.scopes.includes(s))
  if (missing.length) throw new AuthError('insufficient_scope', 'the token lacks a scope this request needs', { scopes: [...verified.scopes, ...missing] })
}
