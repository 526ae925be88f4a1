/**
 * The producer of `esolm serve --redis`: a GenerationSource that turns each request into a
 * BullMQ job (one queue per model name) instead of running it locally. Requests are
 * validated here, once, with the model (bad input is a 400 at the edge, never a failed
 * job), and their seeds are fixed here: a job that a dead worker's successor reruns gives
 * the same tokens and the same step events, and the producer forwards only the steps it
 * has not sent yet — nothing lost, nothing twice, even mid-stream.
 *
 * Unseeded requests get a random seed and share a plan seed per second, so that the
 * worker's batcher can still join unseeded Eso-LM requests (equal step sizes).
 *
 * Results and step events come from QueueEvents (a Redis stream, read from where it left
 * off after a reconnect); pending jobs are also checked against Redis every `reconcileMs`
 * in case an event was missed. Redis down: submit() rejects at once with ERR_UNAVAILABLE
 * (HTTP 503), and the connections reconnect by themselves.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Job, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import type { BatchJob, BatchJobResult, GenerationSource } from '../batch/index.js';
import { checkBatchJob } from '../batch/batcher.js';
import { EsolmError, expected, type ErrorCode } from '../errors.js';
import { seedValue, type Model } from '../model.js';
import { Sampler } from '../sampler.js';
import { checkRedisOptions, connectRedis, isConnectionError, unavailable, type RedisOptions } from './connection.js';
import { cancelChannel, cancelKey, queueNameFor } from './names.js';
import {
  DEFAULT_MAX_PAYLOAD_BYTES, decodeProgress, decodeResult, encodeJob, payloadBytes, type JobPayload, type ProgressPayload, type ResultPayload,
} from './payload.js';

export interface ProducerOptions {
  redis: RedisOptions;
  /** The served model: requests are validated and tokenized against it. */
  model: Model;
  /** Queue name. Defaults to the model folder's name (the worker's default too). */
  queue?: string;
  /** Most bytes of one job's data (ERR_INVALID_ARG, HTTP 400, above). Defaults to 256 KiB. */
  maxPayloadBytes?: number;
  /** Most jobs waiting in the queue (all producers together) before ERR_QUEUE_FULL. Defaults to 1024. */
  maxQueue?: number;
  /** How often pending jobs without news are looked up in Redis, ms. Defaults to 2000. */
  reconcileMs?: number;
  /** How long submit() waits for Redis to take a job before ERR_UNAVAILABLE, ms. Defaults to 5000. */
  addTimeoutMs?: number;
  /** Source of seeds for requests without one. Defaults to crypto random integers < 2^53. */
  randomSeed?: () => bigint;
  /** Redis connection errors (they reconnect by themselves). Defaults to ignoring them. */
  onError?: (e: Error) => void;
  /** Called on each (re)connection to Redis. */
  onReady?: () => void;
}

interface Pending {
  id: string;
  job: BatchJob;
  rows: number;
  added: boolean;
  active: boolean;
  lastStep: number;
  lastNews: number;
  settle: (r: BatchJobResult | null, e?: unknown) => void;
}

const MAX_SEED = 2n ** 53n;
const STALLED_REASON = /(stalled|started) more than allowable limit/i;

function defaultSeed(): bigint {
  return randomBytes(8).readBigUInt64LE() % MAX_SEED;
}

/** Whether `p` settled (either way) within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | null = null;
  const ok = await Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms); })]);
  if (timer) clearTimeout(timer);
  return ok;
}

/** A failed job's reason back to an EsolmError ("ERR_CODE: message" from our workers). */
export function failureToError(reason: string | undefined, attempts: number): EsolmError {
  const text = reason ?? 'unknown failure';
  if (STALLED_REASON.test(text)) {
    return new EsolmError('ERR_WORKER_LOST',
      `the request failed: the worker running it stopped (crashed or was killed) ${attempts > 0 ? `${attempts} times` : 'repeatedly'}, `
      + 'more than the workers\' stall limit allows; it is not retried again');
  }
  const m = /^(ERR_[A-Z_]+): ([\s\S]*)$/.exec(text);
  if (m) return new EsolmError(m[1] as ErrorCode, m[2]);
  return new EsolmError('ERR_INTERNAL', `the job failed: ${text}`);
}

