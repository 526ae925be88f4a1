// Random tiny model folders (config.json + .safetensors) with the official state-dict
// names (MODEL-REFERENCE.md §1.2; AR per §1.7: no sigma_map, no adaLN).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Dtype, type TensorSpec, roundTo, writeSafetensors } from './safetensors.js';

export type Arch = 'esolm' | 'mdlm' | 'ar';

export interface ModelConfigJson {
  arch: Arch;
  hidden_size: number;
  n_heads: number;
  n_blocks: number;
  cond_dim: number;
  vocab_size: number;
  mask_index: number;
  length: number;
}

export interface RandomModelOptions {
  arch?: Arch;
  seed?: number;
  dtype?: Dtype;
  hidden_size?: number;
  n_heads?: number;
  n_blocks?: number;
  cond_dim?: number;
  vocab_size?: number;
  length?: number;
  /** Prefix every tensor name with "backbone." */
  prefix?: boolean;
  /** Also store rotary_emb.inv_freq (the loader must ignore it). */
  invFreq?: boolean;
  /** Split the tensors over two .safetensors files. */
  shards?: 1 | 2;
  /** Edit the tensors (full stored names) before they are written: corrupt shapes, add/remove, NaN... */
  editTensors?: (tensors: Record<string, TensorSpec>) => void;
  /** Edit config.json before it is written. */
  editConfig?: (config: Record<string, unknown>) => void;
}

export interface RandomModel {
  dir: string;
  config: ModelConfigJson;
  /** Values as stored (after dtype rounding), keyed by name without prefix. Excludes rotary_emb.inv_freq. */
  weights: Record<string, Float64Array>;
  files: string[];
}

/** Small deterministic PRNG (mulberry32) with a Box-Muller normal. */
export class Rng {
  private s: number;
  private spare: number | null = null;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** uniform [0, 1) */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  normals(count: number, std: number, mean = 0): Float64Array {
    const out = new Float64Array(count);
    for (let i = 0; i < count; i++) out[i] = mean + std * this.normal();
    return out;
  }
  permutation(n: number): number[] {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [p[i], p[j]] = [p[j]!, p[i]!];
    }
    return p;
  }
}

export const TINY = { hidden_size: 32, n_heads: 4, n_blocks: 2, cond_dim: 16, vocab_size: 61, length: 64 } as const;

const FREQ_DIM = 256; // frequency_embedding_size of the sigma embedder

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

function linStd(fanIn: number): number {
  return Math.max(0.02, 1 / Math.sqrt(fanIn));
}

/** Generate the random weights (unrounded f64, names without prefix, shapes). */
export function randomWeights(
  config: ModelConfigJson,
  seed: number,
): { tensors: Record<string, { shape: number[]; data: Float64Array }> } {
  const rng = new Rng(seed);
  const d = config.hidden_size;
  const V = config.vocab_size;
  const C = config.cond_dim;
  const F = 4 * d;
  const adaln = config.arch !== 'ar';
  const t: Record<string, { shape: number[]; data: Float64Array }> = {};
  const put = (name: string, shape: number[], data: Float64Array) => {
    t[name] = { shape, data };
  };
  const biasStd = () => 0.02 + 0.08 * rng.next();

  put('vocab_embed.embedding', [V, d], rng.normals(V * d, 1));
  let c: Float64Array | null = null;
  if (adaln) {
    const w1 = rng.normals(C * FREQ_DIM, linStd(FREQ_DIM));
    const b1 = rng.normals(C, biasStd());
    const w2 = rng.normals(C * C, linStd(C));
    const b2 = rng.normals(C, biasStd());
    put('sigma_map.mlp.0.weight', [C, FREQ_DIM], w1);
    put('sigma_map.mlp.0.bias', [C], b1);
    put('sigma_map.mlp.2.weight', [C, C], w2);
    put('sigma_map.mlp.2.bias', [C], b2);
    // c for sigma = 0 (only used to scale the adaLN weights so modulations are O(0.5))
    const h = new Float64Array(C);
    for (let i = 0; i < C; i++) {
      let s = b1[i]!;
      for (let j = 0; j < FREQ_DIM / 2; j++) s += w1[i * FREQ_DIM + j]!;
      h[i] = silu(s);
    }
    c = new Float64Array(C);
    for (let i = 0; i < C; i++) {
      let s = b2[i]!;
      for (let j = 0; j < C; j++) s += w2[i * C + j]! * h[j]!;
      c[i] = silu(s);
    }
  }
  let adaStd = 0;
  if (c) {
    let ss = 0;
    for (const v of c) ss += v * v;
    const rms = Math.sqrt(ss / C);
    adaStd = 0.5 / (Math.sqrt(C) * Math.max(rms, 1e-3));
  }
  for (let i = 0; i < config.n_blocks; i++) {
    const p = `blocks.${i}.`;
    put(p + 'norm1.weight', [d], rng.normals(d, 0.1, 1));
    put(p + 'attn_qkv.weight', [3 * d, d], rng.normals(3 * d * d, linStd(d)));
    put(p + 'attn_out.weight', [d, d], rng.normals(d * d, linStd(d)));
    put(p + 'norm2.weight', [d], rng.normals(d, 0.1, 1));
    put(p + 'mlp.0.weight', [F, d], rng.normals(F * d, linStd(d)));
    put(p + 'mlp.0.bias', [F], rng.normals(F, biasStd()));
    put(p + 'mlp.2.weight', [d, F], rng.normals(d * F, linStd(F)));
    put(p + 'mlp.2.bias', [d], rng.normals(d, biasStd()));
    if (adaln) {
      put(p + 'adaLN_modulation.weight', [6 * d, C], rng.normals(6 * d * C, adaStd));
      put(p + 'adaLN_modulation.bias', [6 * d], rng.normals(6 * d, 0.1));
    }
  }
  put('output_layer.norm_final.weight', [d], rng.normals(d, 0.1, 1));
  put('output_layer.linear.weight', [V, d], rng.normals(V * d, linStd(d)));
  put('output_layer.linear.bias', [V], rng.normals(V, biasStd()));
  if (adaln) {
    put('output_layer.adaLN_modulation.weight', [2 * d, C], rng.normals(2 * d * C, adaStd));
    put('output_layer.adaLN_modulation.bias', [2 * d], rng.normals(2 * d, 0.1));
  }
  return { tensors: t };
}

