// Scale-out on BullMQ (lib/queue) with a real redis-server on a free loopback port and real
// `esolm worker` processes (dist/bin.js): jobs batch in the workers and equal their
// generation alone, seed for seed, every step arriving once as progress; a worker killed
// mid-generation loses nothing (another one finishes the job, same tokens, no step twice); a
// job whose workers keep dying fails after bounded tries with ERR_WORKER_LOST; SIGTERM finishes
// or hands back; a client abort stops the job; bad and oversized jobs fail cleanly.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Job, Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EsolmError, Model, Sampler, type BatchJob, type BatchJobResult, type StepEvent } from '../lib/index.js';
import { QueueProducer } from '../lib/queue/index.js';
import { makeRandomModel } from './helpers/random-model.js';
import { killAll, spawnWorker, startRedis, type RedisServer, type WorkerProcess } from './helpers/redis.js';

let dir: string;
let redis: RedisServer;
let small: Model;
let slow: Model;
const workers: WorkerProcess[] = [];
// Short lock and stall check: a dead worker's job is taken over in about 1.5 s.
const FAST_STALL = ['--lock-duration-ms', '1200', '--stalled-interval-ms', '400', '--threads', '1'];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-queue-'));
  makeRandomModel(path.join(dir, 'small'), { arch: 'esolm', seed: 41 });
  // Slow enough (about a second per generation) that a kill lands mid-generation.
  makeRandomModel(path.join(dir, 'slow'), { arch: 'esolm', seed: 42, hidden_size: 128, n_heads: 4, n_blocks: 8, vocab_size: 1000, length: 512 });
  redis = await startRedis();
  small = await Model.load(path.join(dir, 'small'), { backend: 'cpu' });
  slow = await Model.load(path.join(dir, 'slow'), { backend: 'cpu' });
});

