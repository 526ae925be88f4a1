// Likelihood estimators (lib/likelihood.ts) against a float64 reference computed from the
// definitions (MODEL-REFERENCE.md §3.1, §3.3) with the same draws, the alpha0 = 0 chain
// rule, the Burda et al. monotonicity of the importance-weighted bound, the errors, and
// evalText chunking plus the `eval` command.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { computeNll, type NllResult, type NllTermTrace, SAMPLING_EPS, SCHEDULE_EPS } from '../lib/likelihood.js';
import { evalText } from '../lib/eval-text.js';
import { registerEvalCommand } from '../lib/eval-command.js';
import { type RandomModel, type RandomModelOptions, Rng, makeRandomModel, randomTokens } from './helpers/random-model.js';
import { referenceForward } from './helpers/reference64.js';

let root: string;
const opened: Model[] = [];
let dirCount = 0;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'esolm-nll-'));
});
afterAll(() => {
  for (const m of opened) m.dispose();
  rmSync(root, { recursive: true, force: true });
});

async function build(opts: RandomModelOptions): Promise<{ rm: RandomModel; model: Model }> {
  const rm = makeRandomModel(join(root, `m${dirCount++}`), opts);
  const model = await Model.load(rm.dir, { backend: 'cpu', threads: 2 });
  opened.push(model);
  return { rm, model };
}

function cleanSeq(rng: Rng, rm: RandomModel, n: number): Int32Array {
  return Int32Array.from(randomTokens(rng, rm.config, n, 0));
}

/** −log softmax(row with the MASK column = −1e6)[target], float64. */
function refNll(logits: Float64Array, row: number, V: number, mask: number, target: number): number {
  const o = row * V;
  const l = (v: number) => (v === mask ? -1e6 : logits[o + v]!);
  let m = -Infinity;
  for (let v = 0; v < V; v++) m = Math.max(m, l(v));
  let s = 0;
  for (let v = 0; v < V; v++) s += Math.exp(l(v) - m);
  return -(l(target) - m - Math.log(s));
}

/** Σ over masked slots of −log p(x) for one traced term, recomputed by the reference. */
function refTerm(rm: RandomModel, x: Int32Array, term: NllTermTrace): number {
  const { vocab_size: V, mask_index: M } = rm.config;
  const order = Array.from(term.order);
  const x0 = order.map((p) => x[p]!);
  if (term.kind === 'ar') {
    const logits = referenceForward({ weights: rm.weights, config: rm.config, tokens: Array.from(x.subarray(0, x.length - 1)), attention: 'causal' });
    let s = 0;
    for (let i = 0; i + 1 < x.length; i++) s += refNll(logits, i, V, M, x[i + 1]!);
    return s;
  }
  const logits = referenceForward({
    weights: rm.weights, config: rm.config, tokens: Array.from(term.input), positions: order, attention: term.attention,
    ...(term.attention === 'sequential' ? { x0 } : {}),
  });
  let s = 0;
  for (let i = 0; i < order.length; i++) if (term.input[i] === M) s += refNll(logits, i, V, M, x0[i]!);
  return s;
}

function logSumExp(a: number[]): number {
  const m = Math.max(...a);
  return m + Math.log(a.reduce((s, v) => s + Math.exp(v - m), 0));
}

function expectRel(a: number, b: number, tol: number): void {
  expect(Math.abs(a - b)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(b)));
}

function isPermutation(order: Int32Array, n: number): boolean {
  return order.length === n && [...order].sort((a, b) => a - b).every((v, i) => v === i);
}

function ascending(a: ArrayLike<number>, from: number): boolean {
  for (let i = from + 1; i < a.length; i++) if (a[i]! <= a[i - 1]!) return false;
  return true;
}

