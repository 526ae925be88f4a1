/**
 * `esolm convert`: official checkpoints → a model folder (config.json + model.safetensors).
 *
 * Inputs: a PyTorch Lightning .ckpt (EMA weights by default, matched to names by parameter
 * order, as the official evaluation and push_to_hf.py do; raw weights with `ema: false`), a
 * torch state dict (pytorch_model.bin), a .safetensors file, or a Hugging Face folder
 * (kuleshov-group/mdlm-owt, sahoo-diffusion/Eso-LM-B-*, hub exports with or without the
 * `backbone.` prefix). See MODEL-REFERENCE.md §1.2, §1.7, §6.
 *
 * The config is inferred from the tensor shapes (hidden, blocks, vocab, cond_dim, arch) and
 * the source config (n_heads, length, mask index, arch hints), with options taking precedence:
 * - arch: no adaLN / sigma_map tensors → `ar`; otherwise `esolm`, unless `arch: 'mdlm'` or the
 *   source config names MDLM (algo.name, model_type, architectures); an Eso-LM trained with
 *   algo.diffusion_attn_mode = mixed2 is Eso-LM (A): `esolm-a`.
 * - training: the source's training settings (algo.alpha_0, batch_split, attention modes and
 *   shuffles, prepend_token, model.length) go to config.json "training"; sampling and
 *   likelihood default to them.
 * - n_heads: option, source config, or rotary_emb.inv_freq (head dim = 2·len); else 12 for
 *   hidden 768 (with a warning); else an error asking for nHeads.
 * - length: option, source config (model_length, model.length), else 1024 (with a warning).
 * - mask_index: option, source config, 103 for vocab 30522 (bert-base-uncased), else
 *   vocab_size − 1 (50257 for GPT-2's 50258) for esolm/mdlm; for ar the same when vocab is
 *   50258, else −1.
 * - dtype: option (a warning says what it changes); default bf16 when every source weight is
 *   BF16, else f32 (q8 for an esolm q8 folder). q8 writes the linear matrices (lib/q8.ts
 *   isQ8Matrix) as I8 `<name>` + F32 `<name>_scale` [rows] by the engine's rule, bit for bit,
 *   and the other tensors as the default would.
 * - tokenizer: option; else `gpt2` for vocab 50257/50258, else the source folder's
 *   tokenizer.json (copied), else none.
 */
import { copyFileSync, closeSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { expectedTensors, IGNORED_TENSORS, parseConfig, type Arch, type ModelConfig, type TrainingSettings } from '../config.js';
import { EsolmError, expected, invalidArg } from '../errors.js';
import { readModelFolder } from '../model.js';
import { isQ8Matrix, Q8_METADATA, Q8_SCALE_SUFFIX, quantizeQ8 } from '../q8.js';
import { openSource, type Source, type SourceTensor } from './sources.js';

export interface ConvertOptions {
  /**
   * Output dtype (default: bf16 when every source weight is BF16, else f32; q8 for a q8
   * source). q8: the linear matrices 8-bit (I8 + F32 row scales), the rest as the default.
   */
  dtype?: 'bf16' | 'f32' | 'q8';
  /** Use the EMA weights of a Lightning checkpoint (default true; `--no-ema` = false). */
  ema?: boolean;
  /** Architecture (default: inferred). */
  arch?: Arch;
  /** config `tokenizer`: gpt2 | bert-base-uncased | bytes | a tokenizer.json path (copied into the folder). */
  tokenizer?: string;
  /** Attention heads (shapes do not tell). */
  nHeads?: number;
  /** Context length (default: the source config, else 1024). */
  length?: number;
  /** Mask token id (default: see above). */
  maskIndex?: number;
  /** Called for each warning (they are also returned). */
  onWarning?: (message: string) => void;
}

export interface ConvertResult {
  config: ModelConfig;
  /** Number of tensors written. */
  tensors: number;
  /** What was read, e.g. "Lightning checkpoint x.ckpt, EMA weights (...); epoch 1, global_step 10". */
  source: string;
  warnings: string[];
}

type Obj = Record<string, unknown>;

function obj(v: unknown): Obj | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : undefined;
}

/** The places a source config keeps model fields: flat HF config, hydra `model`, hub-mixin `config.model`. */
function scopes(cfg: Obj | null): Obj[] {
  if (!cfg) return [];
  const inner = obj(cfg.config);
  return [cfg, obj(cfg.model), inner, obj(inner?.model)].filter((x): x is Obj => x !== undefined);
}

