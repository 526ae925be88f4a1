// The batcher (lib/batch): compatible requests within the window run as one batched
// generation, and every request's tokens and step events equal its generation alone, seed
// for seed (esolm, mdlm, ar, different prompts and n); incompatible ones run apart;
// unseeded Eso-LM requests share a plan seed; queue limit, abort (queued and running),
// timeout, drain and bad input.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Batcher, EsolmError, Model, Sampler, type BatchInfo, type BatchJob, type BatchJobResult, type StepEvent } from '../lib/index.js';
import { makeRandomModel } from './helpers/random-model.js';

let dir: string;
let model: Model;
let arModel: Model;
let long: Model;  // slow enough (seconds) that an abort lands while it runs

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-batch-'));
  makeRandomModel(path.join(dir, 'esolm'), { arch: 'esolm', seed: 31 });
  makeRandomModel(path.join(dir, 'ar'), { arch: 'ar', seed: 32 });
  makeRandomModel(path.join(dir, 'long'), { arch: 'esolm', seed: 33, hidden_size: 128, n_heads: 4, n_blocks: 8, vocab_size: 1000, length: 512 });
  model = await Model.load(path.join(dir, 'esolm'), { backend: 'cpu' });
  long = await Model.load(path.join(dir, 'long'), { backend: 'cpu' });
  arModel = await Model.load(path.join(dir, 'ar'), { backend: 'cpu' });
});

