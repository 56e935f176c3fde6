// Token status lists (draft-ietf-oauth-status-list) at a resource that
// verifies tokens offline, as resource-kit/src/status_cache.rs does: a
// token revoked at agentauth (revocation, an agent's kill switch) is
// refused here within the list's `ttl` plus one fetch, not at its `exp`.
//
// - Only lists at the issuer's origin are fetched (a token cannot make the
//   resource fetch an arbitrary URL).
// - The list token is verified by jose with the issuer's keys: `typ`
//   exactly `statuslist+jwt`, `sub` equal to the list's URI, `iss` (when
//   present) the issuer, `exp` not passed; `lst` is inflated by node:zlib,
//   at most to `maxListLength` statuses.
// - A list is used for its `ttl` (clamped to 1..maxTtl s, never past its
//   `exp`); one fetch per list at a time, shared by the requests waiting.
// - A failed fetch: the last good list is used for `grace` past its `ttl`;
//   past that, or with no list yet, the request gets 503 with Retry-After.
import { inflateSync } from 'node:zlib'
import * as jose from 'jose'

export const STATUS_LIST_TYP = 'statuslist+jwt'

export class StatusListUnavailable extends Error {
  constructor(message, retryAfter, cause) {
    super(message, cause ? { cause } : undefined)
    this.retryAfter = retryAfter
  }
}

export class StatusLists {
  /**
   * @param {{ issuer: string, keys: () => Promise<any>, fetch?: typeof fetch, maxTtl?: number, grace?: number, retryInterval?: number, fetchTimeout?: number, maxListLength?: number, requireStatus?: boolean }} options
   */
  constructor({ issuer, keys, fetch: f = fetch, maxTtl = 300, grace = 60, retryInterval = 1, fetchTimeout = 2, maxListLength = 1 << 24, requireStatus = false }) {
    this.issuer = issuer
    this.origin = new URL(issuer).origin
    this.keys = keys
    this.fetch = f
    this.maxTtl = maxTtl
    this.grace = grace
    this.retryInterval = retryInterval
    this.fetchTimeout = fetchTimeout
    this.maxListLength = maxListLength
    this.requireStatus = requireStatus
    /** @type {Map<string, { list?: { bits: number, bytes: Buffer, freshUntil: number, usableUntil: number }, pending?: Promise<void>, failedAt?: number, error?: Error }>} */
    this.lists = new Map()
  }

  /**
   * The status of the token whose claims are `claims` (0: valid), or
   * `undefined` for a token with no `status` claim. Throws
   * `StatusListUnavailable` when the list cannot be had, and a TypeError
   * for a reference this resource will not follow.
   */
  async status(claims, now = Date.now() / 1000) {
    const ref = claims.status?.status_list
    if (ref === undefined) {
      if (this.requireStatus) throw new TypeError('the token carries no status')
      return undefined
    }
    const { uri, idx } = ref ?? {}
    if (typeof uri !== 'string' || !Number.isSafeInteger(idx) || idx < 0) throw new TypeError('the token status claim is malformed')
    let origin
    try { origin = new URL(uri).origin } catch { throw new TypeError('the token status list uri is malformed') }
    if (origin !== this.origin) throw new TypeError('the token status list is not at the issuer')
    const list = await this.list(uri, now)
    const position = idx * list.bits
    const byte = Math.floor(position / 8)
    if (byte >= list.bytes.length) throw new TypeError('the token status index is outside its list')
    return (list.bytes[byte] >> (position % 8)) & ((1 << list.bits) - 1)
  }

  async list(uri, now) {
    let entry = this.lists.get(uri)
    if (!entry) this.lists.set(uri, (entry = {}))
    if (entry.list && now < entry.list.freshUntil) return entry.list
    const mayFetch = entry.failedAt === undefined || now >= entry.failedAt + this.retryInterval
    if (mayFetch) {
      entry.pending ??= this.fetchList(uri, entry, now).finally(() => { entry.pending = undefined })
      await entry.pending
      if (entry.list && now < entry.list.freshUntil) return entry.list
    } else if (entry.pending) {
      await entry.pending
    }
    // Stale: the last good list within its grace, else 503.
    if (entry.list && now < entry.list.usableUntil) return entry.list
    const retryAfter = Math.max(1, Math.ceil((entry.failedAt ?? now) + this.retryInterval - now))
    throw new StatusListUnavailable('the token status list cannot be fetched', retryAfter, entry.error)
  }

  async fetchList(uri, entry, now) {
    try {
      const response = await this.fetch(uri, { headers: { accept: 'application/statuslist+jwt' }, signal: AbortSignal.timeout(this.fetchTimeout * 1000) })
      if (response.status !== 200) throw new Error(`status list ${uri}: HTTP ${response.status}`)
      const { payload, protectedHeader } = await jose.jwtVerify((await response.text()).trim(), await this.keys(), { typ: STATUS_LIST_TYP })
      if (protectedHeader.typ !== STATUS_LIST_TYP) throw new Error('the status list typ is not statuslist+jwt')
      if (payload.sub !== uri) throw new Error("the status list token's sub is not its uri")
      if (payload.iss !== undefined && payload.iss !== this.issuer) throw new Error('the status list is from another issuer')
      const { bits, lst } = payload.status_list ?? {}
      if (![1, 2, 4, 8].includes(bits) || typeof lst !== 'string') throw new Error('the status list is malformed')
      const bytes = inflateSync(Buffer.from(lst, 'base64url'), { maxOutputLength: Math.ceil((this.maxListLength * bits) / 8) })
      const ttl = Math.min(Math.max(Number.isFinite(payload.ttl) ? payload.ttl : this.maxTtl, 1), this.maxTtl)
      const exp = typeof payload.exp === 'number' ? payload.exp : Infinity
      entry.list = { bits, bytes, freshUntil: Math.min(now + ttl, exp), usableUntil: Math.min(now + ttl + this.grace, exp) }
      entry.failedAt = undefined
      entry.error = undefined
    } catch (err) {
      entry.failedAt = now
      entry.error = err
    }
  }
}
