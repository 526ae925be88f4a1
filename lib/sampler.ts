/**
 * Sampler: a validated, frozen description of how to generate. The loops themselves run
 * natively (engine/generate.cpp); see Model.generate.
 *
 * - `esolm`: Eso-LM (B) with the KV cache. Step sizes come from the alpha0-scaled
 *   log-linear schedule with binomial draws (or `schedule`, or the `blocks` schedule); the
 *   slot order is random over the diffusion part and left to right over the sequential
 *   tail (or `order`).
 * - `mdlm`: MDLM ancestral sampling over `steps` timesteps with the p(x0) cache.
 * - `ar`: left to right with the KV cache.
 * Every draw is keyed by (seed, sequence, position, token) through Philox4x32-10, so a
 * sequence's tokens do not depend on the batch size or on the backend.
 */
import { expected, invalidArg } from './errors.js';

export type SamplerMethod = 'esolm' | 'mdlm' | 'ar';

export interface SamplerOptions {
  /** Sampling method. */
  method: SamplerMethod;
  /** T: timesteps of the log-linear schedule (esolm) or of MDLM. Required for esolm (unless `schedule` or `blocks`) and mdlm. */
  steps?: number;
  /** alpha_0 in [0, 1] (esolm): the expected fraction of tokens revealed by diffusion. Defaults to 1. */
  alpha0?: number;
  /** Nucleus top-p in (0, 1]. Defaults to 1 (no filtering; the paper's scripts use 0.9). */
  topP?: number;
  /** Softmax temperature > 0. Defaults to 1. */
  temperature?: number;
  /** Take the most likely token instead of sampling. Defaults to false. */
  greedy?: boolean;
  /** Seed: a non-negative integer (up to 2^53) or a bigint (up to 2^64). Defaults to 0. */
  seed?: number | bigint;
  /** esolm: explicit step sizes (tokens revealed per step) summing to the number of free positions. */
  schedule?: readonly number[];
  /** esolm: explicit slot order of the free positions (one order for all sequences, or one per sequence). */
  order?: readonly number[] | readonly (readonly number[])[];
  /** esolm: block ("subcontext") schedule of MODEL-REFERENCE.md §2.6. */
  blocks?: { length: number; shuffle?: boolean };
  /** ar: first token when nothing is given at position 0 (e.g. GPT-2's 50256). */
  bos?: number;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

export class Sampler {
  readonly method: SamplerMethod;
  readonly steps: number | undefined;
  readonly alpha0: number;
  readonly topP: number;
  readonly temperature: number;
  readonly greedy: boolean;
  readonly seed: bigint;
  readonly schedule: readonly number[] | undefined;
  readonly order: readonly (readonly number[])[] | undefined;
  readonly blocks: Readonly<{ length: number; shuffle: boolean }> | undefined;
  readonly bos: number | undefined;

  constructor(opts: SamplerOptions) {
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'Sampler options', opts);
    const known = new Set(['method', 'steps', 'alpha0', 'topP', 'temperature', 'greedy', 'seed', 'schedule', 'order', 'blocks', 'bos']);
    for (const k of Object.keys(opts)) if (!known.has(k)) throw invalidArg(`unknown Sampler option "${k}"`);
    const { method } = opts;
    if (method !== 'esolm' && method !== 'mdlm' && method !== 'ar') throw expected('"esolm", "mdlm" or "ar"', 'method', method);
    this.method = method;

    if (opts.steps !== undefined && (!isInt(opts.steps) || opts.steps < 1 || opts.steps > 2 ** 24)) {
      throw expected('an integer in [1, 2^24]', 'steps', opts.steps);
    }
    this.steps = opts.steps;
    const alpha0 = opts.alpha0 ?? 1;
    if (typeof alpha0 !== 'number' || !(alpha0 >= 0 && alpha0 <= 1)) throw expected('a number in [0, 1]', 'alpha0', alpha0);
    this.alpha0 = alpha0;
    const topP = opts.topP ?? 1;
    if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw expected('a number in (0, 1]', 'topP', topP);
    this.topP = topP;
    const temperature = opts.temperature ?? 1;
    if (typeof temperature !== 'number' || !(temperature > 0) || !Number.isFinite(temperature)) {
      throw expected('a positive finite number', 'temperature', temperature);
    }
    this.temperature = temperature;
    if (opts.greedy !== undefined && typeof opts.greedy !== 'boolean') throw expected('a boolean', 'greedy', opts.greedy);
    this.greedy = opts.greedy ?? false;
    const seed = opts.seed ?? 0;
    if (typeof seed === 'bigint') {
      if (seed < 0n || seed >= 2n ** 64n) throw expected('a bigint in [0, 2^64)', 'seed', seed);
      this.seed = seed;
    } else {
      if (!isInt(seed) || seed < 0 || !Number.isSafeInteger(seed)) throw expected('a non-negative safe integer or a bigint', 'seed', seed);
      this.seed = BigInt(seed);
    }

    if (opts.schedule !== undefined) {
      if (method !== 'esolm') throw invalidArg('schedule is only used by method "esolm"');
      if (!Array.isArray(opts.schedule) || opts.schedule.length === 0 || !opts.schedule.every((k) => isInt(k) && k > 0)) {
        throw expected('a non-empty array of positive integers', 'schedule', opts.schedule);
      }
      this.schedule = Object.freeze([...opts.schedule]);
    }
    if (opts.order !== undefined) {
      if (method !== 'esolm') throw invalidArg('order is only used by method "esolm"');
      const o = opts.order as unknown[];
      if (!Array.isArray(o) || o.length === 0) throw expected('a non-empty array', 'order', o);
      const orders = (Array.isArray(o[0]) ? o : [o]) as unknown[][];
      for (const ord of orders) {
        if (!Array.isArray(ord) || !ord.every((x) => isInt(x) && x >= 0)) throw expected('arrays of non-negative integers', 'order', ord);
      }
      this.order = Object.freeze(orders.map((x) => Object.freeze([...(x as number[])])));
    }
    if (opts.blocks !== undefined) {
      if (method !== 'esolm') throw invalidArg('blocks is only used by method "esolm"');
      const b = opts.blocks;
      if (typeof b !== 'object' || b === null || !isInt(b.length) || b.length < 1) throw expected('{ length: positive integer, shuffle?: boolean }', 'blocks', b);
      if (b.shuffle !== undefined && typeof b.shuffle !== 'boolean') throw expected('a boolean', 'blocks.shuffle', b.shuffle);
      this.blocks = Object.freeze({ length: b.length, shuffle: b.shuffle ?? false });
    }
    if (opts.bos !== undefined) {
      if (!isInt(opts.bos) || opts.bos < 0) throw expected('a non-negative integer', 'bos', opts.bos);
      this.bos = opts.bos;
    }
    if (method === 'esolm' && this.steps === undefined && !this.schedule && !this.blocks) {
      throw invalidArg('method "esolm" needs steps (or schedule, or blocks)');
    }
    if (method === 'mdlm' && this.steps === undefined) throw invalidArg('method "mdlm" needs steps');
    Object.freeze(this);
  }
}
