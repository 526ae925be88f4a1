// bench/batch.mjs — what a seed-grouped batch costs in the engine, without HTTP: the default
// model, one request alone vs 8 and 32 requests (seed groups, one shared plan seed) in one
// generation, and the same rows as one plain batch (one seed, the planned KV loop).
// Medians of --reps alternating runs; ms per generation and per sequence.
// Usage: node bench/batch.mjs [--reps 5] [--backend cpu|cuda|auto] [--json out.json]
import { cpus, loadavg } from 'node:os';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Model, Sampler } from '../dist/index.js';
import { opt } from './common.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const reps = Number(opt('--reps', '5'));
const jsonOut = opt('--json', null);
const model = await Model.load(path.join(root, 'models', 'default'), { backend: opt('--backend', 'cpu') });
// The default model's recommended sampling; 64 tokens after a 12-byte prompt (as bench/serve.mjs).
const sampler = new Sampler({ method: 'esolm', steps: 64, alpha0: 0.1, topP: 0.9, temperature: 0.7, seed: 1 });
const groups = (n) => Array.from({ length: n }, (_, i) => ({ seed: i, planSeed: 1, rows: 1 }));
const cases = [
  ['alone', 1, {}],
  ['8 seed groups', 8, { seedGroups: groups(8) }],
  ['8 rows, one seed', 8, { batch: 8 }],
  ['32 seed groups', 32, { seedGroups: groups(32) }],
  ['32 rows, one seed', 32, { batch: 32 }],
];
const times = cases.map(() => []);
for (let r = 0; r < reps; r++) {
  for (const [i, [, , o]] of cases.entries()) {
    const t0 = performance.now();
    await model.generate({ sampler, length: 76, prompt: 'And God said', ...o });
    times[i].push(performance.now() - t0);
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(`${model.backend}; ${cpus()[0]?.model} x ${cpus().length}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; medians of ${reps}`);
const rows = cases.map(([name, n], i) => ({ name, sequences: n, ms: median(times[i]), msPerSequence: median(times[i]) / n }));
for (const r of rows) console.log(`${r.name.padEnd(18)} ${r.ms.toFixed(0).padStart(6)} ms  ${r.msPerSequence.toFixed(1).padStart(6)} ms per sequence`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), cpu: cpus()[0]?.model, load: loadavg(), reps, rows }, null, 2) + '\n');
model.dispose();