describe('nelbo (Eso-LM hybrid bound) vs the float64 reference, same draws', () => {
  for (const alpha0 of [0.5, 1, 0.2]) {
    it(`alpha0 = ${alpha0}: two sequences of different lengths, 3 samples, batch 4`, async () => {
      const { rm, model } = await build({ seed: 11, length: 16 });
      const rng = new Rng(5);
      const seqs = [cleanSeq(rng, rm, 12), cleanSeq(rng, rm, 9)];
      const S = 3;
      const res = await computeNll(model, seqs, { estimator: 'nelbo', alpha0, samples: S, seed: 42, batch: 4, trace: true });
      const M = rm.config.mask_index;
      expect(res.deterministic).toBe(false);
      seqs.forEach((x, j) => {
        const sr = res.sequences[j]!;
        expect(sr.samples).toBe(S);
        expect(sr.tokens).toBe(x.length);
        const ests: number[] = [];
        sr.trace!.forEach((sample, s) => {
          const kinds = sample.terms.map((t) => t.kind);
          expect(kinds).toEqual(alpha0 === 1 ? ['diffusion'] : ['sequential', 'diffusion']);
          let est = 0;
          for (const term of sample.terms) {
            // The draws follow the definitions: clean slots first, masks after.
            expect(isPermutation(term.order, x.length)).toBe(true);
            const masked = [...term.input].map((t) => t === M);
            expect(masked.indexOf(true) === -1 ? x.length : masked.indexOf(true)).toBe(term.prefix);
            expect(masked.slice(term.prefix).every(Boolean)).toBe(true);
            term.input.forEach((t, i) => { if (t !== M) expect(t).toBe(x[term.order[i]!]); });
            let weight = 1;
            if (term.kind === 'sequential') {
              expect(term.attention).toBe('sequential');
              expect(ascending(term.order, term.prefix)).toBe(true); // masks left to right
            } else {
              expect(term.attention).toBe('causal');
              // stratified t: sample s lies in stratum s of [eps, 1]
              const lo = SAMPLING_EPS + (1 - SAMPLING_EPS) * (s / S);
              const hi = SAMPLING_EPS + (1 - SAMPLING_EPS) * ((s + 1) / S);
              expect(term.t!).toBeGreaterThanOrEqual(lo);
              expect(term.t!).toBeLessThan(hi);
              const alphaT = alpha0 * (1 - (1 - SCHEDULE_EPS) * term.t!);
              expectRel(term.alphaT!, alphaT, 1e-12);
              weight = (alpha0 * (1 - SCHEDULE_EPS)) / (1 - alphaT);
            }
            const ref = refTerm(rm, x, term);
            expectRel(term.value, ref, 1e-4);
            est += weight * ref;
          }
          expectRel(sample.estimate, est, 1e-4);
          ests.push(est);
        });
        const mean = ests.reduce((a, b) => a + b, 0) / S;
        const sd = Math.sqrt(ests.reduce((a, b) => a + (b - mean) ** 2, 0) / (S - 1));
        expectRel(sr.nll, mean, 1e-4);
        expectRel(sr.stderr, sd / Math.sqrt(S), 1e-3);
        expectRel(sr.nllPerToken, mean / x.length, 1e-4);
        expectRel(sr.perplexity, Math.exp(mean / x.length), 1e-4);
        expectRel(sr.bitsPerToken, mean / x.length / Math.LN2, 1e-4);
      });
      const tot = res.sequences.reduce((a, s) => a + s.nll, 0);
      expectRel(res.total.nll, tot, 1e-12);
      expect(res.total.tokens).toBe(21);
      expectRel(res.total.stderr, Math.hypot(res.sequences[0]!.stderr, res.sequences[1]!.stderr), 1e-12);
      expectRel(res.total.nllPerToken, tot / 21, 1e-12);
    });
  }

  it('is deterministic in the seed and independent of batch; other seeds draw differently', async () => {
    const { rm, model } = await build({ seed: 12, length: 16 });
    const rng = new Rng(6);
    const seqs = [cleanSeq(rng, rm, 16), cleanSeq(rng, rm, 16), cleanSeq(rng, rm, 7)];
    const a = await computeNll(model, seqs, { alpha0: 0.5, samples: 4, seed: 7, batch: 3 });
    const b = await computeNll(model, seqs, { alpha0: 0.5, samples: 4, seed: 7, batch: 16 });
    const c = await computeNll(model, seqs, { alpha0: 0.5, samples: 4, seed: 8 });
    for (let j = 0; j < seqs.length; j++) {
      for (let s = 0; s < 4; s++) expectRel(a.sequences[j]!.estimates[s]!, b.sequences[j]!.estimates[s]!, 1e-5);
      expect(c.sequences[j]!.estimates[0]).not.toBe(a.sequences[j]!.estimates[0]);
    }
    expect(a.forwardCalls).toBeGreaterThan(b.forwardCalls);
  });
});

