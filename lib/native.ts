/**
 * The typed surface of the native addons (loader.ts finds and loads them).
 *
 * This is the one declaration of what crosses the native seam: every request, result and
 * event shape below. The glue (binding/js_*.cpp) reads these strictly: a missing or
 * mistyped field is ERR_INVALID_ARG, never a default. Validation in the caller's words
 * happens once, in the TS layer (model.ts); the engine checks only memory safety.
 */

export interface NativeCache {
  readonly committed: number;
  dispose(): void;
  reset(): void;
}

export interface NativeModel {
  readonly backendName: string | undefined;
  /**
   * Results are written into a native buffer: returned as a new typed array (no copy) when
   * `out` is null, else computed into the model's reused buffer and copied into `out` when
   * the call ends (rejects if `out` was detached or resized meanwhile). No call keeps a
   * pointer into a JS buffer while JS runs.
   */
  forward(tokens: Int32Array, positions: Int32Array, batch: number, n: number, mode: string,
    x0: Int32Array | null, out: Float32Array | null, logitsRows: Int32Array | null): Promise<Float32Array>;
  forwardScores(tokens: Int32Array, positions: Int32Array, batch: number, n: number, mode: string,
    x0: Int32Array | null, targets: Int32Array, out: Float64Array | null, prefix?: Int32Array): Promise<Float64Array>;
  step(cache: NativeCache, tokens: Int32Array, positions: Int32Array, n: number, commit: number,
    logitsFrom: number, out: Float32Array | null): Promise<Float32Array>;
  createCache(batch: number, capacity: number): NativeCache;
  /** One native generation; onEvent receives each step event (see StepEvent in model.ts). */
  /**
   * One native generation. onEvent receives each step event; if it throws, the generation
   * is cancelled and the promise rejects with ERR_ABORTED whose `cause` is what it threw.
   */
  generate(request: NativeGenerateRequest, cache: NativeCache | null, onEvent: ((e: NativeStepEvent) => void) | null):
    { promise: Promise<NativeGenerateResult>; cancel(): void };
  dispose(): void;
}

/** The request native generate() reads; every field is required (null where allowed). */
export interface NativeGenerateRequest {
  method: string; batch: number; length: number; steps: number; alpha0: number;
  blockLen: number; blockShuffle: boolean; topP: number; temperature: number; greedy: boolean;
  /** The 64-bit seed as two unsigned 32-bit halves. */
  seedHi: number; seedLo: number; bos: number; stepSizes: Int32Array | null; order: Int32Array | null;
  orderCount: number; givenPositions: Int32Array; givenTokens: Int32Array;
  /** ar: the token fed before position 0 and dropped (official prepend_token bos/mask), -1 = none. */
  prepend: number;
  /** Seed groups (engine/generate.h SeedGroup), or null for one group: 5 values per group, seedHi,
   * seedLo, planSeedHi, planSeedLo, rows (unsigned 32-bit values stored as int32). */
  seedGroups: Int32Array | null;
}

/** Which sampler phase a step belongs to. */
export type StepPhase = 'diffusion' | 'sequential' | 'mdlm' | 'ar';

/** One step of a generation, as native generate() reports it. */
export interface NativeStepEvent {
  /** Step index (0-based) and the number of planned steps. */
  step: number;
  steps: number;
  /** Network evaluations so far. */
  nfe: number;
  /** `diffusion` | `sequential` (esolm, esolm-a), `mdlm`, `ar`. */
  phase: StepPhase;
  /** Tokens revealed per sequence in this step (MDLM: the most in any sequence; -1 pads). */
  perSequence: number;
  /** Original positions and tokens revealed, `[batch * perSequence]`. */
  positions: Int32Array;
  tokens: Int32Array;
}

/** What native generate() resolves with. */
export interface NativeGenerateResult {
  /** `batch * length` tokens, sequence after sequence. */
  tokens: Int32Array;
  nfe: number;
  steps: number;
  nDiffusion: number;
  replayedSteps: number;
  timings: { totalMs: number; forwardMs: number; sampleMs: number; planMs: number; diffusionMs: number; sequentialMs: number };
}

export interface TensorEntry {
  name: string;
  file: string;
  /** I8: an 8-bit matrix, with its F32 `<name>_scale` entry (lib/q8.ts). */
  dtype: 'F32' | 'BF16' | 'F16' | 'I8';
  shape: number[];
  offset: number;
  nbytes: number;
}

export interface NativeConfig {
  arch: string;
  hidden_size: number;
  n_heads: number;
  n_blocks: number;
  cond_dim: number;
  vocab_size: number;
  mask_index: number;
  length: number;
}

export interface CudaProbe {
  usable: boolean;
  reason: string;
  deviceCount: number;
  name: string;
  computeCapability: string;
  driverVersion: number;
  runtimeVersion: number;
  totalMemory: number;
}

export interface BackendInfo {
  addon: string;
  /** CPU kernel set in use: avx512, avx2+fma or portable (ESOLM_CPU_KERNELS forces one). */
  cpuKernels: string;
  /** The sets this CPU and build can run, widest first, space-separated. */
  cpuKernelsAvailable: string;
  /** Set when ESOLM_CPU_KERNELS names an unknown set or one this CPU cannot run. */
  cpuKernelsError?: string;
  /** The BF16-math GEMM (load option `math: 'bf16'`) when it runs here: `avx512bf16`. */
  cpuBf16Math?: string;
  /** Why `math: 'bf16'` cannot run here (no AVX512_BF16, or ESOLM_CPU_KERNELS forces another set). */
  cpuBf16MathError?: string;
  /** The int8-math GEMM (load option `math: 'int8'`) when it runs here: `avx512vnni`. */
  cpuInt8Math?: string;
  /** Why `math: 'int8'` cannot run here (no AVX512_VNNI, or ESOLM_CPU_KERNELS forces another set). */
  cpuInt8MathError?: string;
  hardwareThreads: number;
  cuda?: CudaProbe;
}

export interface CpuFloors {
  threads: number;
  kernels: string;
  readGBps: number;
  fmaGFlops: number;
  /** Peak of `vdpbf16ps` (BF16 math), GFLOP/s; 0 without AVX512_BF16. */
  bf16DotGFlops: number;
  /** Peak of `vpdpbusd` (int8 math), G integer ops/s (2 per multiply-add); 0 without AVX512_VNNI. */
  int8DotGOps: number;
}

export interface NativeAddon {
  loadModel(config: NativeConfig, entries: TensorEntry[], backend: string, threads: number, weights: 'f32' | 'bf16' | 'bf16-exact' | 'q8', math?: 'f32' | 'bf16' | 'int8'): Promise<NativeModel>;
  backendInfo(): BackendInfo;
  /** Step sizes of an Eso-LM plan (engine/schedule.h); given positions count only by number. */
  planEsolmSteps(length: number, nGiven: number, steps: number, alpha0: number, planSeedHi: number,
    planSeedLo: number, blockLen: number): { stepSizes: Int32Array; nDiffusion: number };
  /**
   * Streaming read bandwidth and peak FMA rate of `threads` cores (0 = all) with the CPU
   * kernels in use; `effort` in (0, 1] (default 1) shrinks the work (rough figures).
   */
  measureCpuFloors(threads: number, effort?: number): CpuFloors;
  /**
   * Seconds `threads` cores (0 = all) take to stream-read `bytes` bytes with the fastest
   * read loop here: the floor of a measured run of as many bytes made right beside it.
   */
  timeStreamingRead(threads: number, bytes: number): number;
  [fn: string]: unknown;
}
