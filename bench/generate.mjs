// bench/generate.mjs — Eso-LM (B) vs MDLM vs AR on the same engine and model: the small
// configuration (hidden 768, 12 heads, 12 blocks, vocab 50258) with random weights,
// top-p 0.9, at batch 1 (and more with --batches). Reports wall time, NFE, tokens/s and
// the MDLM / Eso-LM ratio, with the machine floors measured in the same run:
//   floor = max(bytes / streaming read bandwidth, FLOPs / peak FMA), where the bytes are
//   the weights once per NFE plus the F32 K/V cache a cached step must read (the slots of
//   every token revealed before the step, counted from the step events, for Eso-LM (B) and
//   AR; none for the full forwards of MDLM and Eso-LM (A)), and the FLOPs count each position
//   through the blocks twice (once masked, once committed; AR once), the head once per
//   position and causal attention over the whole sequence — a lower bound, so "of floor"
//   never flatters.
// Usage: node bench/generate.mjs [--length 1024] [--steps 16,128,1024] [--methods esolm,mdlm,ar,esolm-a] [--alpha0 1]
//        [--mdlm-max-steps 128] [--backend cpu|cuda|auto] [--weights f32|bf16|q8] [--batches 1,4,16]
//        [--kernels auto|avx512,avx2,portable] [--json out.json]
// MDLM at T = 1024 costs ~650 full forwards (tens of minutes on 2 CPU cores): it runs only
// when --mdlm-max-steps allows it.
import { writeFileSync } from 'node:fs';
import { Sampler } from '../dist/index.js';
import { SMALL_CONFIG } from '../dist/testing.js';
import { cpuLine, floorMs, floorsLine, forwardFlops, loadLine, loadSmallModel, measureFloors, opt, useKernels, weightBytes } from './common.mjs';

const L = Number(opt('--length', '1024'));
const stepsList = opt('--steps', '16,128,1024').split(',').map(Number);
const methods = opt('--methods', 'esolm,mdlm,ar').split(',');
const alpha0 = Number(opt('--alpha0', '1'));  // esolm and esolm-a
const mdlmMax = Number(opt('--mdlm-max-steps', '128'));
const backend = opt('--backend', 'cpu');
const jsonOut = opt('--json', null);
const weights = opt('--weights', 'f32');  // CPU weight storage: f32 | bf16 | q8
const batches = opt('--batches', '1').split(',').map(Number);
const kernelsList = opt('--kernels', 'auto').split(',');

const cfg = SMALL_CONFIG;
const wBytes = weightBytes(cfg, { f32: 4, bf16: 2, q8: 1 }[weights]);
console.log(`CPU: ${cpuLine()}; backend ${backend}; L = ${L}; weights ${weights}; Node ${process.versions.node}; ${loadLine()}`);

const rows = [];
const runs = [];
for (const kernels of kernelsList) {
  const kname = backend === 'cuda' ? 'cuda' : useKernels(kernels);
  const model = await loadSmallModel({ backend, weights });
  const floors = model.backend === 'cpu' ? measureFloors(0) : null;
  if (floors) console.log(`\nkernels ${kname}: ${floorsLine(floors)}; ${loadLine()}`);
  runs.push({ kernels: kname, floors, load: loadLine() });

  async function run(method, T, batch) {
    const sampler = new Sampler({ method, steps: method === 'ar' ? undefined : T, ...(method.startsWith('esolm') ? { alpha0 } : {}), topP: 0.9, seed: 1, ...(method === 'ar' ? { bos: 50256 } : {}) });
    const cached = method === 'esolm' || method === 'ar';
    let revealed = 0, slotsRead = 0;  // per sequence: K/V slots the cached steps must read
    const onStep = cached ? (e) => { slotsRead += revealed; revealed += e.perSequence; } : undefined;
    const t0 = performance.now();
    const r = await model.generate({ sampler, length: L, batch, onStep });
    const ms = performance.now() - t0;
    const passes = method === 'ar' ? 1 : 2;  // see the floor in the header
    const flops = batch * (forwardFlops(cfg, passes * L, L, (L * (L + 1)) / 2));
    const kvBytes = batch * slotsRead * 2 * cfg.hidden_size * 4 * cfg.n_blocks;  // F32 K and V
    const f = floors ? floorMs(floors, r.nfe * wBytes + kvBytes, flops) : null;
    const row = { kernels: kname, method, L, T: method === 'ar' ? null : T, batch, nfe: r.nfe, ms, tokensPerS: (batch * L / ms) * 1e3,
      forwardMs: r.timings.forwardMs, sampleMs: r.timings.sampleMs, kvBytes, floorMs: f?.ms ?? null, bound: f?.bound ?? null, fraction: f ? f.ms / ms : null };
    rows.push(row);
    console.log(`${method.padEnd(5)} T=${String(row.T ?? '-').padEnd(5)} batch ${String(batch).padEnd(3)} NFE ${String(r.nfe).padEnd(5)} ${(ms / 1e3).toFixed(2)} s  ${row.tokensPerS.toFixed(1)} tokens/s` +
      (f ? `  floor ${(f.ms / 1e3).toFixed(2)} s (${f.bound}), ${(row.fraction * 100).toFixed(0)}% of floor` : '') + `  [${loadLine()}]`);
  }

  for (const batch of batches) {
    for (const T of stepsList) {
      if (methods.includes('esolm')) await run('esolm', T, batch);
      if (methods.includes('esolm-a')) await run('esolm-a', T, batch);
      if (methods.includes('mdlm') && T <= mdlmMax) await run('mdlm', T, batch);
    }
    if (methods.includes('ar')) await run('ar', 0, batch);
  }
  model.dispose();
}

console.log('\n| kernels | method | L | T | batch | NFE | seconds | tokens/s | floor s | of floor | time / Eso-LM (B) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const eso = rows.find((x) => x.kernels === r.kernels && x.method === 'esolm' && x.T === r.T && x.batch === r.batch);
  const ratio = (r.method === 'mdlm' || r.method === 'esolm-a') && eso ? `${(r.ms / eso.ms).toFixed(1)}x` : '';
  const fl = r.floorMs === null ? '' : (r.floorMs / 1e3).toFixed(2);
  const fr = r.fraction === null ? '' : `${(r.fraction * 100).toFixed(0)}%`;
  console.log(`| ${r.kernels} | ${r.method} | ${r.L} | ${r.T ?? '-'} | ${r.batch} | ${r.nfe} | ${(r.ms / 1e3).toFixed(2)} | ${r.tokensPerS.toFixed(1)} | ${fl} | ${fr} | ${ratio} |`);
}
console.log(`\n${loadLine()}`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ cpu: cpuLine(), backend, weights, L, runs, rows, loadAfter: loadLine() }, null, 2));
