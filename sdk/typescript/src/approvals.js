// Approvals of single MCP tool calls (RFC 9396 `mcp_tool_call`, issue 32:
// "one token, one call"), as the Rust kit's details.rs/once.rs/guard.rs
// and the Python package's approvals.py: a tool that needs its owner's
// approval answers an ordinary token with the JSON-RPC error -31403 naming
// the exact `authorization_details` to ask for; a DPoP-bound token
// carrying them is good for that one call, once, and for the methods that
// do not act (initialize, ping, notifications/*, tools/list).
//
// Arguments are compared by SHA-256 of their RFC 8785 (JCS) form, made by
// the `canonicalize` package, so `{"a": 1, "b": 2.0}` approves `{"b": 2, "a": 1}`.
import { createHash } from 'node:crypto'
import canonicalize from 'canonicalize'
import { AuthError } from './verifier.js'

export const MCP_TOOL_CALL = 'mcp_tool_call'
/** JSON-RPC error code of "this call needs its owner's approval". */
export const APPROVAL_REQUIRED = -31403
export const UNBOUND_APPROVAL = 'a token that approves tool calls must be DPoP-bound (cnf.jkt) and used with its DPoP proof'
export const OTHER_METHOD = 'a token that approves tool calls is good only for those calls (and initialize, ping, notifications and tools/list)'
export const NOT_COVERED = 'the token approves other tool calls than this one (tool, arguments and resource must match)'
export const ALREADY_USED = 'the approval token was already used'

/** SHA-256 of the JCS form of a call's arguments (absent: `{}`); null for anything but an object. */
export function argumentsDigest(args) {
  if (args === undefined || args === null) args = {}
  if (typeof args !== 'object' || Array.isArray(args)) return null
  let text
  try {
    text = canonicalize(args)
  } catch {
    return null // values JSON cannot hold
  }
  if (typeof text !== 'string') return null
  return createHash('sha256').update(text).digest('hex')
}

/** The `authorization_details` entry that approves one call. */
export function entry(resource, tool, args) {
  return { type: MCP_TOOL_CALL, locations: [resource], tool, arguments: args ?? {} }
}

/** Whether a token's claims carry `mcp_tool_call` details (it is an approval token). */
export function approvesToolCalls(claims) {
  const details = claims?.authorization_details
  return Array.isArray(details) && details.some((e) => e && typeof e === 'object' && e.type === MCP_TOOL_CALL)
}

/** Whether one of the token's `mcp_tool_call` entries approves this call at this resource. */
export function covers(claims, resource, tool, args) {
  const wanted = argumentsDigest(args)
  if (wanted === null) return false
  for (const e of claims?.authorization_details ?? []) {
    if (!e || typeof e !== 'object' || e.type !== MCP_TOOL_CALL || e.tool !== tool) continue
    const locations = e.locations ?? []
    if (!Array.isArray(locations) || (locations.length && !locations.includes(resource))) continue
    if (argumentsDigest(e.arguments) === wanted) return true
  }
  return false
}

/** The JSON-RPC answer to a call that needs approval: the details to ask for, and where. */
export function approvalRequiredError(id, { resource, issuer, tool, arguments: args }) {
  return {
    jsonrpc: '2.0',
    id: id ?? null,
    error: {
      code: APPROVAL_REQUIRED,
      message: `calling ${tool} needs its owner's approval of this exact call: ask an authorization server in `
        + '`authorization_servers` for a DPoP-bound token with these `authorization_details` (the owner '
        + 'approves it), then make the call again with it',
      data: { authorization_details: [entry(resource, tool, args)], authorization_servers: [issuer], resource, dpop_required: true },
    },
  }
}

/** A store that could not record a spend (full, or unreachable): the request is refused with 503. */
export class SpentStoreError extends Error {}

/**
 * The default spent-token store: one process, bounded. `spend(jti, until)`
 * (`until`: seconds since the epoch) is true the first time, false while
 * the jti is kept; when full of live entries it throws (fail closed: a 503,
 * never a forgotten spend). Several instances serving one resource must
 * share one store (Redis `SET key 1 NX EXAT until`, a database row with a
 * unique key), else a token is good once per instance.
 */
