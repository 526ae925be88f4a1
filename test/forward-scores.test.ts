// Model.forwardScores: the engine's −log p(target) equals a float64 log-softmax of
// forward()'s logits with the mask column at −1e6; skipped rows are NaN; bad targets fail.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { makeRandomModel, TINY } from './helpers/random-model.js';

let dir: string;
let model: Model;
const V = TINY.vocab_size;
const MASK = V - 1;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-fs-'));
  makeRandomModel(dir, { arch: 'esolm', seed: 31 });
  model = await Model.load(dir, { backend: 'cpu' });
});
afterAll(() => {
  model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('forwardScores', () => {
  for (const attention of ['causal', 'bidirectional', 'sequential'] as const) {
    it(`matches forward() + log-softmax (${attention})`, async () => {
      const batch = 2;
      const n = 9;
      const tokens = Int32Array.from({ length: batch * n }, (_, i) => (i % 3 === 0 ? MASK : (i * 5) % MASK));
      const x0 = Int32Array.from({ length: batch * n }, (_, i) => (i * 7 + 1) % MASK);
      const positions = Int32Array.from({ length: batch * n }, (_, i) => (i * 4) % n);
      const targets = Int32Array.from({ length: batch * n }, (_, i) => (i % 4 === 1 ? -1 : (i * 11) % V));
      const opts = { tokens, positions, batch, attention, ...(attention === 'sequential' ? { x0 } : {}) };
      const logits = await model.forward(opts);
      const nll = await model.forwardScores({ ...opts, targets });
      for (let r = 0; r < batch * n; r++) {
        if (targets[r] < 0) {
          expect(Number.isNaN(nll[r])).toBe(true);
          continue;
        }
        const row = Array.from(logits.subarray(r * V, (r + 1) * V), (l, v) => (v === MASK ? -1e6 : l));
        const m = Math.max(...row);
        const lse = m + Math.log(row.reduce((s, l) => s + Math.exp(l - m), 0));
        expect(Math.abs(nll[r] - (lse - row[targets[r]]))).toBeLessThan(1e-9 * Math.max(1, nll[r]));
      }
    });
  }

  it('rejects targets out of range', async () => {
    const tokens = Int32Array.from([1, 2, 3]);
    await expect(model.forwardScores({ tokens, targets: Int32Array.from([1, V, 2]) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(model.forwardScores({ tokens, targets: Int32Array.from([1, 2]) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});

describe('forward out buffer', () => {
  it('writes into a given buffer and checks its size', async () => {
    const tokens = Int32Array.from([1, 2, 3]);
    const out = new Float32Array(3 * V);
    const got = await model.forward({ tokens, out });
    expect(got).toBe(out);
    expect(Array.from(out)).toEqual(Array.from(await model.forward({ tokens })));
    await expect(model.forward({ tokens, out: new Float32Array(5) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});