afterAll(async () => {
  killAll(workers);
  small?.dispose();
  slow?.dispose();
  await redis?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(() => killAll(workers.splice(0)));

/** A worker process for `model` on the queue `queue` (each test its own queue). */
function worker(model: string, queue: string, args: string[] = []): WorkerProcess {
  const w = spawnWorker(redis.url, path.join(dir, model), [...FAST_STALL, '--queue', queue, ...args]);
  workers.push(w);
  return w;
}

async function producer(model: Model, queue: string, extra: Partial<Parameters<typeof QueueProducer.create>[0]> = {}): Promise<QueueProducer> {
  return QueueProducer.create({ redis: { url: redis.url }, model, queue, reconcileMs: 500, ...extra });
}

async function alone(m: Model, job: BatchJob, r: BatchJobResult): Promise<{ sequences: number[][]; events: StepEvent[] }> {
  const events: StepEvent[] = [];
  const res = await m.generate({
    sampler: new Sampler({ ...job.sampler, seed: r.seed }), length: job.length, prompt: job.prompt, fixed: job.fixed,
    seedGroups: [{ seed: r.seed, planSeed: r.planSeed, rows: job.n ?? 1 }], onStep: (e) => events.push(e),
  });
  return { sequences: res.sequences.map((s) => [...s]), events };
}

const steps = (evs: StepEvent[]) => evs.map((e) => [e.step, [...e.positions], [...e.tokens]]);

/** Resolves with the pid of the worker that holds `jobId` (BullMQ's processedBy is host:pid). */
async function holder(queue: Queue, jobId: string): Promise<number> {
  const by = await waitFor(async () => (await Job.fromId(queue, jobId))?.processedBy);
  return Number(by.split(':').pop());
}

describe('esolm worker over a real Redis', () => {
  it('jobs from two workers batch and equal their generation alone; every step arrives once, in order', async () => {
    const ws = [worker('small', 'batch'), worker('small', 'batch')];
    await Promise.all(ws.map((w) => w.ready));
    const p = await producer(small, 'batch');
    try {
      const sampler = { method: 'esolm' as const, steps: 8, alpha0: 0.5, topP: 0.9 };
      const jobs: BatchJob[] = [
        ...[1, 2, 3, 4, 5, 6].map((seed, i) => ({ sampler: { ...sampler, seed }, planSeed: 77, length: 32, prompt: [i + 1, i + 2], n: 1 + (i % 2) })),
        { sampler: { method: 'mdlm', steps: 6, seed: 9 }, length: 24 },
        { sampler: { method: 'esolm', steps: 5 }, length: 20 },  // unseeded: the producer fixes a seed and reports it
      ];
      const events: StepEvent[][] = jobs.map(() => []);
      const results = await Promise.all(jobs.map((j, i) => p.submit({ ...j, onStep: (e) => events[i].push(e) })));
      expect(results.some((r) => r.batch.requests > 1)).toBe(true);  // the worker's batcher joined jobs
      for (let i = 0; i < jobs.length; i++) {
        const a = await alone(small, jobs[i], results[i]);
        expect(results[i].sequences.map((s) => [...s])).toEqual(a.sequences);
        if (jobs[i].sampler.method === 'mdlm') {
          expect(events[i].map((e) => [e.step, [...e.positions].filter((q) => q >= 0)]))
            .toEqual(a.events.map((e) => [e.step, [...e.positions].filter((q) => q >= 0)]));
        } else {
          expect(steps(events[i])).toEqual(steps(a.events));
        }
      }
      expect(results[0].seed).toBe(1n);
      expect(results[0].planSeed).toBe(77n);
    } finally {
      await p.close();
    }
  });

  it('a worker SIGKILLed mid-generation: another one finishes the job with the same output, no step sent twice', async () => {
    const ws = [worker('slow', 'kill'), worker('slow', 'kill')];
    await Promise.all(ws.map((w) => w.ready));
    const p = await producer(slow, 'kill');
    const queue = queueOf('kill');
    try {
      const job: BatchJob = { sampler: { method: 'esolm', steps: 256, seed: 1234 }, length: 512 };
      const events: StepEvent[] = [];
      let started!: () => void;
      const running = new Promise<void>((r) => { started = r; });
      const done = p.submit({ ...job, onStep: (e) => { events.push(e); started(); } });
      await running;
      const victim = await signalHolder(queue, 'SIGKILL');
      const r = await done;
      expect(await victim.exited).toBe('SIGKILL');
      const survivor = ws.find((w) => w !== victim)!;
      expect((await Job.fromId(queue, await waitForJobId(queue, ['completed'])))?.processedBy).toMatch(new RegExp(`:${survivor.pid}$`));
      const ref = await alone(slow, job, r);
      expect(r.sequences.map((s) => [...s])).toEqual(ref.sequences);
      // Steps of the first attempt, then the rest from the rerun: each step once, in order, as alone.
      expect(steps(events)).toEqual(steps(ref.events));
    } finally {
      await queue.close();
      await p.close();
    }
  });

  it('a job whose workers keep dying fails after bounded tries with ERR_WORKER_LOST', async () => {
    // max-stalled 1: the job may lose its worker once; the second death fails it.
    const ws = [0, 1, 2].map(() => worker('slow', 'poison', ['--max-stalled', '1']));
    await Promise.all(ws.map((w) => w.ready));
    const p = await producer(slow, 'poison');
    const queue = queueOf('poison');
    const kills: number[] = [];
    const stop = { now: false };
    try {
      // Long enough (MDLM, 512 steps: minutes) that only a kill ends an attempt.
      const failed = p.submit({ sampler: { method: 'mdlm', steps: 512, seed: 99 }, length: 512, onStep: () => undefined });
      // Play the poison job: whichever worker runs it dies.
      const killer = (async () => {
        const id = await waitForJobId(queue);
        for (let attempt = 0; attempt < 4; attempt++) {
          const pid = await Promise.race([holderAfter(queue, id, kills, stop), failed.then(() => -1, () => -1)]);
          if (pid < 0) return;
          process.kill(pid, 'SIGKILL');
          kills.push(pid);
        }
      })();
      const err = await failed.then(() => null, (e: unknown) => e);
      stop.now = true;
      await killer;
      expect(err).toBeInstanceOf(EsolmError);
      expect((err as EsolmError).code).toBe('ERR_WORKER_LOST');
      expect((err as EsolmError).message).toMatch(/stopped \(crashed or was killed\)/);
      expect(kills.length).toBe(2);
    } finally {
      await queue.close();
      await p.close();
    }
  });

  it('SIGTERM: a worker finishes its running job and exits 0; past its deadline it hands the job back', async () => {
    // Generous deadline (queue term1): the job finishes, then the worker exits cleanly.
    // Tiny deadline (queue term2): the job goes back to the queue, and the other worker completes it.
    const patient = worker('slow', 'term1', ['--shutdown-timeout-ms', '60000']);
    const hasty = [worker('slow', 'term2', ['--shutdown-timeout-ms', '1']), worker('slow', 'term2', ['--shutdown-timeout-ms', '1'])];
    await Promise.all([patient, ...hasty].map((w) => w.ready));
    const p1 = await producer(slow, 'term1');
    const p2 = await producer(slow, 'term2');
    const q2 = queueOf('term2');
    try {
      let termed = false;
      const r = await p1.submit({ sampler: { method: 'esolm', steps: 64, seed: 5 }, length: 512, onStep: () => {
        if (!termed) { termed = true; patient.proc.kill('SIGTERM'); }
      } });
      expect(r.sequences).toHaveLength(1);
      expect(await patient.exited).toBe(0);

      const job: BatchJob = { sampler: { method: 'esolm', steps: 256, seed: 6 }, length: 512 };
      let started!: () => void;
      const running = new Promise<void>((res) => { started = res; });
      const done = p2.submit({ ...job, onStep: () => started() });
      await running;
      const leaver = await signalHolder(q2, 'SIGTERM');
      expect(await leaver.exited).toBe(0);  // exits at once, without finishing the job
      const r2 = await done;
      const other = hasty.find((w) => w !== leaver)!;
      expect((await Job.fromId(q2, await waitForJobId(q2, ['completed'])))?.processedBy).toMatch(new RegExp(`:${other.pid}$`));
      expect(r2.sequences.map((s) => [...s])).toEqual((await alone(slow, job, r2)).sequences);
    } finally {
      await q2.close();
      await p1.close();
      await p2.close();
    }
  });

  it('a client abort stops the job in its worker; bad and oversized jobs fail with clear errors', async () => {
    const w = worker('slow', 'abort');
    await w.ready;
    const p = await producer(slow, 'abort', { maxPayloadBytes: 2000 });
    const queue = queueOf('abort');
    try {
      const ctl = new AbortController();
      const aborted = p.submit({ sampler: { method: 'esolm', steps: 256, seed: 8 }, length: 512, signal: ctl.signal, onStep: () => ctl.abort() });
      await expect(aborted).rejects.toMatchObject({ code: 'ERR_ABORTED' });
      // The worker aborted the generation: the job ends failed (not retried), not completed.
      const failedJob = await waitFor(async () => (await queue.getJobs(['failed']))[0]);
      expect(failedJob.failedReason).toMatch(/^ERR_ABORTED/);
      expect(await queue.getCompletedCount()).toBe(0);

      // Edge checks before anything reaches Redis.
      await expect(p.submit({ sampler: { method: 'esolm', steps: 8 }, length: 10_000 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
      await expect(p.submit({ sampler: { method: 'esolm', steps: 8 }, length: 512, fixed: Object.fromEntries(Array.from({ length: 500 }, (_, i) => [i, 5])) }))
        .rejects.toThrow(/bytes as a job, more than the queue's limit of 2000/);
      // A foreign producer's garbage: the worker fails it without retrying, and keeps working.
      for (const data of [{ v: 1, sampler: { method: 'esolm', steps: 4, seed: 'x' }, n: 1 }, { v: 99 }, { v: 1, sampler: { method: 'nope' }, n: 1 }, 'junk']) {
        const j = await queue.add('generate', data);
        const r = await waitFor(async () => (await Job.fromId(queue, String(j.id)))?.failedReason);
        expect(r).toMatch(/^ERR_INVALID_ARG: /);
      }
      const big = await queue.add('generate', { v: 1, sampler: { method: 'esolm', steps: 4 }, n: 1, prompt: 'x'.repeat(300_000) });
      expect(await waitFor(async () => (await Job.fromId(queue, String(big.id)))?.failedReason)).toMatch(/more than this worker takes/);
      const ok = await p.submit({ sampler: { method: 'esolm', steps: 4, seed: 1 }, length: 16 });
      expect(ok.sequences[0]).toHaveLength(16);
    } finally {
      await queue.close();
      await p.close();
    }
  });
});

async function waitFor<T>(fn: () => Promise<T | undefined | null>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== null && v !== '') return v;
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The id of the newest job in the queue's lists of these states. */
async function waitForJobId(queue: Queue, states: ('active' | 'waiting' | 'completed')[] = ['active', 'waiting']): Promise<string> {
  return waitFor(async () => {
    const jobs = await queue.getJobs(states, 0, 0, false);
    return jobs[0]?.id;
  });
}

function queueOf(name: string): Queue {
  return new Queue(name, { connection: { host: '127.0.0.1', port: redis.port }, prefix: 'esolm' });
}

/** Sends `signal` to the worker process running the queue's job; returns it. */
async function signalHolder(queue: Queue, signal: NodeJS.Signals): Promise<WorkerProcess> {
  const pid = await holder(queue, await waitForJobId(queue, ['active']));
  const w = workers.find((x) => x.pid === pid);
  if (!w) throw new Error(`no worker process ${pid}`);
  w.proc.kill(signal);
  return w;
}

/** The pid holding the job now, once it is a worker not killed yet. */
async function holderAfter(queue: Queue, id: string, killed: number[], stop: { now: boolean }): Promise<number> {
  while (!stop.now) {
    const pid = await holder(queue, id);
    const active = async () => (await (await Job.fromId(queue, id))?.getState()) === 'active' && await holder(queue, id) === pid;
    // Still running it a moment later: generating (a worker that fails the job on pickup, past its stall limit, is not).
    if (!killed.includes(pid) && await active()) {
      await new Promise((r) => setTimeout(r, 300));
      if (await active()) return pid;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return -1;
}
