// bench/generate.mjs — Eso-LM (B) vs MDLM vs AR on the same engine and model: the small
// configuration (hidden 768, 12 heads, 12 blocks, vocab 50258) with random weights,
// top-p 0.9, at batch 1 (and more with --batches). Reports wall time, NFE, tokens/s and
// the MDLM / Eso-LM ratio, with the machine floors measured in the same run:
//   floor = max(bytes / streaming read bandwidth, FLOPs / peak FMA), where the bytes are
//   the weights once per NFE plus the F32 K/V cache a cached step must read (the slots of
//   every token revealed before the step, counted from the step events of an untimed run,
//   for Eso-LM (B) and AR; none for the full forwards of MDLM and Eso-LM (A)), and the
//   FLOPs count each position through the blocks twice (once masked, once committed; AR
//   once), the head once per position and causal attention over the whole sequence — a
//   lower bound, so "of floor" never flatters.
// Usage: node bench/generate.mjs [--length 1024] [--steps 16,128,1024] [--methods esolm,mdlm,ar,esolm-a] [--alpha0 1]
//        [--mdlm-max-steps 128] [--backend cpu|cuda|auto] [--weights f32|bf16|q8] [--batches 1,4,16]
//        [--kernels auto|avx512,avx2,portable] [--math f32|bf16|int8|f32,int8] [--repeat N] [--threads N] [--json out.json] [--no-paired]
// --threads N: CPU threads (0 = all cores). --math runs the model once per CPU math mode
// (Model.load math; bf16 needs --weights bf16, int8 --weights q8), the compute floor from
// that mode's peak instruction; --repeat N runs every case N times, the modes interleaved
// (A B A B ...) so that a load change on a shared machine hits both alike, and the table
// gives each case's median.
// The bandwidth of a shared host moves by +-30% within seconds, so each bandwidth-bound
// run (Eso-LM (B), AR on the CPU) also gets a paired floor: a streaming read of its own bytes
// right before and right after it (the mean of the two; --no-paired skips them), printed
// beside the floor from the best short read of the run's start.
// MDLM at T = 1024 costs ~650 full forwards (tens of minutes on 2 CPU cores): it runs only
// when --mdlm-max-steps allows it.
import { writeFileSync } from 'node:fs';
import { Sampler } from '../dist/index.js';
import { SMALL_CONFIG } from '../dist/testing.js';
import { streamingReadMs, cpuLine, floorMs, floorsLine, forwardFlops, loadLine, loadSmallModel, measureFloors, opt, useKernels, weightBytes } from './common.mjs';

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
const mathList = opt('--math', 'f32').split(',');  // CPU matrix products: f32 | bf16 | int8
const repeat = Number(opt('--repeat', '1'));
const threads = Number(opt('--threads', '0'));
const paired = !process.argv.includes('--no-paired');

const cfg = SMALL_CONFIG;
const wBytes = weightBytes(cfg, { f32: 4, bf16: 2, q8: 1 }[weights]);
console.log(`CPU: ${cpuLine()}; backend ${backend}; L = ${L}; weights ${weights}; math ${mathList.join(",")}; Node ${process.versions.node}; ${loadLine()}`);

