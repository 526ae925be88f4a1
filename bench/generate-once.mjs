// bench/generate-once.mjs — one process, one configuration: a warm-up generation of Eso-LM (B)
// (small random model, L = T = 1024, batch 1, top-p 0.9, seed 1), then N timed ones; prints
// a hash of the first sequence's tokens and the seconds of each. For A/B runs of two builds
// of the addon on a noisy machine: run it alternately, A B A B ..., under
// ESOLM_ADDON_PATH=<a.node> and <b.node>, and compare the medians (the hashes must agree).
// Usage: node bench/generate-once.mjs [--weights bf16] [--math f32] [--kernels avx512] [--repeat 1]
import { createHash } from 'node:crypto';
import { Sampler } from '../dist/index.js';
import { loadSmallModel, opt, useKernels } from './common.mjs';

const weights = opt('--weights', 'bf16');
const math = opt('--math', 'f32');
const repeat = Number(opt('--repeat', '1'));
const kernels = useKernels(opt('--kernels', 'auto'));
const model = await loadSmallModel({ backend: 'cpu', weights, math });
const sampler = () => new Sampler({ method: 'esolm', steps: 1024, alpha0: 1, topP: 0.9, seed: 1 });
const first = await model.generate({ sampler: sampler(), length: 1024, batch: 1 });
const hash = createHash('sha256').update(Buffer.from(first.sequences[0].buffer)).digest('hex').slice(0, 16);
const seconds = [];
for (let i = 0; i < repeat; i++) {
  const t0 = performance.now();
  await model.generate({ sampler: sampler(), length: 1024, batch: 1 });
  seconds.push(((performance.now() - t0) / 1e3).toFixed(2));
}
console.log(`${kernels} ${weights} math ${math}: tokens ${hash}; seconds ${seconds.join(' ')}`);
model.dispose();
