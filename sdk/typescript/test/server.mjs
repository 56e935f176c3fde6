// Starts the real agentauth binary on a free loopback port with a fresh
// SQLite database, and stops it after the suite.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve, dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const BIN = process.env.AGENTAUTH_BIN ?? resolve(here, '../../../target/debug/agentauth')

export async function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer()
    srv.on('error', rej)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => res(port))
    })
  })
}

/** Runs the CLI against a database (e.g. `user create`); resolves to its stdout on exit 0. */
export function cli(args, env) {
  return new Promise((res, rej) => {
    const child = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    child.on('exit', (code) => (code === 0 ? res(stdout.trim()) : rej(new Error(`agentauth ${args.join(' ')} exited ${code}: ${stderr}`))))
  })
}

/**
 * Starts a server; returns { issuer, initialToken, introspector, stop }.
 * Extra CLI flags and env may be given; `users` ({ name: password }) are
 * created with the CLI first, as are an initial access token good for many
 * registrations and a client allowed to introspect every token (what an
 * operator makes with `agentauth client initial-token` and `agentauth
 * client create --introspect '*'`).
 */
export async function startServer({ args = [], env = {}, users = {}, admins = {}, host = '127.0.0.1', prepare } = {}) {
  const port = await freePort()
  // `host: 'localhost'` for WebAuthn, whose relying-party id cannot be an
  // IP address; the server listens on 127.0.0.1 either way.
  const issuer = `http://${host}:${port}`
  const local = `http://127.0.0.1:${port}`
  const dir = mkdtempSync(join(tmpdir(), 'agentauth-conformance-'))
  const database = `sqlite://${dir}/agentauth.db?mode=rwc`
  const childEnv = { ...process.env, AGENTAUTH_KEK: randomBytes(32).toString('base64'), RUST_LOG: 'warn', ...env }
  for (const [name, password] of Object.entries(users)) {
    await cli(['user', 'create', name, '--database-url', database], { ...childEnv, AGENTAUTH_PASSWORD: password })
  }
  for (const [name, password] of Object.entries(admins)) {
    await cli(['user', 'create', name, '--admin', '--database-url', database], { ...childEnv, AGENTAUTH_PASSWORD: password })
  }
  const db = ['--database-url', database]
  const run = (cliArgs) => cli([...cliArgs, ...db], childEnv)
  // What must exist before the server reads its configuration (an agent a
  // federation rule names, say): `prepare` runs CLI commands and returns
  // extra serve flags.
  if (prepare) args = [...args, ...((await prepare({ run, issuer, dir })) ?? [])]
  const initialToken = await cli(['client', 'initial-token', '--uses', '10000', ...db], childEnv)
  const introspector = JSON.parse(await cli(['client', 'create', '--name', 'introspector', '--introspect', '*', '--json', ...db], childEnv))
  let stderr = ''
  const child = spawn(
    BIN,
    ['serve', '--listen', `127.0.0.1:${port}`, '--issuer', issuer, '--database-url', database, ...args],
    { env: childEnv, stdio: ['ignore', 'ignore', 'pipe'] },
  )
  child.stderr.on('data', (d) => { stderr += d })
  const exited = new Promise((res) => child.on('exit', (code) => res(code)))

  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`agentauth exited with ${child.exitCode}:\n${stderr}`)
    try {
      const r = await fetch(`${local}/healthz`)
      if (r.status === 200) break
    } catch {}
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`agentauth did not become healthy in 30 s:\n${stderr}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }

  return {
    issuer,
    cli: run,
    initialToken,
    introspector,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
      if (child.exitCode === null) child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
