/**
 * Model and Cache: the public handles over the native engine.
 *
 * A Model owns its weights on one backend. Calls on one model are safe to make
 * concurrently: they queue on the model's lock and run one at a time, off the event
 * loop. dispose() (or `await using`) frees native memory at once; a disposed object
 * throws ERR_DISPOSED.
 */
import { readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EsolmError, expected, invalidArg, native, nativeSync } from './errors.js';
import { cacheBytes, expectedTensors, IGNORED_TENSORS, parseConfig, type ModelConfig } from './config.js';
import { parseJson, readRegularFile } from './files.js';
import { readSafetensorsHeader } from './safetensors.js';
import { isQ8Matrix, Q8_SCALE_SUFFIX } from './q8.js';
import { Sampler } from './sampler.js';
import { loadTokenizer, type Tokenizer } from './tokenizers/index.js';
import { computeNll, type NllOptions, type NllResult } from './likelihood.js';
import type {
  NativeAddon, NativeCache, NativeGenerateRequest, NativeGenerateResult, NativeModel, NativeStepEvent, TensorEntry,
} from './native.js';
import { cudaUnavailableReason, defaultModelDir, loadCpuAddon, loadCudaAddon } from './loader.js';

export type BackendName = 'cpu' | 'cuda';

/** Positions given by the caller: `{ positions, tokens }` or an object/Map position -> token. */
export type FixedTokens =
  | { positions: ArrayLike<number>; tokens: ArrayLike<number> }
  | Readonly<Record<number, number>>
  | ReadonlyMap<number, number>;

export interface GenerateOptions {
  sampler: Sampler;
  /** Number of sequences (one shared schedule, per-sequence orders). Defaults to 1. */
  batch?: number;
  /** Tokens per sequence. Defaults to the model's context length. */
  length?: number;
  /** Prefix tokens at positions 0..P-1 (a string needs the model's tokenizer). */
  prompt?: Int32Array | readonly number[] | string;
  /** Tokens fixed at arbitrary positions (infilling). */
  fixed?: FixedTokens;
  /** A cache to reuse (batch must match, capacity >= length); one is made otherwise. */
  cache?: Cache;
  /** Stops between steps with ERR_ABORTED; model and cache stay usable. */
  signal?: AbortSignal;
  /** Called after every step (also see generateStream). */
  onStep?: (event: StepEvent) => void;
  /**
   * Seed groups: consecutive runs of sequences that each sample exactly as a generation of
   * their own with `seed` (and, for esolm, step sizes from `planSeed`, default `seed`). All
   * groups must plan the same step sizes. `rows` sum to `batch` (which defaults to that sum).
   * Overrides the sampler's seed. Used by the server's batcher (lib/batch).
   */
  seedGroups?: readonly SeedGroup[];
}

export interface SeedGroup {
  seed: number | bigint;
  /** esolm: the seed of the step sizes. Defaults to `seed`. */
  planSeed?: number | bigint;
  rows: number;
}

export type { StepPhase } from './native.js';

/** One step of a generation (the native event shape, declared in native.ts). */
export type StepEvent = NativeStepEvent;

export interface GenerateResult {
  /** One Int32Array of `length` tokens per sequence, in position order. */
  sequences: Int32Array[];
  /** Network function evaluations (forwards or cached steps). */
  nfe: number;
  /** Sampler steps taken. */
  steps: number;
  /** esolm: tokens revealed by the diffusion phase (the rest came from the sequential phase). */
  nDiffusion: number;
  /** Steps run by replaying a recorded step (CUDA graphs); 0 on the CPU. */
  replayedSteps: number;
  timings: NativeGenerateResult['timings'];
  /** Decoded text per sequence when the model has a tokenizer. */
  text?: string[];
}
export type AttentionMode = 'bidirectional' | 'causal' | 'mixed2' | 'sequential';

/** How the CPU backend holds the linear matrices (`bf16-exact`: BF16 except the gate-scaled ones). */
export type WeightStorage = 'f32' | 'bf16' | 'bf16-exact' | 'q8';

export interface LoadOptions {
  /** `cpu`, `cuda`, or `auto` (CUDA when usable, else CPU; see Model.backendReason). Defaults to `auto`. */
  backend?: BackendName | 'auto';
  /** CPU threads; 0 = all cores. Defaults to 0. */
  threads?: number;
  /**
   * CPU weight storage: `bf16` halves memory and weight traffic (faster cached steps;
   * logits then differ from F32 at the bf16 level), `f32` keeps full precision, `auto`
   * uses q8 when the file has 8-bit (I8) matrices, bf16 when the file's matrices are
   * already BF16, except for the matrices the model rescales at load (so the file runs
   * exactly), and f32 otherwise. `q8` stores every linear matrix as int8 with one scale per
   * output row (a quarter of the F32 traffic; its measured cost is in the README): a q8
   * file's own int8 values, or an F32/BF16 file quantized at load to exactly what
   * `esolm convert --dtype q8` would write. `f32`/`bf16` dequantize a q8 file. The CUDA
   * backend always uses bf16 (a q8 file is dequantized). Defaults to `auto`.
   */
  weights?: 'auto' | 'f32' | 'bf16' | 'q8';
  /**
   * CPU matrix products: `f32` multiplies F32 activations by the stored weights exactly (in
   * F32); `bf16` rounds the activations to BF16 too and multiplies with AVX512_BF16
   * (`vdpbf16ps`, twice the multiply-adds per instruction): faster where the products are
   * compute-bound (long forwards, prefill, big batches), at a measured accuracy cost (README);
   * it also keeps the K/V cache in BF16 (half the bytes the attention reads).
   * `bf16` needs BF16 weights (`weights` `bf16` or `auto`; every matrix is then BF16) and a
   * CPU with AVX512_BF16 (`esolm doctor` says), else ERR_INVALID_ARG. The CUDA backend's
   * products always take BF16 operands. `int8` quantizes the activations to int8 too (per
   * row, blocks of 32 values with one scale each) and multiplies with AVX512_VNNI
   * (`vpdpbusd`, four times the multiply-adds of an F32 FMA): for 8-bit weights (`weights`
   * `q8`, or `auto` on a q8 file) on a CPU with AVX512_VNNI, else ERR_INVALID_ARG; like
   * `bf16` it keeps the K/V cache in BF16; its accuracy cost is in the README. The CUDA backend ignores it. Defaults to `f32`.
   */
  math?: 'f32' | 'bf16' | 'int8';
}