describe('nelbo is an unbiased estimate of the bound it defines', () => {
  /** All permutations of a list. */
  function perms(a: number[]): number[][] {
    if (a.length <= 1) return [a.slice()];
    return a.flatMap((v, i) => perms([...a.slice(0, i), ...a.slice(i + 1)]).map((p) => [v, ...p]));
  }

  it('the mean of many samples matches the bound enumerated over masks and orders (n = 3, alpha0 = 0.6)', async () => {
    const { rm, model } = await build({ seed: 22, length: 8 });
    const x = cleanSeq(new Rng(15), rm, 3);
    const n = 3, alpha0 = 0.6, V = rm.config.vocab_size, M = rm.config.mask_index;
    /** Mean over the given slot orders of Σ over masked slots of −log p, via the engine. */
    const meanTerm = async (orders: number[][], masked: boolean[], attention: 'sequential' | 'causal'): Promise<number> => {
      let sum = 0;
      for (const order of orders) {
        const input = Int32Array.from(order.map((p) => (masked[p] ? M : x[p]!)));
        const x0 = Int32Array.from(order.map((p) => x[p]!));
        const logits = Float64Array.from(await model.forward({
          tokens: input, positions: Int32Array.from(order), attention, ...(attention === 'sequential' ? { x0 } : {}),
        }));
        order.forEach((p, i) => { if (masked[p]) sum += refNll(logits, i, V, M, x[p]!); });
      }
      return sum / orders.length;
    };
    // Diffusion: E_{t~U[eps_s,1]} w(t) P_t(m) = (1/(1-eps_s)) ∫ (1-a)^(k-1) a^(n-k) da over [alpha_1, alpha_eps_s].
    const alphaAt = (t: number) => alpha0 * (1 - (1 - SCHEDULE_EPS) * t);
    const integral = (k: number): number => {
      const lo = alphaAt(1), hi = alphaAt(SAMPLING_EPS), N = 2000, h = (hi - lo) / N;
      const f = (a: number) => (1 - a) ** (k - 1) * a ** (n - k);
      let s = f(lo) + f(hi);
      for (let i = 1; i < N; i++) s += (i % 2 ? 4 : 2) * f(lo + i * h);
      return (s * h) / 3 / (1 - SAMPLING_EPS);
    };
    let bound = 0;
    for (let bits = 1; bits < 1 << n; bits++) {
      const masked = [0, 1, 2].map((i) => ((bits >> i) & 1) === 1);
      const clean = [0, 1, 2].filter((i) => !masked[i]);
      const maskedPos = [0, 1, 2].filter((i) => masked[i]);
      const k = maskedPos.length;
      // sequential term: clean in a random order, masks left to right
      const pSeq = (1 - alpha0) ** k * alpha0 ** (n - k);
      bound += pSeq * (await meanTerm(perms(clean).map((c) => [...c, ...maskedPos]), masked, 'sequential'));
      // diffusion term: clean and masks each in a random order
      const diffOrders = perms(clean).flatMap((c) => perms(maskedPos).map((m) => [...c, ...m]));
      bound += integral(k) * (await meanTerm(diffOrders, masked, 'causal'));
    }
    const res = await computeNll(model, x, { alpha0, samples: 2000, seed: 5 });
    const sr = res.sequences[0]!;
    expect(Math.abs(sr.nll - bound)).toBeLessThan(4 * sr.stderr);
    expect(sr.stderr).toBeLessThan(0.05 * bound); // the check has teeth
  });
});