export class QueueProducer implements GenerationSource {
  readonly queueName: string;
  readonly queue: Queue<JobPayload, ResultPayload>;
  readonly events: QueueEvents;
  private readonly opts: ProducerOptions;
  private readonly model: Model;
  private readonly conn: Redis;
  private readonly eventsConn: Redis;
  private readonly channel: string;
  private readonly prefix: string;
  private readonly maxPayload: number;
  private readonly maxQueue: number;
  private readonly addTimeoutMs: number;
  private readonly randomSeed: () => bigint;
  private readonly pending = new Map<string, Pending>();
  private readonly reconcileTimer: NodeJS.Timeout;
  private reconciling = false;
  private plan = { seed: 0n, until: 0 };
  private state_: 'open' | 'draining' | 'closed' = 'open';
  private lastError: string | null = null;

  private constructor(opts: ProducerOptions, prefix: string) {
    this.opts = opts;
    this.model = opts.model;
    this.queueName = queueNameFor(opts.queue, opts.model);
    this.channel = cancelChannel(prefix, this.queueName);
    this.prefix = prefix;
    this.maxPayload = opts.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    this.maxQueue = opts.maxQueue ?? 1024;
    this.addTimeoutMs = opts.addTimeoutMs ?? 5000;
    this.randomSeed = opts.randomSeed ?? defaultSeed;
    const onError = opts.onError ?? (() => undefined);
    this.conn = connectRedis(opts.redis, true);
    this.conn.on('error', (e: Error) => {
      this.lastError = e.message;
      onError(e);
    });
    this.conn.on('ready', () => { this.lastError = null; });
    if (opts.onReady) this.conn.on('ready', opts.onReady);
    this.queue = new Queue<JobPayload, ResultPayload>(this.queueName, { connection: this.conn, prefix });
    this.queue.on('error', onError);
    this.eventsConn = connectRedis(opts.redis);
    this.eventsConn.on('error', onError);
    this.events = new QueueEvents(this.queueName, { connection: this.eventsConn, prefix });
    this.events.on('error', onError);
    this.events.on('active', ({ jobId }) => {
      const p = this.pending.get(jobId);
      if (p) {
        p.active = true;
        p.lastNews = Date.now();
      }
    });
    this.events.on('progress', ({ jobId, data }) => {
      const p = this.pending.get(jobId);
      if (!p || typeof data !== 'object' || data === null) return;
      p.lastNews = Date.now();
      p.active = true;
      const ev = data as ProgressPayload;
      // A rerun (after a dead worker) replays the same steps: forward only new ones.
      if (ev.step <= p.lastStep) return;
      p.lastStep = ev.step;
      try {
        p.job.onStep?.(decodeProgress(ev));
      } catch {
        // a listener's failure must not stop the others
      }
    });
    this.events.on('completed', ({ jobId, returnvalue }) => {
      const p = this.pending.get(jobId);
      if (p) p.settle(decodeResult(returnvalue as unknown as ResultPayload));
    });
    this.events.on('failed', ({ jobId, failedReason }) => {
      const p = this.pending.get(jobId);
      if (p) void this.failedError(jobId, failedReason).then((e) => p.settle(null, e));
    });
    this.reconcileTimer = setInterval(() => void this.reconcile(), opts.reconcileMs ?? 2000);
    this.reconcileTimer.unref();
  }

