// Generation (Model.generate / generateStream, Sampler): the native loops checked
// against recomputation with full forwards, plus determinism, conditioning, abort,
// MDLM NFE accounting and argument errors. Plan and sampler statistics are checked by
// the native tests (test/native/schedule_test.cpp, sampler_test.cpp).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsolmError, Model, Sampler, type StepEvent } from '../lib/index.js';
import { makeRandomModel, TINY } from './helpers/random-model.js';

let dir: string;
let model: Model;
let arModel: Model;
const V = TINY.vocab_size;
const MASK = V - 1;

/** Argmax over non-mask tokens of one logits row (lowest id on ties), as greedy does. */
function argmax(row: Float32Array): number {
  let best = -1;
  for (let v = 0; v < row.length; v++) {
    if (v === MASK) continue;
    if (best < 0 || row[v] > row[best]) best = v;
  }
  return best;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-gen-'));
  makeRandomModel(path.join(dir, 'esolm'), { arch: 'esolm', seed: 11 });
  makeRandomModel(path.join(dir, 'ar'), { arch: 'ar', seed: 12 });
  makeRandomModel(path.join(dir, 'long'), { arch: 'esolm', seed: 13, hidden_size: 128, n_heads: 4, n_blocks: 8, vocab_size: 1000, length: 1024 });
  model = await Model.load(path.join(dir, 'esolm'), { backend: 'cpu' });
  arModel = await Model.load(path.join(dir, 'ar'), { backend: 'cpu' });
});