describe('exact (importance-weighted any-order bound) vs the float64 reference', () => {
  it('alpha0 = 0.5, K = 3 orders, 2 groups', async () => {
    const { rm, model } = await build({ seed: 13, length: 16 });
    const rng = new Rng(7);
    const seqs = [cleanSeq(rng, rm, 10), cleanSeq(rng, rm, 13)];
    const K = 3;
    const res = await computeNll(model, seqs, { estimator: 'exact', alpha0: 0.5, orders: K, samples: 2, seed: 3, batch: 5, trace: true });
    const M = rm.config.mask_index;
    expect(res.orders).toBe(K);
    seqs.forEach((x, j) => {
      const sr = res.sequences[j]!;
      const ests = sr.trace!.map((group) => {
        expect(group.terms.length).toBe(K);
        const logps = group.terms.map((term) => {
          expect(term.kind).toBe('order');
          expect(term.attention).toBe('sequential');
          expect(isPermutation(term.order, x.length)).toBe(true);
          expect(ascending(term.order, term.prefix)).toBe(true); // σ[D:] sorted
          expect([...term.input].every((t) => t === M)).toBe(true); // z = all masks
          const ref = refTerm(rm, x, term);
          expectRel(term.value, ref, 1e-4);
          return -ref;
        });
        const est = -(logSumExp(logps) - Math.log(K));
        expectRel(group.estimate, est, 1e-4);
        return est;
      });
      expectRel(sr.nll, (ests[0]! + ests[1]!) / 2, 1e-4);
      expectRel(sr.stderr, Math.abs(ests[0]! - ests[1]!) / 2, 1e-3);
    });
  });
});

describe('alpha0 = 0 is the exact AR chain rule', () => {
  it('nelbo and exact equal Σ −log p(x_i | x_<i) from the sequential-mode reference, with stderr 0', async () => {
    const { rm, model } = await build({ seed: 14, length: 16 });
    const rng = new Rng(8);
    const seqs = [cleanSeq(rng, rm, 16), cleanSeq(rng, rm, 5)];
    const { vocab_size: V, mask_index: M } = rm.config;
    const nelbo = await computeNll(model, seqs, { estimator: 'nelbo', alpha0: 0, samples: 8 });
    const exact = await computeNll(model, seqs, { estimator: 'exact', alpha0: 0, samples: 8, orders: 4 });
    expect(nelbo.forwardCalls).toBe(2); // one row per sequence, whatever samples says
    seqs.forEach((x, j) => {
      // Row i of the z-half: a MASK at position i that sees x_<i.
      const n = x.length;
      const logits = referenceForward({
        weights: rm.weights, config: rm.config, tokens: new Array(n).fill(M), x0: Array.from(x), attention: 'sequential',
      });
      let chain = 0;
      for (let i = 0; i < n; i++) chain += refNll(logits, i, V, M, x[i]!);
      for (const r of [nelbo, exact]) {
        const sr = r.sequences[j]!;
        expectRel(sr.nll, chain, 1e-4);
        expect(sr.stderr).toBe(0);
        expect(sr.samples).toBe(1);
      }
    });
    expect(nelbo.deterministic && exact.deterministic).toBe(true);
    expect(nelbo.total.stderr).toBe(0);
  });

  it('the ar estimator of an ar model scores x[1:] from x[:-1]', async () => {
    const { rm, model } = await build({ arch: 'ar', seed: 15, length: 16 });
    const rng = new Rng(9);
    const x = cleanSeq(rng, rm, 11);
    const res = await computeNll(model, x, { trace: true });
    expect(res.estimator).toBe('ar');
    const sr = res.sequences[0]!;
    expect(sr.tokens).toBe(10);
    expect(sr.stderr).toBe(0);
    expectRel(sr.nll, refTerm(rm, x, sr.trace![0]!.terms[0]!), 1e-4);
  });
});

