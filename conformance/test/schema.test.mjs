// Issue 18, item 5: schemathesis (PyPI) fuzzes the live server against
// its own /openapi.json with every check (schemathesis.toml says which
// two are tuned, and why): zero 5xx, zero schema violations. It runs
// signed in as an operator, so the console and operator pages are
// exercised past their sign-in redirect; the handler-panic counter must
// read zero afterwards.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startServer } from '../lib/server.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const root = resolve(here, '..')
const out = join(root, 'test-output')
const SCHEMATHESIS = process.env.SCHEMATHESIS_BIN ?? join(root, '.venv/bin/schemathesis')
const SECONDS = process.env.SCHEMATHESIS_SECONDS ?? '60'

/** Signs in with a password; the cookies a browser would then hold. */
async function signIn(issuer, username, password) {
  const page = await fetch(`${issuer}/login`)
  const jar = new Map()
  const keep = (r) => {
    for (const c of r.headers.getSetCookie()) {
      const [pair] = c.split(';')
      const [name, value] = pair.split('=')
      jar.set(name, value)
    }
  }
  keep(page)
  const csrf = (await page.text()).match(/name="csrf_token" value="([^"]+)"/)[1]
  const r = await fetch(`${issuer}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
    },
    body: new URLSearchParams({ csrf_token: csrf, username, password, return_to: '/account' }),
  })
  assert.equal(r.status, 303)
  keep(r)
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ')
}

test('schemathesis: every check, zero 5xx, zero schema violations', { timeout: 900_000 }, async () => {
  const server = await startServer({
    admins: { root: 'correct horse battery' },
    // Fuzzing registers far faster than a person: lift the per-address limit.
    args: ['--registration-rate-per-minute', '1000000', '--resource', 'https://mcp.example.com/mcp'],
  })
  try {
    const cookie = await signIn(server.issuer, 'root', 'correct horse battery')
    mkdirSync(out, { recursive: true })
    const args = [
      '--config-file', join(root, 'schemathesis.toml'), '--no-color',
      'run', `${server.issuer}/openapi.json`,
      '--checks', 'all',
      '--max-time', SECONDS,
      '--workers', '2',
      '-H', `Cookie: ${cookie}`,
      '--report', 'junit',
      '--report-dir', out,
    ]
    const child = spawn(SCHEMATHESIS, args, {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let text = ''
    child.stdout.on('data', (d) => { text += d })
    child.stderr.on('data', (d) => { text += d })
    // A missing binary emits 'error' and never 'exit': fail, do not hang.
    const code = await new Promise((resolve, reject) => {
      child.on('error', (e) => reject(new Error(`cannot run ${SCHEMATHESIS} (scripts/test installs it): ${e.message}`)))
      child.on('exit', resolve)
    })
    writeFileSync(join(out, 'schemathesis.txt'), text)
    const summary = text.slice(text.lastIndexOf('SUMMARY'))
    assert.equal(code, 0, `schemathesis failed (test-output/schemathesis.txt):\n${summary}`)
    assert.match(summary, /generated/, summary)
    console.log(summary)

    const metrics = await (await fetch(`${server.issuer}/metrics`)).text()
    assert.match(metrics, /^agentauth_handler_panics_total 0$/m, 'a handler panicked under schemathesis')
    assert.doesNotMatch(metrics, /status="5\d\d"/, 'a 5xx was answered under schemathesis')
  } finally {
    await server.stop()
  }
})
