/**
 * The typed surface of the native addons (loader.ts finds and loads them).
 */

export interface NativeCache {
  readonly committed: number;
  dispose(): void;
  reset(): void;
}

export interface NativeModel {
  readonly backendName: string | undefined;
  forward(tokens: Int32Array, positions: Int32Array, batch: number, n: number, mode: string,
    x0: Int32Array | null, out: Float32Array, logitsRows: Int32Array | null): Promise<Float32Array>;
  forwardScores(tokens: Int32Array, positions: Int32Array, batch: number, n: number, mode: string,
    x0: Int32Array | null, targets: Int32Array, out: Float64Array): Promise<Float64Array>;
  step(cache: NativeCache, tokens: Int32Array, positions: Int32Array, n: number, commit: number,
    logitsFrom: number, out: Float32Array): Promise<Float32Array>;
  createCache(batch: number, capacity: number): NativeCache;
  /** One native generation; onEvent receives each step event (see StepEvent in model.ts). */
  generate(request: object, cache: NativeCache | null, onEvent: ((e: never) => void) | null): { promise: Promise<unknown>; cancel(): void };
  dispose(): void;
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
  cond_dim?: number;
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
  cpuKernels: string;
  hardwareThreads: number;
  cuda?: CudaProbe;
}

export interface NativeAddon {
  loadModel(config: NativeConfig, entries: TensorEntry[], backend: string, threads: number, weights: 'f32' | 'bf16' | 'bf16-exact'): Promise<NativeModel>;
  backendInfo(): BackendInfo;
  [fn: string]: unknown;
}