export interface ForwardOptions {
  /** Token ids, `batch * n` in slot order. */
  tokens: Int32Array;
  /** Original (rotary) positions, `batch * n`. Defaults to 0..n-1 for each sequence. */
  positions?: Int32Array;
  /** Number of sequences. Defaults to 1. */
  batch?: number;
  /** Attention mode. Defaults to `causal` for esolm and ar, `bidirectional` for mdlm. */
  attention?: AttentionMode;
  /** Clean sequence for `sequential` attention (`batch * n`). */
  x0?: Int32Array;
  /**
   * forward(): a Float32Array of `batch * n * vocab` the logits are copied into (and
   * returned) when the call ends. No native call writes into a JS buffer while JS may run:
   * with `out` the engine computes into a native buffer the model keeps and reuses (so
   * repeated large calls fault in no fresh memory), then copies; without `out` it computes
   * into a new native buffer that is returned as is.
   */
  out?: Float32Array;
}

export interface StepOptions {
  /** Window tokens, `batch * n`, placed right after the cache's committed slots. */
  tokens: Int32Array;
  /** Original positions of the window tokens. Defaults to committed..committed+n-1. */
  positions?: Int32Array;
  /** How many leading window entries stay committed after the step. */
  commit: number;
  /** First window row whose logits are returned. Defaults to 0. */
  logitsFrom?: number;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

function checkInt32(name: string, v: unknown): Int32Array {
  if (!(v instanceof Int32Array)) throw expected('an Int32Array', name, v);
  return v;
}

/** A KV cache: per-layer keys and values for `batch` sequences of `capacity` slots. */
export class Cache {
  readonly batch: number;
  readonly capacity: number;
  /** @internal */ native_: NativeCache | null;
  /** @internal */ readonly model_: Model;

  /** @internal */
  constructor(model: Model, nc: NativeCache, batch: number, capacity: number) {
    this.model_ = model;
    this.native_ = nc;
    this.batch = batch;
    this.capacity = capacity;
  }

  /** Number of committed slots per sequence. */
  get committed(): number {
    return this.live().committed;
  }

  get disposed(): boolean {
    return this.native_ === null;
  }

  /**
   * Forgets every committed slot (the memory is kept). Runs after the calls already queued
   * on the model, like any other call.
   */
  async reset(): Promise<void> {
    this.live();
    return this.model_.enqueue(async () => this.live().reset());
  }

  /** @internal */
  live(): NativeCache {
    if (!this.native_) throw new EsolmError('ERR_DISPOSED', 'the cache has been disposed');
    return this.native_;
  }