afterAll(() => {
  model?.dispose();
  arModel?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('Eso-LM (B) generation', () => {
  it('greedy picks on a given order and step sizes equal the full-forward recomputation', async () => {
    const L = 24;
    const schedule = [3, 1, 5, 2, 4, 1, 1, 7];
    const order = [5, 17, 0, 23, 9, 12, 1, 2, 22, 8, 3, 4, 21, 6, 7, 10, 11, 13, 14, 15, 16, 18, 19, 20];
    const sampler = new Sampler({ method: 'esolm', schedule, order, greedy: true });
    const res = await model.generate({ sampler, length: L });
    // Recompute: step i's picks are the argmax of rows [u, u+k) of one causal forward over
    // the slot-ordered prefix (decided tokens, then k masks) at positions = order.
    const z: number[] = [];
    let u = 0;
    for (const k of schedule) {
      const tokens = Int32Array.from([...z, ...new Array(k).fill(MASK)]);
      const positions = Int32Array.from(order.slice(0, u + k));
      const logits = await model.forward({ tokens, positions, attention: 'causal' });
      for (let r = 0; r < k; r++) z.push(argmax(logits.subarray((u + r) * V, (u + r + 1) * V)));
      u += k;
    }
    const expected = new Int32Array(L);
    order.forEach((pos, slot) => { expected[pos] = z[slot]; });
    expect(Array.from(res.sequences[0])).toEqual(Array.from(expected));
    expect(res.nfe).toBe(schedule.length);
    expect(res.nDiffusion).toBe(L);
    expect(res.replayedSteps).toBe(0);  // the CPU runs the planned KV loop without recording
  });

  it('prompt and fixed tokens come first, are committed in step 1 and never change', async () => {
    const L = 20;
    const prompt = [3, 4, 5];
    const fixed = { 10: 7, 19: 8 };
    const sampler = new Sampler({ method: 'esolm', steps: 4, alpha0: 0.5, topP: 0.9, seed: 9, greedy: true });
    const events: StepEvent[] = [];
    const res = await model.generate({ sampler, length: L, batch: 2, prompt, fixed, onStep: (e) => events.push(e) });
    for (const seq of res.sequences) {
      expect(Array.from(seq.slice(0, 3))).toEqual(prompt);
      expect(seq[10]).toBe(7);
      expect(seq[19]).toBe(8);
      expect(seq.every((t) => t >= 0 && t < V && t !== MASK)).toBe(true);
    }
    const revealed = events.flatMap((e) => Array.from(e.positions));
    for (const p of [0, 1, 2, 10, 19]) expect(revealed).not.toContain(p);
    for (let b = 0; b < 2; b++) {
      const mine = events.flatMap((e) => Array.from(e.positions.subarray(b * e.perSequence, (b + 1) * e.perSequence)));
      expect(mine.sort((x, y) => x - y)).toEqual([...Array(L).keys()].filter((p) => ![0, 1, 2, 10, 19].includes(p)));
    }
    // Greedy with conditioning equals the recomputation too: given tokens are the first slots.
    const given = [0, 1, 2, 10, 19];
    const givenTok = [3, 4, 5, 7, 8];
    const byStep = events.map((e) => ({ k: e.perSequence, pos: Array.from(e.positions.subarray(0, e.perSequence)), tok: Array.from(e.tokens.subarray(0, e.perSequence)) }));
    const slotsPos = [...given];
    const slotsTok = [...givenTok];
    for (const st of byStep) {
      const tokens = Int32Array.from([...slotsTok, ...new Array(st.k).fill(MASK)]);
      const positions = Int32Array.from([...slotsPos, ...st.pos]);
      const logits = await model.forward({ tokens, positions, attention: 'causal' });
      const u = slotsTok.length;
      for (let r = 0; r < st.k; r++) expect(argmax(logits.subarray((u + r) * V, (u + r + 1) * V))).toBe(st.tok[r]);
      slotsPos.push(...st.pos);
      slotsTok.push(...st.tok);
    }
  });

  it('alpha0 < 1: a diffusion phase, then a left-to-right sequential phase of one token per step', async () => {
    const sampler = new Sampler({ method: 'esolm', steps: 8, alpha0: 0.3, topP: 0.9, seed: 4 });
    const events: StepEvent[] = [];
    const res = await model.generate({ sampler, length: 48, onStep: (e) => events.push(e) });
    const seq = events.filter((e) => e.phase === 'sequential');
    expect(seq.length).toBe(48 - res.nDiffusion);
    expect(seq.length).toBeGreaterThan(0);
    expect(seq.every((e) => e.perSequence === 1)).toBe(true);
    const pos = seq.map((e) => e.positions[0]);
    expect(pos).toEqual([...pos].sort((a, b) => a - b));
    expect(res.nfe).toBe(events.length);
  });

  it('is deterministic in the seed and independent of the other sequences in the batch', async () => {
    const mk = (seed: number) => new Sampler({ method: 'esolm', steps: 6, alpha0: 0.7, topP: 0.9, temperature: 0.8, seed });
    const a = await model.generate({ sampler: mk(1), length: 32, batch: 3 });
    const b = await model.generate({ sampler: mk(1), length: 32, batch: 3 });
    const c = await model.generate({ sampler: mk(2), length: 32, batch: 3 });
    const one = await model.generate({ sampler: mk(1), length: 32, batch: 1 });
    const two = await model.generate({ sampler: mk(1), length: 32, batch: 2 });
    expect(a.sequences.map((s) => Array.from(s))).toEqual(b.sequences.map((s) => Array.from(s)));
    expect(a.sequences.map((s) => Array.from(s))).not.toEqual(c.sequences.map((s) => Array.from(s)));
    expect(Array.from(one.sequences[0])).toEqual(Array.from(a.sequences[0]));
    expect(Array.from(two.sequences[1])).toEqual(Array.from(a.sequences[1]));
    expect(Array.from(a.sequences[0])).not.toEqual(Array.from(a.sequences[1]));
  });

  it('block schedule reveals one position per block per step', async () => {
    const sampler = new Sampler({ method: 'esolm', blocks: { length: 8, shuffle: true }, seed: 3 });
    const events: StepEvent[] = [];
    await model.generate({ sampler, length: 32, onStep: (e) => events.push(e) });
    expect(events.length).toBe(8);
    for (const e of events) {
      expect(e.perSequence).toBe(4);
      const blocks = Array.from(e.positions).map((p) => Math.floor(p / 8)).sort();
      expect(blocks).toEqual([0, 1, 2, 3]);
      const offsets = new Set(Array.from(e.positions).map((p) => p % 8));
      expect(offsets.size).toBe(1);
    }
  });
});

describe('MDLM generation', () => {
  it('counts one NFE per forward and skips the forward after a step that changed nothing', async () => {
    const sampler = new Sampler({ method: 'mdlm', steps: 64, topP: 0.9, seed: 5 });
    const events: StepEvent[] = [];
    const res = await model.generate({ sampler, length: 12, onStep: (e) => events.push(e) });
    let expectedNfe = 0;
    let prevChanged = true;
    for (const e of events) {
      if (prevChanged) expectedNfe++;
      expect(e.nfe).toBe(expectedNfe);
      prevChanged = e.perSequence > 0;
    }
    expect(res.nfe).toBe(expectedNfe);
    expect(res.nfe).toBeLessThan(events.length); // with T >> L, most steps reveal nothing
    expect(res.sequences[0].every((t) => t !== MASK)).toBe(true);
  });

  it('greedy reveals equal the argmax of the bidirectional forward at the time of the step', async () => {
    const sampler = new Sampler({ method: 'mdlm', steps: 6, greedy: true, seed: 2 });
    const events: StepEvent[] = [];
    const L = 16;
    const res = await model.generate({ sampler, length: L, prompt: [1, 2], onStep: (e) => events.push(e) });
    const x = new Int32Array(L).fill(MASK);
    x[0] = 1;
    x[1] = 2;
    for (const e of events) {
      if (e.perSequence === 0) continue;
      const logits = await model.forward({ tokens: x, attention: 'bidirectional' });
      for (let q = 0; q < e.perSequence; q++) {
        const p = e.positions[q];
        expect(argmax(logits.subarray(p * V, (p + 1) * V))).toBe(e.tokens[q]);
      }
      for (let q = 0; q < e.perSequence; q++) x[e.positions[q]] = e.tokens[q];
    }
    expect(Array.from(res.sequences[0])).toEqual(Array.from(x));
  });
});

describe('AR generation', () => {
  it('greedy equals the argmax chain of full causal forwards', async () => {
    const sampler = new Sampler({ method: 'ar', greedy: true });
    const L = 12;
    const res = await arModel.generate({ sampler, length: L, prompt: [4, 9] });
    const x = [4, 9];
    while (x.length < L) {
      const logits = await arModel.forward({ tokens: Int32Array.from(x), attention: 'causal' });
      x.push(argmax(logits.subarray((x.length - 1) * V, x.length * V)));
    }
    expect(Array.from(res.sequences[0])).toEqual(x);
    expect(res.nfe).toBe(L - 2);
  });

  it('forces fixed tokens when their position comes and needs a first token', async () => {
    const sampler = new Sampler({ method: 'ar', topP: 0.9, seed: 1, bos: 0 });
    const res = await arModel.generate({ sampler, length: 10, fixed: new Map([[5, 33]]) });
    expect(res.sequences[0][0]).toBe(0);
    expect(res.sequences[0][5]).toBe(33);
    await expect(arModel.generate({ sampler: new Sampler({ method: 'ar' }), length: 10 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});

describe('streaming, abort and concurrency', () => {
  it('generateStream yields every step and returns the result', async () => {
    const sampler = new Sampler({ method: 'esolm', steps: 5, seed: 8 });
    const stream = model.generateStream({ sampler, length: 40 });
    const seen: StepEvent[] = [];
    let r = await stream.next();
    while (!r.done) {
      seen.push(r.value);
      r = await stream.next();
    }
    expect(seen.length).toBe(r.value.nfe);
    const direct = await model.generate({ sampler, length: 40 });
    expect(Array.from(r.value.sequences[0])).toEqual(Array.from(direct.sequences[0]));
  });

  it('an AbortSignal stops between steps with ERR_ABORTED and leaves model and cache usable', async () => {
    // A model whose 1024-step generation takes about a second, so the abort (delivered to
    // the loop asynchronously, after the third step event) lands long before the end.
    const long = await Model.load(path.join(dir, 'long'), { backend: 'cpu' });
    const cache = long.createCache({ batch: 1, capacity: 1024 });
    const ac = new AbortController();
    const sampler = new Sampler({ method: 'esolm', steps: 8, alpha0: 0, seed: 1 });
    let steps = 0;
    const run = long.generate({ sampler, length: 1024, cache, signal: ac.signal, onStep: () => { if (++steps === 3) ac.abort(); } });
    await expect(run).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(steps).toBeLessThan(1024);
    const again = await long.generate({ sampler, length: 64, cache });
    const fresh = await long.generate({ sampler, length: 64 });
    expect(Array.from(again.sequences[0])).toEqual(Array.from(fresh.sequences[0]));
    const pre = new AbortController();
    pre.abort();
    await expect(long.generate({ sampler, length: 8, signal: pre.signal })).rejects.toBeInstanceOf(EsolmError);
    long.dispose();
  });

  it('breaking out of generateStream cancels the run; the model stays usable', async () => {
    const sampler = new Sampler({ method: 'ar', bos: 0, seed: 2 });
    let n = 0;
    for await (const _ of model.generateStream({ sampler, length: 64 })) {
      if (++n === 2) break;
    }
    expect(n).toBe(2);
    const ok = await model.generate({ sampler, length: 8 });
    expect(ok.sequences[0].length).toBe(8);
  });

  it('concurrent calls on one model queue and give the same results as sequential calls', async () => {
    const s1 = new Sampler({ method: 'esolm', steps: 4, seed: 21 });
    const s2 = new Sampler({ method: 'mdlm', steps: 4, seed: 22 });
    const [a, b] = await Promise.all([model.generate({ sampler: s1, length: 32 }), model.generate({ sampler: s2, length: 32 })]);
    const a2 = await model.generate({ sampler: s1, length: 32 });
    const b2 = await model.generate({ sampler: s2, length: 32 });
    expect(Array.from(a.sequences[0])).toEqual(Array.from(a2.sequences[0]));
    expect(Array.from(b.sequences[0])).toEqual(Array.from(b2.sequences[0]));
  });
});

describe('argument errors', () => {
  const bad: [string, () => unknown][] = [
    ['unknown method', () => new Sampler({ method: 'x' as never, steps: 4 })],
    ['esolm without steps', () => new Sampler({ method: 'esolm' })],
    ['topP 0', () => new Sampler({ method: 'esolm', steps: 4, topP: 0 })],
    ['alpha0 2', () => new Sampler({ method: 'esolm', steps: 4, alpha0: 2 })],
    ['temperature -1', () => new Sampler({ method: 'esolm', steps: 4, temperature: -1 })],
    ['negative seed', () => new Sampler({ method: 'esolm', steps: 4, seed: -1 })],
    ['unknown option', () => new Sampler({ method: 'esolm', steps: 4, top_p: 0.9 } as never)],
    ['schedule with zeros', () => new Sampler({ method: 'esolm', schedule: [1, 0, 2] })],
    ['schedule for ar', () => new Sampler({ method: 'ar', schedule: [4] })],
  ];
  for (const [name, fn] of bad) {
    it(`Sampler: ${name}`, () => {
      expect(fn).toThrowError(EsolmError);
      try { fn(); } catch (e) { expect((e as EsolmError).code).toBe('ERR_INVALID_ARG'); }
    });
  }

  it('generate validates its options', async () => {
    const s = new Sampler({ method: 'esolm', steps: 4 });
    const cases: object[] = [
      { sampler: {} },
      { sampler: s, length: 0 },
      { sampler: s, length: TINY.length + 1 },
      { sampler: s, batch: 0 },
      { sampler: s, length: 8, prompt: new Array(9).fill(1) },
      { sampler: s, length: 8, prompt: [MASK] },
      { sampler: s, length: 8, prompt: [V] },
      { sampler: s, length: 8, fixed: { 8: 1 } },
      { sampler: s, length: 8, prompt: 'text' },
      { sampler: new Sampler({ method: 'esolm', schedule: [3] }), length: 8 },
      { sampler: new Sampler({ method: 'esolm', order: [0, 1, 2], steps: 2 }), length: 8 },
      { sampler: new Sampler({ method: 'esolm', blocks: { length: 3 } }), length: 8 },
      { sampler: s, length: 8, cache: model.createCache({ batch: 2, capacity: 8 }) },
    ];
    for (const c of cases) {
      await expect(model.generate(c as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    }
  });
});

describe('the per-model call queue', () => {
  it('steps issued without awaiting run in order and read the cache state when they run', async () => {
    const cache = model.createCache({ batch: 1, capacity: 16 });
    const t = Int32Array.from([1, 2, 3, 4, 5, 6]);
    const [a, b] = await Promise.all([
      model.step(cache, { tokens: t.subarray(0, 3), commit: 3 }),
      model.step(cache, { tokens: t.subarray(3, 6), commit: 3 }),
    ]);
    expect(cache.committed).toBe(6);
    const full = await model.forward({ tokens: t, attention: 'causal' });
    let max = 0;
    for (let i = 0; i < 3 * V; i++) max = Math.max(max, Math.abs(a[i] - full[i]), Math.abs(b[i] - full[3 * V + i]));
    expect(max).toBeLessThan(1e-5);
    cache.dispose();
  });

  it('cache.reset() runs in call order and forgets the committed slots', async () => {
    const cache = model.createCache({ batch: 1, capacity: 8 });
    const t = Int32Array.from([4, 5, 6]);
    const first = model.step(cache, { tokens: t, commit: 3 });
    const reset = cache.reset();
    const again = model.step(cache, { tokens: t, commit: 3 });
    const [a, , b] = await Promise.all([first, reset, again]);
    expect(cache.committed).toBe(3);
    expect(Array.from(b)).toEqual(Array.from(a));
    cache.dispose();
  });

  it('queued calls hold no libuv thread: file reads finish while eight generations wait', async () => {
    const { readFile } = await import('node:fs/promises');
    const sampler = new Sampler({ method: 'mdlm', steps: 256, seed: 1 });
    const t0 = performance.now();
    const runs = Array.from({ length: 8 }, () => model.generate({ sampler, length: 64 }));
    await readFile(path.join(dir, 'esolm', 'config.json'));
    const readMs = performance.now() - t0;
    await Promise.all(runs);
    const allMs = performance.now() - t0;
    // Had the waiting calls blocked the 4 libuv threads, the read (queued behind the eight
    // calls) would wait until about five of them had finished.
    expect(readMs).toBeLessThan(allMs / 2);
  });

  it('dispose() returns at once, cancels a generation in flight and rejects later calls', async () => {
    const m = await Model.load(path.join(dir, 'long'), { backend: 'cpu' });  // ~1 s per generation
    const sampler = new Sampler({ method: 'esolm', steps: 8, alpha0: 0, seed: 1 });
    let started!: () => void;
    const first = new Promise<void>((r) => { started = r; });
    const run = m.generate({ sampler, length: 1024, onStep: () => started() });
    const queued = m.generate({ sampler, length: 1024 });
    await first;
    const t0 = performance.now();
    m.dispose();
    expect(performance.now() - t0).toBeLessThan(100);
    await expect(run).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    await expect(queued).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    await expect(m.forward({ tokens: Int32Array.from([1]) })).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });
});