describe('Burda et al.: E log p̂_K does not decrease with K', () => {
  it('K = 1, 4, 16 on 6 tokens, alpha0 = 1', async () => {
    // Sharper output distributions make log p(x|σ) strongly order-dependent.
    const { rm, model } = await build({
      seed: 16, length: 8,
      editTensors: (t) => {
        const w = t['output_layer.linear.weight']!;
        w.data = w.data.map((v) => v * 4);
      },
    });
    const x = cleanSeq(new Rng(10), rm, 6);
    const G = 60; // independent groups of K orders per K
    const stats = new Map<number, { mean: number; se: number }>();
    for (const [K, seed] of [[1, 101], [4, 202], [16, 303]] as const) {
      const r: NllResult = await computeNll(model, x, { estimator: 'exact', alpha0: 1, orders: K, samples: G, seed });
      const sr = r.sequences[0]!;
      stats.set(K, { mean: -sr.nll, se: sr.stderr }); // mean of log p̂_K and its SE
    }
    const s1 = stats.get(1)!, s4 = stats.get(4)!, s16 = stats.get(16)!;
    const se = (a: { se: number }, b: { se: number }) => Math.hypot(a.se, b.se);
    expect(s4.mean).toBeGreaterThanOrEqual(s1.mean - 3 * se(s1, s4));
    expect(s16.mean).toBeGreaterThanOrEqual(s4.mean - 3 * se(s4, s16));
    // Not vacuous: the bound clearly tightens from K = 1 to K = 16.
    expect(s16.mean - s1.mean).toBeGreaterThan(4 * se(s1, s16));
  });
});

