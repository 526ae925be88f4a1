/**
 * The batcher: turns concurrent generation requests into batched native generations.
 *
 * Requests whose sampler settings are compatible (same method, length, steps, alpha0, topP,
 * temperature, greedy, blocks, schedule, bos, given positions and, for Eso-LM, identical
 * step sizes) and that arrive within `windowMs` of a batch's first request run as ONE
 * Model.generate call, each request a seed group of its own (GenerateOptions.seedGroups):
 * a request's output is exactly what it would get alone, seed for seed, whatever its batch
 * mates. Batches run one at a time, oldest first; a batch waiting for the model keeps
 * taking mates until it is full.
 *
 * Seeds: a request without a seed gets one chosen here (< 2^53). Eso-LM step sizes come
 * from the plan seed (default: the seed), so seeded Eso-LM requests batch only when their
 * plans agree (pass the same planSeed to make them); unseeded ones in one window share a
 * chosen plan seed. The result reports `seed` and `planSeed`: Model.generate with
 * `seedGroups: [{ seed, planSeed, rows: n }]` reproduces it.
 *
 * Cancellation: a request's signal or timeout settles it at once (ERR_ABORTED /
 * ERR_TIMEOUT) and stops its events; a queued request leaves the queue; when no live
 * request is left in a running batch, the native generation is aborted.
 */
import { randomBytes } from 'node:crypto';
import { EsolmError, expected } from '../errors.js';
import { seedValue, type FixedTokens, type GenerateRequestRaw, type GenerateResult, type Model, type StepEvent } from '../model.js';
import { Sampler, type SamplerOptions } from '../sampler.js';
import { esolmStepSizes } from './plan.js';

export interface BatcherOptions {
  /** Most sequences in one batched generation; a request with more runs alone. 1 turns batching off. Defaults to 8. */
  maxBatch?: number;
  /** How long a batch waits for compatible requests after its first one, in ms. Defaults to 10. */
  windowMs?: number;
  /** Most requests waiting (not running) before submit() rejects with ERR_QUEUE_FULL. Defaults to 256. */
  maxQueue?: number;
  /** Called after each batched generation (metrics). */
  onBatch?: (info: BatchInfo) => void;
  /** Source of seeds for requests without one. Defaults to crypto random integers < 2^53. */
  randomSeed?: () => bigint;
}

export interface BatchJob {
  /** How to sample. `seed` absent: the batcher picks one (reported in the result). */
  sampler: SamplerOptions;
  /** esolm: the seed of the step sizes. Defaults to the seed, or (no seed) to one shared by the window. */
  planSeed?: number | bigint;
  /** Sequences for this request (OpenAI `n`); they are rows 0..n-1 of the request, as in a generation of batch n. Defaults to 1. */
  n?: number;
  /** Tokens per sequence. Defaults to the model's context length. */
  length?: number;
  /** Prefix tokens at positions 0..P-1 (a string needs the model's tokenizer). */
  prompt?: Int32Array | readonly number[] | string;
  /** Tokens fixed at arbitrary positions (infilling). */
  fixed?: FixedTokens;
  /** Aborts this request (ERR_ABORTED); its batch mates carry on. */
  signal?: AbortSignal;
  /** Rejects with ERR_TIMEOUT after this many ms from submit (queueing included). Defaults to none. */
  timeoutMs?: number;
  /** This request's step events: the library's StepEvent restricted to its n rows (`nfe` counts the batch's forwards). */
  onStep?: (event: StepEvent) => void;
  /** Called once the request is validated and queued, before any step event. */
  onAccepted?: (info: AcceptedInfo) => void;
}

/** What a queued request will run with. */
export interface AcceptedInfo {
  seed: bigint;
  planSeed: bigint;
  length: number;
  /** Positions given by the prompt and fixed tokens (ascending) and their tokens (the same for each of the n rows). */
  givenPositions: Int32Array;
  givenTokens: Int32Array;
}

