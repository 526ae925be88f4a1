// The IMDCE estimator (official icml-rebuttal `_imdce_loss`) against its float64
// definition: each traced draw recomputed by the reference forward, the estimate's
// weighting, the distribution of the kept count, and unbiasedness against the exact sum
// enumerated over every mask set and order of a 3-token sequence. Also: likelihood and
// the eval command default to the model's training alpha0, and Eso-LM (A) models get
// mixed2 diffusion forwards and the prefix-LM ("mixed") sequential forward; the AR
// likelihood follows the official prepend_token.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { computeNll, imdceKept, type NllTermTrace } from '../lib/likelihood.js';
import { registerEvalCommand } from '../lib/eval-command.js';
import { type RandomModel, type RandomModelOptions, makeRandomModel } from './helpers/random-model.js';
import { type AttentionMode, referenceForward } from './helpers/reference64.js';

let root: string;
const opened: Model[] = [];
let count = 0;
beforeAll(() => { root = mkdtempSync(join(tmpdir(), 'esolm-imdce-')); });
afterAll(() => {
  for (const m of opened) m.dispose();
  rmSync(root, { recursive: true, force: true });
});

async function build(opts: RandomModelOptions): Promise<{ rm: RandomModel; model: Model }> {
  const rm = makeRandomModel(join(root, `m${count++}`), opts);
  const model = await Model.load(rm.dir, { backend: 'cpu', threads: 2 });
  opened.push(model);
  return { rm, model };
}

const harmonic = (n: number): number => Array.from({ length: n }, (_, i) => 1 / (i + 1)).reduce((a, b) => a + b, 0);

/** Σ over masked slots of −log softmax (mask column −1e6) at the target, by the float64 reference. */
function refMasked(rm: RandomModel, x: ArrayLike<number>, order: number[], input: number[], attention: AttentionMode): number {
  const { vocab_size: V, mask_index: M } = rm.config;
  const logits = referenceForward({ weights: rm.weights, config: rm.config, tokens: input, positions: order, attention });
  let s = 0;
  for (let i = 0; i < order.length; i++) {
    if (input[i] !== M) continue;
    const o = i * V;
    const l = (v: number): number => (v === M ? -1e6 : logits[o + v]!);
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, l(v));
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(l(v) - m);
    s += -(l(x[order[i]!]!) - m - Math.log(z));
  }
  return s;
}

function permutations(a: number[]): number[][] {
  if (a.length <= 1) return [a.slice()];
  return a.flatMap((v, i) => permutations([...a.slice(0, i), ...a.slice(i + 1)]).map((p) => [v, ...p]));
}

describe('imdce', () => {
  it('the kept count is drawn with p(k) = 1/((n − k) H_n) by inversion', () => {
    const n = 5, H = harmonic(n);
    let c = 0;
    for (let k = 0; k < n; k++) {
      const p = 1 / ((n - k) * H);
      expect(imdceKept(c + p / 2, n)).toBe(k);  // the middle of k's interval
      c += p;
    }
    expect(imdceKept(0, n)).toBe(0);
    expect(imdceKept(1 - 1e-12, n)).toBe(n - 1);
  });

  for (const arch of ['esolm', 'esolm-a', 'mdlm'] as const) {
    it(`${arch}: every draw equals the float64 reference, estimate = H_n/K · Σ draws`, async () => {
      const { rm, model } = await build({ arch: arch === 'esolm-a' ? 'esolm' : arch, seed: 41, length: 16, ...(arch === 'esolm-a' ? { editConfig: (c) => { c.arch = 'esolm-a'; } } : {}) });
      const x = Int32Array.from([3, 17, 8, 40, 22, 5, 9, 31, 12, 2]);
      const K = 3;
      const res = await computeNll(model, x, { estimator: 'imdce', samples: 2, orders: K, seed: 6, trace: true });
      expect(res.estimator).toBe('imdce');
      expect(res.orders).toBe(K);
      const M = rm.config.mask_index, H = harmonic(x.length);
      const attention = arch === 'mdlm' ? 'bidirectional' : arch === 'esolm-a' ? 'mixed2' : 'causal';
      for (const sample of res.sequences[0]!.trace!) {
        expect(sample.terms.length).toBe(K);
        let est = 0;
        for (const t of sample.terms as NllTermTrace[]) {
          expect(t.kind).toBe('imdce');
          expect(t.attention).toBe(attention);
          expect([...t.order].sort((a, b) => a - b)).toEqual([...Array(x.length).keys()]);
          // clean slots first (the kept tokens), masks after
          t.input.forEach((tok, i) => expect(tok === M).toBe(i >= t.prefix));
          t.input.forEach((tok, i) => { if (tok !== M) expect(tok).toBe(x[t.order[i]!]); });
          expect(t.prefix).toBeLessThan(x.length);
          expect(t.weight).toBeCloseTo(H / K, 12);
          const ref = refMasked(rm, x, Array.from(t.order), Array.from(t.input), attention);
          expect(Math.abs(t.value - ref)).toBeLessThanOrEqual(1e-4 * Math.max(1, ref));
          est += (H / K) * ref;
        }
        expect(Math.abs(sample.estimate - est)).toBeLessThanOrEqual(1e-4 * est);
      }
    });
  }

  it('is unbiased: the mean over many draws matches the exact sum over every mask set and order (n = 3)', async () => {
    const { rm, model } = await build({ seed: 43, length: 8 });
    const x = [7, 30, 15];
    const n = x.length, M = rm.config.mask_index;
    // Σ_k 1/(n − k) · E over k-subsets kept, clean orders and mask orders of Σ masked −log p.
    let exact = 0;
    for (let k = 0; k < n; k++) {
      let sum = 0, cnt = 0;
      for (let bits = 0; bits < 1 << n; bits++) {
        const kept = [...Array(n).keys()].filter((i) => bits & (1 << i));
        if (kept.length !== k) continue;
        const masked = [...Array(n).keys()].filter((i) => !(bits & (1 << i)));
        for (const pc of permutations(kept)) {
          for (const pm of permutations(masked)) {
            const order = [...pc, ...pm];
            const input = order.map((p, i) => (i < k ? x[p]! : M));
            sum += refMasked(rm, x, order, input, 'causal');
            cnt++;
          }
        }
      }
      exact += sum / cnt / (n - k);
    }
    const S = 3000;
    const res = await computeNll(model, Int32Array.from(x), { estimator: 'imdce', samples: S, orders: 1, seed: 1, trace: true });
    const r = res.sequences[0]!;
    expect(Math.abs(r.nll - exact)).toBeLessThanOrEqual(4 * r.stderr);
    expect(r.stderr).toBeLessThan(0.05 * exact);  // the check has teeth
    // the kept counts follow p(k)
    const H = harmonic(n);
    const freq = new Array(n).fill(0);
    for (const s of r.trace!) freq[s.terms[0]!.prefix]++;
    for (let k = 0; k < n; k++) expect(Math.abs(freq[k] / S - 1 / ((n - k) * H))).toBeLessThan(0.03);
  });
});