afterAll(() => {
  model?.dispose();
  arModel?.dispose();
  long?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** The request generated alone with the seed and plan seed the batcher reports. */
async function alone(m: Model, job: BatchJob, r: BatchJobResult): Promise<{ sequences: Int32Array[]; events: StepEvent[] }> {
  const events: StepEvent[] = [];
  const res = await m.generate({
    sampler: new Sampler({ ...job.sampler, seed: r.seed }), length: job.length, prompt: job.prompt, fixed: job.fixed,
    seedGroups: [{ seed: r.seed, planSeed: r.planSeed, rows: job.n ?? 1 }], onStep: (e) => events.push(e),
  });
  return { sequences: res.sequences, events };
}

function arr(xs: Int32Array[]): number[][] {
  return xs.map((x) => [...x]);
}

async function runAll(b: Batcher, jobs: BatchJob[]): Promise<{ results: BatchJobResult[]; events: StepEvent[][] }> {
  const events: StepEvent[][] = jobs.map(() => []);
  const results = await Promise.all(jobs.map((j, i) => b.submit({ ...j, onStep: (e) => events[i].push(e) })));
  return { results, events };
}

describe('Batcher: batched equals alone', () => {
  it('esolm requests with their own seeds, prompts and n share one generation (shared plan seed)', async () => {
    const batches: BatchInfo[] = [];
    const b = new Batcher(model, { maxBatch: 8, windowMs: 30, onBatch: (i) => batches.push(i) });
    const sampler = { method: 'esolm' as const, steps: 8, alpha0: 0.6, topP: 0.9 };
    const jobs: BatchJob[] = [
      { sampler: { ...sampler, seed: 1 }, planSeed: 50, length: 32, prompt: [1, 2, 3] },
      { sampler: { ...sampler, seed: 2 }, planSeed: 50, length: 32, prompt: [7, 8, 9], n: 2 },
      { sampler: { ...sampler, seed: 3n }, planSeed: 50, length: 32, prompt: [4, 5, 6], n: 3 },
    ];
    const { results, events } = await runAll(b, jobs);
    expect(batches).toHaveLength(1);
    expect(batches[0]).toMatchObject({ rows: 6, requests: 3, ok: true });
    for (let i = 0; i < jobs.length; i++) {
      expect(results[i].batch).toEqual({ rows: 6, requests: 3 });
      expect(results[i].seed).toBe(BigInt(i + 1));
      expect(results[i].planSeed).toBe(50n);
      const a = await alone(model, jobs[i], results[i]);
      expect(arr(results[i].sequences)).toEqual(arr(a.sequences));
      expect(events[i].map((e) => [e.step, e.perSequence, [...e.positions], [...e.tokens]]))
        .toEqual(a.events.map((e) => [e.step, e.perSequence, [...e.positions], [...e.tokens]]));
    }
    await b.close();
  });

  it('mdlm and ar requests batch, and each equals its generation alone', async () => {
    const mk = (m: Model) => new Batcher(m, { maxBatch: 8, windowMs: 30 });
    const mdlm: BatchJob[] = [5, 6, 7].map((seed, i) => ({ sampler: { method: 'mdlm', steps: 10, seed }, length: 24, prompt: [i + 1, i + 2], n: i + 1 }));
    const ar: BatchJob[] = [8, 9].map((seed, i) => ({ sampler: { method: 'ar', seed, temperature: 0.9 }, length: 16, prompt: [i + 3], fixed: { 10: 4 } }));
    for (const [m, jobs] of [[model, mdlm], [arModel, ar]] as const) {
      const b = mk(m);
      const { results, events } = await runAll(b, jobs);
      expect(results.every((r) => r.batch.requests === jobs.length)).toBe(true);
      for (let i = 0; i < jobs.length; i++) {
        const a = await alone(m, jobs[i], results[i]);
        expect(arr(results[i].sequences)).toEqual(arr(a.sequences));
        // Reveals per step equal; MDLM events stop when the request's masks are gone, as alone.
        expect(events[i].map((e) => [e.step, [...e.positions].filter((p) => p >= 0)]))
          .toEqual(a.events.map((e) => [e.step, [...e.positions].filter((p) => p >= 0)]));
      }
      await b.close();
    }
  });

  it('unseeded esolm requests in one window share a chosen plan seed; the reported seeds reproduce them', async () => {
    let next = 1000n;
    const b = new Batcher(model, { windowMs: 30, randomSeed: () => next++ });
    const jobs: BatchJob[] = [0, 1, 2].map(() => ({ sampler: { method: 'esolm', steps: 6 }, length: 20 }));
    const { results } = await runAll(b, jobs);
    expect(new Set(results.map((r) => r.seed)).size).toBe(3);
    expect(new Set(results.map((r) => r.planSeed)).size).toBe(1);
    expect(results[0].batch.requests).toBe(3);
    for (let i = 0; i < 3; i++) expect(arr(results[i].sequences)).toEqual(arr((await alone(model, jobs[i], results[i])).sequences));
    await b.close();
  });

  it('esolm-a and planned-order mdlm requests run alone, each equal to its plain generation', async () => {
    const batches: BatchInfo[] = [];
    const b = new Batcher(model, { maxBatch: 8, windowMs: 30, onBatch: (i) => batches.push(i) });
    const jobs: BatchJob[] = [1, 2].flatMap((seed) => [
      { sampler: { method: 'esolm-a' as const, steps: 6, seed }, length: 16 },
      { sampler: { method: 'mdlm' as const, order: 'ar' as const, seed }, length: 16 },
    ]);
    const { results } = await runAll(b, jobs);
    expect(batches.map((x) => x.requests)).toEqual([1, 1, 1, 1]);
    for (let i = 0; i < jobs.length; i++) {
      const plain = await model.generate({ sampler: new Sampler({ ...jobs[i].sampler, seed: results[i].seed }), length: 16 });
      expect(arr(results[i].sequences)).toEqual(arr(plain.sequences));
    }
    await b.close();
  });

  it('runs incompatible requests apart and respects maxBatch', async () => {
    const batches: BatchInfo[] = [];
    const b = new Batcher(model, { maxBatch: 3, windowMs: 30, onBatch: (i) => batches.push(i) });
    const jobs: BatchJob[] = [
      ...[1, 2, 3, 4, 5].map((seed) => ({ sampler: { method: 'mdlm' as const, steps: 4, seed }, length: 16 })),
      { sampler: { method: 'mdlm', steps: 5, seed: 1 }, length: 16 },
      { sampler: { method: 'mdlm', steps: 4, seed: 1 }, length: 12 },
      { sampler: { method: 'mdlm', steps: 4, seed: 1, topP: 0.5 }, length: 16 },
    ];
    const { results } = await runAll(b, jobs);
    expect(batches.map((x) => x.rows)).toEqual([3, 2, 1, 1, 1]);
    for (let i = 0; i < jobs.length; i++) expect(arr(results[i].sequences)).toEqual(arr((await alone(model, jobs[i], results[i])).sequences));
    await b.close();
  });
});

describe('Batcher: limits, cancellation and drain', () => {
  it('refuses requests beyond maxQueue with ERR_QUEUE_FULL', async () => {
    const b = new Batcher(model, { windowMs: 0, maxQueue: 2 });
    const running = b.submit({ sampler: { method: 'mdlm', steps: 8, seed: 1 }, length: 32 });
    // The first request is running now; two incompatible ones wait; the next is refused.
    const q1 = b.submit({ sampler: { method: 'mdlm', steps: 9, seed: 1 }, length: 32 });
    const q2 = b.submit({ sampler: { method: 'mdlm', steps: 10, seed: 1 }, length: 32 });
    expect(b.queued).toBe(2);
    const err = await b.submit({ sampler: { method: 'mdlm', steps: 11, seed: 1 }, length: 32 }).catch((e) => e);
    expect(err).toBeInstanceOf(EsolmError);
    expect(err.code).toBe('ERR_QUEUE_FULL');
    expect(b.retryAfterSeconds()).toBeGreaterThanOrEqual(1);
    await Promise.all([running, q1, q2]);
    await b.close();
  });

  it('a queued request that is aborted leaves the queue; its mates still run', async () => {
    const b = new Batcher(model, { windowMs: 50 });
    const ctl = new AbortController();
    const job = { sampler: { method: 'esolm' as const, steps: 4, seed: 1 }, planSeed: 9, length: 16 };
    const gone = b.submit({ ...job, signal: ctl.signal });
    const kept = b.submit({ ...job, sampler: { ...job.sampler, seed: 2 } });
    ctl.abort();
    await expect(gone).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    const r = await kept;
    expect(r.batch).toEqual({ rows: 1, requests: 1 });
    await b.close();
  });

  it('aborts the native generation when no live request is left in a running batch', async () => {
    const batches: BatchInfo[] = [];
    const b = new Batcher(long, { windowMs: 20, onBatch: (i) => batches.push(i) });
    const ctls = [new AbortController(), new AbortController()];
    let seen = 0;
    const t0 = performance.now();
    const jobs = ctls.map((c, i) => b.submit({
      sampler: { method: 'mdlm', steps: 512, seed: i }, length: 512, signal: c.signal,
      onStep: () => { if (++seen === 2) ctls.forEach((x) => x.abort()); },
    }));
    for (const j of jobs) await expect(j).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    await b.close();
    expect(batches).toHaveLength(1);
    expect(batches[0].ok).toBe(false);
    expect(batches[0].ms).toBeLessThan(20_000);  // the whole run takes minutes
    expect(performance.now() - t0).toBeLessThan(30_000);
  });

  it('a running request that is aborted stops receiving while its mate finishes', async () => {
    const b = new Batcher(model, { windowMs: 20 });
    const ctl = new AbortController();
    const evA: StepEvent[] = [];
    const evB: StepEvent[] = [];
    const a = b.submit({ sampler: { method: 'mdlm', steps: 20, seed: 1 }, length: 32, signal: ctl.signal, onStep: (e) => { evA.push(e); if (evA.length === 3) ctl.abort(); } });
    const c = b.submit({ sampler: { method: 'mdlm', steps: 20, seed: 2 }, length: 32, onStep: (e) => evB.push(e) });
    await expect(a).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    const r = await c;
    expect(evA).toHaveLength(3);
    expect(evB.length).toBeGreaterThan(3);
    expect(r.batch.requests).toBe(2);
    await b.close();
  });

  it('times out with ERR_TIMEOUT', async () => {
    const b = new Batcher(model, { windowMs: 0 });
    const first = b.submit({ sampler: { method: 'mdlm', steps: 64, seed: 1 }, length: 64 });
    const late = b.submit({ sampler: { method: 'mdlm', steps: 63, seed: 1 }, length: 64, timeoutMs: 1 });
    await expect(late).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
    await first;
    await b.close();
  });

  it('close() refuses new requests and finishes the queued ones', async () => {
    const b = new Batcher(model, { windowMs: 1000 });
    const queued = b.submit({ sampler: { method: 'mdlm', steps: 4, seed: 1 }, length: 16 });
    const closing = b.close();
    expect(b.state).toBe('draining');
    await expect(b.submit({ sampler: { method: 'mdlm', steps: 4, seed: 1 }, length: 16 })).rejects.toMatchObject({ code: 'ERR_SHUTTING_DOWN' });
    await closing;  // does not wait for the 1 s window
    expect(b.state).toBe('closed');
    expect((await queued).sequences).toHaveLength(1);
  });

  it('close() with a deadline aborts what is still running with ERR_SHUTTING_DOWN', async () => {
    const batches: BatchInfo[] = [];
    const b = new Batcher(long, { windowMs: 0, onBatch: (i) => batches.push(i) });
    const job = b.submit({ sampler: { method: 'mdlm', steps: 512, seed: 1 }, length: 512 }).catch((e) => e);
    const queued = b.submit({ sampler: { method: 'mdlm', steps: 511, seed: 1 }, length: 512 }).catch((e) => e);
    const mates = [2, 3].map((seed) => b.submit({ sampler: { method: 'mdlm', steps: 511, seed }, length: 512 }).catch((e) => e));
    const t0 = performance.now();
    await b.close({ deadlineMs: 200 });
    expect(performance.now() - t0).toBeLessThan(30_000);  // the runs would take minutes
    expect(await job).toMatchObject({ code: 'ERR_SHUTTING_DOWN' });
    expect(await queued).toMatchObject({ code: 'ERR_SHUTTING_DOWN' });
    for (const m of mates) expect(await m).toMatchObject({ code: 'ERR_SHUTTING_DOWN' });  // all of a bucket's requests
    expect(b.state).toBe('closed');
    expect(batches.every((x) => !x.ok)).toBe(true);
  });

  it('rejects bad input with ERR_INVALID_ARG before queueing', async () => {
    const b = new Batcher(model);
    for (const job of [
      { sampler: { method: 'nope' } },
      { sampler: { method: 'mdlm', steps: 4 }, n: 0 },
      { sampler: { method: 'mdlm', steps: 4 }, length: 1000 },
      { sampler: { method: 'mdlm', steps: 4, seed: -3 } },
      { sampler: { method: 'esolm', steps: 4 }, planSeed: 1.5 },
      { sampler: { method: 'mdlm', steps: 4 }, prompt: [999] },
      null,
    ]) {
      await expect(b.submit(job as unknown as BatchJob)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    }
    expect(b.queued).toBe(0);
    expect(() => new Batcher(model, { maxBatch: 0 })).toThrow(EsolmError);
    await b.close();
  });
});