export interface BatchJobResult {
  /** One Int32Array of `length` tokens per sequence, in position order. */
  sequences: Int32Array[];
  /** Decoded text per sequence when the model has a tokenizer. */
  text?: string[];
  /** The seed and plan seed used: pass them as `seedGroups: [{ seed, planSeed, rows: n }]` to reproduce. */
  seed: bigint;
  planSeed: bigint;
  /** Sampler steps this request took. */
  steps: number;
  /** esolm: tokens revealed by the diffusion phase. */
  nDiffusion: number;
  /** Network evaluations of the batched generation. */
  nfe: number;
  /** The batch it ran in: sequences and requests. */
  batch: { rows: number; requests: number };
  /** Time waiting for the batch to start, and the batched generation's time, in ms. */
  queueMs: number;
  runMs: number;
}

export interface BatchInfo {
  method: string;
  rows: number;
  requests: number;
  /** Wall time of the native generation, ms. */
  ms: number;
  nfe: number;
  /** Tokens generated (rows x length, less the given ones). */
  tokens: number;
  /** Whether it ran to the end (false: aborted or failed). */
  ok: boolean;
}

interface Entry {
  job: BatchJob;
  raw: GenerateRequestRaw;
  rows: number;
  seed: bigint;
  planSeed: bigint;
  submittedAt: number;
  settled: boolean;
  resolve: (r: BatchJobResult) => void;
  reject: (e: unknown) => void;
  cleanup: () => void;
  batch: Bucket | null;
  // MDLM: masks left in this request's rows (its events stop once they are all revealed),
  // and the step after its last reveal (its own step count).
  masksLeft: number;
  steps: number;
}

interface Bucket {
  key: string;
  /** The key without the step sizes; set when unseeded requests share this bucket's plan seed. */
  sharedBase: string | null;
  planSeed: bigint;
  entries: Entry[];
  rows: number;
  ready: boolean;
  timer: NodeJS.Timeout | null;
  controller: AbortController | null;
}

const MAX_SEED = 2n ** 53n;

function defaultSeed(): bigint {
  return randomBytes(8).readBigUInt64LE() % MAX_SEED;
}

function positiveInt(v: unknown, name: string, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw expected(`an integer >= ${min}`, name, v);
  return v;
}

/**
 * The checks of a BatchJob's own fields (the sampler, length, prompt and fixed tokens are
 * checked by Model.generateRequest): one statement for the Batcher and the queue producer.
 * Returns the number of sequences (`n`, default 1).
 */
export function checkBatchJob(job: BatchJob): number {
  if (typeof job !== 'object' || job === null) throw expected('an options object', 'job', job);
  if (typeof job.sampler !== 'object' || job.sampler === null) throw expected('sampler options', 'sampler', job.sampler);
  const rows = positiveInt(job.n, 'n', 1);
  if (job.signal !== undefined && !(job.signal instanceof AbortSignal)) throw expected('an AbortSignal', 'signal', job.signal);
  if (job.timeoutMs !== undefined) positiveInt(job.timeoutMs, 'timeoutMs', 0);
  if (job.onStep !== undefined && typeof job.onStep !== 'function') throw expected('a function', 'onStep', job.onStep);
  if (job.onAccepted !== undefined && typeof job.onAccepted !== 'function') throw expected('a function', 'onAccepted', job.onAccepted);
  return rows;
}

export class Batcher {
  readonly model: Model;
  readonly maxBatch: number;
  readonly windowMs: number;
  readonly maxQueue: number;
  private readonly onBatch: ((info: BatchInfo) => void) | undefined;
  private readonly randomSeed: () => bigint;
  private readonly open: Bucket[] = [];
  private current: Bucket | null = null;
  private queuedCount = 0;
  private state_: 'open' | 'draining' | 'closed' = 'open';
  private avgBatchMs = 0;
  private idleWaiters: (() => void)[] = [];
  private aloneCount = 0;