  dispose(): void {
    if (this.native_) {
      this.native_.dispose();
      this.native_ = null;
      this.model_.caches_.delete(this);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

export class Model {
  readonly config: ModelConfig;
  readonly dir: string;
  /** The backend the model runs on. */
  readonly backend: BackendName;
  /** Why `auto` did not pick CUDA (undefined when CUDA was picked or asked for explicitly). */
  readonly backendReason: string | undefined;
  /** How the linear matrices are held (LoadOptions.weights as resolved; always `bf16` on CUDA). */
  readonly weights: WeightStorage;
  /** @internal */ native_: NativeModel | null;
  /** @internal */ readonly addon_: NativeAddon;
  /** @internal */ readonly caches_ = new Set<Cache>();
  /** @internal */ tokenizer_: Tokenizer | null = null;
  /** @internal */ tail_: Promise<unknown> = Promise.resolve();
  /** @internal */ readonly cancels_ = new Set<() => void>();

  private constructor(dir: string, config: ModelConfig, backend: BackendName, reason: string | undefined,
    weights: WeightStorage, nm: NativeModel, addon: NativeAddon) {
    this.dir = dir;
    this.config = Object.freeze({ ...config });
    this.backend = backend;
    this.backendReason = reason;
    this.weights = backend === 'cuda' ? 'bf16' : weights;
    this.native_ = nm;
    this.addon_ = addon;
  }

  /**
   * Loads a model folder: config.json plus one or more .safetensors files. With no folder
   * (or `undefined`), the small default model shipped in the package (see defaultModelDir).
   */
  static async load(dir: string = defaultModelDir(), options: LoadOptions = {}): Promise<Model> {
    if (typeof dir !== 'string' || dir.length === 0) throw expected('a folder path', 'dir', dir);
    if (typeof options !== 'object' || options === null) throw expected('an options object', 'options', options);
    const want = options.backend ?? 'auto';
    if (want !== 'cpu' && want !== 'cuda' && want !== 'auto') throw expected('"cpu", "cuda" or "auto"', 'options.backend', want);
    const threads = options.threads ?? 0;
    if (!isInt(threads) || threads < 0 || threads > 1024) throw expected('an integer in [0, 1024]', 'options.threads', threads);

    const weightsOpt = options.weights ?? 'auto';
    if (weightsOpt !== 'auto' && weightsOpt !== 'f32' && weightsOpt !== 'bf16' && weightsOpt !== 'q8') throw expected('"auto", "f32", "bf16" or "q8"', 'options.weights', weightsOpt);
    const math = options.math ?? 'f32';
    if (math !== 'f32' && math !== 'bf16' && math !== 'int8') throw expected('"f32", "bf16" or "int8"', 'options.math', math);
    if (math === 'int8' && weightsOpt !== 'auto' && weightsOpt !== 'q8') throw invalidArg(`math "int8" multiplies 8-bit weights: use weights "q8" (or "auto" on a q8 file), not "${weightsOpt}"`);
    if (math === 'bf16' && weightsOpt !== 'auto' && weightsOpt !== 'bf16') throw invalidArg(`math "bf16" multiplies BF16 weights: use weights "bf16" or "auto", not "${weightsOpt}"`);
    const { config, entries } = readModelFolder(dir);
    const tokenizer = await loadTokenizer(config, dir);
    // auto: see autoWeights. BF16 math: every matrix BF16 (both operands of vdpbf16ps are; a q8
    // file is dequantized). Int8 math needs the 8-bit weights.
    const weights = math === 'bf16' ? 'bf16' : weightsOpt !== 'auto' ? weightsOpt : autoWeights(entries);
    if (math === 'int8' && weights !== 'q8') throw invalidArg(`math "int8" multiplies 8-bit weights: this file has none, use weights "q8"`);
    checkMemory('loading this model', loadBytes(entries, weights === 'f32' ? 4 : 2));

    let backend: BackendName = 'cpu';
    let reason: string | undefined;
    let addon: NativeAddon;
    if (want === 'cpu') {
      addon = loadCpuAddon();
    } else {
      const why = cudaUnavailableReason();
      if (why === '') {
        backend = 'cuda';
        addon = loadCudaAddon() as NativeAddon;
      } else if (want === 'cuda') {
        throw new EsolmError('ERR_NO_CUDA', `CUDA backend unavailable: ${why}`);
      } else {
        reason = `CUDA unavailable, using the CPU: ${why}`;
        addon = loadCpuAddon();
      }
    }
    if (backend === 'cpu') {
      const bad = addon.backendInfo().cpuKernelsError;
      if (bad) throw new EsolmError('ERR_INVALID_ARG', `${bad} (ESOLM_CPU_KERNELS=${process.env.ESOLM_CPU_KERNELS})`);
      const noMath = math === 'bf16' ? addon.backendInfo().cpuBf16MathError : math === 'int8' ? addon.backendInfo().cpuInt8MathError : undefined;
      if (noMath) throw new EsolmError('ERR_INVALID_ARG', noMath);
    }
    // esolm-a is the esolm network (it differs in training attention and sampler only).
    const netArch = config.arch === 'esolm-a' ? 'esolm' : config.arch;
    const nm = await native(addon.loadModel({ ...config, arch: netArch, cond_dim: config.cond_dim ?? 0 }, entries, backend, threads, weights, math));
    const model = new Model(path.resolve(dir), config, backend, reason, weights, nm, addon);
    model.tokenizer_ = tokenizer;
    return model;
  }

  get disposed(): boolean {
    return this.native_ === null;
  }

  /** @internal */
  live(): NativeModel {
    if (!this.native_) throw new EsolmError('ERR_DISPOSED', 'the model has been disposed');
    return this.native_;
  }

  /** @internal */
  defaultAttention(): AttentionMode {
    const a = this.config.arch;
    return a === 'mdlm' ? 'bidirectional' : a === 'esolm-a' ? 'mixed2' : 'causal';
  }

  /**
   * Full forward of `batch` sequences of n tokens in slot order; resolves to logits
   * `[batch, n, vocab]` (for `sequential`, the z-half).
   */
  async forward(opts: ForwardOptions): Promise<Float32Array> {
    const f = this.forwardArgs(opts);
    let out: Float32Array | null = null;  // null: the engine's buffer becomes the result
    if (opts.out !== undefined) {
      if (!(opts.out instanceof Float32Array)) throw expected('a Float32Array', 'out', opts.out);
      if (opts.out.length !== f.batch * f.n * this.config.vocab_size) {
        throw invalidArg(`out has ${opts.out.length} entries, expected batch * n * vocab = ${f.batch * f.n * this.config.vocab_size}`);
      }
      out = opts.out;
    } else {
      checkLogits(f.batch * f.n, this.config.vocab_size);
    }
    return this.enqueue(() => native(this.live().forward(f.tokens, f.positions, f.batch, f.n, f.attention, f.x0, out, null)));
  }

  /**
   * Like forward(), but returns −log p(target) per row instead of logits: `targets` holds
   * one token id per input row (−1 to skip the row), and the result `[batch * n]` is the
   * float64 negative log-softmax (mask column set to −1e6 first, as the official
   * likelihood code does) at the target, NaN where skipped. Logits never reach JS.
   * `prefix` (attention `sequential` only, one entry per sequence): Eso-LM (A)'s sequential
   * mask, where x-half slots < prefix[b] also see each other both ways; z rows below the
   * prefix may not be scored. It runs as one cached step per z row (exact, slower).
   */
  async forwardScores(opts: ForwardOptions & { targets: Int32Array; prefix?: Int32Array }): Promise<Float64Array> {
    const f = this.forwardArgs(opts);
    const targets = checkInt32('targets', opts.targets);
    if (targets.length !== f.tokens.length) throw invalidArg(`targets has ${targets.length} entries, expected ${f.tokens.length}`);
    const V = this.config.vocab_size;
    for (let i = 0; i < targets.length; i++) {
      if (targets[i] < -1 || targets[i] >= V) throw invalidArg(`targets[${i}] = ${targets[i]} is outside [-1, ${V})`);
    }
    let prefix: Int32Array | undefined;
    if (opts.prefix !== undefined) {
      prefix = checkInt32('prefix', opts.prefix);
      if (f.attention !== 'sequential') throw invalidArg('prefix is only used with attention "sequential"');
      if (prefix.length !== f.batch) throw invalidArg(`prefix has ${prefix.length} entries, expected batch = ${f.batch}`);
      for (let b = 0; b < f.batch; b++) {
        const c = prefix[b];
        if (c < 0 || c > f.n) throw invalidArg(`prefix[${b}] = ${c} is outside [0, ${f.n}]`);
        for (let i = 0; i < c; i++) if (targets[b * f.n + i] >= 0) throw invalidArg(`targets[${b * f.n + i}] lies inside prefix[${b}]: z rows of the prefix cannot be scored`);
      }
    }
    const p = prefix;
    return this.enqueue(() => native(p
      ? this.live().forwardScores(f.tokens, f.positions, f.batch, f.n, f.attention, f.x0, targets, null, p)
      : this.live().forwardScores(f.tokens, f.positions, f.batch, f.n, f.attention, f.x0, targets, null)));
  }

  /** @internal Validated arguments of forward() / forwardScores(). */
  forwardArgs(opts: ForwardOptions): { tokens: Int32Array; positions: Int32Array; batch: number; n: number; attention: AttentionMode; x0: Int32Array | null } {
    this.live();
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'forward options', opts);
    const tokens = checkInt32('tokens', opts.tokens);
    const batch = opts.batch ?? 1;
    if (!isInt(batch) || batch < 1 || batch > INT32_MAX) throw expected(`an integer in [1, ${INT32_MAX}]`, 'batch', batch);
    if (tokens.length === 0 || tokens.length % batch !== 0) {
      throw invalidArg(`tokens has ${tokens.length} entries, which is not a positive multiple of batch (${batch})`);
    }
    const n = tokens.length / batch;
    if (n > this.config.length) throw invalidArg(`sequence length ${n} exceeds the model context length ${this.config.length}`);
    const attention = opts.attention ?? this.defaultAttention();
    if (!['bidirectional', 'causal', 'mixed2', 'sequential'].includes(attention)) {
      throw expected('"bidirectional", "causal", "mixed2" or "sequential"', 'attention', attention);
    }
    const positions = opts.positions === undefined ? defaultPositions(batch, n, 0) : checkInt32('positions', opts.positions);
    if (positions.length !== tokens.length) throw invalidArg(`positions has ${positions.length} entries, expected ${tokens.length}`);
    let x0: Int32Array | null = null;
    if (attention === 'sequential') {
      if (opts.x0 === undefined) throw invalidArg('attention "sequential" needs x0 (the clean sequence)');
      x0 = checkInt32('x0', opts.x0);
      if (x0.length !== tokens.length) throw invalidArg(`x0 has ${x0.length} entries, expected ${tokens.length}`);
    } else if (opts.x0 !== undefined) {
      throw invalidArg('x0 is only used with attention "sequential"');
    }
    this.checkTokens('tokens', tokens);
    if (x0) this.checkTokens('x0', x0);
    this.checkPositions(positions);
    return { tokens, positions, batch, n, attention, x0 };
  }

  /** Allocates a KV cache for `batch` sequences of up to `capacity` slots. */
  createCache(opts: { batch: number; capacity: number }): Cache {
    const nm = this.live();
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'createCache options', opts);
    const { batch, capacity } = opts;
    if (!isInt(batch) || batch < 1 || batch > INT32_MAX) throw expected(`an integer in [1, ${INT32_MAX}]`, 'batch', batch);
    if (!isInt(capacity) || capacity < 1 || capacity > INT32_MAX) throw expected(`an integer in [1, ${INT32_MAX}]`, 'capacity', capacity);
    checkMemory(`a cache of batch ${batch} and capacity ${capacity}`, cacheBytes(this.config, batch, capacity));
    const nc = nativeSync(() => nm.createCache(batch, capacity));
    const cache = new Cache(this, nc, batch, capacity);
    this.caches_.add(cache);
    return cache;
  }

  /**
   * One KV-cached step: feeds n tokens per sequence after the committed slots; window
   * rows attend to every committed slot and causally inside the window. Afterwards the
   * first `commit` window entries stay committed. Resolves to logits of window rows
   * `logitsFrom..n-1`: `[batch, n - logitsFrom, vocab]`.
   */
  async step(cache: Cache, opts: StepOptions): Promise<Float32Array> {
    this.live();
    if (!(cache instanceof Cache)) throw expected('a Cache', 'cache', cache);
    if (cache.model_ !== this) throw invalidArg('the cache belongs to another model');
    const nc = cache.live();
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'step options', opts);
    const tokens = checkInt32('tokens', opts.tokens);
    if (tokens.length === 0 || tokens.length % cache.batch !== 0) {
      throw invalidArg(`tokens has ${tokens.length} entries, which is not a positive multiple of the cache batch (${cache.batch})`);
    }
    const n = tokens.length / cache.batch;
    const commit = opts.commit;
    if (!isInt(commit) || commit < 0 || commit > n) throw expected(`an integer in [0, ${n}]`, 'commit', commit);
    const logitsFrom = opts.logitsFrom ?? 0;
    if (!isInt(logitsFrom) || logitsFrom < 0 || logitsFrom > n) throw expected(`an integer in [0, ${n}]`, 'logitsFrom', logitsFrom);
    const given = opts.positions === undefined ? undefined : checkInt32('positions', opts.positions);
    if (given && given.length !== tokens.length) throw invalidArg(`positions has ${given.length} entries, expected ${tokens.length}`);
    this.checkTokens('tokens', tokens);
    if (given) this.checkPositions(given);
    if (nc.committed + n > cache.capacity) {
      throw invalidArg(`step of ${n} tokens after ${nc.committed} committed exceeds the cache capacity ${cache.capacity}`);
    }
    // The cache state is read when the step runs: earlier steps queued on this model
    // (not yet awaited) move `committed` first.
    return this.enqueue(async () => {
      const live = cache.live();
      const committed = live.committed;
      if (committed + n > cache.capacity) {
        throw invalidArg(`step of ${n} tokens after ${committed} committed exceeds the cache capacity ${cache.capacity}`);
      }
      const positions = given ?? defaultPositions(cache.batch, n, committed);
      if (!given) this.checkPositions(positions);
      checkLogits(cache.batch * (n - logitsFrom), this.config.vocab_size);
      return native(this.live().step(live, tokens, positions, n, commit, logitsFrom, null));
    });
  }

