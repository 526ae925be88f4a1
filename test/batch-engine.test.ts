// Seed groups (engine/generate.h SeedGroup, GenerateOptions.seedGroups): a batch of groups
// equals each group generated alone, token for token and event for event, for esolm, mdlm
// and ar, with prompts and fixed tokens, and per-row given tokens through the raw request
// the batcher builds; mismatched plans are refused; esolmStepSizes matches the engine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsolmError, Model, Sampler, type SamplerOptions, type SeedGroup, type StepEvent } from '../lib/index.js';
import { esolmStepSizes } from '../lib/batch/plan.js';
import { makeRandomModel } from './helpers/random-model.js';

let dir: string;
let esolm: Model;
let ar: Model;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-groups-'));
  makeRandomModel(path.join(dir, 'esolm'), { arch: 'esolm', seed: 21 });
  makeRandomModel(path.join(dir, 'ar'), { arch: 'ar', seed: 22 });
  esolm = await Model.load(path.join(dir, 'esolm'), { backend: 'cpu' });
  ar = await Model.load(path.join(dir, 'ar'), { backend: 'cpu' });
});

afterAll(() => {
  esolm?.dispose();
  ar?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Row b's slice of a batch event (MDLM's -1 padding dropped). */
function rowEvent(e: StepEvent, b: number): [number, number][] {
  const out: [number, number][] = [];
  for (let r = 0; r < e.perSequence; r++) {
    const p = e.positions[b * e.perSequence + r];
    if (p >= 0) out.push([p, e.tokens[b * e.perSequence + r]]);
  }
  return out;
}

async function checkGroups(model: Model, opts: Omit<SamplerOptions, 'seed'>, groups: SeedGroup[],
  extra: { length: number; prompt?: number[]; fixed?: Record<number, number> }): Promise<void> {
  const events: StepEvent[] = [];
  const batched = await model.generate({ sampler: new Sampler({ ...opts, seed: 999 }), seedGroups: groups, ...extra, onStep: (e) => events.push(e) });
  let row0 = 0;
  for (const g of groups) {
    const alone: StepEvent[] = [];
    const res = await model.generate({
      sampler: new Sampler({ ...opts, seed: g.seed }), batch: g.rows, ...extra,
      seedGroups: g.planSeed === undefined ? undefined : [g], onStep: (e) => alone.push(e),
    });
    for (let r = 0; r < g.rows; r++) {
      expect([...batched.sequences[row0 + r]]).toEqual([...res.sequences[r]]);
      // The row's revealed (position, token) pairs, step by step, are its alone run's.
      // (MDLM: the batch runs on while other rows still have masks, so compare the reveals in order.)
      const mine = events.map((e) => rowEvent(e, row0 + r));
      const want = alone.map((e) => rowEvent(e, r));
      if (opts.method === 'mdlm') expect(mine.flat()).toEqual(want.flat());
      else expect(mine).toEqual(want);
    }
    row0 += g.rows;
  }
}

describe('seed groups: a batch of groups equals each group alone', () => {
  it('esolm with a shared plan seed, a prompt and fixed tokens', async () => {
    const groups = [{ seed: 5, planSeed: 77, rows: 2 }, { seed: 8, planSeed: 77, rows: 1 }, { seed: 2n ** 63n + 3n, planSeed: 77, rows: 3 }];
    await checkGroups(esolm, { method: 'esolm', steps: 10, alpha0: 0.5, topP: 0.9 }, groups, { length: 40, prompt: [3, 4, 5], fixed: { 30: 7, 39: 9 } });
  });

  it('esolm: identical seeds and plan seeds default to the plain generation', async () => {
    const plain = await esolm.generate({ sampler: new Sampler({ method: 'esolm', steps: 6, seed: 41 }), length: 24, batch: 2 });
    const grouped = await esolm.generate({ sampler: new Sampler({ method: 'esolm', steps: 6 }), length: 24, seedGroups: [{ seed: 41, rows: 2 }] });
    expect(grouped.sequences.map((s) => [...s])).toEqual(plain.sequences.map((s) => [...s]));
  });

  it('esolm with the block schedule (shuffled orders per group)', async () => {
    const groups = [{ seed: 1, rows: 1 }, { seed: 2, rows: 2 }];
    await checkGroups(esolm, { method: 'esolm', blocks: { length: 8, shuffle: true }, alpha0: 0.5 }, groups, { length: 32 });
  });

  it('mdlm with fixed tokens', async () => {
    const groups = [{ seed: 3, rows: 2 }, { seed: 4, rows: 1 }, { seed: 10, rows: 2 }];
    await checkGroups(esolm, { method: 'mdlm', steps: 12, temperature: 0.8 }, groups, { length: 28, prompt: [1, 2], fixed: { 20: 6 } });
  });

  it('ar with a prompt and fixed tokens', async () => {
    const groups = [{ seed: 6, rows: 1 }, { seed: 7, rows: 3 }];
    await checkGroups(ar, { method: 'ar', topP: 0.95 }, groups, { length: 20, prompt: [2, 3], fixed: { 15: 4 } });
  });

  it('per-row given tokens (the batcher\'s joined raw request) equal separate generations', async () => {
    const mk = (seed: number) => new Sampler({ method: 'esolm', steps: 8, seed });
    const prompts = [[1, 2, 3], [9, 8, 7], [4, 4, 4]];
    const raws = prompts.map((p, i) => esolm.generateRequest({ sampler: mk(i + 1), length: 30, prompt: p, seedGroups: [{ seed: i + 1, planSeed: 5, rows: 1 }] }));
    const joined = { ...raws[0], batch: 3, givenTokens: Int32Array.from(raws.flatMap((r) => [...r.givenTokens])),
      seedGroups: Int32Array.from(raws.flatMap((r) => [...(r.seedGroups as Int32Array)])) };
    const batched = await esolm.generateRaw(joined, {});
    for (let i = 0; i < 3; i++) {
      const alone = await esolm.generateRaw(raws[i], {});
      expect([...batched.sequences[i]]).toEqual([...alone.sequences[0]]);
      expect([...batched.sequences[i].slice(0, 3)]).toEqual(prompts[i]);
    }
  });
});

describe('seed groups: errors and plans', () => {
  it('refuses groups whose plans differ, and rows that do not sum to batch', async () => {
    const s = new Sampler({ method: 'esolm', steps: 10 });
    const err = await esolm.generate({ sampler: s, length: 40, seedGroups: [{ seed: 1, rows: 1 }, { seed: 2, rows: 1 }] }).catch((e) => e);
    expect(err).toBeInstanceOf(EsolmError);
    expect(err.code).toBe('ERR_INVALID_ARG');
    expect(err.message).toMatch(/step sizes/);
    await expect(esolm.generate({ sampler: s, length: 40, batch: 3, seedGroups: [{ seed: 1, rows: 2 }] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    expect(() => esolm.generateRequest({ sampler: s, seedGroups: [{ seed: -1, rows: 1 }] })).toThrow(/seedGroups\[0\]\.seed/);
    expect(() => esolm.generateRequest({ sampler: s, seedGroups: [{ seed: 1, rows: 0 }] })).toThrow(/rows/);
    expect(() => esolm.generateRequest({ sampler: s, seedGroups: [] })).toThrow(/non-empty/);
  });

  it('esolm-a and planned-order mdlm refuse seed groups they cannot honour; one group of the seed is the plain run', async () => {
    for (const opts of [{ method: 'esolm-a', steps: 6 }, { method: 'mdlm', order: 'ar' }] as const) {
      const two = await esolm.generate({ sampler: new Sampler({ ...opts, seed: 1 }), length: 16,
        seedGroups: [{ seed: 1, rows: 1 }, { seed: 2, rows: 1 }] }).catch((e) => e);
      expect(two).toBeInstanceOf(EsolmError);
      expect(two.message).toMatch(/take one seed/);
      // A group whose seed is not the sampler's would silently use the sampler's: refused.
      await expect(esolm.generate({ sampler: new Sampler({ ...opts, seed: 1 }), length: 16, seedGroups: [{ seed: 2, rows: 1 }] }))
        .rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
      const plain = await esolm.generate({ sampler: new Sampler({ ...opts, seed: 7 }), length: 16, batch: 2 });
      const grouped = await esolm.generate({ sampler: new Sampler({ ...opts, seed: 7 }), length: 16, seedGroups: [{ seed: 7, rows: 2 }] });
      expect(grouped.sequences.map((x) => [...x])).toEqual(plain.sequences.map((x) => [...x]));
    }
  });

  it('esolmStepSizes equals the step sizes the engine runs', async () => {
    for (const [planSeed, alpha0, nGiven] of [[3, 1, 0], [4, 0.4, 5], [2n ** 40n + 1n, 0.8, 2]] as const) {
      const plan = esolmStepSizes({ length: 36, nGiven, steps: 9, alpha0, planSeed });
      const events: StepEvent[] = [];
      const fixed = Object.fromEntries(Array.from({ length: nGiven }, (_, i) => [i * 3, 1]));
      const res = await esolm.generate({ sampler: new Sampler({ method: 'esolm', steps: 9, alpha0 }), length: 36, fixed,
        seedGroups: [{ seed: 12345, planSeed, rows: 1 }], onStep: (e) => events.push(e) });
      expect(events.map((e) => e.perSequence)).toEqual([...plan.stepSizes]);
      expect(res.nDiffusion).toBe(plan.nDiffusion);
    }
    expect(() => esolmStepSizes({ length: 10, steps: 0 })).toThrow(EsolmError);
    expect(() => esolmStepSizes({ length: 10, steps: 4, alpha0: 2 })).toThrow(/alpha0/);
  });
});