describe('AR likelihood with the official prepend_token', () => {
  it('bos / mask: [P, x_<n] predicts all n tokens (float64 reference); none scores n − 1; default = training', async () => {
    const { rm, model } = await build({ arch: 'ar', seed: 48, length: 16, editConfig: (c) => { c.mask_index = 60; c.training = { algo: 'ar', prepend: 'mask' }; } });
    const x = Int32Array.from([3, 17, 8, 40, 22, 5, 9]);
    const V = rm.config.vocab_size, M = 60;
    const ref = (input: number[], targets: number[]): number => {
      const logits = referenceForward({ weights: rm.weights, config: rm.config, tokens: input, attention: 'causal' });
      let s = 0;
      targets.forEach((t, i) => {
        const l = (v: number): number => (v === M ? -1e6 : logits[i * V + v]!);
        let m = -Infinity;
        for (let v = 0; v < V; v++) m = Math.max(m, l(v));
        let z = 0;
        for (let v = 0; v < V; v++) z += Math.exp(l(v) - m);
        s += -(l(t) - m - Math.log(z));
      });
      return s;
    };
    const dflt = await computeNll(model, x);
    expect(dflt.estimator).toBe('ar');
    expect(dflt.total.tokens).toBe(7);
    const want = ref([M, ...Array.from(x.subarray(0, 6))], Array.from(x));
    expect(Math.abs(dflt.total.nll - want)).toBeLessThanOrEqual(1e-4 * want);
    const none = await computeNll(model, x, { prepend: 'none' });
    expect(none.total.tokens).toBe(6);
    const wantNone = ref(Array.from(x.subarray(0, 6)), Array.from(x.subarray(1)));
    expect(Math.abs(none.total.nll - wantNone)).toBeLessThanOrEqual(1e-4 * wantNone);
    await expect(computeNll(model, x, { prepend: 'bos' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /BOS/ });
    await expect(computeNll(model, x, { prepend: 'eos' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});

describe('training alpha0 as the default', () => {
  it('computeNll uses config.json training.alpha0 unless told otherwise', async () => {
    const { model } = await build({ seed: 44, length: 8, editConfig: (c) => { c.training = { algo: 'esolm', alpha0: 0.25, batch_split: 0.5 }; } });
    const x = Int32Array.from([1, 2, 3, 4, 5]);
    const dflt = await computeNll(model, x, { samples: 2, seed: 3, trace: true });
    expect(dflt.alpha0).toBe(0.25);
    expect(dflt.sequences[0]!.trace![0]!.terms.map((t) => t.kind)).toEqual(['sequential', 'diffusion']);
    const same = await computeNll(model, x, { samples: 2, seed: 3, alpha0: 0.25 });
    expect(same.total.nll).toBe(dflt.total.nll);
    expect((await computeNll(model, x, { samples: 2, seed: 3, alpha0: 1 })).alpha0).toBe(1);
  });

  it('the eval command reports and uses the training alpha0, and says when a given one differs', async () => {
    const { rm } = await build({ seed: 45, length: 8, editConfig: (c) => { c.training = { algo: 'esolm', alpha0: 0.25 }; } });
    const file = join(root, 'text.txt');
    writeFileSync(file, '1 2 3 4 5 6 7 8 9 10');
    const run = async (args: string[]): Promise<string> => {
      let out = '';
      const program = new Command();
      program.exitOverride();
      registerEvalCommand(program, {
        loadModel: (dir, backend) => Model.load(dir, { backend, threads: 2 }),
        tokenize: (_m, text) => Int32Array.from(text.trim().split(/\s+/).map(Number)),
        stdout: { write: (s: string) => { out += s; } },
      });
      await program.parseAsync(['node', 'esolm', 'eval', file, '-m', rm.dir, '--backend', 'cpu', '--samples', '2', ...args]);
      return out;
    };
    expect(await run([])).toMatch(/nelbo \(alpha0 = 0\.25, the training alpha0,/);
    expect(JSON.parse(await run(['--json'])).alpha0).toBe(0.25);
    expect(await run(['--alpha0', '1'])).toMatch(/alpha0 = 1, given; the model was trained with 0\.25/);
    expect(await run(['--estimator', 'imdce', '--orders', '2'])).toMatch(/imdce \(2 x 2 draws/);
  });

  it('Eso-LM (A): the nelbo sequential term uses the prefix-LM 2N mask (float64 reference); exact runs with an empty prefix', async () => {
    const { rm, model } = await build({ seed: 46, length: 12, editConfig: (c) => { c.arch = 'esolm-a'; c.training = { alpha0: 0.5, diffusion_attn_mode: 'mixed2' }; } });
    const x = Int32Array.from([3, 17, 8, 40, 22, 5, 9, 31, 12, 2]);
    const { vocab_size: V, mask_index: M } = rm.config;
    const r = await computeNll(model, x, { samples: 3, seed: 2, trace: true });
    expect(r.alpha0).toBe(0.5);
    let differs = 0;
    for (const sample of r.sequences[0]!.trace!) {
      const [seq, diff] = sample.terms;
      expect(seq!.kind).toBe('sequential');
      expect(diff!.attention).toBe('mixed2');
      const order = Array.from(seq!.order), x0 = order.map((p) => x[p]!);
      const score = (prefix: number): number => {
        const logits = referenceForward({ weights: rm.weights, config: rm.config, tokens: Array.from(seq!.input), positions: order, attention: 'sequential', x0, prefix });
        let s = 0;
        for (let i = 0; i < order.length; i++) {
          if (seq!.input[i] !== M) continue;
          const l = (v: number): number => (v === M ? -1e6 : logits[i * V + v]!);
          let m = -Infinity;
          for (let v = 0; v < V; v++) m = Math.max(m, l(v));
          let z = 0;
          for (let v = 0; v < V; v++) z += Math.exp(l(v) - m);
          s += -(l(x0[i]!) - m - Math.log(z));
        }
        return s;
      };
      const ref = score(seq!.prefix);
      expect(Math.abs(seq!.value - ref)).toBeLessThanOrEqual(1e-4 * Math.max(1, ref));
      if (seq!.prefix > 1 && Math.abs(score(0) - ref) > 1e-3) differs++;  // the (B) mask would give another value
      expect(Math.abs(diff!.value - refMasked(rm, x, Array.from(diff!.order), Array.from(diff!.input), 'mixed2'))).toBeLessThanOrEqual(1e-4 * Math.max(1, diff!.value));
    }
    expect(differs).toBeGreaterThan(0);
    // exact: z is all masks, so the prefix is empty: the same forward as Eso-LM (B)
    const ex = await computeNll(model, x, { estimator: 'exact', orders: 2, samples: 1, seed: 1, trace: true });
    for (const t of ex.sequences[0]!.trace![0]!.terms) expect(t.attention).toBe('sequential');
    expect(Number.isFinite(ex.total.nll)).toBe(true);
  });

  it('forwardScores validates the prefix', async () => {
    const { model } = await build({ seed: 47, length: 8 });
    const base = { tokens: Int32Array.from([1, 60, 60]), x0: Int32Array.from([1, 2, 3]), attention: 'sequential' as const, targets: Int32Array.from([-1, 2, 3]) };
    await expect(model.forwardScores({ ...base, prefix: Int32Array.from([2]) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /inside prefix/ });
    await expect(model.forwardScores({ ...base, prefix: Int32Array.from([1, 1]) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(model.forwardScores({ ...base, attention: 'causal', x0: undefined, prefix: Int32Array.from([1]) } as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    const a = await model.forwardScores({ ...base, prefix: Int32Array.from([0]) });
    const b = await model.forwardScores(base);
    for (let i = 1; i < 3; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThan(1e-4);  // prefix 0 = the plain sequential forward
  });
});
