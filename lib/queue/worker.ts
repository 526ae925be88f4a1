/**
 * The generation worker of `esolm worker`: a BullMQ Worker whose jobs go into the same
 * Batcher as `esolm serve` (compatible jobs run as one batched native generation), with
 * every denoising step reported as job progress and the result as the job's return value.
 *
 * Nothing lost, nothing twice:
 * - a worker that dies (SIGKILL, OOM, power) stops renewing its job locks; after the lock
 *   expires another worker's stall check moves the job back to wait and it runs again. The
 *   producer fixed its seeds, so the rerun gives the same tokens and the same step events
 *   (the producer forwards only steps it has not sent yet). After `maxStalled` such
 *   recoveries the job fails (ERR_WORKER_LOST at the client): a job that kills every
 *   worker does not take the fleet down forever.
 * - close() (SIGTERM) stops taking jobs, lets the running ones finish until the deadline,
 *   then hands the rest back to the queue (moveToWait) for another worker.
 * - a client that goes away publishes the job id on the cancel channel: the worker holding
 *   it aborts it in its batcher (its batch mates carry on) and the job ends failed, unretried.
 */
import { hostname } from 'node:os';
import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { Batcher, type BatchInfo } from '../batch/index.js';
import { EsolmError, expected } from '../errors.js';
import type { Model } from '../model.js';
import { checkRedisOptions, connectRedis, type RedisOptions } from './connection.js';
import { cancelChannel, cancelKey, queueNameFor } from './names.js';
import {
  DEFAULT_MAX_PAYLOAD_BYTES, decodeJob, encodeProgress, encodeResult, failureMessage, payloadBytes, type JobPayload, type ResultPayload,
} from './payload.js';

export interface WorkerOptions {
  redis: RedisOptions;
  model: Model;
  /** Queue name. Defaults to the model folder's name (the producer's default too). */
  queue?: string;
  /** Batcher: most sequences per batched generation. Defaults to 8. */
  maxBatch?: number;
  /** Batcher: how long a batch waits for compatible jobs, ms. Defaults to 10. */
  batchWindowMs?: number;
  /** Jobs held at once (running and forming the next batch). Defaults to 2 x maxBatch. */
  concurrency?: number;
  /** How long a job's lock lives without renewal, ms: a dead worker's job is recovered after about this. Defaults to 30000. */
  lockDurationMs?: number;
  /** How often this worker looks for stalled jobs, ms. Defaults to 30000 (BullMQ's). */
  stalledIntervalMs?: number;
  /** Recoveries after a worker died before the job fails. Defaults to 2 (3 tries in all). */
  maxStalled?: number;
  /** Jobs with more data than this fail (ERR_INVALID_ARG). Defaults to 256 KiB. */
  maxPayloadBytes?: number;
  /** Called after each batched generation. */
  onBatch?: (info: BatchInfo) => void;
  /** This worker's name in the jobs it takes (BullMQ's processedBy). Defaults to host:pid. */
  name?: string;
  /** Called for errors of the Redis connections (they reconnect by themselves). Defaults to ignoring them. */
  onError?: (e: Error) => void;
}

export interface GenerationWorker {
  readonly worker: Worker<JobPayload, ResultPayload>;
  readonly batcher: Batcher;
  readonly queueName: string;
  /** Resolves once connected and taking jobs. */
  ready(): Promise<void>;
  /**
   * Stops taking jobs, lets running ones finish for `deadlineMs` (default 30000), hands the
   * rest back to the queue, and closes the connections. The model stays loaded. Idempotent.
   */
  close(opts?: { deadlineMs?: number }): Promise<void>;
}

function positiveInt(v: unknown, name: string, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw expected(`an integer >= ${min}`, name, v);
  return v;
}