  constructor(model: Model, opts: BatcherOptions = {}) {
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'batcher options', opts);
    this.model = model;
    this.maxBatch = positiveInt(opts.maxBatch, 'maxBatch', 8);
    this.windowMs = positiveInt(opts.windowMs, 'windowMs', 10, 0);
    this.maxQueue = positiveInt(opts.maxQueue, 'maxQueue', 256);
    if (opts.onBatch !== undefined && typeof opts.onBatch !== 'function') throw expected('a function', 'onBatch', opts.onBatch);
    this.onBatch = opts.onBatch;
    this.randomSeed = opts.randomSeed ?? defaultSeed;
  }

  /** Requests waiting for their batch to start. */
  get queued(): number {
    return this.queuedCount;
  }

  /** Sequences in the generation now running. */
  get inFlight(): number {
    return this.current ? this.current.rows : 0;
  }

  /** `open`, then `draining` after close() (new requests are refused), then `closed`. */
  get state(): 'open' | 'draining' | 'closed' {
    return this.state_;
  }

  /** Open (the local engine needs nothing else). */
  get available(): boolean {
    return this.state_ === 'open';
  }

  /** A guess, in whole seconds (>= 1), of when a refused request could be accepted. */
  retryAfterSeconds(): number {
    const batches = this.open.length + (this.current ? 1 : 0);
    return Math.max(1, Math.ceil((this.avgBatchMs * batches) / 1000));
  }

  /**
   * Queues one request. Rejects with ERR_INVALID_ARG on bad options (before queueing),
   * ERR_QUEUE_FULL when maxQueue requests wait, ERR_SHUTTING_DOWN after close(),
   * ERR_ABORTED / ERR_TIMEOUT when cancelled, or the generation's error.
   */
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
    const seeded = job.sampler.seed !== undefined;
    const seed = seeded ? seedValue(job.sampler.seed, 'seed') : this.randomSeed();
    const sampler = new Sampler({ ...job.sampler, seed });
    // Validates everything else (length, prompt, fixed) and gives the given positions.
    const raw = this.model.generateRequest({ sampler, batch: rows, length: job.length, prompt: job.prompt, fixed: job.fixed });
    if (job.signal?.aborted) throw new EsolmError('ERR_ABORTED', 'the request was aborted before it was queued');
    if (this.queuedCount >= this.maxQueue) {
      throw new EsolmError('ERR_QUEUE_FULL', `the queue is full (${this.maxQueue} requests waiting); retry in ${this.retryAfterSeconds()} s`);
    }

    // Compatibility key: everything that must be equal across one native generation.
    const base = JSON.stringify([raw.method, raw.length, raw.steps, raw.alpha0, raw.blockLen, raw.blockShuffle, raw.topP,
      raw.temperature, raw.greedy, raw.bos, raw.prepend, raw.stepSizes ? [...raw.stepSizes] : null, raw.order ? [...raw.order] : null,
      [...raw.givenPositions]]);
    const seededPlan = raw.method === 'esolm' && raw.stepSizes === null && raw.blockLen === 0;
    let planSeed = job.planSeed !== undefined ? seedValue(job.planSeed, 'planSeed') : seed;
    let bucket: Bucket | undefined;
    let sharedBase: string | null = null;
    if (seededPlan && !seeded && job.planSeed === undefined) {
      // Unseeded: share the plan seed of a bucket that unseeded requests opened in this window.
      sharedBase = base;
      bucket = this.open.find((b) => b.sharedBase === base && b.rows + rows <= this.maxBatch);
      if (bucket) planSeed = bucket.planSeed;
      else planSeed = this.randomSeed();
    }
    let key = base;
    if (seededPlan) {
      const plan = esolmStepSizes({ length: raw.length, nGiven: raw.givenPositions.length, steps: raw.steps, alpha0: raw.alpha0, planSeed },
        this.model.addon_);
      key += `|${plan.stepSizes.join(',')}|${plan.nDiffusion}`;
    }
    // The full-forward samplers (Eso-LM (A), MDLM with a planned order) take one seed: such
    // a request runs alone.
    const fullForward = raw.method === 'esolm-a' ||
      (raw.method === 'mdlm' && (raw.order !== null || raw.stepSizes !== null || raw.blockLen > 0));
    if (fullForward) key += `|alone:${++this.aloneCount}`;
    // Explicit per-sequence orders cannot be joined with other requests' rows.
    if (raw.orderCount > 1) key += `|alone:${++this.aloneCount}`;
    bucket ??= this.open.find((b) => b.key === key && b.rows + rows <= this.maxBatch);
    if (!bucket) {
      bucket = { key, sharedBase, planSeed, entries: [], rows: 0, ready: false, timer: null, controller: null };
      this.open.push(bucket);
      const b = bucket;
      if (this.windowMs === 0) b.ready = true;
      else b.timer = setTimeout(() => { b.timer = null; b.ready = true; this.pump(); }, this.windowMs);
    }

    return new Promise<BatchJobResult>((resolve, reject) => {
      const free = raw.length - raw.givenPositions.length;
      const entry: Entry = {
        job, raw, rows, seed, planSeed, submittedAt: performance.now(), settled: false,
        resolve, reject, cleanup: () => undefined, batch: null, masksLeft: rows * free, steps: 0,
      };
      const b = bucket as Bucket;
      b.entries.push(entry);
      b.rows += rows;
      this.queuedCount++;
      if (b.rows >= this.maxBatch) this.markReady(b);
      // Cancellation and timeout settle the request at once.
      const onAbort = (): void => this.cancel(entry, new EsolmError('ERR_ABORTED', 'the request was aborted'));
      job.signal?.addEventListener('abort', onAbort, { once: true });
      const timer = job.timeoutMs === undefined ? null
        : setTimeout(() => this.cancel(entry, new EsolmError('ERR_TIMEOUT', `the request timed out after ${job.timeoutMs} ms`)), job.timeoutMs);
      entry.cleanup = () => {
        job.signal?.removeEventListener('abort', onAbort);
        if (timer) clearTimeout(timer);
      };
      try {
        job.onAccepted?.({ seed, planSeed, length: raw.length, givenPositions: raw.givenPositions, givenTokens: raw.givenTokens.slice(0, raw.givenPositions.length) });
      } catch {
        // a listener's failure must not break the queue
      }
      this.pump();
    });
  }

  /**
   * Stops taking requests (ERR_SHUTTING_DOWN), runs what is queued and waits for it; after
   * `deadlineMs` (default: no deadline) whatever is left is aborted with ERR_SHUTTING_DOWN.
   */
  async close(opts: { deadlineMs?: number } = {}): Promise<void> {
    if (this.state_ === 'open') this.state_ = 'draining';
    for (const b of this.open) this.markReady(b);
    this.pump();
    const idle = new Promise<void>((r) => {
      if (!this.current && this.open.length === 0) r();
      else this.idleWaiters.push(r);
    });
    let deadline: NodeJS.Timeout | null = null;
    if (opts.deadlineMs !== undefined) {
      deadline = setTimeout(() => {
        const err = new EsolmError('ERR_SHUTTING_DOWN', 'the server shut down before the request finished');
        // (copies: cancelling a queued request takes it out of its bucket)
        for (const b of [...this.open, ...(this.current ? [this.current] : [])]) for (const e of [...b.entries]) this.cancel(e, err);
      }, opts.deadlineMs);
    }
    await idle;
    if (deadline) clearTimeout(deadline);
    this.state_ = 'closed';
  }

  private markReady(b: Bucket): void {
    b.ready = true;
    if (b.timer) {
      clearTimeout(b.timer);
      b.timer = null;
    }
  }

  private cancel(e: Entry, err: EsolmError): void {
    if (e.settled) return;
    this.settle(e, () => e.reject(err));
    const b = e.batch;
    if (b) {
      // Running: abort the generation once no live request is left in it.
      if (b.entries.every((x) => x.settled)) b.controller?.abort();
      return;
    }
    // Queued: leave the queue.
    const q = this.open.find((x) => x.entries.includes(e));
    if (!q) return;
    q.entries.splice(q.entries.indexOf(e), 1);
    q.rows -= e.rows;
    this.queuedCount--;
    if (q.entries.length === 0) {
      if (q.timer) clearTimeout(q.timer);
      this.open.splice(this.open.indexOf(q), 1);
      this.checkIdle();
    }
  }

  private settle(e: Entry, fn: () => void): void {
    if (e.settled) return;
    e.settled = true;
    e.cleanup();
    fn();
  }

  private checkIdle(): void {
    if (this.current || this.open.length > 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Starts the oldest ready batch when none is running. */
  private pump(): void {
    if (this.current) return;
    const i = this.open.findIndex((b) => b.ready);
    if (i < 0) {
      this.checkIdle();
      return;
    }
    const b = this.open.splice(i, 1)[0];
    this.current = b;
    this.queuedCount -= b.entries.length;
    void this.run(b).finally(() => {
      this.current = null;
      this.pump();
    });
  }

  private async run(b: Bucket): Promise<void> {
    const entries = b.entries.filter((e) => !e.settled);
    if (entries.length === 0) return;
    const started = performance.now();
    b.controller = new AbortController();
    for (const e of entries) e.batch = b;
    // One request: the joined request of its rows, in order, each a seed group.
    const first = entries[0].raw;
    const rowsTotal = entries.reduce((a, e) => a + e.rows, 0);
    const G = first.givenPositions.length;
    const givenTokens = new Int32Array(rowsTotal * G);
    const groups = new Int32Array(entries.length * 5);
    let row = 0;
    entries.forEach((e, i) => {
      givenTokens.set(e.raw.givenTokens, row * G);
      groups.set([Number(e.seed >> 32n), Number(e.seed & 0xffffffffn), Number(e.planSeed >> 32n), Number(e.planSeed & 0xffffffffn), e.rows], i * 5);
      row += e.rows;
    });
    const joined: GenerateRequestRaw = { ...first, batch: rowsTotal, givenTokens, seedGroups: groups };
    const offsets: number[] = [];
    entries.reduce((o, e) => { offsets.push(o); return o + e.rows; }, 0);
    const isMdlm = first.method === 'mdlm';
    const onStep = (ev: StepEvent): void => {
      entries.forEach((e, i) => {
        if (e.settled) return;
        const slice = sliceEvent(ev, offsets[i], e.rows, isMdlm);
        if (isMdlm) {
          if (e.masksLeft === 0) return;  // alone, its generation would have ended
          e.masksLeft -= slice.positions.filter((p) => p >= 0).length;
          e.steps = ev.step + 1;
        }
        try {
          e.job.onStep?.(slice);
        } catch {
          // a listener's failure must not stop the batch
        }
      });
    };
    let result: GenerateResult | null = null;
    let error: unknown = null;
    try {
      result = await this.model.generateRaw(joined, { signal: b.controller.signal, onStep: entries.some((e) => e.job.onStep) || isMdlm ? onStep : undefined });
    } catch (e) {
      error = e;
    }
    const ms = performance.now() - started;
    this.avgBatchMs = this.avgBatchMs === 0 ? ms : 0.8 * this.avgBatchMs + 0.2 * ms;
    entries.forEach((e, i) => {
      if (result) {
        const r = result;
        const o = offsets[i];
        this.settle(e, () => e.resolve({
          sequences: r.sequences.slice(o, o + e.rows),
          ...(r.text ? { text: r.text.slice(o, o + e.rows) } : {}),
          seed: e.seed, planSeed: e.planSeed,
          steps: isMdlm && e.masksLeft === 0 ? e.steps : r.steps,
          nDiffusion: r.nDiffusion, nfe: r.nfe,
          batch: { rows: rowsTotal, requests: entries.length },
          queueMs: started - e.submittedAt, runMs: ms,
        }));
      } else {
        this.settle(e, () => e.reject(error));
      }
    });
    this.onBatch?.({
      method: first.method, rows: rowsTotal, requests: entries.length, ms, nfe: result?.nfe ?? 0,
      tokens: result ? rowsTotal * (first.length - G) : 0, ok: result !== null,
    });
  }
}

/**
 * Rows [row0, row0 + rows) of a batch event. MDLM pads each row's reveals with -1 up to the
 * batch's widest row: the slice keeps this request's reveals and re-pads to its own widest.
 */
export function sliceEvent(ev: StepEvent, row0: number, rows: number, dropPadding: boolean): StepEvent {
  const w = ev.perSequence;
  let positions = ev.positions.slice(row0 * w, (row0 + rows) * w);
  let tokens = ev.tokens.slice(row0 * w, (row0 + rows) * w);
  let perSequence = w;
  if (dropPadding) {
    const lists: [number, number][][] = [];
    for (let r = 0; r < rows; r++) {
      const l: [number, number][] = [];
      for (let q = 0; q < w; q++) if (positions[r * w + q] >= 0) l.push([positions[r * w + q], tokens[r * w + q]]);
      lists.push(l);
    }
    perSequence = Math.max(0, ...lists.map((l) => l.length));
    positions = new Int32Array(rows * perSequence).fill(-1);
    tokens = new Int32Array(rows * perSequence).fill(-1);
    lists.forEach((l, r) => l.forEach(([p, t], q) => { positions[r * perSequence + q] = p; tokens[r * perSequence + q] = t; }));
  }
  return { step: ev.step, steps: ev.steps, nfe: ev.nfe, phase: ev.phase, perSequence, positions, tokens };
}
