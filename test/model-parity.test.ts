// Native Model.forward vs the independent float64 reference (test/helpers/reference64.ts).
// Bar: max abs logit error <= 1e-4 (DESIGN.md "Numerics"), for every arch, every
// attention mode, batch 2 with different tokens and slot orders per sequence, and for
// F16 / BF16 files, the "backbone." prefix, a stored inv_freq and two shard files.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { type Arch, type ModelConfigJson, type RandomModel, type RandomModelOptions, Rng, makeRandomModel, randomTokens } from './helpers/random-model.js';
import { type AttentionMode, attentionMask, maxAbsDiff, referenceForward } from './helpers/reference64.js';
import { f32ToBf16Bits, numberToF16Bits, readSafetensors, roundTo, writeSafetensors } from './helpers/safetensors.js';

const TOL = 1e-4;
const MODES: Record<Arch, AttentionMode[]> = {
  esolm: ['bidirectional', 'causal', 'mixed2', 'sequential'],
  mdlm: ['bidirectional', 'causal', 'mixed2', 'sequential'],
  ar: ['causal', 'bidirectional'],
};
const DEFAULT_MODE: Record<Arch, AttentionMode> = { esolm: 'causal', mdlm: 'bidirectional', ar: 'causal' };
const NS = [1, 7, 16];

let root: string;
const opened: Model[] = [];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'esolm-parity-'));
});
afterAll(() => {
  for (const m of opened) m.dispose();
  rmSync(root, { recursive: true, force: true });
});

let dirCount = 0;
async function build(opts: RandomModelOptions): Promise<{ rm: RandomModel; model: Model }> {
  const rm = makeRandomModel(join(root, `m${dirCount++}`), opts);
  const model = await Model.load(rm.dir, { backend: 'cpu' });
  opened.push(model);
  return { rm, model };
}

interface Seq {
  tokens: number[];
  positions: number[];
  x0?: number[];
}

/** One sequence: tokens with masks (at least one mask and one clean token when n > 1), positions a random permutation. */
function makeSeq(rng: Rng, cfg: ModelConfigJson, n: number, mode: AttentionMode, offset = 0): Seq {
  const positions = rng.permutation(n).map((p) => p + offset);
  if (mode === 'sequential') {
    const x0 = randomTokens(rng, cfg, n, 0);
    const tokens = x0.map((t) => (rng.next() < 0.5 ? cfg.mask_index : t));
    if (n > 1) {
      tokens[rng.int(n)] = cfg.mask_index;
    }
    return { tokens, positions, x0 };
  }
  const tokens = randomTokens(rng, cfg, n, 0.4);
  if (n > 1) {
    if (!tokens.includes(cfg.mask_index)) tokens[rng.int(n)] = cfg.mask_index;
    if (tokens.every((t) => t === cfg.mask_index)) tokens[rng.int(n)] = randomTokens(rng, cfg, 1, 0)[0]!;
  }
  return { tokens, positions };
}

function flat(seqs: Seq[], key: 'tokens' | 'positions' | 'x0'): Int32Array {
  return Int32Array.from(seqs.flatMap((s) => s[key] ?? []));
}

/** Runs the native forward on the batch and compares each sequence with the reference. */
async function checkBatch(model: Model, rm: RandomModel, seqs: Seq[], mode: AttentionMode, label: string): Promise<number> {
  const n = seqs[0]!.tokens.length;
  const V = rm.config.vocab_size;
  const logits = await model.forward({
    tokens: flat(seqs, 'tokens'),
    positions: flat(seqs, 'positions'),
    batch: seqs.length,
    attention: mode,
    ...(mode === 'sequential' ? { x0: flat(seqs, 'x0') } : {}),
  });
  expect(logits).toBeInstanceOf(Float32Array);
  expect(logits.length).toBe(seqs.length * n * V);
  let worst = 0;
  seqs.forEach((s, b) => {
    const ref = referenceForward({ weights: rm.weights, config: rm.config, tokens: s.tokens, positions: s.positions, attention: mode, x0: s.x0 });
    const got = logits.subarray(b * n * V, (b + 1) * n * V);
    const err = maxAbsDiff(got, ref);
    let row = -1;
    if (!(err <= TOL)) {
      for (let r = 0; r < n && row < 0; r++) if (!(maxAbsDiff(got.subarray(r * V, (r + 1) * V), ref.subarray(r * V, (r + 1) * V)) <= TOL)) row = r;
    }
    expect(err, `${label} seq ${b}: max abs err ${err} (first bad row ${row})`).toBeLessThanOrEqual(TOL);
    worst = Math.max(worst, err);
  });
  return worst;
}