function cfgInt(cfg: Obj | null, keys: string[]): { value: number; key: string } | undefined {
  for (const s of scopes(cfg)) {
    for (const k of keys) {
      const v = s[k];
      if (typeof v === 'number' && Number.isInteger(v)) return { value: v, key: k };
    }
  }
  return undefined;
}

/** What the source config says the model is, if anything. */
function archHint(cfg: Obj | null): Arch | undefined {
  if (!cfg) return undefined;
  const inner = obj(cfg.config) ?? cfg;
  const algo = obj(inner.algo) ?? obj(cfg.algo);
  // an esolm model folder's own config.json names its arch
  if (cfg.arch === 'esolm' || cfg.arch === 'esolm-a' || cfg.arch === 'mdlm' || cfg.arch === 'ar') return cfg.arch;
  const names = [algo?.name, cfg.model_type, inner.model_type, ...(Array.isArray(cfg.architectures) ? cfg.architectures : [])]
    .filter((x): x is string => typeof x === 'string').map((s) => s.toLowerCase());
  for (const n of names) {
    if (n === 'ar') return 'ar';
    if (n.includes('esolm') || n.includes('eso-lm') || n.includes('eso_lm')) return algo?.diffusion_attn_mode === 'mixed2' ? 'esolm-a' : 'esolm';
    if (n.includes('mdlm')) return 'mdlm';
  }
  // kuleshov-group/mdlm's own config: no algo, `parameterization: subs`, `diffusion: absorbing_state`.
  if (!algo && inner.parameterization === 'subs' && typeof inner.diffusion === 'string') return 'mdlm';
  if (inner.parameterization === 'ar' || inner.backbone === 'ar') return 'ar';
  return undefined;
}

/** The source's training settings (a Lightning checkpoint's Hydra config, or an esolm
 * folder's own "training" block), or undefined when it has none. */
export function trainingSettings(cfg: Obj | null): TrainingSettings | undefined {
  if (!cfg) return undefined;
  const own = obj(cfg.training);
  if (own && (own.alpha0 !== undefined || own.algo !== undefined)) return { ...own } as TrainingSettings;
  const inner = obj(cfg.config) ?? cfg;
  const algo = obj(inner.algo) ?? obj(cfg.algo);
  if (!algo) return undefined;
  const t: TrainingSettings = {};
  if (typeof algo.name === 'string') t.algo = algo.name;
  const unit = (v: unknown): number | undefined => (typeof v === 'number' && v >= 0 && v <= 1 ? v : undefined);
  const a0 = unit(algo.alpha_0);
  if (a0 !== undefined) t.alpha0 = a0;
  const bs = unit(algo.batch_split);
  if (bs !== undefined) t.batch_split = bs;
  for (const k of ['diffusion_attn_mode', 'sequential_attn_mode'] as const) if (typeof algo[k] === 'string') t[k] = algo[k] as string;
  for (const k of ['diffusion_shuffle', 'sequential_shuffle'] as const) if (typeof algo[k] === 'boolean') t[k] = algo[k] as boolean;
  const p = algo.prepend_token;
  if (p === 'none' || p === 'bos' || p === 'mask') t.prepend = p;
  const len = obj(inner.model)?.length;
  if (typeof len === 'number' && Number.isInteger(len) && len > 0) t.length = len;
  return Object.keys(t).length > 0 ? t : undefined;
}

function posIntOpt(name: string, v: unknown, min = 1): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw expected(`an integer >= ${min}`, name, v);
  return v;
}

function shapeStr(s: number[]): string {
  return `[${s.join(', ')}]`;
}

