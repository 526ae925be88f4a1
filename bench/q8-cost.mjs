// bench/q8-cost.mjs — what 8-bit weights (Model.load weights: 'q8') cost in accuracy:
//   1. the max |logit| error on the small random model (hidden 768, 12 blocks) against its
//      F32 weights, beside the BF16 error, BF16 math's (math: 'bf16', where the CPU has
//      AVX512_BF16) and int8 math's on q8 weights (math: 'int8', where it has AVX512_VNNI)
//      (one 256-token causal forward);
//   2. the default model's hybrid NELBO (alpha0 = 0.25, bits per byte) on the KJV hold-out
//      (the last 2 % of verses, as tools/train_default_model.py splits it), BF16 file as
//      loaded by default vs q8 (and BF16 math), with the same draws;
//   3. greedy generation agreement of the default model, BF16 vs q8 (and BF16 math; tokens
//      equal by position);
//   4. the q8 file format: the small model converted to BF16 and then with `esolm convert
//      --dtype q8` (I8 matrices + F32 row scales, the rest BF16), both file sizes, and that the
//      q8 file loaded as is runs exactly as the BF16 file loaded with weights 'q8'; the default
//      model's file sizes likewise.
// Usage: sh tools/kjv_corpus.sh /tmp/esolm-kjv/kjv.txt   (needs apt-get install bible-kjv)
//        node bench/q8-cost.mjs [--corpus /tmp/esolm-kjv/kjv.txt] [--rows N] [--seeds 16] [--json out.json] [--small-only]
//        (--small-only: sections 4 and 1, which need no corpus)
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model, Sampler, loadCpuAddon } from '../dist/index.js';
import { convertCheckpoint } from '../dist/checkpoint/convert.js';
import { cpuLine, loadLine, loadSmallModel, opt } from './common.mjs';

const corpus = opt('--corpus', '/tmp/esolm-kjv/kjv.txt');
const smallOnly = process.argv.includes('--small-only');  // sections 4 and 1
const maxRows = Number(opt('--rows', '0'));
const seeds = Number(opt('--seeds', '16'));
const jsonOut = opt('--json', null);
const out = { cpu: cpuLine(), load: loadLine() };
console.log(`CPU: ${cpuLine()}; ${loadLine()}`);

// 4. file format (first, like 1 it needs no corpus)
{
  const small = await loadSmallModel({ backend: 'cpu', weights: 'f32' });  // writes the F32 folder once
  const f32Dir = small.dir;
  small.dispose();
  const bf16Dir = path.join(os.tmpdir(), `esolm-bench-small-bf16-${process.pid}`);
  const q8Dir = path.join(os.tmpdir(), `esolm-bench-small-q8-${process.pid}`);
  const defaultQ8Dir = path.join(os.tmpdir(), `esolm-bench-default-q8-${process.pid}`);
  try {
    await convertCheckpoint(f32Dir, bf16Dir, { dtype: 'bf16' });
    await convertCheckpoint(bf16Dir, q8Dir, { dtype: 'q8' });
    const size = (d) => statSync(path.join(d, 'model.safetensors')).size;
    const tokens = Int32Array.from({ length: 256 }, (_, i) => (i * 7919 + 13) % 50257);
    const run = async (d, weights) => {
      const m = await Model.load(d, { backend: 'cpu', weights });
      const r = await m.forward({ tokens });
      m.dispose();
      return r;
    };
    const a = await run(bf16Dir, 'q8'), b = await run(q8Dir, 'auto');
    const identical = a.length === b.length && a.every((v, i) => v === b[i]);
    out.files = { bf16Bytes: size(bf16Dir), q8Bytes: size(q8Dir), q8FileRunsAsBf16WithQ8: identical };
    await convertCheckpoint('models/default', defaultQ8Dir, { dtype: 'q8' });
    out.files.defaultModel = { bf16Bytes: size('models/default'), q8Bytes: size(defaultQ8Dir) };
    console.log(`small model files: BF16 ${(size(bf16Dir) / 2 ** 20).toFixed(1)} MiB, q8 (esolm convert --dtype q8) ` +
      `${(size(q8Dir) / 2 ** 20).toFixed(1)} MiB = ${(size(q8Dir) / size(bf16Dir)).toFixed(3)} of BF16; ` +
      `q8 file logits identical to the BF16 file with weights 'q8': ${identical}`);
    console.log(`default model files: BF16 ${(size('models/default') / 2 ** 20).toFixed(2)} MiB, q8 ${(size(defaultQ8Dir) / 2 ** 20).toFixed(2)} MiB ` +
      `= ${(size(defaultQ8Dir) / size('models/default')).toFixed(3)} of BF16`);
  } finally {
    for (const d of [bf16Dir, q8Dir, defaultQ8Dir]) if (existsSync(d)) rmSync(d, { recursive: true, force: true });
  }
}
// 1. logits error, small random model
{
  const tokens = Int32Array.from({ length: 256 }, (_, i) => (i * 7919 + 13) % 50257);
  const ref = await loadSmallModel({ backend: 'cpu', weights: 'f32' });
  const want = await ref.forward({ tokens });
  ref.dispose();
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  out.logits = { scale };
  const variants = [['bf16', { weights: 'bf16' }], ['q8', { weights: 'q8' }]];
  if (loadCpuAddon().backendInfo().cpuBf16Math) variants.push(['bf16 math', { weights: 'bf16', math: 'bf16' }]);
  if (loadCpuAddon().backendInfo().cpuInt8Math) variants.push(['q8 + int8 math', { weights: 'q8', math: 'int8' }]);
  for (const [weights, options] of variants) {
    const m = await loadSmallModel({ backend: 'cpu', ...options });
    const got = await m.forward({ tokens });
    m.dispose();
    let err = 0;
    for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
    out.logits[weights] = err;
    console.log(`small model, 256-token forward: max |logit error| ${weights} vs F32 = ${err.toExponential(3)} (max |logit| ${scale.toFixed(2)})`);
  }
}

