// The official sampling options beyond Eso-LM (B): Eso-LM (A) generation, MDLM with a
// planned order (use_ar_order / use_block_ar_order), AR prepend_token. Every greedy step
// is checked against the float64 reference forward (test/helpers/reference64.ts) over
// the tokens decided so far: the engine's pick must be a reference argmax (within 1e-4 of
// the max logit, the fp32 parity bar).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsolmError, Model, Sampler, type StepEvent } from '../lib/index.js';
import { makeRandomModel, type RandomModel, TINY } from './helpers/random-model.js';
import { type AttentionMode, referenceForward } from './helpers/reference64.js';

let dir: string;
let esoA: RandomModel, mdlm: RandomModel, ar: RandomModel, arMask: RandomModel;
let modelA: Model, modelMdlm: Model, modelAr: Model, modelArMask: Model;
const V = TINY.vocab_size;
const MASK = V - 1;

/** Expects `pick` to be an argmax (over non-mask tokens) of reference row `row`. */
function expectArgmax(logits: Float64Array, row: number, pick: number, what: string): void {
  let max = -Infinity;
  for (let v = 0; v < V; v++) if (v !== MASK) max = Math.max(max, logits[row * V + v]);
  expect(pick, what).not.toBe(MASK);
  expect(logits[row * V + pick], `${what}: pick ${pick} is not the reference argmax`).toBeGreaterThanOrEqual(max - 1e-4);
}

function ref(m: RandomModel, tokens: number[], positions: number[], attention: AttentionMode, prefix = 0): Float64Array {
  return referenceForward({ weights: m.weights, config: m.config, tokens, positions, attention, prefix });
}

/** A random tiny model's greedy picks at mask rows collapse to one token (the mask
 * embedding dominates the residual stream), which would hide a wrong attention pattern;
 * a small mask embedding and no output bias make the picks depend on the context. */
function lively(t: Record<string, { data: Float64Array | Float32Array }>): void {
  const d = TINY.hidden_size;
  for (const [name, spec] of Object.entries(t)) {
    if (name.endsWith('output_layer.linear.bias') || name.includes('output_layer.adaLN')) spec.data.fill(0);
    if (name.endsWith('vocab_embed.embedding')) for (let i = 0; i < d; i++) spec.data[MASK * d + i] *= 0.02;
  }
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-samplers-'));
  esoA = makeRandomModel(path.join(dir, 'a'), { arch: 'esolm', seed: 31, editTensors: lively, editConfig: (c) => { c.arch = 'esolm-a'; } });
  mdlm = makeRandomModel(path.join(dir, 'mdlm'), { arch: 'mdlm', seed: 32, editTensors: lively });
  ar = makeRandomModel(path.join(dir, 'ar'), { arch: 'ar', seed: 33, editTensors: lively, editConfig: (c) => { c.mask_index = MASK; } });
  arMask = makeRandomModel(path.join(dir, 'ar-mask'), { arch: 'ar', seed: 33, editTensors: lively, editConfig: (c) => { c.mask_index = MASK; c.training = { algo: 'ar', prepend: 'mask' }; } });
  modelA = await Model.load(esoA.dir, { backend: 'cpu' });
  modelMdlm = await Model.load(mdlm.dir, { backend: 'cpu' });
  modelAr = await Model.load(ar.dir, { backend: 'cpu' });
  modelArMask = await Model.load(arMask.dir, { backend: 'cpu' });
});

