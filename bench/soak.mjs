// bench/soak.mjs — memory soak: 10,000 generations and 500 load/dispose cycles in one
// process on a tiny random model, sampling RSS and the V8 heap (after a GC when run with
// --expose-gc). Generations mix methods, streaming callbacks, caches, aborts and throwing
// callbacks, the paths that could leak native memory.
//   node --expose-gc bench/soak.mjs [--generations 10000] [--cycles 500] [--out file.json]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model, Sampler, writeRandomModel } from '../dist/index.js';
import { opt } from './common.mjs';

const GENERATIONS = Number(opt('--generations', 10_000));
const CYCLES = Number(opt('--cycles', 500));
const OUT = opt('--out', '');
const MiB = 2 ** 20;

const dir = mkdtempSync(path.join(os.tmpdir(), 'esolm-soak-'));
const config = { arch: 'esolm', hidden_size: 32, n_heads: 4, n_blocks: 2, cond_dim: 16, vocab_size: 61, mask_index: 60, length: 64 };
writeRandomModel(dir, config, { seed: 3, dtype: 'F32' });

function sample(phase, i) {
  globalThis.gc?.();
  const m = process.memoryUsage();
  return { phase, i, rssMiB: +(m.rss / MiB).toFixed(1), heapMiB: +(m.heapUsed / MiB).toFixed(1), externalMiB: +(m.external / MiB).toFixed(1) };
}

const samples = [];
const t0 = performance.now();
const model = await Model.load(dir, { backend: 'cpu', threads: 1 });
samples.push(sample('generate', 0));
const every = Math.max(1, Math.floor(GENERATIONS / 20));
let aborted = 0, threw = 0;
for (let i = 1; i <= GENERATIONS; i++) {
  const kind = i % 5;
  const sampler = new Sampler({ method: i % 2 ? 'esolm' : 'mdlm', steps: 8, alpha0: 0.5, seed: i });
  if (kind === 0) {
    await model.generate({ sampler, length: 32, batch: 2 });
  } else if (kind === 1) {
    let n = 0;
    await model.generate({ sampler, length: 32, onStep: () => { n++; } });
  } else if (kind === 2) {
    const cache = model.createCache({ batch: 1, capacity: 32 });
    await model.generate({ sampler, length: 32, cache });
    cache.dispose();
  } else if (kind === 3) {
    const ac = new AbortController();
    await model.generate({ sampler, length: 32, signal: ac.signal, onStep: () => ac.abort() }).catch((e) => { if (e.code === 'ERR_ABORTED') aborted++; else throw e; });
  } else {
    await model.generate({ sampler, length: 32, onStep: () => { throw new Error('x'); } }).catch((e) => { if (e.code === 'ERR_ABORTED') threw++; else throw e; });
  }
  if (i % every === 0) samples.push(sample('generate', i));
}
model.dispose();
const tGen = performance.now() - t0;

const t1 = performance.now();
const everyCycle = Math.max(1, Math.floor(CYCLES / 20));
samples.push(sample('load', 0));
for (let i = 1; i <= CYCLES; i++) {
  const m = await Model.load(dir, { backend: 'cpu', threads: 1 });
  await m.generate({ sampler: new Sampler({ method: 'mdlm', steps: 4, seed: i }), length: 16 });
  m.createCache({ batch: 1, capacity: 16 });  // left for dispose() to free
  m.dispose();
  if (i % everyCycle === 0) samples.push(sample('load', i));
}
const tLoad = performance.now() - t1;
rmSync(dir, { recursive: true, force: true });

// Flat: after warm-up (the first quarter of each phase), RSS moves less than 10 MiB.
function verdict(phase) {
  const s = samples.filter((x) => x.phase === phase);
  const warm = s.slice(Math.floor(s.length / 4));
  const rss = warm.map((x) => x.rssMiB), heap = warm.map((x) => x.heapMiB);
  const spread = Math.max(...rss) - Math.min(...rss);
  return { phase, first: s[0].rssMiB, afterWarmup: rss[0], last: rss[rss.length - 1], min: Math.min(...rss), max: Math.max(...rss),
    spreadMiB: +spread.toFixed(1), heapFirst: heap[0], heapLast: heap[heap.length - 1], flat: spread < 10 };
}
const result = {
  date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg: os.loadavg().map((x) => +x.toFixed(1)),
  gc: typeof globalThis.gc === 'function', generations: GENERATIONS, aborted, threw, cycles: CYCLES,
  seconds: { generate: +(tGen / 1000).toFixed(1), load: +(tLoad / 1000).toFixed(1) },
  verdicts: [verdict('generate'), verdict('load')], samples,
};
for (const v of result.verdicts) {
  console.log(`${v.phase}: RSS ${v.first} MiB at start, ${v.afterWarmup} after warm-up, ${v.last} at the end (min ${v.min}, max ${v.max}, spread ${v.spreadMiB} MiB); heap ${v.heapFirst} -> ${v.heapLast} MiB; ${v.flat ? 'flat' : 'NOT flat'}`);
}
console.log(`${GENERATIONS} generations (${aborted} aborted, ${threw} with a throwing onStep) in ${result.seconds.generate} s; ${CYCLES} load/dispose cycles in ${result.seconds.load} s; load average ${result.loadavg.join(' ')}`);
if (OUT) writeFileSync(OUT, JSON.stringify(result, null, 2) + '\n');
if (!result.verdicts.every((v) => v.flat)) process.exitCode = 1;