if (smallOnly) {
  console.log(loadLine());
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(out, null, 2));
  process.exit(0);
}

// 2. NELBO on the KJV hold-out, 3. greedy agreement
const lines = readFileSync(corpus).toString('latin1').split('\n').filter((l) => l.length > 0);
const nval = Math.max(1, Math.round(lines.length * 0.02));
const val = Buffer.from(lines.slice(-nval).join('\n') + '\n', 'latin1');
const models = { bf16: await Model.load('models/default', { backend: 'cpu' }), q8: await Model.load('models/default', { backend: 'cpu', weights: 'q8' }) };
if (loadCpuAddon().backendInfo().cpuBf16Math) models['bf16 math'] = await Model.load('models/default', { backend: 'cpu', math: 'bf16' });
const L = models.bf16.config.length;
let nrows = Math.floor(val.length / L);
if (maxRows > 0) nrows = Math.min(nrows, maxRows);
const rows = Array.from({ length: nrows }, (_, r) => Int32Array.from(val.subarray(r * L, (r + 1) * L)));
out.nelbo = { verses: nval, rows: nrows, bytes: nrows * L };
for (const [name, m] of Object.entries(models)) {
  const r = await m.nll(rows, { estimator: 'nelbo', alpha0: 0.25, samples: 1, seed: 0 });
  const bpb = r.total.bitsPerToken;
  out.nelbo[name] = bpb;
  console.log(`default model NELBO (alpha0 0.25) on ${nrows} hold-out rows: ${name} ${bpb.toFixed(4)} bits/byte`); 
}
const others = Object.keys(models).filter((k) => k !== 'bf16');
const same = {}, seqSame = {};
for (const name of others) same[name] = seqSame[name] = 0;
for (let s = 0; s < seeds; s++) {
  const gen = {};
  for (const [name, m] of Object.entries(models)) {
    const sampler = new Sampler({ method: 'esolm', steps: 64, alpha0: 0.25, greedy: true, seed: s });
    gen[name] = (await m.generate({ sampler, length: L })).sequences[0];
  }
  for (const name of others) {
    let eq = 0;
    for (let i = 0; i < L; i++) eq += gen.bf16[i] === gen[name][i] ? 1 : 0;
    same[name] += eq;
    seqSame[name] += eq === L ? 1 : 0;
  }
}
for (const name of others) {
  const r = { seeds, tokensEqual: same[name] / (seeds * L), sequencesEqual: seqSame[name] };
  if (name === 'q8') out.greedy = r;
  else out[`greedy ${name}`] = r;
  console.log(`greedy Eso-LM (alpha0 0.25, T = 64), ${seeds} seeds, ${name} vs bf16: ${(100 * r.tokensEqual).toFixed(1)}% of tokens equal, ${r.sequencesEqual}/${seeds} sequences identical`);
}
for (const m of Object.values(models)) m.dispose();
console.log(loadLine());
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(out, null, 2));