describe('options and errors', () => {
  let rm: RandomModel;
  let model: Model;
  let x: Int32Array;
  beforeAll(async () => {
    ({ rm, model } = await build({ seed: 17, length: 8 }));
    x = cleanSeq(new Rng(11), rm, 8);
  });

  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['alpha0 < 0', { alpha0: -0.1 }, /Expected a number in \[0, 1\] for alpha0 but received -0.1/],
    ['alpha0 > 1', { alpha0: 1.5 }, /alpha0/],
    ['alpha0 NaN', { alpha0: NaN }, /alpha0/],
    ['alpha0 string', { alpha0: '0.5' }, /alpha0 but received "0.5"/],
    ['estimator', { estimator: 'elbo' }, /Expected "nelbo", "exact" or "ar" for estimator/],
    ['samples 0', { samples: 0 }, /Expected an integer >= 1 for samples/],
    ['samples 1.5', { samples: 1.5 }, /samples/],
    ['orders 0', { estimator: 'exact', orders: 0 }, /Expected an integer >= 1 for orders/],
    ['seed 0.5', { seed: 0.5 }, /Expected a safe integer for seed/],
    ['batch 0', { batch: 0 }, /Expected an integer >= 1 for batch/],
    ['onProgress', { onProgress: 3 }, /Expected a function for onProgress/],
    ['ar on esolm', { estimator: 'ar' }, /estimator "ar" needs a model of arch ar/],
  ];
  for (const [label, opts, msg] of bad) {
    it(`rejects ${label}`, async () => {
      await expect(computeNll(model, x, opts as never)).rejects.toMatchObject({ name: 'EsolmError', code: 'ERR_INVALID_ARG', message: expect.stringMatching(msg) });
    });
  }

  it('rejects bad tokens', async () => {
    const V = rm.config.vocab_size, M = rm.config.mask_index;
    const cases: Array<[unknown, RegExp]> = [
      [Int32Array.from([1, V]), /tokens\[1\] = 61 is outside \[0, 61\)/],
      [Int32Array.from([1, -1]), /outside/],
      [Int32Array.from([M, 2]), /is the mask token/],
      [new Int32Array(9).fill(1), /more than the model context length 8/],
      [new Int32Array(0), /has 0 tokens/],
      [[x, [1, 2]], /Expected an Int32Array for tokens\[1\]/],
      [[], /no sequence/],
      [[1, 2, 3], /Expected an Int32Array for tokens\[0\]/],
      ['abc', /Expected an Int32Array or an array of Int32Arrays/],
    ];
    for (const [tokens, msg] of cases) {
      await expect(computeNll(model, tokens as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(msg) });
    }
  });

  it('rejects estimators the architecture cannot run', async () => {
    const mdlm = (await build({ arch: 'mdlm', seed: 18, length: 8 })).model;
    await expect(computeNll(mdlm, x, { estimator: 'exact' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /needs an Eso-LM/ });
    await expect(computeNll(mdlm, x, { alpha0: 0.5 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /alpha0/ });
    const r = await computeNll(mdlm, x, { samples: 2, trace: true }); // MDLM bound, bidirectional
    expect(r.sequences[0]!.trace![0]!.terms[0]!.attention).toBe('bidirectional');
    const ar = (await build({ arch: 'ar', seed: 19, length: 8 })).model;
    await expect(computeNll(ar, x, { estimator: 'nelbo' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /for an ar model use estimator "ar"/ });
    await expect(computeNll(ar, x.subarray(0, 1))).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /needs at least 2/ });
  });

  it('reports progress and aborts between forward calls', async () => {
    const seen: Array<[number, number]> = [];
    const r = await computeNll(model, [x, x], { alpha0: 0.5, samples: 3, batch: 2, onProgress: (d, t) => seen.push([d, t]) });
    // 2 sequences x 3 samples = 6 rows per mode, batch 2 → 3 calls per mode.
    expect(r.forwardCalls).toBe(6);
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6].map((d) => [d, 6]));

    const pre = new AbortController();
    pre.abort();
    await expect(computeNll(model, x, { signal: pre.signal })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    const mid = new AbortController();
    let last = 0;
    await expect(computeNll(model, [x, x], {
      alpha0: 0.5, samples: 4, batch: 1, signal: mid.signal,
      onProgress: (d) => { last = d; if (d === 2) mid.abort(); },
    })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(last).toBeLessThan(16);
  });

  it('gives stderr NaN for a single stochastic sample', async () => {
    const r = await computeNll(model, x, { samples: 1 });
    expect(Number.isNaN(r.sequences[0]!.stderr)).toBe(true);
    expect(Number.isFinite(r.sequences[0]!.nll)).toBe(true);
  });
});

