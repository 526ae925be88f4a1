/**
 * Sampler: a validated, frozen description of how to generate. The loops themselves run
 * natively (engine/generate.cpp); see Model.generate.
 *
 * - `esolm`: Eso-LM (B) with the KV cache. Step sizes come from the alpha0-scaled
 *   log-linear schedule with binomial draws (or `schedule`, or the `blocks` schedule); the
 *   slot order is random over the diffusion part and left to right over the sequential
 *   tail (or `order`).
 * - `esolm-a`: Eso-LM (A), the same plan; each diffusion step is a full forward over the
 *   reveal-sorted prefix with mixed2 attention, the sequential phase a KV-cached left to
 *   right pass after the diffusion tokens (a bidirectional prefix).
 * - `mdlm`: MDLM ancestral sampling over `steps` timesteps with the p(x0) cache; or, with
 *   `order` / `schedule` / `blocks`, one full forward per step revealing the planned
 *   positions (`order: 'ar'` = official use_ar_order, `'block-ar'` = use_block_ar_order).
 * - `ar`: left to right with the KV cache; `prepend` = official algo.prepend_token.
 * Every draw is keyed by (seed, sequence, position, token) through Philox4x32-10, so a
 * sequence's tokens do not depend on the batch size or on the backend.
 */
import { expected, invalidArg } from './errors.js';

export type SamplerMethod = 'esolm' | 'esolm-a' | 'mdlm' | 'ar';

/**
 * Named orders (the official MDLM sampling switches; also accepted by esolm and esolm-a):
 * `ar` = sampling.use_ar_order (left to right, one position per step unless `schedule` or
 * `steps` say otherwise); `block-ar` = sampling.use_block_ar_order (4 subcontexts of L/4,
 * step j reveals position j of each: the block schedule with blocks of L/4).
 */
export type NamedOrder = 'ar' | 'block-ar';

/** AR prepend_token: `none` feeds a BOS at position 0 and returns it with L-1 generated tokens;
 * `bos` / `mask` feed BOS / MASK before position 0 and return L generated tokens without it. */
export type Prepend = 'none' | 'bos' | 'mask';

export interface SamplerOptions {
  /** Sampling method. */
  method: SamplerMethod;
  /** T: timesteps of the log-linear schedule (esolm) or of MDLM. Required for esolm (unless `schedule` or `blocks`) and mdlm. */
  steps?: number;
  /** alpha_0 in [0, 1] (esolm, esolm-a): the expected fraction of tokens revealed by diffusion.
   * Defaults to the model's training alpha0 (config.json "training"), else 1. */
  alpha0?: number;
  /** Nucleus top-p in (0, 1]. Defaults to 1 (no filtering; the paper's scripts use 0.9). */
  topP?: number;
  /** Softmax temperature > 0. Defaults to 1. */
  temperature?: number;
  /** Take the most likely token instead of sampling. Defaults to false. */
  greedy?: boolean;
  /** Seed: a non-negative integer (up to 2^53) or a bigint (up to 2^64). Defaults to 0. */
  seed?: number | bigint;
  /** esolm, esolm-a, mdlm: explicit step sizes (tokens revealed per step) summing to the number of free positions. */
  schedule?: readonly number[];
  /** esolm, esolm-a, mdlm: explicit slot order of the free positions (one order for all
   * sequences, or one per sequence), or a named official order. */
  order?: readonly number[] | readonly (readonly number[])[] | NamedOrder;
  /** esolm, esolm-a, mdlm: block ("subcontext") schedule of MODEL-REFERENCE.md §2.6. */
  blocks?: { length: number; shuffle?: boolean };
  /** ar: first token when nothing is given at position 0 (e.g. GPT-2's 50256); also the `bos` prepend token. */
  bos?: number;
  /** ar: the official prepend_token. Defaults to the model's (config.json "training"), else `none`. */
  prepend?: Prepend;
}

const PLANNED: readonly SamplerMethod[] = ['esolm', 'esolm-a', 'mdlm'];

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

export class Sampler {
  readonly method: SamplerMethod;
  readonly steps: number | undefined;
  readonly alpha0: number;
  /** Whether alpha0 was given (otherwise the model's training alpha0 applies). */
  readonly alpha0Given: boolean;
  readonly topP: number;
  readonly temperature: number;
  readonly greedy: boolean;
  readonly seed: bigint;
  readonly schedule: readonly number[] | undefined;
  readonly order: readonly (readonly number[])[] | NamedOrder | undefined;
  readonly blocks: Readonly<{ length: number; shuffle: boolean }> | undefined;
  readonly bos: number | undefined;
  readonly prepend: Prepend | undefined;