afterAll(() => {
  for (const m of [modelA, modelMdlm, modelAr, modelArMask]) m?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Replays Eso-LM (A) events against the reference: diffusion steps are mixed2 forwards
 * over the sorted prefix, sequential steps forwards with the diffusion tokens as a
 * bidirectional prefix of `seq0` slots. Returns the slot-ordered tokens and positions. */
function replayA(events: StepEvent[], givenPos: number[], givenTok: number[], seq0: number): void {
  const zPos = [...givenPos], zTok = [...givenTok];
  for (const e of events) {
    const k = e.perSequence;
    const pos = Array.from(e.positions.subarray(0, k)), tok = Array.from(e.tokens.subarray(0, k));
    const u = zTok.length;
    const tokens = [...zTok, ...new Array(k).fill(MASK)], positions = [...zPos, ...pos];
    const logits = e.phase === 'diffusion' ? ref(esoA, tokens, positions, 'mixed2') : ref(esoA, tokens, positions, 'prefix', seq0);
    if (e.phase === 'sequential') expect(k).toBe(1);
    for (let r = 0; r < k; r++) expectArgmax(logits, u + r, tok[r], `step ${e.step} (${e.phase}) row ${r}`);
    zPos.push(...pos);
    zTok.push(...tok);
  }
}

describe('Eso-LM (A) generation', () => {
  it('the model folder arch esolm-a defaults to mixed2 attention', () => {
    expect(modelA.config.arch).toBe('esolm-a');
    expect(modelA.defaultAttention()).toBe('mixed2');
  });

  it('diffusion only: each greedy step equals the float64 mixed2 forward over the sorted prefix', async () => {
    const L = 20;
    const schedule = [3, 1, 5, 2, 4, 5];
    const order = [5, 17, 0, 19, 9, 12, 1, 2, 18, 8, 3, 4, 16, 6, 7, 10, 11, 13, 14, 15];
    const events: StepEvent[] = [];
    const res = await modelA.generate({ sampler: new Sampler({ method: 'esolm-a', schedule, order, greedy: true }), length: L, onStep: (e) => events.push(e) });
    expect(events.map((e) => e.perSequence)).toEqual(schedule);
    expect(events.every((e) => e.phase === 'diffusion')).toBe(true);
    expect(res.nfe).toBe(schedule.length);
    replayA(events, [], [], L);
    expect(new Set(res.sequences[0]).size).toBeGreaterThan(4);
    const seq = res.sequences[0];
    events.forEach((e) => e.positions.forEach((p, i) => expect(seq[p]).toBe(e.tokens[i])));
  });

  it('alpha0 < 1 with a prompt: the KV-cached sequential phase equals full forwards with the bidirectional diffusion prefix', async () => {
    const L = 24;
    const prompt = [4, 9, 2];
    const events: StepEvent[] = [];
    const res = await modelA.generate({ sampler: new Sampler({ method: 'esolm-a', steps: 4, alpha0: 0.4, seed: 7, greedy: true }), length: L, prompt, onStep: (e) => events.push(e) });
    const seqEvents = events.filter((e) => e.phase === 'sequential');
    expect(seqEvents.length).toBe(L - prompt.length - res.nDiffusion);
    expect(seqEvents.length).toBeGreaterThan(2);
    expect(res.nDiffusion).toBeGreaterThan(0);
    const seqPos = seqEvents.map((e) => e.positions[0]);
    expect(seqPos).toEqual([...seqPos].sort((a, b) => a - b));
    expect(res.nfe).toBe(events.length);
    replayA(events, [0, 1, 2], prompt, prompt.length + res.nDiffusion);
    expect(new Set(res.sequences[0].subarray(3)).size).toBeGreaterThan(4);
    expect(Array.from(res.sequences[0].subarray(0, 3))).toEqual(prompt);
  });

  it('the sequential phase differs from a causal (Eso-LM (B)) reading of the prefix', async () => {
    // Guards the test above: with the prefix mask replaced by plain causal attention the
    // reference must disagree somewhere, or the check could not see a wrong cache.
    const L = 24;
    const events: StepEvent[] = [];
    const res = await modelA.generate({ sampler: new Sampler({ method: 'esolm-a', steps: 3, alpha0: 0.5, seed: 3, greedy: true }), length: L, prompt: [4, 9, 2, 40, 17], onStep: (e) => events.push(e) });
    const seq0 = res.nDiffusion + 5;
    const zPos: number[] = [0, 1, 2, 3, 4], zTok: number[] = [4, 9, 2, 40, 17];
    let maxDiff = 0;
    for (const e of events) {
      const k = e.perSequence;
      if (e.phase === 'sequential') {
        const tokens = [...zTok, MASK], positions = [...zPos, e.positions[0]];
        const a = ref(esoA, tokens, positions, 'prefix', seq0), b = ref(esoA, tokens, positions, 'causal');
        for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(a[zTok.length * V + v] - b[zTok.length * V + v]));
      }
      zPos.push(...Array.from(e.positions.subarray(0, k)));
      zTok.push(...Array.from(e.tokens.subarray(0, k)));
    }
    expect(maxDiff).toBeGreaterThan(1e-3);
  });

  it('a sequence does not depend on the batch size (same seed), and the plan is the esolm plan', async () => {
    const mk = (): Sampler => new Sampler({ method: 'esolm-a', steps: 5, alpha0: 0.6, topP: 0.9, temperature: 0.9, seed: 11 });
    const three = await modelA.generate({ sampler: mk(), length: 28, batch: 3 });
    const one = await modelA.generate({ sampler: mk(), length: 28, batch: 1 });
    const two = await modelA.generate({ sampler: mk(), length: 28, batch: 2 });
    expect(Array.from(one.sequences[0])).toEqual(Array.from(three.sequences[0]));
    expect(Array.from(two.sequences[1])).toEqual(Array.from(three.sequences[1]));
    expect(Array.from(three.sequences[0])).not.toEqual(Array.from(three.sequences[2]));
    // Same seed, same plan (order and step sizes) as Eso-LM (B).
    const evA: StepEvent[] = [], evB: StepEvent[] = [];
    await modelA.generate({ sampler: mk(), length: 28, batch: 2, onStep: (e) => evA.push(e) });
    await modelA.generate({ sampler: new Sampler({ method: 'esolm', steps: 5, alpha0: 0.6, topP: 0.9, temperature: 0.9, seed: 11 }), length: 28, batch: 2, onStep: (e) => evB.push(e) });
    expect(evA.map((e) => [e.phase, Array.from(e.positions)])).toEqual(evB.map((e) => [e.phase, Array.from(e.positions)]));
  });
});

describe('MDLM with a planned order', () => {
  async function replayMdlm(events: StepEvent[], L: number): Promise<void> {
    const x = new Array(L).fill(MASK);
    for (const e of events) {
      const logits = ref(mdlm, x, [...Array(L).keys()], 'bidirectional');
      for (let q = 0; q < e.perSequence; q++) {
        expectArgmax(logits, e.positions[q], e.tokens[q], `step ${e.step} position ${e.positions[q]}`);
      }
      for (let q = 0; q < e.perSequence; q++) x[e.positions[q]] = e.tokens[q];
    }
  }

  it('order "ar" (use_ar_order): one position per full bidirectional forward, left to right', async () => {
    const L = 12;
    const events: StepEvent[] = [];
    const res = await modelMdlm.generate({ sampler: new Sampler({ method: 'mdlm', order: 'ar', greedy: true }), length: L, onStep: (e) => events.push(e) });
    expect(res.nfe).toBe(L);
    expect(events.map((e) => Array.from(e.positions))).toEqual([...Array(L).keys()].map((i) => [i]));
    await replayMdlm(events, L);
    expect(new Set(res.sequences[0]).size).toBeGreaterThan(3);
  });

  it('order "block-ar" (use_block_ar_order): 4 subcontexts of L/4, L/4 forwards', async () => {
    const L = 16;
    const events: StepEvent[] = [];
    const res = await modelMdlm.generate({ sampler: new Sampler({ method: 'mdlm', order: 'block-ar', greedy: true }), length: L, onStep: (e) => events.push(e) });
    expect(res.nfe).toBe(4);
    expect(events.map((e) => Array.from(e.positions))).toEqual([0, 1, 2, 3].map((j) => [j, 4 + j, 8 + j, 12 + j]));
    await replayMdlm(events, L);
  });

  it('explicit order and schedule, and batch-invariant sampling', async () => {
    const order = [7, 0, 3, 5, 1, 2, 4, 6];
    const events: StepEvent[] = [];
    await modelMdlm.generate({ sampler: new Sampler({ method: 'mdlm', order, schedule: [2, 3, 3], greedy: true }), length: 8, onStep: (e) => events.push(e) });
    expect(events.map((e) => Array.from(e.positions))).toEqual([[7, 0], [3, 5, 1], [2, 4, 6]]);
    await replayMdlm(events, 8);
    const mk = (): Sampler => new Sampler({ method: 'mdlm', order: 'ar', topP: 0.9, seed: 4 });
    const a = await modelMdlm.generate({ sampler: mk(), length: 10, batch: 3 });
    const b = await modelMdlm.generate({ sampler: mk(), length: 10, batch: 1 });
    expect(Array.from(b.sequences[0])).toEqual(Array.from(a.sequences[0]));
  });

  it('rejects what the official switches cannot mean', () => {
    expect(() => new Sampler({ method: 'mdlm', order: [1, 0] })).toThrow(/needs steps/);
    expect(() => new Sampler({ method: 'mdlm', order: 'block-ar', schedule: [4] })).toThrow(EsolmError);
    expect(() => new Sampler({ method: 'mdlm', order: 'block-ar', blocks: { length: 4 } })).toThrow(EsolmError);
    expect(() => new Sampler({ method: 'ar', order: 'ar' })).toThrow(/only used by/);
    expect(() => new Sampler({ method: 'mdlm', order: 'left' as never })).toThrow(EsolmError);
    expect(() => modelMdlm.generateRequest({ sampler: new Sampler({ method: 'mdlm', order: 'block-ar' }), length: 10 })).toThrow(/divisible by 4/);
  });
});

describe('AR prepend_token', () => {
  /** Checks that each generated token is the argmax of the causal reference over the prefix. */
  function replayAr(m: RandomModel, first: number, seq: Int32Array, given = 0): void {
    const fed = [first, ...Array.from(seq)];
    const logits = ref(m, fed.slice(0, seq.length), [...Array(seq.length).keys()], 'causal');
    for (let i = given; i < seq.length; i++) expectArgmax(logits, i, seq[i], `token ${i}`);
    expect(new Set(seq).size, 'the picks vary (the check can see a wrong context)').toBeGreaterThan(2);
  }

  it('mask: L tokens after a MASK prefix, the prefix dropped', async () => {
    const res = await modelAr.generate({ sampler: new Sampler({ method: 'ar', prepend: 'mask', greedy: true }), length: 10 });
    expect(res.sequences[0].length).toBe(10);
    expect(res.nfe).toBe(10);
    replayAr(ar, MASK, res.sequences[0]);
  });

  it('bos: L tokens after the BOS token, the prefix dropped; none keeps BOS as token 0', async () => {
    const bos = 5;
    const withBos = await modelAr.generate({ sampler: new Sampler({ method: 'ar', prepend: 'bos', bos, greedy: true }), length: 9 });
    expect(withBos.nfe).toBe(9);
    replayAr(ar, bos, withBos.sequences[0]);
    const none = await modelAr.generate({ sampler: new Sampler({ method: 'ar', prepend: 'none', bos, greedy: true }), length: 10 });
    expect(none.sequences[0][0]).toBe(bos);
    expect(none.nfe).toBe(9);
    // none = bos shifted: the official 'none' output is BOS followed by L-1 tokens.
    expect(Array.from(none.sequences[0].subarray(1))).toEqual(Array.from(withBos.sequences[0]));
  });

  it('with a prompt the prompt follows the prefix; events carry output positions; batch-invariant', async () => {
    const events: StepEvent[] = [];
    const res = await modelAr.generate({ sampler: new Sampler({ method: 'ar', prepend: 'mask', greedy: true }), length: 8, prompt: [3, 7], onStep: (e) => events.push(e) });
    expect(Array.from(res.sequences[0].subarray(0, 2))).toEqual([3, 7]);
    replayAr(ar, MASK, res.sequences[0], 2);
    expect(events.map((e) => e.positions[0])).toEqual([2, 3, 4, 5, 6, 7]);
    const mk = (): Sampler => new Sampler({ method: 'ar', prepend: 'mask', topP: 0.9, seed: 8 });
    const a = await modelAr.generate({ sampler: mk(), length: 12, batch: 3 });
    const b = await modelAr.generate({ sampler: mk(), length: 12, batch: 1 });
    expect(Array.from(b.sequences[0])).toEqual(Array.from(a.sequences[0]));
  });

  it('defaults to the model\'s training prepend', async () => {
    const dflt = await modelArMask.generate({ sampler: new Sampler({ method: 'ar', greedy: true }), length: 10 });
    const explicit = await modelAr.generate({ sampler: new Sampler({ method: 'ar', prepend: 'mask', greedy: true }), length: 10 });
    expect(Array.from(dflt.sequences[0])).toEqual(Array.from(explicit.sequences[0]));
    expect(() => new Sampler({ method: 'ar', prepend: 'eos' as never })).toThrow(EsolmError);
    expect(() => new Sampler({ method: 'esolm', steps: 2, prepend: 'mask' })).toThrow(/only used by method "ar"/);
  });
});