  /** @internal */
  checkTokens(name: string, t: Int32Array): void {
    const V = this.config.vocab_size;
    for (let i = 0; i < t.length; i++) {
      if (t[i] < 0 || t[i] >= V) throw invalidArg(`${name}[${i}] = ${t[i]} is outside [0, ${V})`);
    }
  }

  /** @internal */
  checkPositions(p: Int32Array): void {
    const L = this.config.length;
    for (let i = 0; i < p.length; i++) {
      if (p[i] < 0 || p[i] >= L) throw invalidArg(`positions[${i}] = ${p[i]} is outside [0, ${L}) (the context length)`);
    }
  }

  /**
   * Generates `batch` sequences of `length` tokens with one native call (the loop runs in
   * C++ off the event loop). Concurrent calls on one model queue and run one at a time.
   */
  async generate(opts: GenerateOptions): Promise<GenerateResult> {
    this.live();
    const req = this.generateRequest(opts);
    opts.cache?.live();  // a disposed cache fails now, not when the call runs
    return this.generateRaw(req, opts);
  }

  /** @internal Runs a validated request (generateRequest, or the batcher's joined one). */
  async generateRaw(req: GenerateRequestRaw, opts: Pick<GenerateOptions, 'cache' | 'signal' | 'onStep'>): Promise<GenerateResult> {
    this.live();
    const signal = opts.signal;
    if (signal?.aborted) throw new EsolmError('ERR_ABORTED', 'generation aborted before it started');
    const onStep = opts.onStep;
    return this.enqueue(async () => {
      if (signal?.aborted) throw new EsolmError('ERR_ABORTED', 'generation aborted before it started');
      const handle = this.live().generate(req, opts.cache ? opts.cache.live() : null, onStep ?? null);
      const onAbort = (): void => handle.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.cancels_.add(handle.cancel);
      try {
        const raw = await native(handle.promise);
        return this.toResult(raw, req.batch, req.length);
      } finally {
        this.cancels_.delete(handle.cancel);
        signal?.removeEventListener('abort', onAbort);
      }
    });
  }

