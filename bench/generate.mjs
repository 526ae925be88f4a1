// bench/generate.mjs — Eso-LM (B) vs MDLM vs AR (and Eso-LM (A)) on the same engine and model: the small
// configuration (hidden 768, 12 heads, 12 blocks, vocab 50258) with random weights,
// batch 1, top-p 0.9. Reports wall time, NFE, tokens/s and the MDLM / Eso-LM ratio as a
// markdown table and JSON.
// Usage: node bench/generate.mjs [--length 1024] [--steps 16,128,1024] [--methods esolm,mdlm,ar,esolm-a] [--alpha0 1]
//        [--mdlm-max-steps 128] [--backend cpu|cuda|auto] [--weights f32|bf16] [--json out.json]
// MDLM at T = 1024 costs ~650 full forwards (tens of minutes on 2 CPU cores): it runs only
// when --mdlm-max-steps allows it.
import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { Sampler, loadCpuAddon } from '../dist/index.js';
import { loadSmallModel, opt } from './common.mjs';

const L = Number(opt('--length', '1024'));
const stepsList = opt('--steps', '16,128,1024').split(',').map(Number);
const methods = opt('--methods', 'esolm,mdlm,ar').split(',');
const mdlmMax = Number(opt('--mdlm-max-steps', '128'));
const backend = opt('--backend', 'cpu');
const jsonOut = opt('--json', null);
const weights = opt('--weights', 'f32');  // CPU weight storage: f32 | bf16
const alpha0 = Number(opt('--alpha0', '1'));  // esolm and esolm-a

const model = await loadSmallModel({ backend, weights });
const cpu = cpus()[0]?.model ?? 'unknown CPU';
console.log(`backend ${model.backend}; CPU: ${cpu} x ${cpus().length}; kernels: ${loadCpuAddon().backendInfo().cpuKernels}; L = ${L}; weights ${weights}`);

const rows = [];
async function run(method, T) {
  const sampler = new Sampler({ method, steps: method === 'ar' ? undefined : T, ...(method.startsWith('esolm') ? { alpha0 } : {}), topP: 0.9, seed: 1, ...(method === 'ar' ? { bos: 50256 } : {}) });
  const t0 = performance.now();
  const r = await model.generate({ sampler, length: L });
  const ms = performance.now() - t0;
  const row = { method, L, T: method === 'ar' ? null : T, nfe: r.nfe, ms, tokensPerS: (L / ms) * 1e3, forwardMs: r.timings.forwardMs, sampleMs: r.timings.sampleMs };
  rows.push(row);
  console.log(`${method.padEnd(5)} T=${String(row.T ?? '-').padEnd(5)} NFE ${String(r.nfe).padEnd(5)} ${(ms / 1e3).toFixed(2)} s  ${row.tokensPerS.toFixed(1)} tokens/s`);
}

for (const T of stepsList) {
  if (methods.includes('esolm')) await run('esolm', T);
  if (methods.includes('esolm-a')) await run('esolm-a', T);
  if (methods.includes('mdlm') && T <= mdlmMax) await run('mdlm', T);
}
if (methods.includes('ar')) await run('ar', 0);

console.log('\n| method | L | T | NFE | seconds | tokens/s | time / Eso-LM (B) |\n|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const eso = rows.find((x) => x.method === 'esolm' && x.T === r.T);
  const ratio = (r.method === 'mdlm' || r.method === 'esolm-a') && eso ? `${(r.ms / eso.ms).toFixed(1)}x` : '';
  console.log(`| ${r.method} | ${r.L} | ${r.T ?? '-'} | ${r.nfe} | ${(r.ms / 1e3).toFixed(2)} | ${r.tokensPerS.toFixed(1)} | ${ratio} |`);
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ cpu, threads: cpus().length, backend: model.backend, weights, L, rows }, null, 2));
model.dispose();
