// Parity with the official Eso-LMs code (s-sahoo/Eso-LMs, models/dit.py @ 92e7982): the
// fixture in test/fixtures/official was produced by tools/official-parity/run_official.py,
// running their network in float32 on random weights of a tiny Eso-LM. Our CPU engine must
// give the same logits in every attention mode (their slot-ordered inputs and sort_idx
// positions), the same per-step logits through the KV cache, and the same greedy trace as
// their forward_sample loop. The bar (1e-4) is far above float32 noise (~2e-6 measured) and
// far below what any structural difference (masks, rotary, adaLN order) produces.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model, Sampler } from '../lib/index.js';

const dir = path.resolve(import.meta.dirname, 'fixtures', 'official');
interface Case { tokens: number[]; positions: number[]; logits: number[]; x0?: number[] }
const cases = JSON.parse(readFileSync(path.join(dir, 'cases.json'), 'utf8')) as Record<string, Case> & {
  kv_greedy: { positions: number[]; steps: number[]; tokens_slot_order: number[]; step_logits: number[][] };
};
let model: Model;
const B = 2;

beforeAll(async () => { model = await Model.load(dir, { backend: 'cpu' }); });
afterAll(() => model.dispose());

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('parity with the official Eso-LMs network', () => {
  for (const mode of ['causal', 'bidirectional', 'mixed2', 'sequential'] as const) {
    it(`forward, attention ${mode}`, async () => {
      const c = cases[mode];
      const logits = await model.forward({
        tokens: Int32Array.from(c.tokens), positions: Int32Array.from(c.positions), batch: B, attention: mode,
        ...(c.x0 ? { x0: Int32Array.from(c.x0) } : {}),
      });
      expect(logits.length).toBe(c.logits.length);
      expect(maxDiff(logits, c.logits)).toBeLessThan(1e-4);
    });
  }

  it('KV-cached steps and the greedy Eso-LM (B) trace of forward_sample', async () => {
    const kv = cases.kv_greedy;
    const L = model.config.length;
    const MASK = model.config.mask_index;
    const order = [0, 1].map((b) => kv.positions.slice(b * L, (b + 1) * L));
    const cache = model.createCache({ batch: B, capacity: L });
    let u = 0;
    let p = 0;
    for (let i = 0; i < kv.steps.length; i++) {
      const k = kv.steps[i];
      const n = p + k;
      const tokens = new Int32Array(B * n);
      const positions = new Int32Array(B * n);
      for (let b = 0; b < B; b++) {
        for (let r = 0; r < n; r++) {
          const slot = u - p + r;
          tokens[b * n + r] = r < p ? kv.tokens_slot_order[b * L + slot] : MASK;
          positions[b * n + r] = order[b][slot];
        }
      }
      const logits = await model.step(cache, { tokens, positions, commit: p, logitsFrom: p });
      expect(maxDiff(logits, kv.step_logits[i])).toBeLessThan(1e-4);
      u += k;
      p = k;
    }
    cache.dispose();
    const res = await model.generate({ sampler: new Sampler({ method: 'esolm', schedule: kv.steps, order, greedy: true }), batch: B, length: L });
    for (let b = 0; b < B; b++) {
      const expected = new Int32Array(L);
      order[b].forEach((pos, slot) => { expected[pos] = kv.tokens_slot_order[b * L + slot]; });
      expect(Array.from(res.sequences[b])).toEqual(Array.from(expected));
    }
  });
});