  /**
   * @internal Runs native calls one at a time, in call order. Waiting calls wait here, not
   * on the native lock, so they hold no libuv worker thread.
   */
  enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail_.then(() => fn());
    this.tail_ = run.catch(() => undefined);
    return run;
  }

  /**
   * Like generate(), as an async iterable of step events for live display; the iterator's
   * return value is the GenerateResult. Breaking out of the loop cancels the generation.
   */
  async *generateStream(opts: Omit<GenerateOptions, 'onStep'>): AsyncGenerator<StepEvent, GenerateResult, undefined> {
    const queue: StepEvent[] = [];
    let wake: (() => void) | null = null;
    let finished = false;
    const controller = new AbortController();
    const outer = opts.signal;
    const forward = (): void => controller.abort();
    if (outer?.aborted) throw new EsolmError('ERR_ABORTED', 'generation aborted before it started');
    outer?.addEventListener('abort', forward, { once: true });
    const run = this.generate({ ...opts, signal: controller.signal, onStep: (e) => { queue.push(e); wake?.(); } })
      .finally(() => { finished = true; wake?.(); });
    run.catch(() => undefined);  // observed below
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift() as StepEvent;
        if (finished) break;
        await new Promise<void>((r) => { wake = r; });
        wake = null;
      }
      return await run;
    } finally {
      outer?.removeEventListener('abort', forward);
      if (!finished) {
        controller.abort();
        await run.catch(() => undefined);
      }
    }
  }

  /** @internal */
  generateRequest(opts: GenerateOptions): GenerateRequestRaw {
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'generate options', opts);
    const s = opts.sampler;
    if (!(s instanceof Sampler)) throw expected('a Sampler', 'sampler', s);
    const seedGroups = opts.seedGroups === undefined ? null : seedGroupsRaw(opts.seedGroups);
    const batch = opts.batch ?? seedGroups?.rows ?? 1;
    if (!isInt(batch) || batch < 1 || batch > INT32_MAX) throw expected(`an integer in [1, ${INT32_MAX}]`, 'batch', batch);
    if (seedGroups && seedGroups.rows !== batch) throw invalidArg(`the seed groups' rows sum to ${seedGroups.rows}, not batch ${batch}`);
    const length = opts.length ?? this.config.length;
    if (!isInt(length) || length < 1 || length > this.config.length) {
      throw expected(`an integer in [1, ${this.config.length}] (the context length)`, 'length', length);
    }
    // Before anything sized by batch is allocated or looped over: the generation's cache.
    if (opts.cache === undefined) checkMemory(`generating ${batch} sequences of ${length} tokens`, cacheBytes(this.config, batch, length));
    if (opts.cache !== undefined) {
      if (!(opts.cache instanceof Cache)) throw expected('a Cache', 'cache', opts.cache);
      if (opts.cache.model_ !== this) throw invalidArg('the cache belongs to another model');
      if (opts.cache.batch !== batch || opts.cache.capacity < length) {
        throw invalidArg(`the cache must have batch ${batch} and capacity >= ${length} (has ${opts.cache.batch}, ${opts.cache.capacity})`);
      }
    }
    if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) throw expected('an AbortSignal', 'signal', opts.signal);
    if (opts.onStep !== undefined && typeof opts.onStep !== 'function') throw expected('a function', 'onStep', opts.onStep);
    if (s.method !== 'ar' && this.config.mask_index < 0) throw invalidArg(`method "${s.method}" needs a model with a mask token`);

    // Given tokens: the prompt at 0..P-1 plus fixed positions.
    const given = new Map<number, number>();
    if (opts.prompt !== undefined) {
      const p = this.promptTokens(opts.prompt);
      if (p.length > length) throw invalidArg(`the prompt has ${p.length} tokens, more than length ${length}`);
      p.forEach((t, i) => given.set(i, t));
    }
    if (opts.fixed !== undefined) {
      for (const [pos, tok] of fixedEntries(opts.fixed)) {
        if (!isInt(pos) || pos < 0 || pos >= length) throw invalidArg(`fixed position ${pos} is outside [0, ${length})`);
        if (given.has(pos) && given.get(pos) !== tok) throw invalidArg(`position ${pos} is given twice with different tokens`);
        given.set(pos, tok);
      }
    }
    const positions = [...given.keys()].sort((a, b) => a - b);
    for (const pos of positions) {
      const t = given.get(pos) as number;
      if (!isInt(t) || t < 0 || t >= this.config.vocab_size || t === this.config.mask_index) {
        throw invalidArg(`the token ${t} given at position ${pos} is out of range or the mask token`);
      }
    }
    const givenTokens = new Int32Array(batch * positions.length);
    for (let b = 0; b < batch; b++) positions.forEach((pos, i) => { givenTokens[b * positions.length + i] = given.get(pos) as number; });

    const free = length - positions.length;
    let stepSizes: Int32Array | null = null;
    if (s.schedule) {
      const sum = s.schedule.reduce((a, b) => a + b, 0);
      if (sum !== free) throw invalidArg(`schedule sums to ${sum} but ${free} positions are free`);
      stepSizes = Int32Array.from(s.schedule);
    }
    let order: Int32Array | null = null;
    let blockLen = s.blocks?.length ?? 0;
    if (s.order === 'ar') {
      // use_ar_order: the free positions left to right, one per step unless told otherwise.
      order = Int32Array.from(Array.from({ length }, (_, i) => i).filter((i) => !given.has(i)));
      if (!stepSizes && s.steps === undefined) stepSizes = new Int32Array(free).fill(1);
    } else if (s.order === 'block-ar') {
      // use_block_ar_order: 4 subcontexts of L/4; step j reveals position j of each.
      if (length % 4 !== 0 || positions.length > 0) {
        throw invalidArg(`order "block-ar" needs length (${length}) divisible by 4 and no prompt or fixed tokens`);
      }
      blockLen = length / 4;
    } else if (s.order) {
      if (s.order.length !== 1 && s.order.length !== batch) throw invalidArg(`order must hold 1 or ${batch} orders, got ${s.order.length}`);
      const isGiven = new Set(positions);
      for (const o of s.order) {
        const seen = new Set<number>();
        if (o.length !== free) throw invalidArg(`each order must list the ${free} free positions, got ${o.length}`);
        for (const pos of o) {
          if (pos >= length || isGiven.has(pos) || seen.has(pos)) throw invalidArg(`order is not a permutation of the free positions (bad entry ${pos})`);
          seen.add(pos);
        }
      }
      order = Int32Array.from(s.order.flat());
    }
    if (s.blocks && (length % s.blocks.length !== 0 || positions.length > 0)) {
      throw invalidArg(`the block schedule needs length (${length}) divisible by blocks.length (${s.blocks.length}) and no prompt or fixed tokens`);
    }
    // AR prepend_token: the sampler's, else the model's training setting, else none.
    const prepend = s.method === 'ar' ? s.prepend ?? this.config.training?.prepend ?? 'none' : 'none';
    let bos = s.bos ?? -1;
    if (bos >= this.config.vocab_size) throw invalidArg(`bos ${bos} is outside the vocabulary`);
    if (s.method === 'ar' && prepend === 'none' && bos < 0 && !given.has(0)) {
      const t = this.tokenizer_;
      if (t?.bosId !== undefined) bos = t.bosId;
      else throw invalidArg('AR generation needs a prompt, a token fixed at position 0, or a sampler bos token');
    }
    let prependToken = -1;
    if (prepend === 'bos') {
      prependToken = s.bos ?? this.tokenizer_?.bosId ?? -1;
      if (prependToken < 0) throw invalidArg('prepend "bos" needs a sampler bos token or a tokenizer with one');
    } else if (prepend === 'mask') {
      if (this.config.mask_index < 0) throw invalidArg('prepend "mask" needs a model with a mask token');
      prependToken = this.config.mask_index;
    }
    // alpha0 not given: the model's training alpha0 (the official evaluation uses it too).
    const alpha0 = s.alpha0Given ? s.alpha0 : this.config.training?.alpha0 ?? s.alpha0;
    return {
      method: s.method, batch, length, steps: s.steps ?? 0, alpha0,
      blockLen, blockShuffle: s.blocks?.shuffle ?? false, prepend: prependToken,
      topP: s.topP, temperature: s.temperature, greedy: s.greedy,
      seedHi: Number(s.seed >> 32n), seedLo: Number(s.seed & 0xffffffffn), bos,
      stepSizes, order, orderCount: order ? (Array.isArray(s.order) ? s.order.length : 1) : 0,
      givenPositions: Int32Array.from(positions), givenTokens, seedGroups: seedGroups?.packed ?? null,
    };
  }

  /** @internal */
  promptTokens(prompt: Int32Array | readonly number[] | string): number[] {
    if (typeof prompt === 'string') {
      const t = this.tokenizer_;
      if (!t) throw invalidArg('a text prompt needs a model with a tokenizer (config.json "tokenizer"); pass token ids instead');
      return [...t.encode(prompt)];
    }
    if (prompt instanceof Int32Array || Array.isArray(prompt)) return [...prompt];
    throw expected('an Int32Array, an array of token ids or a string', 'prompt', prompt);
  }

  /** @internal */
  toResult(raw: RawResult, batch: number, length: number): GenerateResult {
    const sequences: Int32Array[] = [];
    for (let b = 0; b < batch; b++) sequences.push(raw.tokens.slice(b * length, (b + 1) * length));
    const out: GenerateResult = { sequences, nfe: raw.nfe, steps: raw.steps, nDiffusion: raw.nDiffusion, replayedSteps: raw.replayedSteps, timings: raw.timings };
    const t = this.tokenizer_;
    if (t) out.text = sequences.map((seq) => t.decode(seq));
    return out;
  }

  /**
   * Negative log-likelihood of one or more token sequences (nats), with per-token NLL,
   * perplexity, bits per token and the Monte Carlo standard error. Estimators: `nelbo`
   * (the Eso-LM hybrid bound at alpha0), `exact` (the importance-weighted any-order bound
   * with `orders` orders) and `ar` (left to right, for arch ar). See lib/likelihood.ts.
   */
  async nll(tokens: Int32Array | readonly Int32Array[], opts: NllOptions = {}): Promise<NllResult> {
    this.live();
    return computeNll(this, tokens, opts);
  }

  /** The model's tokenizer (from config.json "tokenizer"), or null. */
  get tokenizer(): Tokenizer | null {
    return this.tokenizer_;
  }

  /**
   * Frees the weights and every cache of this model. Idempotent. New calls throw
   * ERR_DISPOSED at once; a generation in flight is cancelled (it rejects with
   * ERR_ABORTED) and the native memory is freed as soon as the call in flight returns.
   */
  dispose(): void {
    if (!this.native_) return;
    const nm = this.native_;
    this.native_ = null;
    for (const cancel of this.cancels_) cancel();
    for (const c of [...this.caches_]) c.dispose();
    void this.tail_.finally(() => nm.dispose());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

type RawResult = NativeGenerateResult;

/** @internal The request object the native generate() reads (declared in native.ts). */
export type GenerateRequestRaw = NativeGenerateRequest;

/** Reads a seed (as the Sampler does): a non-negative safe integer or a bigint < 2^64. */
export function seedValue(v: unknown, name: string): bigint {
  if (typeof v === 'bigint') {
    if (v < 0n || v >= 2n ** 64n) throw expected('a bigint in [0, 2^64)', name, v);
    return v;
  }
  if (!isInt(v) || v < 0 || !Number.isSafeInteger(v)) throw expected('a non-negative safe integer or a bigint', name, v);
  return BigInt(v);
}

function seedGroupsRaw(groups: readonly SeedGroup[]): { packed: Int32Array; rows: number } {
  if (!Array.isArray(groups) || groups.length === 0) throw expected('a non-empty array', 'seedGroups', groups);
  const packed = new Int32Array(groups.length * 5);
  let rows = 0;
  groups.forEach((g: SeedGroup, i: number) => {
    if (typeof g !== 'object' || g === null) throw expected('{ seed, planSeed?, rows }', `seedGroups[${i}]`, g);
    const seed = seedValue(g.seed, `seedGroups[${i}].seed`);
    const plan = g.planSeed === undefined ? seed : seedValue(g.planSeed, `seedGroups[${i}].planSeed`);
    if (!isInt(g.rows) || g.rows < 1) throw expected('a positive integer', `seedGroups[${i}].rows`, g.rows);
    packed.set([Number(seed >> 32n), Number(seed & 0xffffffffn), Number(plan >> 32n), Number(plan & 0xffffffffn), g.rows], i * 5);
    rows += g.rows;
  });
  return { packed, rows };
}

function fixedEntries(f: FixedTokens): [number, number][] {
  if (f instanceof Map) return [...f.entries()];
  if (typeof f === 'object' && f !== null && 'positions' in f && 'tokens' in f) {
    const { positions, tokens } = f as { positions: ArrayLike<number>; tokens: ArrayLike<number> };
    if (positions.length !== tokens.length) throw invalidArg(`fixed.positions has ${positions.length} entries but fixed.tokens has ${tokens.length}`);
    return Array.from({ length: positions.length }, (_, i) => [positions[i], tokens[i]] as [number, number]);
  }
  if (typeof f === 'object' && f !== null) return Object.entries(f).map(([k, v]) => [Number(k), v as number]);
  throw expected('{ positions, tokens }, an object or a Map', 'fixed', f);
}

function defaultPositions(batch: number, n: number, start: number): Int32Array {
  const p = new Int32Array(batch * n);
  for (let b = 0; b < batch; b++) for (let i = 0; i < n; i++) p[b * n + i] = start + i;
  return p;
}

const INT32_MAX = 2 ** 31 - 1;

/** Throws ERR_OUT_OF_MEMORY when `bytes` exceed this machine's memory (nothing is allocated yet). */
function checkMemory(what: string, bytes: number): void {
  const total = os.totalmem();
  if (bytes > total) {
    throw new EsolmError('ERR_OUT_OF_MEMORY',
      `${what} needs ${(bytes / 2 ** 30).toFixed(1)} GiB of memory, more than this machine's ${(total / 2 ** 30).toFixed(1)} GiB`);
  }
}

/**
 * Host bytes a load needs at its peak: the F32 copy decoded from the files plus the
 * backend's copy (`storage` bytes per weight).
 */
function loadBytes(entries: TensorEntry[], storage: 2 | 4): number {
  let numel = 0;
  for (const e of entries) numel += e.shape.reduce((a, b) => a * b, 1);
  return numel * (4 + storage);
}

/**
 * `weights: 'auto'`: q8 when the file has 8-bit matrices (they then run with their own int8
 * values); for a BF16 file BF16 storage except the gate-scaled matrices, so the file runs
 * exactly; else f32.
 */
function autoWeights(entries: TensorEntry[]): WeightStorage {
  if (entries.some((e) => e.dtype === 'I8')) return 'q8';
  return entries.filter((e) => e.shape.length === 2).every((e) => e.dtype === 'BF16') ? 'bf16-exact' : 'f32';
}

/**
 * What a model folder's weights are stored as: `q8` when any matrix is I8 (with F32 row
 * scales; the other tensors are described after it, e.g. `q8 + BF16`), else the dtype of
 * every tensor (`F32`, `BF16`, `F16`), or the dtypes joined by `/` when they differ.
 */
export function weightsFileFormat(entries: TensorEntry[]): string {
  const q8 = entries.some((e) => e.dtype === 'I8');
  const rest = new Set(entries.filter((e) => e.dtype !== 'I8' && !(q8 && e.name.endsWith(Q8_SCALE_SUFFIX))).map((e) => e.dtype));
  const floats = [...rest].sort().join('/');
  return q8 ? `q8${floats ? ` + ${floats}` : ''}` : floats;
}

/** Refuses a logits result over 2^31 floats (8 GiB) before the call is made. */
function checkLogits(rows: number, vocab: number): void {
  const count = rows * vocab;
  if (count > 2 ** 31) {
    throw new EsolmError('ERR_OUT_OF_MEMORY', `logits for ${rows} rows x ${vocab} would need ${(count * 4 / 2 ** 30).toFixed(1)} GiB`);
  }
}

/** Reads and validates config.json and every .safetensors file of a model folder. */
export function readModelFolder(dir: string): { config: ModelConfig; entries: TensorEntry[] } {
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new EsolmError('ERR_IO', `model folder ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new EsolmError('ERR_IO', `${dir} is not a folder`);
  const configFile = path.join(dir, 'config.json');
  let text: string;
  try {
    text = readRegularFile(configFile, 'config file', 2 ** 24).toString('utf8');
  } catch (e) {
    if (e instanceof EsolmError && e.code === 'ERR_IO' && !statSync(configFile, { throwIfNoEntry: false })) {
      throw new EsolmError('ERR_IO', `model folder ${dir} has no readable config.json`);
    }
    throw e;
  }
  const config = parseConfig(parseJson(text, `config.json in ${dir}`));
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  if (files.length === 0) throw new EsolmError('ERR_BAD_WEIGHTS', `model folder ${dir} has no .safetensors file`);
  const want = expectedTensors(config);
  const entries: TensorEntry[] = [];
  const seen = new Set<string>();
  const scales = new Map<string, TensorEntry>();  // 8-bit matrix name -> its scale entry
  for (const f of files) {
    for (const e of readSafetensorsHeader(path.join(dir, f))) {
      const name = e.name.startsWith('backbone.') ? e.name.slice('backbone.'.length) : e.name;
      if (IGNORED_TENSORS.has(name)) continue;
      if (seen.has(name)) throw new EsolmError('ERR_BAD_WEIGHTS', `tensor '${name}' appears more than once`);
      seen.add(name);
      const base = name.endsWith(Q8_SCALE_SUFFIX) ? name.slice(0, -Q8_SCALE_SUFFIX.length) : '';
      if (base && isQ8Matrix(base) && want.has(base)) {  // checked against its matrix below
        scales.set(base, { ...e, name });
        entries.push({ ...e, name });
        continue;
      }
      const shape = want.get(name);
      if (!shape) throw new EsolmError('ERR_BAD_WEIGHTS', `unexpected tensor '${e.name}' in ${f} (not part of a ${config.arch} model)`);
      const ok = shape.length === e.shape.length && shape.every((s, i) => (s < 0 ? e.shape[i] > 0 : s === e.shape[i]));
      if (!ok) {
        throw new EsolmError('ERR_BAD_WEIGHTS',
          `tensor '${e.name}' has shape [${e.shape.join(', ')}], expected [${shape.map((s) => (s < 0 ? '*' : s)).join(', ')}] for this config`);
      }
      if (e.dtype === 'I8' && !isQ8Matrix(name)) {
        throw new EsolmError('ERR_BAD_WEIGHTS', `tensor '${e.name}' is I8, but only the linear matrices (attn_qkv, attn_out, mlp.0, mlp.2 and output_layer.linear weights) may be 8-bit`);
      }
      entries.push({ ...e, name });
    }
  }
  for (const name of want.keys()) {
    if (!seen.has(name)) throw new EsolmError('ERR_BAD_WEIGHTS', `missing tensor '${name}'`);
  }
  // 8-bit matrices: `<name>` I8 [rows, cols] with `<name>_scale` F32 [rows] (lib/q8.ts).
  for (const e of entries) {
    if (e.dtype !== 'I8') continue;
    const s = scales.get(e.name);
    if (!s) throw new EsolmError('ERR_BAD_WEIGHTS', `tensor '${e.name}' is I8 but its scale tensor '${e.name}${Q8_SCALE_SUFFIX}' is missing`);
    if (s.dtype !== 'F32' || s.shape.length !== 1 || s.shape[0] !== e.shape[0]) {
      throw new EsolmError('ERR_BAD_WEIGHTS',
        `scale tensor '${s.name}' is ${s.dtype} [${s.shape.join(', ')}], expected F32 [${e.shape[0]}] (one scale per row of '${e.name}')`);
    }
    scales.delete(e.name);
  }
  for (const s of scales.values()) {
    throw new EsolmError('ERR_BAD_WEIGHTS', `tensor '${s.name}' is a scale, but '${s.name.slice(0, -Q8_SCALE_SUFFIX.length)}' is not stored as I8`);
  }
  return { config, entries };
}