/** f32 → bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
function toBf16(f: Float32Array): Uint16Array {
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i]!;
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

export async function convertCheckpoint(input: string, outDir: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  if (typeof input !== 'string' || input.length === 0) throw expected('a file or folder path', 'input', input);
  if (typeof outDir !== 'string' || outDir.length === 0) throw expected('a folder path', 'outDir', outDir);
  if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'options', opts);
  const dtypeOpt = opts.dtype === undefined ? undefined : String(opts.dtype).toLowerCase();
  if (dtypeOpt !== undefined && dtypeOpt !== 'bf16' && dtypeOpt !== 'f32' && dtypeOpt !== 'q8') throw expected('"bf16", "f32" or "q8"', 'dtype', opts.dtype);
  if (opts.arch !== undefined && opts.arch !== 'esolm' && opts.arch !== 'esolm-a' && opts.arch !== 'mdlm' && opts.arch !== 'ar') {
    throw expected('"esolm", "esolm-a", "mdlm" or "ar"', 'arch', opts.arch);
  }
  if (opts.ema !== undefined && typeof opts.ema !== 'boolean') throw expected('a boolean', 'ema', opts.ema);
  if (opts.tokenizer !== undefined && (typeof opts.tokenizer !== 'string' || opts.tokenizer.length === 0)) {
    throw expected('a tokenizer name or path', 'tokenizer', opts.tokenizer);
  }
  const nHeadsOpt = posIntOpt('nHeads', opts.nHeads);
  const lengthOpt = posIntOpt('length', opts.length);
  const maskOpt = posIntOpt('maskIndex', opts.maskIndex, -1);

  const inAbs = path.resolve(input);
  const outAbs = path.resolve(outDir);
  if (outAbs === inAbs || path.join(outAbs, 'model.safetensors') === inAbs || path.join(outAbs, 'config.json') === inAbs) {
    throw invalidArg(`the output folder ${outDir} would overwrite the input ${input}`);
  }

  const outStat = statSync(outDir, { throwIfNoEntry: false });
  if (outStat && !outStat.isDirectory()) throw invalidArg(`the output ${outDir} exists and is not a folder`);

  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    opts.onWarning?.(m);
  };

  const source = openSource(input, { ema: opts.ema ?? true });
  try {
    for (const w of source.warnings) warn(w);
    const { config, order, outDtype, q8, tokenizerFile } = inferConfig(source, input, {
      arch: opts.arch, nHeads: nHeadsOpt, length: lengthOpt, maskIndex: maskOpt,
      dtype: dtypeOpt as ConvertOptions['dtype'], tokenizer: opts.tokenizer, ema: opts.ema,
    }, warn);

    // Output folder: refuse to mix with another model's shards.
    mkdirSync(outDir, { recursive: true });
    const others = readdirSync(outDir).filter((f) => f.endsWith('.safetensors') && f !== 'model.safetensors');
    if (others.length > 0) throw invalidArg(`the output folder ${outDir} already holds ${others.join(', ')}; use an empty folder`);
    if (tokenizerFile) {
      const dst = path.join(outDir, 'tokenizer.json');
      if (path.resolve(tokenizerFile) !== path.resolve(dst)) copyFileSync(tokenizerFile, dst);
      const tc = path.join(path.dirname(tokenizerFile), 'tokenizer_config.json');
      const tcDst = path.join(outDir, 'tokenizer_config.json');
      if (isFile(tc) && path.resolve(tc) !== path.resolve(tcDst)) copyFileSync(tc, tcDst);
    }
    writeSafetensors(path.join(outDir, 'model.safetensors'), order, outDtype, q8, path.basename(input), source.description);
    writeFileSync(path.join(outDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    readModelFolder(outDir); // the folder must load
    return { config, tensors: order.length, source: source.description, warnings };
  } finally {
    source.close();
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

interface InferOptions {
  arch?: Arch;
  nHeads?: number;
  length?: number;
  maskIndex?: number;
  dtype?: 'bf16' | 'f32' | 'q8';
  tokenizer?: string;
  ema?: boolean;
}

function inferConfig(src: Source, input: string, o: InferOptions, warn: (m: string) => void): {
  config: ModelConfig; order: SourceTensor[]; outDtype: 'F32' | 'BF16'; q8: boolean; tokenizerFile: string | null;
} {
  const bad = (m: string) => new EsolmError('ERR_BAD_WEIGHTS', `${input}: ${m}`);
  const byName = new Map<string, SourceTensor>();
  for (const t of src.tensors) {
    if (byName.has(t.name)) throw bad(`tensor '${t.name}' appears more than once (with and without the 'backbone.' prefix?)`);
    byName.set(t.name, t);
  }
  const emb = byName.get('vocab_embed.embedding');
  if (!emb || emb.shape.length !== 2) {
    const some = src.tensors.slice(0, 6).map((t) => t.name).join(', ');
    throw bad(`no 2-D 'vocab_embed.embedding' tensor, so this is not an Eso-LM / MDLM / AR checkpoint (tensors: ${some}${src.tensors.length > 6 ? ', ...' : ''})`);
  }
  const [V, d] = emb.shape as [number, number];
  let nBlocks = 0;
  for (const name of byName.keys()) {
    const m = /^blocks\.(\d+)\./.exec(name);
    if (m) nBlocks = Math.max(nBlocks, Number(m[1]) + 1);
  }
  if (nBlocks === 0) throw bad(`no 'blocks.<i>.*' tensors`);
  const adaln = [...byName.keys()].some((n) => n.includes('adaLN_modulation') || n.startsWith('sigma_map.'));
  const cfg = src.config;

  // arch
  const hint = archHint(cfg);
  let arch: Arch;
  if (o.arch !== undefined) {
    if (o.arch === 'ar' && adaln) throw invalidArg(`arch "ar" was asked for, but ${input} has adaLN / sigma_map tensors (an Eso-LM or MDLM network)`);
    if (o.arch !== 'ar' && !adaln) throw invalidArg(`arch "${o.arch}" was asked for, but ${input} has no adaLN tensors (an AR network)`);
    arch = o.arch;
  } else if (!adaln) {
    arch = 'ar';
  } else {
    if (hint === 'ar') warn(`the source config says AR, but the weights have adaLN tensors; converting as esolm`);
    arch = hint === 'mdlm' || hint === 'esolm-a' ? hint : 'esolm';
  }
  const training = trainingSettings(cfg);
  if (o.arch === 'esolm' && hint === 'esolm-a') {
    warn(`the source was trained as Eso-LM (A) (diffusion_attn_mode mixed2) but arch "esolm" was asked for: it will be sampled with the Eso-LM (B) sampler`);
  }
  if (o.arch === 'esolm-a' && training?.diffusion_attn_mode !== undefined && training.diffusion_attn_mode !== 'mixed2') {
    warn(`arch "esolm-a" was asked for, but the source was trained with diffusion_attn_mode ${training.diffusion_attn_mode}`);
  }

  let cond = 0;
  if (arch !== 'ar') {
    const ada = byName.get('blocks.0.adaLN_modulation.weight') ?? byName.get('sigma_map.mlp.2.weight');
    if (!ada || ada.shape.length !== 2) throw bad(`missing tensor 'blocks.0.adaLN_modulation.weight'`);
    cond = ada.shape[1]!;
  }

  // cross-check the source config against the shapes (shapes win)
  const checks: [string, string[], number][] = [
    ['hidden size', ['hidden_size', 'hidden_dim', 'd_model'], d],
    ['vocab size', ['vocab_size'], V],
    ['block count', ['n_blocks', 'num_layers', 'n_layers', 'num_hidden_layers'], nBlocks],
  ];
  if (arch !== 'ar') checks.push(['cond_dim', ['cond_dim'], cond]);
  for (const [what, keys, actual] of checks) {
    const c = cfgInt(cfg, keys);
    if (c && c.value !== actual) warn(`the source config has ${c.key} = ${c.value} but the weights have ${what} ${actual}; using ${actual}`);
  }

  // heads
  const inv = byName.get('rotary_emb.inv_freq');
  const headsFromInv = inv && inv.shape.length === 1 && inv.shape[0]! > 0 && d % (2 * inv.shape[0]!) === 0 ? d / (2 * inv.shape[0]!) : undefined;
  const cfgHeads = cfgInt(cfg, ['n_heads', 'num_heads', 'num_attention_heads', 'n_head']);
  let nHeads: number;
  if (o.nHeads !== undefined) nHeads = o.nHeads;
  else if (cfgHeads) nHeads = cfgHeads.value;
  else if (headsFromInv !== undefined) nHeads = headsFromInv;
  else if (d === 768) {
    nHeads = 12;
    warn(`n_heads is not in the source and cannot be read from the shapes; assuming 12 (the hidden-768 "small" model). Pass nHeads (--n-heads) if that is wrong`);
  } else {
    throw invalidArg(`${input}: n_heads is not in the source and cannot be read from the shapes; pass nHeads (--n-heads)`);
  }
  if (d % nHeads !== 0 || (d / nHeads) % 2 !== 0) throw invalidArg(`n_heads ${nHeads} does not divide hidden size ${d} into an even head dimension`);
  if (headsFromInv !== undefined && headsFromInv !== nHeads) {
    warn(`rotary_emb.inv_freq implies ${headsFromInv} heads (head dimension ${d / headsFromInv}) but n_heads is ${nHeads}`);
  }

  // length
  let length = o.length ?? cfgInt(cfg, ['model_length', 'length', 'max_seq_len', 'max_position_embeddings', 'n_positions'])?.value;
  if (o.length !== undefined && training?.length !== undefined && o.length !== training.length) {
    warn(`length ${o.length} was asked for, but the model was trained with length ${training.length}`);
  }
  if (length === undefined) {
    length = 1024;
    warn(`the context length is not in the source; using 1024. Pass length (--length) if that is wrong`);
  }

  // mask index
  const cfgMask = cfgInt(cfg, ['mask_index', 'mask_token_id', 'mask_id'])?.value;
  if (o.maskIndex !== undefined && cfgMask !== undefined && o.maskIndex !== cfgMask) {
    warn(`mask index ${o.maskIndex} was asked for, but the source config says ${cfgMask}`);
  }
  let mask = o.maskIndex ?? cfgMask;
  if (mask === undefined) {
    if (V === 30522) mask = 103;
    else if (arch !== 'ar' || V === 50258) mask = V - 1;
    else mask = -1;
  }

  // tokenizer (and an esolm model folder's own recommended sampling settings)
  const ownFolder = src.folder !== null && ['esolm', 'esolm-a', 'mdlm', 'ar'].includes(cfg?.arch as string);
  let tokenizer: string | undefined;
  let tokenizerFile: string | null = null;
  const folderTok = src.folder ? path.join(src.folder, 'tokenizer.json') : null;
  if (o.tokenizer !== undefined) {
    const t = o.tokenizer;
    if (t === 'gpt2' || t === 'bytes') tokenizer = t;
    else if (t === 'bert-base-uncased') {
      tokenizer = t;
      if (folderTok && isFile(folderTok)) tokenizerFile = folderTok;
      else warn(`tokenizer "bert-base-uncased" needs its tokenizer.json in the model folder; copy it there`);
    } else if (isFile(t)) {
      tokenizer = 'tokenizer.json';
      tokenizerFile = t;
    } else {
      throw invalidArg(`tokenizer "${t}" is not gpt2, bert-base-uncased or bytes, and not a tokenizer.json file`);
    }
  } else if (ownFolder && (cfg!.tokenizer === 'gpt2' || cfg!.tokenizer === 'bytes')) {
    tokenizer = cfg!.tokenizer;  // an esolm model folder (e.g. re-converted to q8) keeps its tokenizer
  } else if (V === 50257 || V === 50258) {
    tokenizer = 'gpt2';
  } else if (folderTok && isFile(folderTok)) {
    tokenizer = 'tokenizer.json';
    tokenizerFile = folderTok;
  } else if (V === 30522) {
    warn(`vocab size 30522 looks like bert-base-uncased; put its tokenizer.json into the output folder and set "tokenizer": "bert-base-uncased" in config.json`);
  }

  const raw: Record<string, unknown> = { arch, hidden_size: d, n_heads: nHeads, n_blocks: nBlocks, cond_dim: cond, vocab_size: V, mask_index: mask, length };
  if (tokenizer !== undefined) raw.tokenizer = tokenizer;
  if (ownFolder && obj(cfg!.sampling)) raw.sampling = cfg!.sampling;
  if (training) raw.training = training;
  let config: ModelConfig;
  try {
    config = parseConfig(raw);
  } catch (e) {
    throw new EsolmError('ERR_INVALID_ARG', `${input}: the inferred config is invalid: ${(e as Error).message.replace(/^config\.json: /, '')}`);
  }

  // tensors: every expected one, with its shape; warn about the rest
  const want = expectedTensors(config);
  for (const [name, shape] of want) {
    const t = byName.get(name);
    if (!t) throw bad(`missing tensor '${name}' (needed by a ${arch} model)`);
    const ok = t.shape.length === shape.length && shape.every((s, i) => (s < 0 ? t.shape[i]! > 0 : s === t.shape[i]));
    if (!ok) throw bad(`tensor '${name}' has shape ${shapeStr(t.shape)}, expected ${shapeStr(shape.map((s) => (s < 0 ? NaN : s))).replaceAll('NaN', '*')}`);
    if (t.dtype !== 'F32' && t.dtype !== 'BF16' && t.dtype !== 'F16' && t.dtype !== 'F64' && t.dtype !== 'Q8') {
      throw bad(`tensor '${name}' has dtype ${t.dtype}, expected a floating-point tensor`);
    }
  }
  const extra = src.tensors.filter((t) => !want.has(t.name) && !IGNORED_TENSORS.has(t.name)).map((t) => t.name);
  if (extra.length > 0) warn(`ignored ${extra.length} tensor(s) that a ${arch} model does not use: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`);
  if (o.ema === false && !/Lightning|torch state dict/.test(src.description)) {
    warn(`ema: false only applies to Lightning checkpoints; ${path.basename(input)} is written as stored`);
  }
  const order = src.tensors.filter((t) => want.has(t.name));
  // A q8 source's 8-bit matrices count as neither BF16 nor F32: the other tensors decide.
  const srcQ8 = order.some((t) => t.dtype === 'Q8');
  const floats = order.filter((t) => t.dtype !== 'Q8');
  const allBf16 = floats.every((t) => t.dtype === 'BF16');
  const q8 = o.dtype === 'q8' || (o.dtype === undefined && srcQ8);
  const outDtype = o.dtype === 'bf16' ? 'BF16' : o.dtype === 'f32' ? 'F32' : allBf16 ? 'BF16' : 'F32';
  if (o.dtype === 'f32' && allBf16 && floats.length > 0) warn(`dtype f32 was asked for: the BF16 source weights are widened to F32 (twice the size, no added precision; the default keeps BF16)`);
  if (o.dtype === 'bf16' && !allBf16) warn(`dtype bf16 was asked for: the source weights (${[...new Set(floats.map((t) => t.dtype))].join('/')}) are rounded to BF16`);
  if (o.dtype === 'q8' && !srcQ8) {
    warn(`dtype q8 was asked for: the linear matrices are rounded to int8 with one F32 scale per output row (the measured cost is in the README); the other tensors stay ${outDtype}`);
  }
  if (srcQ8 && !q8) warn(`dtype ${o.dtype} was asked for: the source's 8-bit matrices are dequantized (no precision comes back)`);
  return { config, order, outDtype, q8, tokenizerFile };
}

/**
 * Writes the tensors (names without prefix) as one safetensors file, via a temporary file:
 * floats as `dtype`; with `q8` the linear matrices as I8 `<name>` + F32 `<name>_scale`
 * [rows] (lib/q8.ts), after the floats (so these keep their alignment), each scale right
 * before its matrix.
 */