describe('evalText and the eval command', () => {
  let rm: RandomModel;
  let model: Model;
  beforeAll(async () => {
    ({ rm, model } = await build({ seed: 20, length: 8 }));
  });

  it('splits a stream into chunks of the context length and combines their variances', async () => {
    const stream = cleanSeq(new Rng(12), rm, 2 * 8 + 5);
    const opts = { alpha0: 0.5, samples: 3, seed: 9 };
    const res = await evalText(model, stream, opts);
    const ref = await computeNll(model, [stream.subarray(0, 8), stream.subarray(8, 16), stream.subarray(16)], opts);
    expect(res.chunks).toBe(3);
    expect(res.tokens).toBe(21);
    expect(res.inputTokens).toBe(21);
    expectRel(res.nll, ref.total.nll, 1e-12);
    const se = Math.sqrt(ref.sequences.reduce((a, s) => a + s.stderr ** 2, 0));
    expectRel(res.stderr, se, 1e-12);
    expectRel(res.stderrPerToken, se / 21, 1e-12);
    expectRel(res.perplexity, Math.exp(ref.total.nll / 21), 1e-12);
    expect(res.perplexityLow).toBeLessThan(res.perplexity);
    expect(res.perplexityHigh).toBeGreaterThan(res.perplexity);

    const small = await evalText(model, stream, { ...opts, chunkLength: 5 });
    expect(small.chunks).toBe(5);
    await expect(evalText(model, stream, { chunkLength: 9 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(evalText(model, new Int32Array(0))).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });

  it('ar drops a trailing one-token chunk and does not score chunk-first tokens', async () => {
    const ar = await build({ arch: 'ar', seed: 21, length: 8 });
    const stream = cleanSeq(new Rng(13), ar.rm, 17);
    const res = await evalText(ar.model, stream);
    expect(res.chunks).toBe(2);
    expect(res.tokens).toBe(14);
    expect(res.stderr).toBe(0);
  });

  it('esolm eval prints JSON and text', async () => {
    const stream = cleanSeq(new Rng(14), rm, 20);
    const file = join(root, 'text.txt');
    writeFileSync(file, Array.from(stream).join(' '));
    let bar = '';
    const fakeTty = Object.assign(new PassThrough(), { isTTY: true, columns: 100 });
    fakeTty.on('data', (d: Buffer) => { bar += d.toString(); });
    const run = async (args: string[]): Promise<string> => {
      let out = '';
      const program = new Command().exitOverride().configureOutput({ writeErr: () => undefined });
      registerEvalCommand(program, {
        loadModel: (dir, backend) => Model.load(dir, { backend, threads: 2 }),
        tokenize: (_m, text) => ({ tokens: Int32Array.from(text.trim().split(/\s+/).map(Number)), bytes: 40 }),
        stdout: { write: (s: string) => { out += s; } },
        stderr: fakeTty,
      });
      await program.parseAsync(['node', 'esolm', 'eval', file, '-m', rm.dir, ...args]);
      return out;
    };
    const json = JSON.parse(await run(['--json', '--samples', '2', '--alpha0', '0.5', '--seed', '4', '--backend', 'cpu']));
    const direct = await evalText(model, stream, { alpha0: 0.5, samples: 2, seed: 4 });
    expect(json.estimator).toBe('nelbo');
    expect(json.tokens).toBe(20);
    expect(json.chunks).toBe(3);
    expectRel(json.perplexity, direct.perplexity, 1e-6);
    expectRel(json.bitsPerByte, direct.nll / Math.LN2 / 40, 1e-6);
    const text = await run(['--estimator', 'exact', '--samples', '2', '--orders', '2', '--backend', 'cpu']);
    expect(text).toMatch(/perplexity\s+[\d.]+ ± [\d.]+ \(95%: [\d.]+–[\d.]+\)/);
    expect(text).toMatch(/bits\/token/);
    expect(text).toMatch(/bits\/byte/);
    expect(text).toMatch(/tokens\s+20 scored of 20, 3 chunks/);
    expect(bar).toMatch(/eval .*\| \d+\/\d+ forwards/); // the progress bar, on a TTY only
    bar = '';
    await run(['--json', '--samples', '2']);
    expect(bar).toBe('');
    await expect(run(['--alpha0', 'abc'])).rejects.toThrow(/Not a number/);
    await expect(run(['--alpha0', '2'])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});

describe('Model.nll', () => {
  it('delegates to computeNll with the same result', async () => {
    const d = mkdtempSync(join(tmpdir(), 'esolm-nll-'));
    makeRandomModel(d, { arch: 'esolm', seed: 3 });
    const m = await Model.load(d, { backend: 'cpu' });
    const x = Int32Array.from([1, 2, 3, 4, 5, 6]);
    const a = await m.nll(x, { alpha0: 0.5, samples: 3, seed: 7 });
    const b = await computeNll(m, x, { alpha0: 0.5, samples: 3, seed: 7 });
    expect(a.total.nll).toBe(b.total.nll);
    expect(a.total.perplexity).toBeGreaterThan(1);
    m.dispose();
    await expect(m.nll(x)).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    rmSync(d, { recursive: true, force: true });
  });
});
