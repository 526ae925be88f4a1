// CPU weight storage (Model.load `weights`): forced bf16 stays within bf16 rounding of the
// F32 run; 'auto' keeps a BF16 file exact (checked against the float64 reference in
// model-parity.test.ts); bad values are rejected.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { makeRandomModel } from './helpers/random-model.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-w-'));
  makeRandomModel(dir, { arch: 'esolm', seed: 21, hidden_size: 64, n_heads: 4 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('CPU weight storage', () => {
  it('bf16 weights give logits within bf16 rounding of the F32 weights', async () => {
    const f32 = await Model.load(dir, { backend: 'cpu', weights: 'f32' });
    const bf16 = await Model.load(dir, { backend: 'cpu', weights: 'bf16' });
    const tokens = Int32Array.from({ length: 20 }, (_, i) => (i * 7) % 60);
    const a = await f32.forward({ tokens });
    const b = await bf16.forward({ tokens });
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < a.length; i++) {
      scale = Math.max(scale, Math.abs(a[i]));
      diff = Math.max(diff, Math.abs(a[i] - b[i]));
    }
    expect(diff).toBeGreaterThan(0);            // the weights really were rounded
    expect(diff).toBeLessThan(2e-2 * scale);    // ... and only by bf16 rounding
    f32.dispose();
    bf16.dispose();
  });

  it('rejects an unknown weights option', async () => {
    await expect(Model.load(dir, { backend: 'cpu', weights: 'f16' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});
