/**
 * What crosses Redis: a generation job's data, its progress (one StepEvent per denoising
 * step) and its result, as JSON. Seeds travel as decimal strings (they may exceed 2^53).
 * The producer validates a request once, at the edge, with the model; the worker decodes
 * the payload strictly (a foreign or corrupt job fails with ERR_INVALID_ARG, never a crash)
 * and its batcher checks the rest exactly as for a local request.
 */
import type { BatchJob, BatchJobResult } from '../batch/index.js';
import { EsolmError, expected } from '../errors.js';
import { seedValue, type StepEvent, type StepPhase } from '../model.js';
import type { SamplerOptions } from '../sampler.js';

/** Payload format version: a worker refuses jobs of another version. */
export const PAYLOAD_VERSION = 1;

/** Default cap on one job's JSON data, bytes. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024;

export interface JobPayload {
  v: number;
  sampler: Record<string, unknown>;
  planSeed?: string;
  n: number;
  length?: number;
  prompt?: number[] | string;
  fixed?: { positions: number[]; tokens: number[] };
  /** Epoch ms after which the client no longer waits: the worker drops the job (ERR_TIMEOUT). */
  deadline?: number;
  /** Report each step as job progress (only when someone listens: a write to Redis per step). */
  progress?: boolean;
}

export interface ProgressPayload {
  step: number; steps: number; nfe: number; phase: StepPhase; perSequence: number;
  positions: number[]; tokens: number[];
}

export interface ResultPayload {
  sequences: number[][];
  text?: string[];
  seed: string; planSeed: string;
  steps: number; nDiffusion: number; nfe: number;
  batch: { rows: number; requests: number };
  queueMs: number; runMs: number;
}

const SAMPLER_KEYS = new Set(['method', 'steps', 'alpha0', 'topP', 'temperature', 'greedy', 'seed', 'schedule', 'order', 'blocks', 'bos']);

function fixedOut(f: BatchJob['fixed']): JobPayload['fixed'] {
  if (f === undefined) return undefined;
  const entries: [number, number][] = f instanceof Map ? [...f.entries()]
    : 'positions' in f && 'tokens' in f ? Array.from({ length: (f.positions as ArrayLike<number>).length }, (_, i) => [
      (f.positions as ArrayLike<number>)[i], (f.tokens as ArrayLike<number>)[i]] as [number, number])
      : Object.entries(f).map(([k, v]) => [Number(k), v as number]);
  return { positions: entries.map((e) => e[0]), tokens: entries.map((e) => e[1]) };
}

/** A BatchJob (with its seed and plan seed already fixed by the producer) as job data. */
export function encodeJob(job: BatchJob, deadline?: number): JobPayload {
  const progress = job.onStep !== undefined;
  const sampler: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(job.sampler)) {
    if (v === undefined) continue;
    sampler[k] = k === 'seed' ? String(v) : v;
  }
  const p: JobPayload = { v: PAYLOAD_VERSION, sampler, n: job.n ?? 1 };
  if (job.planSeed !== undefined) p.planSeed = String(job.planSeed);
  if (job.length !== undefined) p.length = job.length;
  if (job.prompt !== undefined) p.prompt = typeof job.prompt === 'string' ? job.prompt : Array.from(job.prompt);
  const fixed = fixedOut(job.fixed);
  if (fixed) p.fixed = fixed;
  if (deadline !== undefined) p.deadline = deadline;
  if (progress) p.progress = true;
  return p;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function intArray(v: unknown, name: string): number[] {
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) throw expected('an array of integers', name, v);
  return v as number[];
}

