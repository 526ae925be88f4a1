// bench/math-ab.mjs — F32 math against BF16 math (Model.load math: 'bf16', AVX512_BF16) on
// the small model with BF16 weights, the two models loaded side by side and their calls
// interleaved, so that both see the same load on a shared machine: a 1024-token causal
// forward and cached steps of n = 2 and 128 tokens after 512 (as bench/forward.mjs). Prints
// the best and median wall time, the best process CPU time (less sensitive to other
// processes taking the cores) and their ratios, and the max |logit| error of the forward.
// Usage: node bench/math-ab.mjs [--reps 8] [--threads 0] [--json out.json]
import { writeFileSync } from 'node:fs';
import { loadCpuAddon } from '../dist/index.js';
import { SMALL_CONFIG } from '../dist/testing.js';
import { cpuLine, loadLine, loadSmallModel, measureFloors, floorsLine, opt } from './common.mjs';

const reps = Number(opt('--reps', '8'));
const threads = Number(opt('--threads', '0'));
const jsonOut = opt('--json', null);
const why = loadCpuAddon().backendInfo().cpuBf16MathError;
if (why) throw new Error(`BF16 math cannot run here: ${why}`);
const V = SMALL_CONFIG.vocab_size, L = 1024, c = 512;
const rand = (n) => Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % (V - 1));
console.log(`CPU: ${cpuLine()}; Node ${process.versions.node}; ${loadLine()}`);
const floors = measureFloors(threads);
console.log(floorsLine(floors));

const models = {
  f32: await loadSmallModel({ backend: 'cpu', threads, weights: 'bf16' }),
  bf16: await loadSmallModel({ backend: 'cpu', threads, weights: 'bf16', math: 'bf16' }),
};
const tokens = rand(L);
const outs = { f32: new Float32Array(L * V), bf16: new Float32Array(L * V) };
const caches = {};
for (const [name, m] of Object.entries(models)) {
  caches[name] = {};
  for (const n of [2, 128]) {
    const cache = m.createCache({ batch: 1, capacity: c + n });
    await m.step(cache, { tokens: rand(c), commit: c, logitsFrom: c });
    caches[name][n] = cache;
  }
}
const cases = {
  'forward 1024 tokens (causal)': (name) => models[name].forward({ tokens, attention: 'causal', out: outs[name] }),
  'step n=2 (c=512, logits for 1)': (name) => models[name].step(caches[name][2], { tokens: rand(2), commit: 0, logitsFrom: 1 }),
  'step n=128 (c=512, logits for 64)': (name) => models[name].step(caches[name][128], { tokens: rand(128), commit: 0, logitsFrom: 64 }),
};
const rows = [];
for (const [label, run] of Object.entries(cases)) {
  const t = { f32: [], bf16: [] };
  for (const name of ['f32', 'bf16']) await run(name);  // warm-up
  for (let r = 0; r < reps; r++) {
    for (const name of r % 2 ? ['bf16', 'f32'] : ['f32', 'bf16']) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await run(name);
      const ms = performance.now() - t0, cpu = process.cpuUsage(c0);
      t[name].push({ ms, cpuMs: (cpu.user + cpu.system) / 1e3 });
    }
  }
  const stat = (xs) => {
    const w = xs.map((x) => x.ms).sort((a, b) => a - b), u = xs.map((x) => x.cpuMs).sort((a, b) => a - b);
    return { bestMs: w[0], medianMs: w[Math.floor(w.length / 2)], bestCpuMs: u[0] };
  };
  const row = { case: label, f32: stat(t.f32), bf16: stat(t.bf16) };
  rows.push(row);
  console.log(`${label.padEnd(36)} f32 math best ${row.f32.bestMs.toFixed(1)} ms (median ${row.f32.medianMs.toFixed(1)}, CPU ${row.f32.bestCpuMs.toFixed(0)}), ` +
    `bf16 math best ${row.bf16.bestMs.toFixed(1)} ms (median ${row.bf16.medianMs.toFixed(1)}, CPU ${row.bf16.bestCpuMs.toFixed(0)}): ` +
    `${(row.f32.bestMs / row.bf16.bestMs).toFixed(2)}x by best wall, ${(row.f32.bestCpuMs / row.bf16.bestCpuMs).toFixed(2)}x by CPU time`);
}
let err = 0, scale = 0;
for (let i = 0; i < outs.f32.length; i++) {
  err = Math.max(err, Math.abs(outs.bf16[i] - outs.f32[i]));
  scale = Math.max(scale, Math.abs(outs.f32[i]));
}
console.log(`max |logit error| of bf16 math vs f32 math (BF16 weights, ${L}-token causal forward): ${err.toExponential(3)} (max |logit| ${scale.toFixed(2)})`);
for (const n of Object.values(caches)) for (const cache of Object.values(n)) cache.dispose();
for (const m of Object.values(models)) m.dispose();
console.log(loadLine());
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ cpu: cpuLine(), threads, reps, floors, rows, logitError: { vsF32Math: err, maxLogit: scale }, loadAfter: loadLine() }, null, 2));