describe('the reference itself is sensitive to what the native model must get right', () => {
  it('attention mode, positions and the adaLN gates all change the logits by far more than the bar', () => {
    const rm = makeRandomModel(join(mkdtempSync(join(tmpdir(), 'esolm-ref-')), 'm'), { arch: 'esolm', seed: 5 });
    try {
      const rng = new Rng(11);
      const s = makeSeq(rng, rm.config, 16, 'mixed2');
      const run = (attention: AttentionMode, positions = s.positions, weights = rm.weights, x0?: number[]) =>
        referenceForward({ weights, config: rm.config, tokens: s.tokens, positions, attention, x0 });
      const causal = run('causal');
      expect(maxAbsDiff(causal, run('bidirectional'))).toBeGreaterThan(1e-2);
      expect(maxAbsDiff(causal, run('mixed2'))).toBeGreaterThan(1e-2);
      expect(maxAbsDiff(run('bidirectional'), run('mixed2'))).toBeGreaterThan(1e-2);
      const x0 = s.tokens.map((t) => (t === rm.config.mask_index ? 3 : t));
      expect(maxAbsDiff(causal, run('sequential', s.positions, rm.weights, x0))).toBeGreaterThan(1e-2);
      // original positions matter (RoPE), not just slot order
      expect(maxAbsDiff(causal, run('causal', [...s.positions].reverse()))).toBeGreaterThan(1e-2);
      // the gates are not ~0: zeroing block 1's adaLN bias moves the logits a lot
      const w2 = { ...rm.weights, 'blocks.1.adaLN_modulation.bias': new Float64Array(6 * rm.config.hidden_size) };
      expect(maxAbsDiff(causal, run('causal', s.positions, w2))).toBeGreaterThan(1e-2);
    } finally {
      rmSync(join(rm.dir, '..'), { recursive: true, force: true });
    }
  });
});