  /** Connects (waits for Redis only up to `addTimeoutMs`; a producer may start before Redis). */
  static async create(opts: ProducerOptions): Promise<QueueProducer> {
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'producer options', opts);
    const prefix = checkRedisOptions(opts.redis);
    for (const [k, min] of [['maxPayloadBytes', 1], ['maxQueue', 1], ['reconcileMs', 10], ['addTimeoutMs', 1]] as const) {
      const v = opts[k];
      if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min)) throw expected(`an integer >= ${min}`, k, v);
    }
    const p = new QueueProducer(opts, prefix);
    // Start reading events now, so none of a job added later is missed.
    const connected = new Promise<void>((r) => {
      if (p.connected) r();
      else p.conn.once('ready', () => r());
    });
    await Promise.race([Promise.all([p.events.waitUntilReady().catch(() => undefined), connected]),
      new Promise((r) => setTimeout(r, p.addTimeoutMs).unref())]);
    return p;
  }

  get state(): 'open' | 'draining' | 'closed' {
    return this.state_;
  }

  get queued(): number {
    let n = 0;
    for (const p of this.pending.values()) if (!p.active) n++;
    return n;
  }

  get inFlight(): number {
    let n = 0;
    for (const p of this.pending.values()) if (p.active) n += p.rows;
    return n;
  }

  /** Whether Redis is connected now. */
  get connected(): boolean {
    return this.conn.status === 'ready';
  }

  /** Open and connected to Redis: a request submitted now would be queued. */
  get available(): boolean {
    return this.state_ === 'open' && this.connected;
  }

  retryAfterSeconds(): number {
    return this.connected ? 1 : 5;
  }

  submit(job: BatchJob): Promise<BatchJobResult> {
    try {
      return this.enqueue(job);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private enqueue(job: BatchJob): Promise<BatchJobResult> {
    if (this.state_ !== 'open') throw new EsolmError('ERR_SHUTTING_DOWN', 'the server is shutting down and takes no new requests');
    const rows = checkBatchJob(job);
    // Seeds fixed here, so that a rerun is the same generation.
    const seed = job.sampler.seed !== undefined ? seedValue(job.sampler.seed, 'seed') : this.randomSeed();
    let planSeed = job.planSeed !== undefined ? seedValue(job.planSeed, 'planSeed') : undefined;
    if (planSeed === undefined && job.sampler.seed === undefined) planSeed = this.sharedPlanSeed();
    const sampler = { ...job.sampler, seed };
    // The edge check: exactly what the worker's batcher will accept.
    const raw = this.model.generateRequest({ sampler: new Sampler(sampler), batch: rows, length: job.length, prompt: job.prompt, fixed: job.fixed });
    const deadline = job.timeoutMs !== undefined ? Date.now() + job.timeoutMs : undefined;
    const payload = encodeJob({ ...job, sampler, ...(planSeed !== undefined ? { planSeed } : {}) }, deadline);
    const bytes = payloadBytes(payload);
    if (bytes > this.maxPayload) {
      throw new EsolmError('ERR_INVALID_ARG', `the request is ${bytes} bytes as a job, more than the queue's limit of ${this.maxPayload}`);
    }
    if (job.signal?.aborted) throw new EsolmError('ERR_ABORTED', 'the request was aborted before it was queued');
    if (!this.connected) throw unavailable(this.opts.redis, new Error(this.lastError ?? `connection ${this.conn.status}`));

    const id = randomUUID();
    return new Promise<BatchJobResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | null = null;
      const onAbort = (): void => {
        p.settle(null, new EsolmError('ERR_ABORTED', 'the request was aborted'));
        void this.cancelRemote(id);
      };
      const p: Pending = {
        id, job, rows, added: false, active: false, lastStep: -1, lastNews: Date.now(),
        settle: (r, e) => {
          if (!this.pending.delete(id)) return;
          job.signal?.removeEventListener('abort', onAbort);
          if (timer) clearTimeout(timer);
          if (r) resolve(r);
          else reject(e);
        },
      };
      this.pending.set(id, p);
      job.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        job.onAccepted?.({ seed, planSeed: planSeed ?? seed, length: raw.length, givenPositions: raw.givenPositions, givenTokens: raw.givenTokens.slice(0, raw.givenPositions.length) });
      } catch {
        // a listener's failure must not break the request
      }
      if (job.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          p.settle(null, new EsolmError('ERR_TIMEOUT', `the request timed out after ${job.timeoutMs} ms`));
          void this.cancelRemote(id);
        }, job.timeoutMs);
      }
      void this.add(id, payload).then(() => {
        p.added = true;
        p.lastNews = Date.now();
      }, (e: unknown) => p.settle(null, e));
    });
  }

  /** Adds the job (ERR_QUEUE_FULL over maxQueue, ERR_UNAVAILABLE when Redis does not take it). */
  private async add(id: string, payload: JobPayload): Promise<void> {
    let timer: NodeJS.Timeout | null = null;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(unavailable(this.opts.redis, new Error(`no answer in ${this.addTimeoutMs} ms`))), this.addTimeoutMs);
    });
    try {
      await Promise.race([timeout, (async () => {
        const waiting = await this.queue.getWaitingCount();
        if (waiting >= this.maxQueue) {
          throw new EsolmError('ERR_QUEUE_FULL', `the queue is full (${waiting} jobs waiting); retry in ${this.retryAfterSeconds()} s`);
        }
        await this.queue.add('generate', payload, { jobId: id, removeOnComplete: { age: 3600, count: 10_000 }, removeOnFail: { age: 24 * 3600 } });
      })()]);
    } catch (e) {
      if (e instanceof EsolmError) throw e;
      if (isConnectionError(e)) throw unavailable(this.opts.redis, e);
      throw new EsolmError('ERR_INTERNAL', `the job queue refused the request: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Unseeded requests within one second share a plan seed (the worker can batch them). */
  private sharedPlanSeed(): bigint {
    const now = Date.now();
    if (now >= this.plan.until) this.plan = { seed: this.randomSeed(), until: now + 1000 };
    return this.plan.seed;
  }

  /** The client is gone: a waiting job is removed; a running one is aborted by its worker. */
  private async cancelRemote(id: string): Promise<void> {
    try {
      await this.conn.multi().set(cancelKey(this.prefix, this.queueName, id), '1', 'EX', 3600).publish(this.channel, id).exec();
      // Only a job no worker holds is removed: a running one fails itself on the cancel
      // message, and removing it after that would erase its failed record (the worker can
      // release the lock before this line runs).
      const state = await (await this.queue.getJob(id))?.getState();
      if (state === 'waiting' || state === 'delayed' || state === 'prioritized') await this.queue.remove(id);
    } catch {
      // locked (running: the cancel message stops it) or Redis down (its deadline stops it)
    }
  }

  private async failedError(id: string, reason: string): Promise<EsolmError> {
    let attempts = 0;
    try {
      const j = await Job.fromId(this.queue, id);
      attempts = (j?.stalledCounter ?? 0);
    } catch {
      // keep the generic count
    }
    return failureToError(reason, attempts);
  }

  /** Looks up pending jobs without news for a while (an event missed across a reconnect). */
  private async reconcile(): Promise<void> {
    if (this.reconciling || !this.connected) return;
    this.reconciling = true;
    try {
      const quiet = Date.now() - (this.opts.reconcileMs ?? 2000);
      for (const p of [...this.pending.values()]) {
        if (!p.added || p.lastNews > quiet) continue;
        const j = await Job.fromId<JobPayload, ResultPayload>(this.queue, p.id);
        if (!j) {
          p.settle(null, new EsolmError('ERR_UNAVAILABLE', 'the job disappeared from Redis (was Redis restarted without persistence?); retry the request'));
        } else if (j.finishedOn && j.returnvalue && !j.failedReason) {
          p.settle(decodeResult(j.returnvalue));
        } else if (j.finishedOn && j.failedReason) {
          p.settle(null, failureToError(j.failedReason, j.stalledCounter ?? 0));
        } else {
          p.lastNews = Date.now();
        }
      }
    } catch {
      // Redis went away mid-check: the next round retries
    } finally {
      this.reconciling = false;
    }
  }

  async close(opts: { deadlineMs?: number } = {}): Promise<void> {
    if (this.state_ === 'closed') return;
    this.state_ = 'draining';
    const deadline = Date.now() + (opts.deadlineMs ?? 30_000);
    while (this.pending.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const p of [...this.pending.values()]) {
      p.settle(null, new EsolmError('ERR_SHUTTING_DOWN', 'the server shut down before the request finished'));
      await this.cancelRemote(p.id);
    }
    clearInterval(this.reconcileTimer);
    this.state_ = 'closed';
    // Bounded: a Redis that is down (or refuses our password) must not hold the shutdown.
    await within(this.events.close(), 1000);
    await within(this.queue.close(), 1000);
    for (const c of [this.eventsConn, this.conn]) {
      if (c.status !== 'ready' || !(await within(c.quit(), 1000))) c.disconnect();
    }
  }
}
