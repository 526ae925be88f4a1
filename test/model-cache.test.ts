// KV-cache invariants of Model.step (MODEL-REFERENCE.md §2.5, DESIGN.md "KV-cached step"):
// a chain of steps over a slot-ordered sequence reproduces the full causal forward over
// the same sequence, row for row.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsolmError, Model } from '../lib/index.js';
import { type RandomModel, Rng, makeRandomModel, randomTokens } from './helpers/random-model.js';
import { maxAbsDiff, referenceForward } from './helpers/reference64.js';

const TOL = 1e-4;

let root: string;
let esolm: { rm: RandomModel; model: Model };
let ar: { rm: RandomModel; model: Model };

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'esolm-cache-'));
  const e = makeRandomModel(join(root, 'esolm'), { arch: 'esolm', seed: 61 });
  const a = makeRandomModel(join(root, 'ar'), { arch: 'ar', seed: 62 });
  esolm = { rm: e, model: await Model.load(e.dir, { backend: 'cpu' }) };
  ar = { rm: a, model: await Model.load(a.dir, { backend: 'cpu' }) };
});
afterAll(() => {
  esolm?.model.dispose();
  ar?.model.dispose();
  rmSync(root, { recursive: true, force: true });
});

async function expectCode(f: () => unknown, code: string): Promise<EsolmError> {
  let err: unknown;
  try {
    await f();
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}, nothing was thrown`).toBeDefined();
  expect(err).toBeInstanceOf(EsolmError);
  expect((err as EsolmError).code).toBe(code);
  return err as EsolmError;
}

/** rows [r0, r1) of sequence b of a [batch, n, V] logits array */
function rows(l: Float32Array | Float64Array, b: number, n: number, V: number, r0: number, r1: number) {
  return l.subarray((b * n + r0) * V, (b * n + r1) * V);
}

interface Plan {
  order: number[]; // slot -> original position
  revealed: number[]; // slot -> token revealed at that slot (never the mask)
}

/**
 * Eso-LM (B) chain: step i feeds [previous step's p revealed tokens | k masks], commit p,
 * logitsFrom p; its logits must equal rows [u, u+k) of the causal forward over
 * z[0:u+k] = revealed[0:u] ++ MASK^k with positions order[0:u+k].
 */
async function esoChain(m: { rm: RandomModel; model: Model }, plans: Plan[], ks: number[], capacity: number) {
  const { rm, model } = m;
  const V = rm.config.vocab_size;
  const MASK = rm.config.mask_index;
  const B = plans.length;
  const cache = model.createCache({ batch: B, capacity });
  expect(cache.batch).toBe(B);
  expect(cache.capacity).toBe(capacity);
  expect(cache.committed).toBe(0);
  const stepLogits: Float32Array[] = [];
  let u = 0;
  let p = 0;
  try {
    for (const k of ks) {
      const n = p + k;
      const tokens = new Int32Array(B * n);
      const positions = new Int32Array(B * n);
      plans.forEach((pl, b) => {
        for (let r = 0; r < n; r++) {
          const slot = u - p + r;
          tokens[b * n + r] = r < p ? pl.revealed[slot]! : MASK;
          positions[b * n + r] = pl.order[slot]!;
        }
      });
      const got = await model.step(cache, { tokens, positions, commit: p, logitsFrom: p });
      expect(got).toBeInstanceOf(Float32Array);
      expect(got.length).toBe(B * k * V);
      expect(cache.committed).toBe(u);
      stepLogits.push(got);

      // the same rows from one uncached causal forward over the prefix (native and reference)
      const L = u + k;
      const prefTok = new Int32Array(B * L);
      const prefPos = new Int32Array(B * L);
      plans.forEach((pl, b) => {
        for (let s = 0; s < L; s++) {
          prefTok[b * L + s] = s < u ? pl.revealed[s]! : MASK;
          prefPos[b * L + s] = pl.order[s]!;
        }
      });
      const full = await model.forward({ tokens: prefTok, positions: prefPos, batch: B, attention: 'causal' });
      for (let b = 0; b < B; b++) {
        const want = rows(full, b, L, V, u, L);
        const mine = got.subarray(b * k * V, (b + 1) * k * V);
        expect(maxAbsDiff(mine, want), `step u=${u} k=${k} seq ${b} vs native forward`).toBeLessThanOrEqual(TOL);
        const ref = referenceForward({
          weights: rm.weights,
          config: rm.config,
          tokens: Array.from(prefTok.subarray(b * L, (b + 1) * L)),
          positions: Array.from(prefPos.subarray(b * L, (b + 1) * L)),
          attention: 'causal',
        });
        expect(maxAbsDiff(mine, rows(ref, 0, L, V, u, L)), `step u=${u} k=${k} seq ${b} vs reference`).toBeLessThanOrEqual(TOL);
      }
      u += k;
      p = k;
    }
    // last step: commit the final p revealed tokens; logitsFrom 0 gives their clean (causal) rows
    const total = u;
    const tokens = new Int32Array(B * p);
    const positions = new Int32Array(B * p);
    plans.forEach((pl, b) => {
      for (let r = 0; r < p; r++) {
        tokens[b * p + r] = pl.revealed[total - p + r]!;
        positions[b * p + r] = pl.order[total - p + r]!;
      }
    });
    const last = await model.step(cache, { tokens, positions, commit: p, logitsFrom: 0 });
    expect(last.length).toBe(B * p * V);
    expect(cache.committed).toBe(total);
    const allTok = Int32Array.from(plans.flatMap((pl) => pl.revealed.slice(0, total)));
    const allPos = Int32Array.from(plans.flatMap((pl) => pl.order.slice(0, total)));
    const full = await model.forward({ tokens: allTok, positions: allPos, batch: B, attention: 'causal' });
    for (let b = 0; b < B; b++) {
      expect(maxAbsDiff(last.subarray(b * p * V, (b + 1) * p * V), rows(full, b, total, V, total - p, total))).toBeLessThanOrEqual(TOL);
    }
    return { cache, stepLogits };
  } catch (e) {
    cache.dispose();
    throw e;
  }
}

function makePlan(rng: Rng, rm: RandomModel, total: number, offset = 0): Plan {
  return { order: rng.permutation(total).map((x) => x + offset), revealed: randomTokens(rng, rm.config, total, 0) };
}

describe('Eso-LM (B) step chain == causal forward over the slot-ordered prefix', () => {
  const ks = [3, 1, 5, 2, 4, 1, 1, 6]; // 23 slots, varied window sizes

  it('batch 2, different orders and tokens per sequence', async () => {
    const rng = new Rng(123);
    const total = ks.reduce((a, b) => a + b, 0);
    const plans = [makePlan(rng, esolm.rm, total), makePlan(rng, esolm.rm, total, 40)];
    expect(plans[0]!.order).not.toEqual(plans[1]!.order.map((x) => x - 40));
    const { cache } = await esoChain(esolm, plans, ks, 32);
    cache.dispose();
  });

  it('a sequence gives the same step logits alone as in a batch of 2', async () => {
    const rng = new Rng(321);
    const total = ks.reduce((a, b) => a + b, 0);
    const plans = [makePlan(rng, esolm.rm, total), makePlan(rng, esolm.rm, total)];
    const two = await esoChain(esolm, plans, ks, total);
    const one = await esoChain(esolm, [plans[1]!], ks, total);
    const V = esolm.rm.config.vocab_size;
    ks.forEach((k, i) => {
      expect(maxAbsDiff(two.stepLogits[i]!.subarray(k * V, 2 * k * V), one.stepLogits[i]!)).toBeLessThanOrEqual(TOL);
    });
    two.cache.dispose();
    one.cache.dispose();
  });

  it('capacity exactly used; one more token is ERR_INVALID_ARG and leaves the cache as it was', async () => {
    const rng = new Rng(999);
    const total = ks.reduce((a, b) => a + b, 0);
    const { cache } = await esoChain(esolm, [makePlan(rng, esolm.rm, total)], ks, total);
    expect(cache.committed).toBe(total);
    await expectCode(() => esolm.model.step(cache, { tokens: Int32Array.from([1]), positions: Int32Array.from([0]), commit: 1 }), 'ERR_INVALID_ARG');
    // even with commit 0 the window itself must fit
    await expectCode(() => esolm.model.step(cache, { tokens: Int32Array.from([1]), positions: Int32Array.from([0]), commit: 0 }), 'ERR_INVALID_ARG');
    expect(cache.committed).toBe(total);
    cache.dispose();
  });
});

describe('AR chain: one token per step, commit 1, logitsFrom 0', () => {
  it('ar model, batch 2, default positions: equals the causal forward rows', async () => {
    const { rm, model } = ar;
    const V = rm.config.vocab_size;
    const rng = new Rng(5);
    const T = 20;
    const seqs = [randomTokens(rng, rm.config, T, 0), randomTokens(rng, rm.config, T, 0)];
    const full = await model.forward({ tokens: Int32Array.from(seqs.flat()), batch: 2, attention: 'causal' });
    const cache = model.createCache({ batch: 2, capacity: rm.config.length });
    try {
      for (let t = 0; t < T; t++) {
        const got = await model.step(cache, { tokens: Int32Array.from([seqs[0]![t]!, seqs[1]![t]!]), commit: 1, logitsFrom: 0 });
        expect(got.length).toBe(2 * V);
        expect(cache.committed).toBe(t + 1);
        for (let b = 0; b < 2; b++) {
          expect(maxAbsDiff(got.subarray(b * V, (b + 1) * V), rows(full, b, T, V, t, t + 1)), `t=${t} seq ${b}`).toBeLessThanOrEqual(TOL);
        }
        if (t === T - 1 || t === 0) {
          for (let b = 0; b < 2; b++) {
            const ref = referenceForward({ weights: rm.weights, config: rm.config, tokens: seqs[b]!.slice(0, t + 1), attention: 'causal' });
            expect(maxAbsDiff(got.subarray(b * V, (b + 1) * V), rows(ref, 0, t + 1, V, t, t + 1))).toBeLessThanOrEqual(TOL);
          }
        }
      }
    } finally {
      cache.dispose();
    }
  });

  it('esolm model, permuted positions, prefill chunks then single tokens', async () => {
    const { rm, model } = esolm;
    const V = rm.config.vocab_size;
    const rng = new Rng(8);
    const T = 24;
    const chunks = [5, 3, 8, 1, 1, 1, 2, 1, 1, 1]; // commit = n each time
    expect(chunks.reduce((a, b) => a + b, 0)).toBe(T);
    const seqs = [randomTokens(rng, rm.config, T, 0.3), randomTokens(rng, rm.config, T, 0.3)];
    const pos = [rng.permutation(T), rng.permutation(T).map((x) => x + 17)];
    const full = await model.forward({ tokens: Int32Array.from(seqs.flat()), positions: Int32Array.from(pos.flat()), batch: 2, attention: 'causal' });
    const cache = model.createCache({ batch: 2, capacity: T });
    try {
      let at = 0;
      for (const n of chunks) {
        const from = n > 2 ? 1 : 0; // also exercise logitsFrom > 0 on committed rows
        const tokens = Int32Array.from([...seqs[0]!.slice(at, at + n), ...seqs[1]!.slice(at, at + n)]);
        const positions = Int32Array.from([...pos[0]!.slice(at, at + n), ...pos[1]!.slice(at, at + n)]);
        const got = await model.step(cache, { tokens, positions, commit: n, logitsFrom: from });
        expect(got.length).toBe(2 * (n - from) * V);
        for (let b = 0; b < 2; b++) {
          expect(maxAbsDiff(got.subarray(b * (n - from) * V, (b + 1) * (n - from) * V), rows(full, b, T, V, at + from, at + n))).toBeLessThanOrEqual(TOL);
        }
        at += n;
        expect(cache.committed).toBe(at);
      }
    } finally {
      cache.dispose();
    }
  });
});

describe('cache bookkeeping', () => {
  it('committed advances by commit, not by n; a provisional window is overwritten by the next step', async () => {
    const { rm, model } = esolm;
    const V = rm.config.vocab_size;
    const MASK = rm.config.mask_index;
    const cache = model.createCache({ batch: 1, capacity: 16 });
    try {
      expect(cache.committed).toBe(0);
      // two provisional steps at the same slots with different tokens: the second must not see the first
      await model.step(cache, { tokens: Int32Array.from([4, 9, 11]), positions: Int32Array.from([0, 1, 2]), commit: 0 });
      expect(cache.committed).toBe(0);
      const a = await model.step(cache, { tokens: Int32Array.from([7, MASK]), positions: Int32Array.from([5, 3]), commit: 1, logitsFrom: 1 });
      expect(cache.committed).toBe(1);
      const f = await model.forward({ tokens: Int32Array.from([7, MASK]), positions: Int32Array.from([5, 3]), attention: 'causal' });
      expect(maxAbsDiff(a, f.subarray(V, 2 * V))).toBeLessThanOrEqual(TOL);
      // default positions continue at committed
      const b = await model.step(cache, { tokens: Int32Array.from([12, 13]), commit: 2 });
      expect(cache.committed).toBe(3);
      const f2 = await model.forward({ tokens: Int32Array.from([7, 12, 13]), positions: Int32Array.from([5, 1, 2]), attention: 'causal' });
      expect(maxAbsDiff(b, f2.subarray(V))).toBeLessThanOrEqual(TOL);
    } finally {
      cache.dispose();
    }
  });

  it('bad step arguments are ERR_INVALID_ARG and do not move committed', async () => {
    const { model } = esolm;
    const cache = model.createCache({ batch: 2, capacity: 8 });
    try {
      const tokens = Int32Array.from([1, 2, 3, 4]);
      await expectCode(() => model.step(cache, { tokens, commit: 3 }), 'ERR_INVALID_ARG'); // commit > n
      await expectCode(() => model.step(cache, { tokens, commit: -1 }), 'ERR_INVALID_ARG');
      await expectCode(() => model.step(cache, { tokens, commit: 1, logitsFrom: 3 }), 'ERR_INVALID_ARG'); // logitsFrom > n
      await expectCode(() => model.step(cache, { tokens: Int32Array.from([1, 2, 3]), commit: 0 }), 'ERR_INVALID_ARG'); // not a batch multiple
      await expectCode(() => model.step(cache, { tokens, positions: Int32Array.from([0, 1]), commit: 0 }), 'ERR_INVALID_ARG'); // positions length
      await expectCode(() => model.step(cache, { tokens: Int32Array.from([1, 2, 3, 999]), commit: 0 }), 'ERR_INVALID_ARG'); // token id
      await expectCode(() => model.step(cache, { tokens: new Int32Array(2 * 9), commit: 0 }), 'ERR_INVALID_ARG'); // 9 > capacity 8
      expect(cache.committed).toBe(0);
      await model.step(cache, { tokens, commit: 2 });
      expect(cache.committed).toBe(2);
    } finally {
      cache.dispose();
    }
  });

  it('createCache with a bad batch or capacity is ERR_INVALID_ARG', async () => {
    await expectCode(() => esolm.model.createCache({ batch: 0, capacity: 4 }), 'ERR_INVALID_ARG');
    await expectCode(() => esolm.model.createCache({ batch: 1, capacity: 0 }), 'ERR_INVALID_ARG');
    await expectCode(() => esolm.model.createCache({ batch: 1.5, capacity: 4 }), 'ERR_INVALID_ARG');
  });
});