/** Job data back to a BatchJob (ERR_INVALID_ARG on anything malformed). */
export function decodeJob(data: unknown): { job: BatchJob; deadline?: number; progress: boolean } {
  if (!isObject(data)) throw expected('an object', 'job data', data);
  if (data.v !== PAYLOAD_VERSION) {
    throw new EsolmError('ERR_INVALID_ARG', `job payload version ${JSON.stringify(data.v)} is not the version this worker reads (${PAYLOAD_VERSION})`);
  }
  if (!isObject(data.sampler)) throw expected('an object', 'job sampler', data.sampler);
  const sampler: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data.sampler)) {
    if (!SAMPLER_KEYS.has(k)) throw new EsolmError('ERR_INVALID_ARG', `unknown sampler option "${k}" in the job`);
    sampler[k] = k === 'seed' ? seedFrom(v, 'sampler.seed') : v;
  }
  const job: BatchJob = { sampler: sampler as unknown as SamplerOptions };
  if (data.n !== undefined) {
    if (!Number.isInteger(data.n)) throw expected('an integer', 'n', data.n);
    job.n = data.n as number;
  }
  if (data.planSeed !== undefined) job.planSeed = seedFrom(data.planSeed, 'planSeed');
  if (data.length !== undefined) {
    if (!Number.isInteger(data.length)) throw expected('an integer', 'length', data.length);
    job.length = data.length as number;
  }
  if (data.prompt !== undefined) job.prompt = typeof data.prompt === 'string' ? data.prompt : intArray(data.prompt, 'prompt');
  if (data.fixed !== undefined) {
    if (!isObject(data.fixed)) throw expected('{ positions, tokens }', 'fixed', data.fixed);
    job.fixed = { positions: intArray(data.fixed.positions, 'fixed.positions'), tokens: intArray(data.fixed.tokens, 'fixed.tokens') };
  }
  let deadline: number | undefined;
  if (data.deadline !== undefined) {
    if (typeof data.deadline !== 'number' || !Number.isFinite(data.deadline)) throw expected('a number (epoch ms)', 'deadline', data.deadline);
    deadline = data.deadline;
  }
  if (data.progress !== undefined && typeof data.progress !== 'boolean') throw expected('a boolean', 'progress', data.progress);
  for (const k of Object.keys(data)) {
    if (!['v', 'sampler', 'planSeed', 'n', 'length', 'prompt', 'fixed', 'deadline', 'progress'].includes(k)) {
      throw new EsolmError('ERR_INVALID_ARG', `unknown field "${k}" in the job`);
    }
  }
  return { job, deadline, progress: data.progress === true };
}

function seedFrom(v: unknown, name: string): bigint {
  if (typeof v === 'string' && /^\d{1,20}$/.test(v)) return seedValue(BigInt(v), name);
  return seedValue(v, name);
}

/** Bytes of a payload as stored. */
export function payloadBytes(p: unknown): number {
  return Buffer.byteLength(JSON.stringify(p), 'utf8');
}

export function encodeProgress(e: StepEvent): ProgressPayload {
  return { step: e.step, steps: e.steps, nfe: e.nfe, phase: e.phase, perSequence: e.perSequence, positions: Array.from(e.positions), tokens: Array.from(e.tokens) };
}

export function decodeProgress(p: ProgressPayload): StepEvent {
  return { step: p.step, steps: p.steps, nfe: p.nfe, phase: p.phase, perSequence: p.perSequence, positions: Int32Array.from(p.positions), tokens: Int32Array.from(p.tokens) };
}

export function encodeResult(r: BatchJobResult, waitedMs: number): ResultPayload {
  return {
    sequences: r.sequences.map((s) => Array.from(s)), ...(r.text ? { text: r.text } : {}),
    seed: String(r.seed), planSeed: String(r.planSeed), steps: r.steps, nDiffusion: r.nDiffusion, nfe: r.nfe,
    batch: r.batch, queueMs: r.queueMs + waitedMs, runMs: r.runMs,
  };
}

export function decodeResult(p: ResultPayload): BatchJobResult {
  return {
    sequences: p.sequences.map((s) => Int32Array.from(s)), ...(p.text ? { text: p.text } : {}),
    seed: BigInt(p.seed), planSeed: BigInt(p.planSeed), steps: p.steps, nDiffusion: p.nDiffusion, nfe: p.nfe,
    batch: p.batch, queueMs: p.queueMs, runMs: p.runMs,
  };
}

/**
 * A job's failure crosses Redis as its message: "ERR_CODE: message". The producer turns it
 * back into an EsolmError with that code.
 */
export function failureMessage(e: unknown): string {
  if (e instanceof EsolmError) return `${e.code}: ${e.message}`;
  return `ERR_INTERNAL: ${e instanceof Error ? e.message : String(e)}`;
}