  constructor(opts: SamplerOptions) {
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'Sampler options', opts);
    const known = new Set(['method', 'steps', 'alpha0', 'topP', 'temperature', 'greedy', 'seed', 'schedule', 'order', 'blocks', 'bos', 'prepend']);
    for (const k of Object.keys(opts)) if (!known.has(k)) throw invalidArg(`unknown Sampler option "${k}"`);
    const { method } = opts;
    if (method !== 'esolm' && method !== 'esolm-a' && method !== 'mdlm' && method !== 'ar') {
      throw expected('"esolm", "esolm-a", "mdlm" or "ar"', 'method', method);
    }
    this.method = method;

    if (opts.steps !== undefined && (!isInt(opts.steps) || opts.steps < 1 || opts.steps > 2 ** 24)) {
      throw expected('an integer in [1, 2^24]', 'steps', opts.steps);
    }
    this.steps = opts.steps;
    const alpha0 = opts.alpha0 ?? 1;
    if (typeof alpha0 !== 'number' || !(alpha0 >= 0 && alpha0 <= 1)) throw expected('a number in [0, 1]', 'alpha0', alpha0);
    this.alpha0 = alpha0;
    this.alpha0Given = opts.alpha0 !== undefined;
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
      if (!PLANNED.includes(method)) throw invalidArg('schedule is only used by methods "esolm", "esolm-a" and "mdlm"');
      if (!Array.isArray(opts.schedule) || opts.schedule.length === 0 || !opts.schedule.every((k) => isInt(k) && k > 0)) {
        throw expected('a non-empty array of positive integers', 'schedule', opts.schedule);
      }
      this.schedule = Object.freeze([...opts.schedule]);
    }
    if (opts.order !== undefined) {
      if (!PLANNED.includes(method)) throw invalidArg('order is only used by methods "esolm", "esolm-a" and "mdlm"');
      if (opts.order === 'ar' || opts.order === 'block-ar') {
        this.order = opts.order;
      } else {
        const o = opts.order as unknown[];
        if (!Array.isArray(o) || o.length === 0) throw expected('"ar", "block-ar" or a non-empty array', 'order', o);
        const orders = (Array.isArray(o[0]) ? o : [o]) as unknown[][];
        for (const ord of orders) {
          if (!Array.isArray(ord) || !ord.every((x) => isInt(x) && x >= 0)) throw expected('arrays of non-negative integers', 'order', ord);
        }
        this.order = Object.freeze(orders.map((x) => Object.freeze([...(x as number[])])));
      }
    }
    if (opts.blocks !== undefined) {
      if (!PLANNED.includes(method)) throw invalidArg('blocks is only used by methods "esolm", "esolm-a" and "mdlm"');
      if (this.order === 'block-ar') throw invalidArg('order "block-ar" is itself a block schedule; give one of order and blocks');
      const b = opts.blocks;
      if (typeof b !== 'object' || b === null || !isInt(b.length) || b.length < 1) throw expected('{ length: positive integer, shuffle?: boolean }', 'blocks', b);
      if (b.shuffle !== undefined && typeof b.shuffle !== 'boolean') throw expected('a boolean', 'blocks.shuffle', b.shuffle);
      this.blocks = Object.freeze({ length: b.length, shuffle: b.shuffle ?? false });
    }
    if (opts.bos !== undefined) {
      if (!isInt(opts.bos) || opts.bos < 0) throw expected('a non-negative integer', 'bos', opts.bos);
      this.bos = opts.bos;
    }
    if (opts.prepend !== undefined) {
      if (method !== 'ar') throw invalidArg('prepend is only used by method "ar"');
      if (opts.prepend !== 'none' && opts.prepend !== 'bos' && opts.prepend !== 'mask') throw expected('"none", "bos" or "mask"', 'prepend', opts.prepend);
      this.prepend = opts.prepend;
    }
    if (this.order === 'block-ar' && this.schedule) throw invalidArg('order "block-ar" fixes the schedule (4 positions per step); do not give schedule');
    const planned = this.schedule !== undefined || this.blocks !== undefined || this.order === 'ar' || this.order === 'block-ar';
    if ((method === 'esolm' || method === 'esolm-a') && this.steps === undefined && !planned) {
      throw invalidArg(`method "${method}" needs steps (or schedule, blocks, or a named order)`);
    }
    if (method === 'mdlm' && this.steps === undefined && !planned) {
      throw invalidArg('method "mdlm" needs steps (or schedule, blocks, or a named order)');
    }
    Object.freeze(this);
  }
}
