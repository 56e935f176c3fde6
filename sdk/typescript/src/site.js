// The site's side of the proof-of-work login: ask agentauth for a login
// request, learn the outcome by server-sent events or by polling /token,
// verify the delivered passport (jose, against the issuer's JWKS, typ
// agent-passport+jwt, this site as audience), and verify the agent's
// later requests: its passport with a DPoP proof of the passport's key.
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'
import { EventSourceParserStream } from 'eventsource-parser/stream'
import { ResourceVerifier, PASSPORT_TYP } from './verifier.js'
import { PASSPORT_TOKEN_TYPE, isLoopback } from './agent.js'

export const POW_LOGIN_GRANT = 'urn:agentauth:params:grant-type:pow-login'

export class LoginError extends Error {
  constructor(status, details) {
    super(`login ${status}${details?.error_description ? `: ${details.error_description}` : details?.error ? `: ${details.error}` : ''}`)
    this.name = 'LoginError'
    this.status = status
    this.details = details
  }
}

export class Site {
  /**
   * @param {{ as: oauth.AuthorizationServer, clientId: string, clientSecret: string, insecure?: boolean, fetch?: typeof fetch }} options
   */
  constructor({ as, clientId, clientSecret, insecure = isLoopback(as.issuer), fetch: f = fetch }) {
    this.as = as
    this.issuer = as.issuer
    this.client = { client_id: clientId }
    this.clientAuth = oauth.ClientSecretBasic(clientSecret)
    this.fetchImpl = f
    this.options = { ...(insecure ? { [oauth.allowInsecureRequests]: true } : {}), [oauth.customFetch]: f }
    this.basic = 'Basic ' + Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')
    this.keys = jose.createRemoteJWKSet(new URL(as.jwks_uri), { [jose.customFetch]: f })
    this.verifier = new ResourceVerifier({ issuer: as.issuer, audience: clientId, acceptPassports: true, jwks: this.keys, passportScopes: (p) => String(p.scope ?? '').split(' ').filter(Boolean) })
  }

  /** Discovers the issuer (RFC 8414) and returns the site. `insecure`: allow http:// (default: only for a loopback issuer). */
  static async connect({ issuer, insecure = isLoopback(issuer), fetch: f = fetch, ...rest }) {
    const url = new URL(issuer)
    const options = { ...(insecure ? { [oauth.allowInsecureRequests]: true } : {}), [oauth.customFetch]: f, algorithm: 'oauth2' }
    const as = await oauth.processDiscoveryResponse(url, await oauth.discoveryRequest(url, options))
    return new Site({ as, insecure, fetch: f, ...rest })
  }

  get clientId() { return this.client.client_id }

  /**
   * `POST /login-requests`: a login any agent (or only `agent`) may answer.
   * @returns {Promise<{ login_request_id: string, expires_in: number, interval: number, events_uri: string }>}
   */
  async startLogin({ agent, scope } = {}) {
    const response = await this.fetchImpl(`${this.issuer}/login-requests`, {
      method: 'POST',
      headers: { authorization: this.basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ ...(scope ? { scope } : {}), ...(agent ? { agent } : {}) }),
    })
    const body = await response.json()
    if (response.status !== 201) throw new LoginError('refused', body)
    return body
  }

  /**
   * Waits on the request's event stream for its one `outcome` event; an
   * approved one carries the passport, which is verified before it is
   * returned. Resolves to `{ status, passport?, claims? }`.
   */
  async waitByEvents(request, { signal } = {}) {
    const response = await this.fetchImpl(request.events_uri, { headers: { authorization: this.basic, accept: 'text/event-stream' }, signal })
    if (!response.ok) throw new LoginError('refused', await response.json().catch(() => ({ error: `HTTP ${response.status}` })))
    const events = response.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream())
    for await (const event of events) {
      if (event.event !== 'outcome') continue // heartbeats
      return this.outcome(JSON.parse(event.data)) // leaving the loop cancels the stream
    }
    throw new LoginError('interrupted', { error_description: 'the stream ended without an outcome; reconnect or poll to learn it' })
  }

  /**
   * Polls `/token` (grant pow-login) every `interval` seconds (slower on
   * `slow_down`) until the request resolves.
   */
  async waitByPolling(request, { signal } = {}) {
    let interval = request.interval ?? 5
    for (;;) {
      signal?.throwIfAborted()
      await new Promise((r) => setTimeout(r, interval * 1000))
      try {
        const response = await oauth.genericTokenEndpointRequest(this.as, this.client, this.clientAuth, POW_LOGIN_GRANT,
          new URLSearchParams({ login_request_id: request.login_request_id }), this.options)
        const r = await oauth.processGenericTokenEndpointResponse(this.as, this.client, response, { recognizedTokenTypes: { n_a: () => {}, N_A: () => {} } })
        if (r.issued_token_type !== PASSPORT_TOKEN_TYPE) throw new LoginError('refused', { error: 'not a passport' })
        return this.outcome({ status: 'approved', passport: r.access_token })
      } catch (err) {
        if (!(err instanceof oauth.ResponseBodyError)) throw err
        if (err.error === 'authorization_pending') continue
        if (err.error === 'slow_down') { interval += 5; continue }
        if (err.error === 'access_denied') return { status: 'denied' }
        if (err.error === 'expired_token') return { status: 'expired' }
        throw new LoginError('refused', { error: err.error, error_description: err.error_description })
      }
    }
  }

  async outcome(data) {
    if (data.status !== 'approved' || !data.passport) {
      if (data.status === 'refused') throw new LoginError('refused', data)
      return { status: data.status, delivered: data.delivered }
    }
    return { status: 'approved', passport: data.passport, claims: await this.verifyPassport(data.passport) }
  }

  /** A passport for this site: the issuer's key, typ agent-passport+jwt, our issuer, this site as audience. */
  async verifyPassport(passport) {
    const { payload } = await jose.jwtVerify(passport, this.keys, { issuer: this.issuer, audience: this.clientId, typ: PASSPORT_TYP, requiredClaims: ['sub', 'exp', 'iat', 'cnf'] })
    return payload
  }

  /**
   * An agent's request to this site: `Authorization: DPoP <passport>` and
   * a DPoP proof by the passport's key for this very request (RFC 9449),
   * spent once. Its `scopes` are the passport's (this site is its audience).
   */
  async verifyRequest(request) {
    return this.verifier.verify(request)
  }
}
