/**
 * config.json of a model folder (DESIGN.md "Model folder format") and the tensor names
 * and shapes each architecture needs (MODEL-REFERENCE.md §1.2, §1.7).
 */
import { EsolmError } from './errors.js';

export type Arch = 'esolm' | 'mdlm' | 'ar';

export interface ModelConfig {
  /** `esolm` (Eso-LM DiT with adaLN), `mdlm` (same network, bidirectional), `ar` (no adaLN). */
  arch: Arch;
  hidden_size: number;
  n_heads: number;
  n_blocks: number;
  /** adaLN conditioning width; required for esolm and mdlm. */
  cond_dim: number;
  /** Vocabulary size including the mask token. */
  vocab_size: number;
  /** Id of the mask token; -1 when the model has none. */
  mask_index: number;
  /** Context length the model was trained with; sequences may not be longer. */
  length: number;
  /** `gpt2` | `bert-base-uncased` | `bytes` | a path to a tokenizer.json; absent = ids only. */
  tokenizer?: string;
  /** Recommended sampling settings (used by the CLI when an option is not given). */
  sampling?: SamplingDefaults;
}

/** A model folder's recommended sampling settings (config.json "sampling"). */
export interface SamplingDefaults {
  alpha0?: number;
  steps?: number;
  topP?: number;
  temperature?: number;
}

function bad(field: string, why: string): EsolmError {
  return new EsolmError('ERR_BAD_WEIGHTS', `config.json: field "${field}" ${why}`);
}

/**
 * Upper bounds on the size fields: far above any real model, and low enough that every
 * product the loader and the engine form stays an exact integer (checked before any
 * loop or allocation sized by them).
 */
export const CONFIG_LIMITS = {
  hidden_size: 2 ** 16, n_heads: 2 ** 12, n_blocks: 2 ** 12, cond_dim: 2 ** 16, vocab_size: 2 ** 24, length: 2 ** 20,
} as const;

function posInt(raw: Record<string, unknown>, field: string, min = 1): number {
  const v = raw[field];
  if (v === undefined) throw bad(field, 'is missing');
  const max = (CONFIG_LIMITS as Record<string, number>)[field] ?? 2 ** 31 - 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw bad(field, `must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Validates a parsed config.json. Throws ERR_BAD_WEIGHTS naming the field. */
export function parseConfig(raw: unknown): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new EsolmError('ERR_BAD_WEIGHTS', 'config.json must hold a JSON object');
  }
  const r = raw as Record<string, unknown>;
  const arch = r.arch;
  if (arch === undefined) throw bad('arch', 'is missing');
  if (arch !== 'esolm' && arch !== 'mdlm' && arch !== 'ar') throw bad('arch', `must be "esolm", "mdlm" or "ar", got ${JSON.stringify(arch)}`);
  const cfg: ModelConfig = {
    arch,
    hidden_size: posInt(r, 'hidden_size'),
    n_heads: posInt(r, 'n_heads'),
    n_blocks: posInt(r, 'n_blocks'),
    cond_dim: arch === 'ar' ? (r.cond_dim === undefined ? 0 : posInt(r, 'cond_dim', 0)) : posInt(r, 'cond_dim'),
    vocab_size: posInt(r, 'vocab_size'),
    mask_index: r.mask_index === undefined && arch === 'ar' ? -1 : posInt(r, 'mask_index', -1),
    length: posInt(r, 'length'),
  };
  if (r.tokenizer !== undefined) {
    if (typeof r.tokenizer !== 'string') throw bad('tokenizer', 'must be a string');
    cfg.tokenizer = r.tokenizer;
  }
  if (r.sampling !== undefined) {
    const sm = r.sampling as Record<string, unknown>;
    if (typeof sm !== 'object' || sm === null || Array.isArray(sm)) throw bad('sampling', 'must be an object');
    const out: SamplingDefaults = {};
    for (const k of ['alpha0', 'steps', 'topP', 'temperature'] as const) {
      if (sm[k] === undefined) continue;
      if (typeof sm[k] !== 'number' || !Number.isFinite(sm[k])) throw bad(`sampling.${k}`, 'must be a number');
      out[k] = sm[k] as number;
    }
    cfg.sampling = out;
  }
  if (cfg.hidden_size % cfg.n_heads !== 0) throw bad('hidden_size', `(${cfg.hidden_size}) must be a multiple of n_heads (${cfg.n_heads})`);
  if ((cfg.hidden_size / cfg.n_heads) % 2 !== 0) throw bad('n_heads', 'must leave an even head dimension (rotary)');
  if (cfg.mask_index >= cfg.vocab_size) throw bad('mask_index', `(${cfg.mask_index}) must be < vocab_size (${cfg.vocab_size})`);
  if (cfg.arch !== 'ar' && cfg.mask_index < 0) throw bad('mask_index', `is required for arch ${cfg.arch}`);
  if (cfg.n_heads > cfg.hidden_size) throw bad('n_heads', `(${cfg.n_heads}) must be <= hidden_size (${cfg.hidden_size})`);
  return cfg;
}

/** Bytes of a KV cache: keys and values, per block, `batch * capacity` rows of hidden_size F32. */
export function cacheBytes(c: ModelConfig, batch: number, capacity: number): number {
  return 2 * c.n_blocks * batch * capacity * c.hidden_size * 4;
}

/** Expected tensor names (without `backbone.`) and shapes; -1 = any positive size. */
export function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const d = c.hidden_size, V = c.vocab_size, f = 4 * d, cd = c.cond_dim;
  const m = new Map<string, number[]>();
  m.set('vocab_embed.embedding', [V, d]);
  for (let i = 0; i < c.n_blocks; i++) {
    const p = `blocks.${i}.`;
    m.set(p + 'norm1.weight', [d]);
    m.set(p + 'attn_qkv.weight', [3 * d, d]);
    m.set(p + 'attn_out.weight', [d, d]);
    m.set(p + 'norm2.weight', [d]);
    m.set(p + 'mlp.0.weight', [f, d]);
    m.set(p + 'mlp.0.bias', [f]);
    m.set(p + 'mlp.2.weight', [d, f]);
    m.set(p + 'mlp.2.bias', [d]);
    if (c.arch !== 'ar') {
      m.set(p + 'adaLN_modulation.weight', [6 * d, cd]);
      m.set(p + 'adaLN_modulation.bias', [6 * d]);
    }
  }
  m.set('output_layer.norm_final.weight', [d]);
  m.set('output_layer.linear.weight', [V, d]);
  m.set('output_layer.linear.bias', [V]);
  if (c.arch !== 'ar') {
    m.set('output_layer.adaLN_modulation.weight', [2 * d, cd]);
    m.set('output_layer.adaLN_modulation.bias', [2 * d]);
    m.set('sigma_map.mlp.0.weight', [cd, -1]);
    m.set('sigma_map.mlp.0.bias', [cd]);
    m.set('sigma_map.mlp.2.weight', [cd, cd]);
    m.set('sigma_map.mlp.2.bias', [cd]);
  }
  return m;
}

/** Tensors that may be present and are ignored (recomputed). */
export const IGNORED_TENSORS = new Set(['rotary_emb.inv_freq']);
