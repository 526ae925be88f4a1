/**
 * Eso-LM step sizes without a model (engine/schedule.h through the addon): the batcher's
 * test for "these requests can share one batched generation", since every seed group of a
 * batch must plan the same step sizes. MDLM and AR have no seeded plan.
 */
import { expected, nativeSync } from '../errors.js';
import { seedValue } from '../model.js';
import { loadCpuAddon } from '../loader.js';
import type { NativeAddon } from '../native.js';

export interface EsolmPlanOptions {
  /** Tokens per sequence. */
  length: number;
  /** Number of given (prompt or fixed) positions; the step sizes depend only on it. Defaults to 0. */
  nGiven?: number;
  /** T of the log-linear schedule. */
  steps?: number;
  /** alpha_0 in [0, 1]. Defaults to 1. */
  alpha0?: number;
  /** The plan seed (the seed of a plain generation). Defaults to 0. */
  planSeed?: number | bigint;
  /** Block schedule length (its step sizes are not random). Defaults to 0 (off). */
  blockLen?: number;
}

export interface EsolmPlanSteps {
  /** Tokens revealed per step, diffusion steps first. */
  stepSizes: Int32Array;
  /** Tokens revealed by the diffusion phase. */
  nDiffusion: number;
}

/** The step sizes Model.generate would use for an Eso-LM request (ERR_INVALID_ARG on bad options). */
export function esolmStepSizes(opts: EsolmPlanOptions, addon: NativeAddon = loadCpuAddon()): EsolmPlanSteps {
  if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'plan options', opts);
  const seed = seedValue(opts.planSeed ?? 0, 'planSeed');
  return nativeSync(() => addon.planEsolmSteps(opts.length, opts.nGiven ?? 0, opts.steps ?? 0, opts.alpha0 ?? 1,
    Number(seed >> 32n), Number(seed & 0xffffffffn), opts.blockLen ?? 0));
}