function writeSafetensors(file: string, tensors: SourceTensor[], dtype: 'F32' | 'BF16', q8: boolean, sourceName: string, description: string): void {
  const esize = dtype === 'F32' ? 4 : 2;
  const quantized = (t: SourceTensor): boolean => q8 && t.shape.length === 2 && isQ8Matrix(t.name);
  const ordered = [...tensors.filter((t) => !quantized(t)), ...tensors.filter(quantized)];
  const header: Record<string, unknown> = {};
  let offset = 0;
  const put = (name: string, dt: string, shape: number[], bytes: number): void => {
    header[name] = { dtype: dt, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  };
  for (const t of ordered) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (quantized(t)) {
      put(t.name + Q8_SCALE_SUFFIX, 'F32', [t.shape[0]!], t.shape[0]! * 4);
      put(t.name, 'I8', t.shape, numel);
    } else {
      put(t.name, dtype, t.shape, numel * esize);
    }
  }
  header.__metadata__ = {
    format: 'pt', converted_by: 'esolm convert', source: sourceName, weights: description,
    ...(ordered.some(quantized) ? { quantization: Q8_METADATA } : {}),
  };
  let json = JSON.stringify(header);
  const pad = (8 - ((8 + Buffer.byteLength(json)) % 8)) % 8;
  json += ' '.repeat(pad);
  const tmp = `${file}.tmp-${process.pid}`;
  let fd: number;
  try {
    fd = openSync(tmp, 'w');
  } catch (e) {
    throw new EsolmError('ERR_IO', `cannot write ${tmp}: ${(e as Error).message}`);
  }
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    writeSync(fd, len);
    writeSync(fd, Buffer.from(json, 'utf8'));
    const write = (data: Uint8Array): void => {
      let done = 0;
      while (done < data.length) done += writeSync(fd, data, done, data.length - done);
    };
    for (const t of ordered) {
      const f = t.readF32();
      if (quantized(t)) {
        const { q, scale } = quantizeQ8(f, t.shape[0]!, t.shape[1]!, `tensor '${t.name}'`);
        write(new Uint8Array(scale.buffer));
        write(new Uint8Array(q.buffer));
      } else {
        write(dtype === 'F32' ? new Uint8Array(f.buffer, f.byteOffset, f.byteLength) : new Uint8Array(toBf16(f).buffer));
      }
    }
    closeSync(fd);
    renameSync(tmp, file);
  } catch (e) {
    try { closeSync(fd); } catch { /* already closed */ }
    rmSync(tmp, { force: true });
    if (e instanceof EsolmError) throw e;
    throw new EsolmError('ERR_IO', `cannot write ${file}: ${(e as Error).message}`);
  }
}