describe('safetensors test writer', () => {
  it('rounds F16 and BF16 to nearest even and stores exactly what roundTo says', () => {
    expect(numberToF16Bits(1)).toBe(0x3c00);
    expect(numberToF16Bits(1 / 3)).toBe(0x3555);
    expect(numberToF16Bits(-2)).toBe(0xc000);
    expect(numberToF16Bits(65504)).toBe(0x7bff);
    expect(numberToF16Bits(65519)).toBe(0x7bff);
    expect(numberToF16Bits(65520)).toBe(0x7c00); // rounds up to inf
    expect(numberToF16Bits(2 ** -24)).toBe(0x0001);
    expect(numberToF16Bits(2 ** -25)).toBe(0x0000); // tie -> even (0)
    expect(numberToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie -> even (2)
    expect(numberToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(numberToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    const dir = mkdtempSync(join(tmpdir(), 'esolm-st-'));
    try {
      const rng = new Rng(3);
      const data = rng.normals(300, 0.7);
      const file = join(dir, 'x.safetensors');
      const stored = writeSafetensors(file, {
        a: { dtype: 'F32', shape: [300], data },
        b: { dtype: 'BF16', shape: [10, 30], data },
        c: { dtype: 'F16', shape: [3, 100], data },
      });
      const back = readSafetensors(readFileSync(file));
      for (const [k, dt] of [['a', 'F32'], ['b', 'BF16'], ['c', 'F16']] as const) {
        expect(Array.from(back[k]!.values)).toEqual(Array.from(stored[k]!));
        expect(Array.from(roundTo(dt, data))).toEqual(Array.from(stored[k]!));
      }
      expect(back.b!.shape).toEqual([10, 30]);
      expect(readFileSync(file).readBigUInt64LE(0) % 8n).toBe(0n); // header padded to 8 bytes
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('attention masks of the reference', () => {
  it("mixed2 by token equals the official cutoff rule (q < c and kv < c, or kv <= q) when clean tokens come first", () => {
    const M = 60;
    const tokens = [5, 9, 1, 7, M, M, M, M, M]; // c = 4 clean, then masks (the official sorted order)
    const c = 4;
    const { table, rows } = attentionMask('mixed2', tokens.length, tokens, M);
    for (let q = 0; q < rows; q++)
      for (let kv = 0; kv < rows; kv++) expect(table[q * rows + kv], `q=${q} kv=${kv}`).toBe(kv <= q || (q < c && kv < c) ? 1 : 0);
  });

  it('sequential is the BD3-LM block_diff_mask with block size 1 over [z | x]', () => {
    const n = 5;
    const { table, rows } = attentionMask('sequential', n, [1, 2, 3, 4, 5], 60);
    expect(rows).toBe(2 * n);
    for (let q = 0; q < rows; q++)
      for (let kv = 0; kv < rows; kv++) {
        const xq = q >= n, xk = kv >= n;
        const bq = xq ? q - n : q, bk = xk ? kv - n : kv;
        const want = (bq === bk && xq === xk) || (bq > bk && xk && !xq) || (bq >= bk && xk && xq);
        expect(table[q * rows + kv], `q=${q} kv=${kv}`).toBe(want ? 1 : 0);
      }
  });
});

for (const arch of ['esolm', 'mdlm', 'ar'] as const) {
  describe(`${arch}: native forward vs float64 reference`, () => {
    let rm: RandomModel;
    let model: Model;
    beforeAll(async () => {
      ({ rm, model } = await build({ arch, seed: arch === 'esolm' ? 101 : arch === 'mdlm' ? 202 : 303 }));
    });

    it('loads the config it was given on the cpu backend', () => {
      expect(model.backend).toBe('cpu');
      for (const [k, v] of Object.entries(rm.config)) expect((model.config as unknown as Record<string, unknown>)[k], k).toBe(v);
    });

    for (const mode of MODES[arch]) {
      for (const n of NS) {
        it(`${mode}, batch 2, n=${n}, permuted positions, masks in the input`, async () => {
          const rng = new Rng(1000 * n + mode.length + arch.length * 7);
          const seqs = [makeSeq(rng, rm.config, n, mode), makeSeq(rng, rm.config, n, mode, 3)];
          if (n > 1) expect(seqs[0]!.tokens).not.toEqual(seqs[1]!.tokens);
          await checkBatch(model, rm, seqs, mode, `${arch}/${mode}/n=${n}`);
        });
      }
    }

    it(`defaults: batch 1, positions 0..n-1, attention '${DEFAULT_MODE[arch]}'`, async () => {
      const rng = new Rng(77);
      const s = makeSeq(rng, rm.config, 12, 'causal');
      const logits = await model.forward({ tokens: Int32Array.from(s.tokens) });
      const ref = referenceForward({ weights: rm.weights, config: rm.config, tokens: s.tokens, attention: DEFAULT_MODE[arch] });
      expect(logits.length).toBe(12 * rm.config.vocab_size);
      expect(maxAbsDiff(logits, ref)).toBeLessThanOrEqual(TOL);
      // default positions per sequence restart at 0 for every sequence of a batch
      const two = await model.forward({ tokens: Int32Array.from([...s.tokens, ...s.tokens]), batch: 2 });
      expect(maxAbsDiff(two.subarray(0, logits.length), ref)).toBeLessThanOrEqual(TOL);
      expect(maxAbsDiff(two.subarray(logits.length), ref)).toBeLessThanOrEqual(TOL);
    });

    it('a full context (n = length)', async () => {
      const rng = new Rng(4242);
      const mode = DEFAULT_MODE[arch];
      const n = rm.config.length;
      await checkBatch(model, rm, [makeSeq(rng, rm.config, n, mode)], mode, `${arch}/${mode}/n=${n}`);
    });
  });
}

describe('weight file variants (the reference uses the stored, rounded values)', () => {
  const variants: { name: string; opts: RandomModelOptions }[] = [
    { name: 'esolm F16', opts: { arch: 'esolm', dtype: 'F16' } },
    { name: 'esolm BF16', opts: { arch: 'esolm', dtype: 'BF16' } },
    { name: 'esolm backbone. prefix', opts: { arch: 'esolm', prefix: true } },
    { name: 'esolm with rotary_emb.inv_freq', opts: { arch: 'esolm', invFreq: true } },
    { name: 'esolm in two shard files', opts: { arch: 'esolm', shards: 2 } },
    { name: 'mdlm BF16 + prefix + inv_freq + two shards', opts: { arch: 'mdlm', dtype: 'BF16', prefix: true, invFreq: true, shards: 2 } },
    { name: 'ar F16 + prefix + inv_freq', opts: { arch: 'ar', dtype: 'F16', prefix: true, invFreq: true } },
    { name: 'ar BF16 in two shard files', opts: { arch: 'ar', dtype: 'BF16', shards: 2 } },
  ];
  for (const { name, opts } of variants) {
    it(name, async () => {
      const { rm, model } = await build({ ...opts, seed: 900 + name.length });
      const rng = new Rng(31 + name.length);
      for (const mode of MODES[opts.arch ?? 'esolm']) {
        await checkBatch(model, rm, [makeSeq(rng, rm.config, 16, mode), makeSeq(rng, rm.config, 16, mode, 5)], mode, `${name}/${mode}`);
      }
    });
  }

  it('half-precision files really hold rounded values (the variants test something)', () => {
    const dir = join(root, 'rounding');
    const f32 = makeRandomModel(dir + '-f32', { arch: 'esolm', seed: 7 });
    const bf16 = makeRandomModel(dir + '-bf16', { arch: 'esolm', seed: 7, dtype: 'BF16' });
    const f16 = makeRandomModel(dir + '-f16', { arch: 'esolm', seed: 7, dtype: 'F16' });
    const name = 'blocks.0.attn_qkv.weight';
    expect(maxAbsDiff(f32.weights[name]!, bf16.weights[name]!)).toBeGreaterThan(1e-4);
    expect(maxAbsDiff(f32.weights[name]!, f16.weights[name]!)).toBeGreaterThan(1e-6);
    expect(maxAbsDiff(f32.weights[name]!, f16.weights[name]!)).toBeLessThan(1e-3);
  });
});
