// bench/forward.mjs — CPU speed of the small Eso-LM network (hidden 768, 12 heads,
// 12 blocks, vocab 50258, random weights) against this machine's floors, measured in the
// same run: one 1024-token forward, and KV-cached steps of n = 2, 16, 128 tokens with 512
// committed (logits for the last n/2 rows, as an Eso-LM step needs), at batch 1 and more.
// Every figure is printed as a fraction of its floor: max(bytes read / streaming
// bandwidth, FLOPs / peak FMA) (bench/common.mjs). The process CPU time of the same calls is
// printed beside the wall time: on a shared machine it shows how much of a core the run got.
// Usage: node bench/forward.mjs [--reps N] [--json out.json] [--threads N] [--weights f32|bf16|q8]
//        [--kernels auto|avx512,avx2,portable] [--batches 1,4,16] [--ns 2,16,128] [--no-forward]
import { writeFileSync } from 'node:fs';
import { SMALL_CONFIG } from '../dist/testing.js';
import { cpuLine, floorMs, floorsLine, forwardFlops, loadLine, loadSmallModel, measureFloors, opt, useKernels, weightBytes } from './common.mjs';

const reps = Number(opt('--reps', '3'));
const threads = Number(opt('--threads', '0'));
const jsonOut = opt('--json', null);
const weights = opt('--weights', 'f32');  // CPU weight storage: f32 | bf16 | q8
const kernelsList = opt('--kernels', 'auto').split(',');
const batches = opt('--batches', '1').split(',').map(Number);
const withForward = !process.argv.includes('--no-forward');
const stepNs = opt('--ns', '2,16,128').split(',').map(Number);  // step window sizes

const cfg = SMALL_CONFIG;
const V = cfg.vocab_size;
const wBytes = weightBytes(cfg, { f32: 4, bf16: 2, q8: 1 }[weights]);
const kvBytes = (slots) => 2 * slots * cfg.hidden_size * 4 * cfg.n_blocks;  // F32 K and V
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rand = (n) => Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % (V - 1));
console.log(`CPU: ${cpuLine()}; weights ${weights}; Node ${process.versions.node}; ${loadLine()}`);

// Median wall ms of `reps` calls after a warm-up, and the median process CPU ms of the same calls.
async function time(fn) {
  await fn(); // warm-up
  const ts = [], cpu = [];
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e3);
  }
  return { ms: median(ts), cpuMs: median(cpu) };
}

const rows = [];
const runs = [];
for (const kernels of kernelsList) {
  const kname = useKernels(kernels);
  const model = await loadSmallModel({ backend: 'cpu', threads, weights });
  const floors = measureFloors(threads);
  console.log(`\nkernels ${kname}: ${floorsLine(floors)}; ${loadLine()}`);
  runs.push({ kernels: kname, floors, load: loadLine() });
  const add = (c, { ms, cpuMs }, tokens, bytes, flops) => {
    const f = floorMs(floors, bytes, flops);
    const row = { kernels: kname, case: c, ms, cpuMs, tokensPerS: (tokens / ms) * 1e3, gflops: flops / ms / 1e6, gbps: bytes / ms / 1e6, floorMs: f.ms, bound: f.bound, fraction: f.ms / ms };
    rows.push(row);
    console.log(`${c.padEnd(44)} ${ms.toFixed(1).padStart(8)} ms (cpu ${cpuMs.toFixed(0)} ms)  floor ${f.ms.toFixed(1)} ms (${f.bound})  ${(row.fraction * 100).toFixed(0)}% of floor`);
  };
  const L = 1024;
  if (withForward) {
    for (const attention of ['causal', 'bidirectional']) {
      const tokens = rand(L);
      // One reused output buffer: a fresh 206 MB array per call mostly times page faults.
      const out = new Float32Array(L * V);
      const t = await time(() => model.forward({ tokens, attention, out }));
      const pairs = attention === 'causal' ? (L * (L + 1)) / 2 : L * L;
      add(`forward ${L} tokens (${attention})`, t, L, wBytes, forwardFlops(cfg, L, L, pairs));
    }
  }
  const c = 512;
  for (const batch of batches) {
    for (const n of stepNs) {
      const cache = model.createCache({ batch, capacity: c + n });
      // Fill the 512 committed slots once (not timed), then time steps that commit nothing.
      await model.step(cache, { tokens: rand(batch * c), commit: c, logitsFrom: c });
      const k = n / 2;
      const tokens = rand(batch * n);
      const t = await time(() => model.step(cache, { tokens, commit: 0, logitsFrom: n - k }));
      const pairs = batch * (n * c + (n * (n + 1)) / 2);
      add(`step n=${n} (c=${c}, logits for ${k})${batch > 1 ? ` batch ${batch}` : ''}`, t, batch * n, wBytes + batch * kvBytes(c + n), forwardFlops(cfg, batch * n, batch * k, pairs));
      cache.dispose();
    }
  }
  model.dispose();
}

console.log('\n| kernels | case | ms | cpu ms | floor ms | bound | of floor | tokens/s | GFLOP/s | GB/s |\n|---|---|---:|---:|---:|---|---:|---:|---:|---:|');
for (const r of rows) console.log(`| ${r.kernels} | ${r.case} | ${r.ms.toFixed(1)} | ${r.cpuMs.toFixed(0)} | ${r.floorMs.toFixed(1)} | ${r.bound} | ${(r.fraction * 100).toFixed(0)}% | ${r.tokensPerS.toFixed(0)} | ${r.gflops.toFixed(0)} | ${r.gbps.toFixed(1)} |`);
console.log(`\n${loadLine()}`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ cpu: cpuLine(), weights, reps, runs, rows, loadAfter: loadLine() }, null, 2));
