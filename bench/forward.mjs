// bench/forward.mjs — CPU speed of the small Eso-LM network (hidden 768, 12 heads,
// 12 blocks, vocab 50258, random weights): one 1024-token forward, and KV-cached steps of
// n = 2, 16, 128 tokens with 512 committed (logits for the last n/2 rows, as an Eso-LM
// step needs). Prints ms, tokens/s and GFLOP/s (PERFORMANCE-NOTES.md §1.1 formulas).
// Usage: node bench/forward.mjs [--reps N] [--json out.json] [--threads N] [--weights f32|bf16]
import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { loadCpuAddon } from '../dist/index.js';
import { SMALL_CONFIG } from '../dist/testing.js';
import { loadSmallModel, opt } from './common.mjs';

const reps = Number(opt('--reps', '3'));
const threads = Number(opt('--threads', '0'));
const jsonOut = opt('--json', null);
const weights = opt('--weights', 'f32');  // CPU weight storage: f32 | bf16

const model = await loadSmallModel({ backend: 'cpu', threads, weights });
const info = loadCpuAddon().backendInfo();
const cpu = cpus()[0]?.model ?? 'unknown CPU';
console.log(`CPU: ${cpu} x ${cpus().length} threads; kernels: ${info.cpuKernels}; weights ${weights}; Node ${process.versions.node}`);

const V = SMALL_CONFIG.vocab_size;
const flops = (n, h, pairs) => n * 169.87e6 + h * 77.2e6 + 36864 * pairs;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rand = (n) => Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % (V - 1));

async function time(fn) {
  await fn(); // warm-up
  const ts = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

const rows = [];
const L = 1024;
for (const attention of ['causal', 'bidirectional']) {
  const tokens = rand(L);
  // One reused output buffer: a fresh 206 MB array per call mostly times page faults.
  const out = new Float32Array(L * V);
  const ms = await time(() => model.forward({ tokens, attention, out }));
  const pairs = attention === 'causal' ? (L * (L + 1)) / 2 : L * L;
  rows.push({ case: `forward ${L} tokens (${attention})`, ms, tokensPerS: (L / ms) * 1e3, gflops: flops(L, L, pairs) / ms / 1e6 });
}
const c = 512;
for (const n of [2, 16, 128]) {
  const cache = model.createCache({ batch: 1, capacity: c + n });
  // Fill the 512 committed slots once (not timed), then time steps that commit nothing.
  await model.step(cache, { tokens: rand(c), commit: c, logitsFrom: c });
  const k = n / 2;
  const tokens = rand(n);
  const ms = await time(() => model.step(cache, { tokens, commit: 0, logitsFrom: n - k }));
  rows.push({ case: `step n=${n} (c=${c}, logits for ${k})`, ms, tokensPerS: (n / ms) * 1e3, gflops: flops(n, k, n * c + (n * (n + 1)) / 2) / ms / 1e6 });
  cache.dispose();
}

console.log('\n| case | ms | tokens/s | GFLOP/s |\n|---|---:|---:|---:|');
for (const r of rows) console.log(`| ${r.case} | ${r.ms.toFixed(1)} | ${r.tokensPerS.toFixed(0)} | ${r.gflops.toFixed(1)} |`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ cpu, threads: cpus().length, kernels: info.cpuKernels, weights, reps, rows }, null, 2));
model.dispose();