export async function startWorker(opts: WorkerOptions): Promise<GenerationWorker> {
  if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'worker options', opts);
  const prefix = checkRedisOptions(opts.redis);
  const model = opts.model;
  const queueName = queueNameFor(opts.queue, model);
  const maxBatch = positiveInt(opts.maxBatch, 'maxBatch', 8);
  const concurrency = positiveInt(opts.concurrency, 'concurrency', 2 * maxBatch);
  const lockDuration = positiveInt(opts.lockDurationMs, 'lockDurationMs', 30_000, 100);
  const stalledInterval = positiveInt(opts.stalledIntervalMs, 'stalledIntervalMs', 30_000, 100);
  const maxStalled = positiveInt(opts.maxStalled, 'maxStalled', 2, 0);
  const maxPayload = positiveInt(opts.maxPayloadBytes, 'maxPayloadBytes', DEFAULT_MAX_PAYLOAD_BYTES);
  const onError = opts.onError ?? (() => undefined);
  // The worker's queue is not bounded here: BullMQ hands it at most `concurrency` jobs.
  const batcher = new Batcher(model, { maxBatch, windowMs: opts.batchWindowMs ?? 10, maxQueue: concurrency + 1, onBatch: opts.onBatch });

  const running = new Map<string, AbortController>();
  let handingBack = false;

  const processor = async (job: Job<JobPayload, ResultPayload>, token?: string): Promise<ResultPayload> => {
    const id = String(job.id);
    let decoded;
    try {
      const bytes = payloadBytes(job.data);
      if (bytes > maxPayload) throw new EsolmError('ERR_INVALID_ARG', `the job's data is ${bytes} bytes, more than this worker takes (${maxPayload})`);
      decoded = decodeJob(job.data);
    } catch (e) {
      throw new UnrecoverableError(failureMessage(e));
    }
    const { job: batchJob, deadline, progress: report } = decoded;
    const timeoutMs = deadline === undefined ? undefined : Math.floor(deadline - Date.now());
    if (timeoutMs !== undefined && timeoutMs <= 0) {
      throw new UnrecoverableError(failureMessage(new EsolmError('ERR_TIMEOUT', 'the request timed out before a worker took it')));
    }
    const ctl = new AbortController();
    running.set(id, ctl);
    // Cancelled before this (re)start: the cancel message may have gone out before we held it.
    if (await connection.exists(cancelKey(prefix, queueName, id)).catch(() => 0)) {
      running.delete(id);
      throw new UnrecoverableError(failureMessage(new EsolmError('ERR_ABORTED', 'the request was cancelled by its client')));
    }
    // Progress writes go out in step order; a failed write (Redis blip) only loses that event.
    let progress: Promise<unknown> = Promise.resolve();
    try {
      const r = await batcher.submit({
        ...batchJob, signal: ctl.signal, ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(report ? {
          onStep: (e) => {
            const data = encodeProgress(e);
            progress = progress.then(() => job.updateProgress(data)).catch(() => undefined);
          },
        } : {}),
      });
      await progress;
      return encodeResult(r, job.processedOn ? Math.max(0, job.processedOn - job.timestamp) : 0);
    } catch (e) {
      await progress;
      if (handingBack && e instanceof EsolmError && e.code === 'ERR_ABORTED' && token !== undefined) {
        // SIGTERM deadline: back to the queue for another worker (no attempt used).
        await job.moveToWait(token);
        throw new WaitingError();
      }
      throw new UnrecoverableError(failureMessage(e));
    } finally {
      running.delete(id);
    }
  };

  const connection = connectRedis(opts.redis);
  connection.on('error', onError);
  const worker = new Worker<JobPayload, ResultPayload>(queueName, processor, {
    name: opts.name ?? `${hostname()}:${process.pid}`, connection, prefix, concurrency, lockDuration, stalledInterval, maxStalledCount: maxStalled,
    autorun: false,
    // Finished jobs are kept a while for late readers; the producer reads results from events.
    removeOnComplete: { age: 3600, count: 10_000 },
    removeOnFail: { age: 24 * 3600, count: 10_000 },
  });
  worker.on('error', onError);

  // Cancellation from the producer: a job id on the cancel channel.
  const sub: Redis = connectRedis(opts.redis);
  sub.on('error', onError);
  sub.on('message', (_channel: string, jobId: string) => running.get(jobId)?.abort());
  await sub.subscribe(cancelChannel(prefix, queueName));

  void worker.run().catch(onError);
  let closing: Promise<void> | null = null;
  return {
    worker, batcher, queueName,
    async ready() {
      await worker.waitUntilReady();
    },
    close(o = {}) {
      closing ??= (async () => {
        const deadlineMs = o.deadlineMs ?? 30_000;
        const handBack = setTimeout(() => {
          handingBack = true;
          for (const ctl of running.values()) ctl.abort();
        }, deadlineMs);
        try {
          await worker.close();
        } finally {
          clearTimeout(handBack);
        }
        await batcher.close();
        for (const c of [sub, connection]) {
          const quit = c.quit().then(() => true, () => false);
          if (!(await Promise.race([quit, new Promise<boolean>((r) => setTimeout(() => r(false), 1000).unref())]))) c.disconnect();
        }
      })();
      return closing;
    },
  };
}
