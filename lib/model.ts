/**
 * Model and Cache: the public handles over the native engine.
 *
 * A Model owns its weights on one backend. Calls on one model are safe to make
 * concurrently: they queue on the model's lock and run one at a time, off the event
 * loop. dispose() (or `await using`) frees native memory at once; a disposed object
 * throws ERR_DISPOSED.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { EsolmError, expected, invalidArg, native, nativeSync } from './errors.js';
import { expectedTensors, IGNORED_TENSORS, parseConfig, type ModelConfig } from './config.js';
import { readSafetensorsHeader } from './safetensors.js';
import {
  cudaUnavailableReason, loadCpuAddon, loadCudaAddon,
  type NativeAddon, type NativeCache, type NativeModel, type TensorEntry,
} from './native.js';

export type BackendName = 'cpu' | 'cuda';
export type AttentionMode = 'bidirectional' | 'causal' | 'mixed2' | 'sequential';

export interface LoadOptions {
  /** `cpu`, `cuda`, or `auto` (CUDA when usable, else CPU; see Model.backendReason). Defaults to `auto`. */
  backend?: BackendName | 'auto';
  /** CPU threads; 0 = all cores. Defaults to 0. */
  threads?: number;
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

  /** Forgets every committed slot (the memory is kept). */
  reset(): void {
    this.live().reset();
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
  /** @internal */ native_: NativeModel | null;
  /** @internal */ readonly addon_: NativeAddon;
  /** @internal */ readonly caches_ = new Set<Cache>();

  private constructor(dir: string, config: ModelConfig, backend: BackendName, reason: string | undefined,
    nm: NativeModel, addon: NativeAddon) {
    this.dir = dir;
    this.config = Object.freeze({ ...config });
    this.backend = backend;
    this.backendReason = reason;
    this.native_ = nm;
    this.addon_ = addon;
  }

  /** Loads a model folder: config.json plus one or more .safetensors files. */
  static async load(dir: string, options: LoadOptions = {}): Promise<Model> {
    if (typeof dir !== 'string' || dir.length === 0) throw expected('a folder path', 'dir', dir);
    if (typeof options !== 'object' || options === null) throw expected('an options object', 'options', options);
    const want = options.backend ?? 'auto';
    if (want !== 'cpu' && want !== 'cuda' && want !== 'auto') throw expected('"cpu", "cuda" or "auto"', 'options.backend', want);
    const threads = options.threads ?? 0;
    if (!isInt(threads) || threads < 0 || threads > 1024) throw expected('an integer in [0, 1024]', 'options.threads', threads);

    const { config, entries } = readModelFolder(dir);

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
    const nm = await native(addon.loadModel({ ...config, cond_dim: config.cond_dim ?? 0 }, entries, backend, threads));
    return new Model(path.resolve(dir), config, backend, reason, nm, addon);
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
    return this.config.arch === 'mdlm' ? 'bidirectional' : 'causal';
  }

  /**
   * Full forward of `batch` sequences of n tokens in slot order; resolves to logits
   * `[batch, n, vocab]` (for `sequential`, the z-half).
   */
  async forward(opts: ForwardOptions): Promise<Float32Array> {
    const nm = this.live();
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'forward options', opts);
    const tokens = checkInt32('tokens', opts.tokens);
    const batch = opts.batch ?? 1;
    if (!isInt(batch) || batch < 1) throw expected('a positive integer', 'batch', batch);
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
    const out = allocLogits(batch * n, this.config.vocab_size);
    return native(nm.forward(tokens, positions, batch, n, attention, x0, out, null));
  }

  /** Allocates a KV cache for `batch` sequences of up to `capacity` slots. */
  createCache(opts: { batch: number; capacity: number }): Cache {
    const nm = this.live();
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'createCache options', opts);
    const { batch, capacity } = opts;
    if (!isInt(batch) || batch < 1) throw expected('a positive integer', 'batch', batch);
    if (!isInt(capacity) || capacity < 1) throw expected('a positive integer', 'capacity', capacity);
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
    const nm = this.live();
    if (!(cache instanceof Cache)) throw expected('a Cache', 'cache', cache);
    if (cache.model_ !== this) throw invalidArg('the cache belongs to another model');
    const nc = cache.live();
    if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'step options', opts);
    const tokens = checkInt32('tokens', opts.tokens);
    if (tokens.length === 0 || tokens.length % cache.batch !== 0) {
      throw invalidArg(`tokens has ${tokens.length} entries, which is not a positive multiple of the cache batch (${cache.batch})`);
    }
    const n = tokens.length / cache.batch;
    const committed = nc.committed;
    if (committed + n > cache.capacity) {
      throw invalidArg(`step of ${n} tokens after ${committed} committed exceeds the cache capacity ${cache.capacity}`);
    }
    const commit = opts.commit;
    if (!isInt(commit) || commit < 0 || commit > n) throw expected(`an integer in [0, ${n}]`, 'commit', commit);
    const logitsFrom = opts.logitsFrom ?? 0;
    if (!isInt(logitsFrom) || logitsFrom < 0 || logitsFrom > n) throw expected(`an integer in [0, ${n}]`, 'logitsFrom', logitsFrom);
    const positions = opts.positions === undefined ? defaultPositions(cache.batch, n, committed) : checkInt32('positions', opts.positions);
    if (positions.length !== tokens.length) throw invalidArg(`positions has ${positions.length} entries, expected ${tokens.length}`);
    this.checkTokens('tokens', tokens);
    this.checkPositions(positions);
    const out = allocLogits(cache.batch * (n - logitsFrom), this.config.vocab_size);
    return native(nm.step(nc, tokens, positions, n, commit, logitsFrom, out));
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

  /** Frees the weights and every cache of this model. Idempotent. */
  dispose(): void {
    if (!this.native_) return;
    for (const c of [...this.caches_]) c.dispose();
    this.native_.dispose();
    this.native_ = null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function defaultPositions(batch: number, n: number, start: number): Int32Array {
  const p = new Int32Array(batch * n);
  for (let b = 0; b < batch; b++) for (let i = 0; i < n; i++) p[b * n + i] = start + i;
  return p;
}

function allocLogits(rows: number, vocab: number): Float32Array {
  const count = rows * vocab;
  if (count > 2 ** 31) {
    throw new EsolmError('ERR_OUT_OF_MEMORY', `logits for ${rows} rows x ${vocab} would need ${(count * 4 / 2 ** 30).toFixed(1)} GiB`);
  }
  return new Float32Array(count);
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
  let text: string;
  try {
    text = readFileSync(path.join(dir, 'config.json'), 'utf8');
  } catch {
    throw new EsolmError('ERR_IO', `model folder ${dir} has no readable config.json`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new EsolmError('ERR_BAD_WEIGHTS', `config.json in ${dir} is not valid JSON (${(e as Error).message})`);
  }
  const config = parseConfig(raw);
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  if (files.length === 0) throw new EsolmError('ERR_BAD_WEIGHTS', `model folder ${dir} has no .safetensors file`);
  const want = expectedTensors(config);
  const entries: TensorEntry[] = [];
  const seen = new Set<string>();
  for (const f of files) {
    for (const e of readSafetensorsHeader(path.join(dir, f))) {
      const name = e.name.startsWith('backbone.') ? e.name.slice('backbone.'.length) : e.name;
      if (IGNORED_TENSORS.has(name)) continue;
      if (seen.has(name)) throw new EsolmError('ERR_BAD_WEIGHTS', `tensor '${name}' appears more than once`);
      seen.add(name);
      const shape = want.get(name);
      if (!shape) throw new EsolmError('ERR_BAD_WEIGHTS', `unexpected tensor '${e.name}' in ${f} (not part of a ${config.arch} model)`);
      const ok = shape.length === e.shape.length && shape.every((s, i) => (s < 0 ? e.shape[i] > 0 : s === e.shape[i]));
      if (!ok) {
        throw new EsolmError('ERR_BAD_WEIGHTS',
          `tensor '${e.name}' has shape [${e.shape.join(', ')}], expected [${shape.map((s) => (s < 0 ? '*' : s)).join(', ')}] for this config`);
      }
      entries.push({ ...e, name });
    }
  }
  for (const name of want.keys()) {
    if (!seen.has(name)) throw new EsolmError('ERR_BAD_WEIGHTS', `missing tensor '${name}'`);
  }
  return { config, entries };
}
