/**
 * The typed surface of the native addons and the loader that finds them.
 *
 * This is the one declaration of what crosses the native seam: every request, result and
 * event shape below. The glue (binding/js_*.cpp) reads these strictly: a missing or
 * mistyped field is ERR_INVALID_ARG, never a default. Validation in the caller's words
 * happens once, in the TS layer (model.ts); the engine checks only memory safety.
 *
 * The CPU addon (esolm_cpu.node) is looked for, in order: ESOLM_ADDON_PATH, the local
 * build (build/Release), the bundled prebuild (prebuilds/<platform>-<arch>/). The CUDA
 * addon likewise under cuda/. If nothing loads, one error lists what was tried and how
 * to fix it.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EsolmError } from './errors.js';

const require = createRequire(import.meta.url);

export interface NativeCache {
  readonly committed: number;
  dispose(): void;
  reset(): void;
}

export interface NativeModel {
  readonly backendName: string | undefined;
  /**
   * Results are written into a native buffer: returned as a new typed array (no copy) when
   * `out` is null, else copied into `out` when the call ends (rejects if `out` was detached
   * or resized meanwhile). No call keeps a pointer into a JS buffer while JS runs.
   */
  forward(tokens: Int32Array, positions: Int32Array, batch: number, n: number, mode: string,
    x0: Int32Array | null, out: Float32Array | null, logitsRows: Int32Array | null): Promise<Float32Array>;
  forwardScores(tokens: Int32Array, positions: Int32Array, batch: number, n: number, mode: string,
    x0: Int32Array | null, targets: Int32Array, out: Float64Array | null): Promise<Float64Array>;
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
}

/** One step of a generation, as native generate() reports it. */
export interface NativeStepEvent {
  /** Step index (0-based) and the number of planned steps. */
  step: number;
  steps: number;
  /** Network evaluations so far. */
  nfe: number;
  /** `diffusion` | `sequential` (esolm), `mdlm`, `ar`. */
  phase: string;
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
  dtype: 'F32' | 'BF16' | 'F16';
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
  hardwareThreads: number;
  cuda?: CudaProbe;
}

export interface CpuFloors {
  threads: number;
  kernels: string;
  readGBps: number;
  fmaGFlops: number;
}

export interface NativeAddon {
  loadModel(config: NativeConfig, entries: TensorEntry[], backend: string, threads: number, weights: 'f32' | 'bf16' | 'bf16-exact' | 'q8'): Promise<NativeModel>;
  backendInfo(): BackendInfo;
  /**
   * Streaming read bandwidth and peak FMA rate of `threads` cores (0 = all) with the CPU
   * kernels in use; `effort` in (0, 1] (default 1) shrinks the work (rough figures).
   */
  measureCpuFloors(threads: number, effort?: number): CpuFloors;
  [fn: string]: unknown;
}

/** The package root: the nearest folder above this file whose package.json is esolm's. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'esolm') return dir;
      } catch { /* keep looking */ }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new EsolmError('ERR_NO_ADDON', 'cannot find the esolm package root');
    dir = up;
  }
}

interface Attempt { where: string; error: string }

const loadedFrom = new Map<NativeAddon, string>();

function tryLoad(candidates: string[], attempts: Attempt[]): NativeAddon | null {
  for (const file of candidates) {
    if (!existsSync(file)) {
      attempts.push({ where: file, error: 'not found' });
      continue;
    }
    try {
      const addon = require(file) as NativeAddon;
      loadedFrom.set(addon, file);
      return addon;
    } catch (e) {
      attempts.push({ where: file, error: (e as Error).message.split('\n')[0] });
    }
  }
  return null;
}

function candidates(base: string, addonName: string): string[] {
  const out: string[] = [];
  out.push(path.join(base, 'build', 'Release', `${addonName}.node`));
  const dir = path.join(base, 'prebuilds', `${process.platform}-${process.arch}`);
  if (existsSync(dir)) {
    for (const f of ['esolm.node', `${addonName}.node`]) out.push(path.join(dir, f));
  } else {
    out.push(path.join(dir, 'esolm.node'));
  }
  return out;
}

let cpuAddon: NativeAddon | null = null;
let cudaAddon: NativeAddon | null | undefined;
let cudaLoadError = '';

/** The file an addon was loaded from. */
export function addonPath(addon: NativeAddon): string | undefined {
  return loadedFrom.get(addon);
}

/** Loads the CPU addon or throws ERR_NO_ADDON listing what was tried. */
export function loadCpuAddon(): NativeAddon {
  if (cpuAddon) return cpuAddon;
  const root = packageRoot();
  const attempts: Attempt[] = [];
  const list = process.env.ESOLM_ADDON_PATH ? [process.env.ESOLM_ADDON_PATH] : [];
  list.push(...candidates(root, 'esolm_cpu'));
  cpuAddon = tryLoad(list, attempts);
  if (cpuAddon) return cpuAddon;
  const tried = attempts.map((a) => `  - ${a.where}: ${a.error}`).join('\n');
  throw new EsolmError('ERR_NO_ADDON',
    `esolm: no native addon could be loaded for ${process.platform}-${process.arch} (Node ${process.versions.node}).\n` +
    `Tried:\n${tried}\n` +
    'Possible solutions:\n' +
    '  - build it from source: npm rebuild esolm --build-from-source (needs cmake and a C++17 compiler: apt-get install cmake g++)\n' +
    '  - in a checkout: npm ci (runs the build), or npm run build:native\n' +
    '  - run `npx esolm doctor` for details');
}

/** Loads the CUDA addon, or returns null and remembers why (see cudaUnavailableReason). */
export function loadCudaAddon(): NativeAddon | null {
  if (cudaAddon !== undefined) return cudaAddon;
  const root = packageRoot();
  const attempts: Attempt[] = [];
  const list = process.env.ESOLM_CUDA_ADDON_PATH ? [process.env.ESOLM_CUDA_ADDON_PATH] : [];
  list.push(...candidates(path.join(root, 'cuda'), 'esolm_cuda'));
  cudaAddon = tryLoad(list, attempts);
  if (!cudaAddon) {
    cudaLoadError = 'the CUDA addon is not built or did not load (' +
      attempts.map((a) => `${a.where}: ${a.error}`).join('; ') + ')';
  }
  return cudaAddon;
}

/** Why CUDA cannot be used, or '' when it can. */
export function cudaUnavailableReason(): string {
  const addon = loadCudaAddon();
  if (!addon) return cudaLoadError;
  const info = addon.backendInfo().cuda;
  if (!info) return 'the CUDA addon reports no CUDA support';
  return info.usable ? '' : info.reason || 'CUDA is not usable';
}
