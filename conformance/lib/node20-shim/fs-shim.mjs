// Re-export node:fs plus a globSync polyfill (fs.globSync exists only in Node >= 22).
export * from 'node:fs';
import fs from 'node:fs';
export default fs;
export function globSync(pattern, opts = {}) {
  if (typeof fs.globSync === 'function') return fs.globSync(pattern, opts);
  // Used only by `conformance tier-check` (pattern '**/checks.json'). Minimal recursive walker.
  const path = require_path();
  const cwd = opts.cwd ?? process.cwd();
  const out = [];
  const base = pattern.replace(/^\*\*\//, '');
  const walk = (rel) => {
    for (const ent of fs.readdirSync(path.join(cwd, rel), { withFileTypes: true })) {
      const r = rel ? path.join(rel, ent.name) : ent.name;
      if (ent.isDirectory()) walk(r); else if (ent.name === base) out.push(r);
    }
  };
  walk('');
  return out;
}
import * as _path from 'node:path';
function require_path() { return _path; }
