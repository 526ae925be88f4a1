/**
 * `npm run demo`: writes a small random Eso-LM to a temp folder, loads it, and prints
 * what it computed and how fast: a full causal forward, the same logits rebuilt from
 * KV-cached steps (they must agree), and the timings.
 */
import os from 'node:os';
import path from 'node:path';
import { Model } from './model.js';
import { writeRandomModel } from './random-model.js';
import { loadCpuAddon } from './loader.js';

const config = {
  arch: 'esolm' as const, hidden_size: 256, n_heads: 4, n_blocks: 4, cond_dim: 64,
  vocab_size: 1000, mask_index: 999, length: 256,
};

async function main(): Promise<void> {
  const dir = path.join(os.tmpdir(), 'esolm-demo-model');
  writeRandomModel(dir, config, { seed: 3 });
  const model = await Model.load(dir, { backend: 'auto' });
  const info = loadCpuAddon().backendInfo();
  console.log(`esolm demo: random Eso-LM (hidden ${config.hidden_size}, ${config.n_blocks} blocks, vocab ${config.vocab_size})`);
  console.log(`backend: ${model.backend}${model.backendReason ? ` (${model.backendReason})` : ''}; CPU kernels: ${info.cpuKernels}`);

  const n = 256;
  const tokens = Int32Array.from({ length: n }, (_, i) => (i * 37 + 11) % (config.vocab_size - 1));
  let t0 = performance.now();
  const full = await model.forward({ tokens, attention: 'causal' });
  const fwdMs = performance.now() - t0;

  // The same sequence through the KV cache, 16 tokens per step.
  const cache = model.createCache({ batch: 1, capacity: n });
  const V = config.vocab_size;
  let maxDiff = 0;
  t0 = performance.now();
  for (let s = 0; s < n; s += 16) {
    const logits = await model.step(cache, { tokens: tokens.subarray(s, s + 16), commit: 16 });
    for (let i = 0; i < 16 * V; i++) maxDiff = Math.max(maxDiff, Math.abs(logits[i] - full[s * V + i]));
  }
  const stepMs = performance.now() - t0;

  const last = full.subarray((n - 1) * V, n * V);
  let best = 0;
  for (let v = 1; v < V; v++) if (last[v] > last[best]) best = v;
  console.log(`full causal forward of ${n} tokens: ${fwdMs.toFixed(1)} ms (${(n / fwdMs * 1e3).toFixed(0)} tokens/s)`);
  console.log(`${n / 16} cached steps of 16 tokens: ${stepMs.toFixed(1)} ms; max |logit difference| vs the full forward: ${maxDiff.toExponential(2)}`);
  console.log(`argmax of the last position's logits: token ${best} (logit ${last[best].toFixed(3)})`);
  cache.dispose();
  model.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