const rows = [];
const runs = [];
const slotCounts = new Map();  // K/V slots read per sequence, by method|T|batch (run())
for (const kernels of kernelsList) {
  const kbase = backend === 'cuda' ? 'cuda' : useKernels(kernels);
  const variants = [];
  for (const math of mathList)
    variants.push({ math, kname: kbase + (math !== 'f32' ? `+${math} math` : ''), model: await loadSmallModel({ backend, weights, math, threads }) });
  const floors = variants[0].model.backend === 'cpu' ? measureFloors(threads) : null;
  if (floors) console.log(`\nkernels ${kbase}: ${floorsLine(floors)}; ${loadLine()}`);
  runs.push({ kernels: kbase, math: mathList, floors, load: loadLine() });

  let model, kname, math, round;
  const newSampler = (method, T) => new Sampler({ method, steps: method === 'ar' ? undefined : T, ...(method.startsWith('esolm') ? { alpha0 } : {}), topP: 0.9, seed: 1, ...(method === 'ar' ? { bos: 50256 } : {}) });
  async function run(method, T, batch) {
    const cached = method === 'esolm' || method === 'ar';
    // Per sequence: the K/V slots the cached steps must read, counted from the step events
    // of an untimed run first (the plan, and so the count, depends on the seed only): a
    // step callback in the timed run would wake the event loop 1000 times, on the same
    // two cores (~2% of a 1024-step generation here).
    const key = `${method}|${T}|${batch}`;
    if (cached && !slotCounts.has(key)) {
      let revealed = 0, slotsRead = 0;
      const warm = await model.generate({ sampler: newSampler(method, T), length: L, batch, onStep: (e) => { slotsRead += revealed; revealed += e.perSequence; } });
      slotCounts.set(key, { slotsRead, nfe: warm.nfe });
    }
    const slotsRead = cached ? slotCounts.get(key).slotsRead : 0;
    const passes = method === 'ar' ? 1 : 2;  // see the floor in the header
    const flops = batch * (forwardFlops(cfg, passes * L, L, (L * (L + 1)) / 2));
    // K and V: BF16 under BF16 math (the CPU backend's kv_dtype), else F32.
    const kvBytes = batch * slotsRead * 2 * cfg.hidden_size * (math === 'bf16' ? 2 : 4) * cfg.n_blocks;
    // The paired floor's read (header), of the bytes the untimed run's NFE implies.
    const pairedBytes = cached ? slotCounts.get(key).nfe * wBytes + kvBytes : 0;
    const withPaired = paired && floors && cached && floorMs(floors, pairedBytes, flops, math).bound === 'bandwidth';
    const readBefore = withPaired ? streamingReadMs(threads, pairedBytes) : null;
    const sampler = newSampler(method, T);
    const t0 = performance.now();
    const r = await model.generate({ sampler, length: L, batch });
    const ms = performance.now() - t0;
    const readAfter = withPaired ? streamingReadMs(threads, pairedBytes) : null;
    const f = floors ? floorMs(floors, r.nfe * wBytes + kvBytes, flops, math) : null;
    const pairedMs = withPaired ? (readBefore + readAfter) / 2 : null;
    const row = { kernels: kname, math, round, method, L, T: method === 'ar' ? null : T, batch, nfe: r.nfe, ms, tokensPerS: (batch * L / ms) * 1e3,
      forwardMs: r.timings.forwardMs, sampleMs: r.timings.sampleMs, kvBytes, floorMs: f?.ms ?? null, bound: f?.bound ?? null, fraction: f ? f.ms / ms : null,
      pairedReadMs: withPaired ? [readBefore, readAfter] : null, pairedFloorMs: pairedMs, pairedFraction: withPaired ? pairedMs / ms : null };
    rows.push(row);
    console.log(`${kname.padEnd(16)} ${method.padEnd(5)} T=${String(row.T ?? '-').padEnd(5)} batch ${String(batch).padEnd(3)} NFE ${String(r.nfe).padEnd(5)} ${(ms / 1e3).toFixed(2)} s  ${row.tokensPerS.toFixed(1)} tokens/s` +
      (f ? `  floor ${(f.ms / 1e3).toFixed(2)} s (${f.bound}), ${(row.fraction * 100).toFixed(0)}% of floor` : '') +
      (withPaired ? `; paired read ${(readBefore / 1e3).toFixed(2)} / ${(readAfter / 1e3).toFixed(2)} s, ${(row.pairedFraction * 100).toFixed(0)}% of it` : '') + `  [${loadLine()}]`);
  }

  for (round = 0; round < repeat; round++) {
    for (const batch of batches) {
      for (const T of stepsList) {
        for (const method of ['esolm', 'esolm-a', 'mdlm']) {
          if (!methods.includes(method) || (method === 'mdlm' && T > mdlmMax)) continue;
          for (const v of variants) {
            ({ model, kname, math } = v);
            await run(method, T, batch);
          }
        }
      }
      if (!methods.includes('ar')) continue;
      for (const v of variants) {
        ({ model, kname, math } = v);
        await run('ar', 0, batch);
      }
    }
  }
  for (const v of variants) v.model.dispose();
}

// One row per case: the median over the rounds (seconds, tokens/s and fraction follow it).
const cases = [];
for (const r of rows) {
  const c = cases.find((x) => x.kernels === r.kernels && x.method === r.method && x.T === r.T && x.batch === r.batch);
  if (c) c.all.push(r);
  else cases.push({ kernels: r.kernels, method: r.method, T: r.T, batch: r.batch, all: [r] });
}
const medians = cases.map((c) => {
  const sorted = c.all.slice().sort((a, b) => a.ms - b.ms);
  const mid = sorted[(sorted.length - 1) >> 1];
  return { ...mid, rounds: sorted.length, allMs: c.all.map((r) => r.ms) };
});
console.log(`\n| kernels | method | L | T | batch | NFE | seconds${repeat > 1 ? ` (median of ${repeat})` : ''} | tokens/s | floor s | of floor | paired floor s | of paired | time / Eso-LM (B) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`);
for (const r of medians) {
  const eso = medians.find((x) => x.kernels === r.kernels && x.method === 'esolm' && x.T === r.T && x.batch === r.batch);
  const ratio = (r.method === 'mdlm' || r.method === 'esolm-a') && eso ? `${(r.ms / eso.ms).toFixed(1)}x` : '';
  const fl = r.floorMs === null ? '' : (r.floorMs / 1e3).toFixed(2);
  const fr = r.fraction === null ? '' : `${(r.fraction * 100).toFixed(0)}%`;
  const pfl = r.pairedFloorMs === null ? '' : (r.pairedFloorMs / 1e3).toFixed(2);
  const pfr = r.pairedFraction === null ? '' : `${(r.pairedFraction * 100).toFixed(0)}%`;
  console.log(`| ${r.kernels} | ${r.method} | ${r.L} | ${r.T ?? '-'} | ${r.batch} | ${r.nfe} | ${(r.ms / 1e3).toFixed(2)} | ${r.tokensPerS.toFixed(1)} | ${fl} | ${fr} | ${pfl} | ${pfr} | ${ratio} |`);
}
console.log(`\n${loadLine()}`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ cpu: cpuLine(), backend, weights, L, runs, rows, medians, loadAfter: loadLine() }, null, 2));
