// The example MCP server (examples/mcp_server.rs) as a process, and an
// in-memory OAuth client provider for @modelcontextprotocol/sdk whose
// "browser" is a real one driven by the test.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { resolve, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const MCP_BIN = process.env.MCP_SERVER_BIN ?? resolve(here, '../../target/debug/examples/mcp_server')

/** Starts the example MCP server on `port` for `issuer`; resolves when it answers. */
export async function startMcpServer({ issuer, port, args = [], env = {} }) {
  const url = `http://127.0.0.1:${port}/mcp`
  let stderr = ''
  const child = spawn(MCP_BIN, ['--issuer', issuer, '--listen', `127.0.0.1:${port}`, ...args], {
    env: { ...process.env, RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  child.stderr.on('data', (d) => { stderr += d })
  const exited = new Promise((res) => child.on('exit', res))
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mcp_server exited with ${child.exitCode}:\n${stderr}`)
    try {
      await fetch(`http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp`)
      break
    } catch {}
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`mcp_server did not start in 30 s:\n${stderr}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    url,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}

/**
 * An OAuthClientProvider kept in memory. `redirectToAuthorization` only
 * records the URL: the test opens it in Chromium. Everything the SDK asks
 * to keep (client, tokens, PKCE verifier, discovery) is kept here.
 *
 * `stepUpFetch()` works around an SDK 1.32 limitation: on a 403
 * `insufficient_scope` the SDK re-runs its auth(), which, holding a
 * refresh token, refreshes (with no new scope) instead of asking for the
 * wider one, and then gives up. While a step-up is pending, `tokens()`
 * hides the refresh token so that auth() goes to the authorization
 * endpoint with the scopes the challenge named.
 */
export class MemoryProvider {
  constructor({ redirectUrl, clientMetadata, clientMetadataUrl }) {
    this._redirectUrl = redirectUrl
    this._clientMetadata = clientMetadata
    if (clientMetadataUrl) this.clientMetadataUrl = clientMetadataUrl
    this.authorizationUrls = []
    this.stepUpPending = false
  }
  get redirectUrl() { return this._redirectUrl }
  get clientMetadata() { return this._clientMetadata }
  clientInformation() { return this._client }
  saveClientInformation(info) { this._client = info }
  tokens() {
    if (this.stepUpPending && this._tokens) {
      const { refresh_token, ...rest } = this._tokens
      return rest
    }
    return this._tokens
  }
  saveTokens(tokens) {
    // A step-up's code exchange may not return a new refresh token: keep the old one.
    this._tokens = { refresh_token: this._tokens?.refresh_token, ...tokens }
    this.stepUpPending = false
  }
  redirectToAuthorization(url) {
    this.authorizationUrls.push(url)
    this.lastAuthorizationUrl = url
  }
  saveCodeVerifier(v) { this._verifier = v }
  codeVerifier() { return this._verifier }
  state() {
    this.expectedState = randomBytes(16).toString('base64url')
    return this.expectedState
  }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined
    if (scope === 'all' || scope === 'client') this._client = undefined
    if (scope === 'all' || scope === 'verifier') this._verifier = undefined
    if (scope === 'all' || scope === 'discovery') this._discovery = undefined
  }
  saveDiscoveryState(s) { this._discovery = s }
  discoveryState() { return this._discovery }
  stepUpFetch(base = fetch) {
    return async (input, init) => {
      const response = await base(input, init)
      if (response.status === 403 && /error="?insufficient_scope/.test(response.headers.get('www-authenticate') ?? '')) {
        this.stepUpPending = true
      }
      return response
    }
  }
}