export class MemorySpentStore {
  constructor({ maxEntries = 100_000 } = {}) {
    this.maxEntries = maxEntries
    /** @type {Map<string, number>} jti → until (s) */
    this.spent = new Map()
  }

  spend(jti, until) {
    const now = Date.now() / 1000
    const kept = this.spent.get(jti)
    if (kept !== undefined && kept > now) return false
    if (this.spent.size >= this.maxEntries) {
      for (const [k, u] of this.spent) if (u <= now) this.spent.delete(k)
      if (this.spent.size >= this.maxEntries) throw new SpentStoreError('the spent approval store is full')
    }
    this.spent.set(jti, until)
    return true
  }
}

const PASSING = new Set(['initialize', 'ping', 'tools/list'])
const passes = (m) => typeof m?.method === 'string' && (PASSING.has(m.method) || m.method.startsWith('notifications/'))
const isCall = (m) => m?.method === 'tools/call' && m.params && typeof m.params === 'object'

/** A JSON-RPC error answered as an HTTP response (not a token failure). */
export class RpcAnswer {
  constructor(status, body) { this.status = status; this.body = body }
}

const rpcError = (id, code, message) => ({ jsonrpc: '2.0', id: id ?? null, error: { code, message } })

/**
 * Decides a verified request's JSON-RPC body (`body`: parsed JSON, an
 * object or a batch) against the approval tools. Returns null to pass, an
 * `RpcAnswer` to answer with, or throws `AuthError`.
 * @param {{ verified: any, body: any, approvalTools: Set<string>, spent: { spend(jti: string, until: number): boolean | Promise<boolean> }, resource: string, issuer: string, leeway: number, retryAfter?: number }} c
 */
export async function decide({ verified, body, approvalTools, spent, resource, issuer, leeway, retryAfter = 5 }) {
  const batch = Array.isArray(body)
  const messages = (batch ? body : [body]).filter((m) => m && typeof m === 'object')
  if (approvesToolCalls(verified.claims)) {
    // The approval is the grant: no scope needed, but a proof.
    if (!verified.jkt) throw new AuthError('invalid_token', UNBOUND_APPROVAL)
    if (body === undefined) throw new AuthError('insufficient_scope', OTHER_METHOD)
    const acting = messages.filter((m) => !passes(m))
    if (acting.length === 0) return null
    if (batch) return new RpcAnswer(400, rpcError(null, -32600, 'an approved tool call must be sent alone, not in a batch'))
    const [call] = acting
    if (!isCall(call)) throw new AuthError('insufficient_scope', OTHER_METHOD)
    const tool = call.params.name
    if (typeof tool !== 'string' || !covers(verified.claims, resource, tool, call.params.arguments)) throw new AuthError('insufficient_scope', NOT_COVERED)
    // Spent once, kept while the verifier could still accept the token.
    const { jti, exp } = verified.claims
    if (typeof jti !== 'string' || typeof exp !== 'number') throw new AuthError('invalid_token', 'an approval token needs jti and exp')
    let fresh
    try {
      fresh = await spent.spend(jti, exp + leeway)
    } catch (err) {
      throw new AuthError('unavailable', 'the spent approval store could not record the call', { cause: err, retryAfter })
    }
    if (!fresh) throw new AuthError('invalid_token', ALREADY_USED)
    return null
  }
  // An ordinary token: calls of approval tools are answered with the approval to ask for.
  const needing = messages.filter((m) => isCall(m) && approvalTools.has(m.params.name))
  if (needing.length === 0) return null
  if (batch) return new RpcAnswer(400, rpcError(null, -32600, "a call of a tool that needs its owner's approval must be sent alone, not in a batch"))
  const [call] = needing
  return new RpcAnswer(200, approvalRequiredError(call.id, { resource, issuer, tool: call.params.name, arguments: call.params.arguments }))
}