/** Write a random model folder. */
export function makeRandomModel(dir: string, opts: RandomModelOptions = {}): RandomModel {
  const arch = opts.arch ?? 'esolm';
  const vocab = opts.vocab_size ?? TINY.vocab_size;
  const config: ModelConfigJson = {
    arch,
    hidden_size: opts.hidden_size ?? TINY.hidden_size,
    n_heads: opts.n_heads ?? TINY.n_heads,
    n_blocks: opts.n_blocks ?? TINY.n_blocks,
    cond_dim: opts.cond_dim ?? TINY.cond_dim,
    vocab_size: vocab,
    mask_index: vocab - 1,
    length: opts.length ?? TINY.length,
  };
  const dtype = opts.dtype ?? 'F32';
  const pre = opts.prefix ? 'backbone.' : '';
  const { tensors } = randomWeights(config, opts.seed ?? 1234);

  const specs: Record<string, TensorSpec> = {};
  const names = Object.keys(tensors);
  for (const name of names) {
    const w = tensors[name]!;
    specs[pre + name] = { dtype, shape: w.shape, data: w.data };
    if (opts.invFreq && name === 'sigma_map.mlp.2.bias') addInvFreq();
  }
  if (opts.invFreq && !specs[pre + 'rotary_emb.inv_freq']) addInvFreq();
  function addInvFreq() {
    const hd = config.hidden_size / config.n_heads;
    const inv = new Float64Array(hd / 2);
    for (let i = 0; i < hd / 2; i++) inv[i] = 1 / 10000 ** ((2 * i) / hd);
    // always F32, as torch stores the buffer
    specs[pre + 'rotary_emb.inv_freq'] = { dtype: 'F32', shape: [hd / 2], data: inv };
  }

  opts.editTensors?.(specs);

  mkdirSync(dir, { recursive: true });
  const cfgOut: Record<string, unknown> = { ...config };
  opts.editConfig?.(cfgOut);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfgOut, null, 2));

  const files: string[] = [];
  const shards = opts.shards ?? 1;
  const all = Object.keys(specs);
  if (shards === 1) {
    const f = join(dir, 'model.safetensors');
    writeSafetensors(f, specs);
    files.push(f);
  } else {
    // interleave so that each file holds tensors from everywhere in the network
    const a: Record<string, TensorSpec> = {};
    const b: Record<string, TensorSpec> = {};
    all.forEach((n, i) => ((i % 2 === 0 ? a : b)[n] = specs[n]!));
    const fa = join(dir, 'model-00001-of-00002.safetensors');
    const fb = join(dir, 'model-00002-of-00002.safetensors');
    writeSafetensors(fa, a);
    writeSafetensors(fb, b);
    files.push(fa, fb);
  }

  const weights: Record<string, Float64Array> = {};
  for (const full of all) {
    const name = full.startsWith(pre) ? full.slice(pre.length) : full;
    if (name === 'rotary_emb.inv_freq') continue;
    weights[name] = roundTo(specs[full]!.dtype, specs[full]!.data);
  }
  return { dir, config, weights, files };
}

/** n token ids: the mask id with probability maskFrac, otherwise a random non-mask id. */
export function randomTokens(rng: Rng, config: ModelConfigJson, n: number, maskFrac: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    if (rng.next() < maskFrac) out.push(config.mask_index);
    else {
      let t = rng.int(config.vocab_size);
      while (t === config.mask_index) t = rng.int(config.vocab_size);
      out.push(t);
    }
  }
  return out;
}
