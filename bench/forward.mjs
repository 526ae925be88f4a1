// bench/forward.mjs — CPU speed of the small Eso-LM network (hidden 768, 12 heads,
// 12 blocks, vocab 50258, random weights) against this machine's floors, measured in the
// same run: one 1024-token forward, and KV-cached steps of n = 2, 16, 128 tokens with 512
// committed (logits for the last n/2 rows, as an Eso-LM step needs), at batch 1 and more.
// Every figure is printed as a fraction of its floor: max(bytes read / streaming
// bandwidth, FLOPs / peak FMA) (bench/common.mjs). The process CPU time of the same calls is
// printed beside the wall time: on a shared machine it shows how much of a core the run got.
// --math f32,bf16 runs the model once per mode (Model.load math; bf16 needs --weights bf16
// and AVX512_BF16, int8 --weights q8 and AVX512_VNNI), its compute floor from the vdpbf16ps
// (vpdpbusd) peak, and prints the max |logit| error of each mode's causal forward against
// F32 math with the same weights.
// Usage: node bench/forward.mjs [--reps N] [--json out.json] [--threads N] [--weights f32|bf16|q8]
//        [--kernels auto|avx512,avx2,portable] [--math f32|bf16|int8|f32,bf16] [--batches 1,4,16]
//        [--ns 2,16,128] [--no-forward]
import { writeFileSync } from 'node:fs';
import { SMALL_CONFIG } from '../dist/testing.js';
import { cpuLine, floorMs, floorsLine, forwardFlops, loadLine, loadSmallModel, measureFloors, opt, useKernels, weightBytes } from './common.mjs';

const reps = Number(opt('--reps', '3'));
const threads = Number(opt('--threads', '0'));
const jsonOut = opt('--json', null);
const weights = opt('--weights', 'f32');  // CPU weight storage: f32 | bf16 | q8
const kernelsList = opt('--kernels', 'auto').split(',');
const mathList = opt('--math', 'f32').split(',');  // CPU matrix products: f32 | bf16 | int8
const batches = opt('--batches', '1').split(',').map(Number);
const withForward = !process.argv.includes('--no-forward');
const stepNs = opt('--ns', '2,16,128').split(',').map(Number);  // step window sizes

const cfg = SMALL_CONFIG;
const V = cfg.vocab_size;
const wBytes = weightBytes(cfg, { f32: 4, bf16: 2, q8: 1 }[weights]);
// K and V: BF16 under BF16 math (the CPU backend's kv_dtype), else F32.
const kvBytes = (slots, math) => 2 * slots * cfg.hidden_size * (math === 'bf16' ? 2 : 4) * cfg.n_blocks;
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
let exactLogits = null;  // the F32-math causal forward, for the BF16- and int8-math errors
for (const kernels of kernelsList) for (const math of mathList) {
  const kname = useKernels(kernels) + (math !== 'f32' ? `+${math} math` : '');
  const model = await loadSmallModel({ backend: 'cpu', threads, weights, math });
  const floors = measureFloors(threads);
  console.log(`\nkernels ${kname}: ${floorsLine(floors)}; ${loadLine()}`);
  runs.push({ kernels: kname, math, floors, load: loadLine() });
  const add = (c, { ms, cpuMs }, tokens, bytes, flops) => {
    const f = floorMs(floors, bytes, flops, math);
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
      if (attention !== 'causal') continue;
      if (math === 'f32') exactLogits = out.slice();
      else if (exactLogits) {
        let err = 0, scale = 0;
        for (let i = 0; i < out.length; i++) {
          err = Math.max(err, Math.abs(out[i] - exactLogits[i]));
          scale = Math.max(scale, Math.abs(exactLogits[i]));
        }
        runs.at(-1).logitError = { vsF32Math: err, maxLogit: scale };
        console.log(`max |logit error| of ${math} math vs f32 math (${weights} weights, ${L}-token causal forward) = ${err.toExponential(3)} (max |logit| ${scale.toFixed(2)})`);
      }
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
      add(`step n=${n} (c=${c}, logits for ${k})${batch > 1 ? ` batch ${batch}` : ''}`, t, batch * n, wBytes + batch * kvBytes(c + n, math), forwardFlops(cfg, batch * n, batch * k, pairs));
      cache.dispose();
    }
  }
  model.dispose();
}

console.log('\n| kernels | case | ms | cpu ms | floor ms | bound | of floor | tokens/s | GFLOP/s | GB/s |\n|---|---|---:|---:|---:|---|---:|---:|---:|---:|');
for (const r of rows) console.log(`| ${r.kernels} | ${r.case} | ${r.ms.toFixed(1)} | ${r.cpuMs.toFixed(0)} | ${r.floorMs.toFixed(1)} | ${r.bound} | ${(r.fraction * 100).toFixed(0)}% | ${r.tokensPerS.toFixed(0)} | ${r.gflops.toFixed(0)} | ${r.gbps.toFixed(1)} |`);
console.log(`\n${loadLine()}`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ cpu: cpuLine(), weights, reps, runs, rows, loadAfter: loadLine() }, null, 2));
