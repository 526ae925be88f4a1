// Every ```js block of README.md runs as written (as an .mjs file, Node 20) in an empty project
// that installed the packed tarballs (esolm + @esolm/linux-x64), and the README's CLI lines
// that need no file of their own run through the installed `esolm` executable.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, installApp, packAll, root } from './helpers/packed.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'esolm-readme-'));
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
let app: App;

beforeAll(() => {
  const packed = packAll(path.join(tmp, 'out'), ['linux-x64']);
  app = installApp(path.join(tmp, 'app'), [packed.tarballs.esolm!, packed.tarballs['@esolm/linux-x64']!]);
}, 600_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('README examples', () => {
  it('has JavaScript examples', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(2);
    for (const b of blocks) expect(b).not.toMatch(/\busing\s+\w+\s*=/);  // no `using` declarations on Node 20
  });

  it.each(blocks.map((b, i) => [i, b] as const))('js block %i runs', (i, code) => {
    const file = path.join(app.dir, `readme-${i}.mjs`);
    writeFileSync(file, code);
    const r = app.run(process.execPath, [file]);
    expect(r.status, `${r.stderr}\n--- block ${i}:\n${code}`).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(0);
  }, 120_000);

  it('the command-line examples that need no input file run', () => {
    const lines = [...readme.matchAll(/^npx esolm (generate [^#\n]*?)\s*(?:#.*)?$/gm)].map((m) => m[1]!.trim());
    expect(lines.length).toBeGreaterThanOrEqual(4);
    const bin = path.join(app.dir, 'node_modules', '.bin', 'esolm');
    for (const line of lines) {
      // Split like a shell would for these lines: double-quoted words or bare words.
      const args = [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
      if (args.includes('-m')) continue;  // needs a converted checkpoint
      const r = app.run(bin, [...args, '-n', '32']);
      expect(r.status, `${line}\n${r.stderr}`).toBe(0);
    }
  }, 300_000);
});
