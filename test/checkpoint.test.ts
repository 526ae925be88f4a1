// Official checkpoint formats → model folders (lib/checkpoint): the ZIP reader, the torch.save
// reader, and convertCheckpoint on the fixtures tools/make_checkpoint_fixtures.py wrote with
// PyTorch (test/fixtures/checkpoints/):
//   tiny-esolm.ckpt  Lightning checkpoint (torch.save: STORED entries with data descriptors);
//                    raw weights = 2 x EMA; BF16/F32/F16/F64, a transposed view, offset views of one
//                    shared storage, an I64 tensor, omegaconf-like hyper_parameters
//   tiny-ar.ckpt     the same for AR, rewritten as a zip64 archive
//   mdlm-hf/         the esolm EMA weights as kuleshov-group/mdlm-owt publishes them (F32,
//                    backbone.*, inv_freq, MDLMConfig config.json) — the reference weights
//   ar-hub/          the AR EMA weights without 'backbone.', nested hub-mixin config.json
// The bar: a converted folder holds exactly the source weights, and Model.load gives exactly the
// logits of a folder made directly from the reference weights.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint, type ConvertOptions } from '../lib/checkpoint/convert.js';
import { TorchArchive, TorchTensor, toPlain } from '../lib/checkpoint/torch.js';
import { ZipReader } from '../lib/checkpoint/zip.js';
import { expectedTensors, type ModelConfig } from '../lib/config.js';
import { EsolmError } from '../lib/errors.js';
import { Model } from '../lib/index.js';
import { loadTokenizer } from '../lib/tokenizers/index.js';
import { makeRandomModel } from './helpers/random-model.js';
import { assembleSafetensors, readSafetensors, writeSafetensors, type Header, type TensorSpec } from './helpers/safetensors.js';

const FIX = fileURLToPath(new URL('./fixtures/checkpoints/', import.meta.url));
const ESOLM_CKPT = join(FIX, 'tiny-esolm.ckpt');
const AR_CKPT = join(FIX, 'tiny-ar.ckpt');
const MDLM_HF = join(FIX, 'mdlm-hf');
const AR_HUB = join(FIX, 'ar-hub');
const BERT_TOKENIZER = fileURLToPath(new URL('./fixtures/tokenizers/tiny-bert/tokenizer.json', import.meta.url));

const TINY = { hidden_size: 32, n_heads: 4, n_blocks: 2, vocab_size: 61, length: 64 };
const ESOLM_CONFIG: ModelConfig = { arch: 'esolm', ...TINY, cond_dim: 16, mask_index: 60 };
const AR_CONFIG: ModelConfig = { arch: 'ar', ...TINY, cond_dim: 0, mask_index: -1 };

type Weights = Record<string, { dtype: string; shape: number[]; values: Float64Array }>;

let root: string;
let n = 0;
const tmp = (name: string): string => join(root, `${n++}-${name}`);

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'esolm-ckpt-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Tensors of a safetensors file, names without 'backbone.', without rotary_emb.inv_freq. */
function weightsOf(file: string): Weights {
  const out: Weights = {};
  for (const [k, v] of Object.entries(readSafetensors(readFileSync(file)))) {
    const name = k.replace(/^backbone\./, '');
    if (name !== 'rotary_emb.inv_freq') out[name] = v;
  }
  return out;
}

function expectSameWeights(actual: Weights, reference: Weights, scale = 1): void {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(reference).sort());
  for (const [name, ref] of Object.entries(reference)) {
    const a = actual[name]!;
    expect(a.shape, name).toEqual(ref.shape);
    let mismatches = 0;
    for (let i = 0; i < ref.values.length; i++) if (a.values[i] !== scale * ref.values[i]!) mismatches++;
    expect(mismatches, `${name}: values differ from ${scale} x the reference`).toBe(0);
  }
}

/** A model folder made directly from reference weights: our config.json + the reference file. */
function referenceFolder(config: ModelConfig, safetensors: string): string {
  const dir = tmp('ref');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  copyFileSync(safetensors, join(dir, 'model.safetensors'));
  return dir;
}

const TOKENS = Int32Array.from([3, 60, 17, 60, 60, 42, 0, 59, 60, 8, 33, 60]);

async function logits(dir: string, attention: 'causal' | 'bidirectional'): Promise<Float32Array> {
  await using m = await Model.load(dir, { backend: 'cpu', threads: 1 });
  return await m.forward({ tokens: TOKENS, attention });
}

async function rejectionOf(p: Promise<unknown>): Promise<EsolmError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(EsolmError);
    return e as EsolmError;
  }
  throw new Error('expected a rejection');
}

function errorOf(fn: () => unknown): EsolmError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(EsolmError);
    return e as EsolmError;
  }
  throw new Error('expected an EsolmError');
}

async function convert(input: string, opts: ConvertOptions = {}) {
  const out = tmp('out');
  const r = await convertCheckpoint(input, out, opts);
  return { out, ...r, weights: weightsOf(join(out, 'model.safetensors')) };
}

describe('ZipReader', () => {
  it('reads a torch.save archive (STORED entries with data descriptors)', () => {
    const z = ZipReader.open(ESOLM_CKPT);
    try {
      const names = [...z.entries.keys()];
      expect(names[0]).toBe('tiny-esolm/data.pkl');
      expect(names).toContain('tiny-esolm/version');
      for (const e of z.entries.values()) {
        expect(e.method).toBe(0);
        expect(z.dataOffset(e) % 64).toBe(0); // torch aligns data to 64 bytes
      }
      expect(z.read(z.get('tiny-esolm/version')!).toString()).toBe('3\n');
    } finally {
      z.close();
    }
  });

  it('reads a zip64 archive (zip64 end records and extra fields)', () => {
    const z = ZipReader.open(AR_CKPT);
    try {
      expect(z.read(z.get('tiny-ar/version')!).toString()).toBe('3\n');
      const pkl = z.read(z.get('tiny-ar/data.pkl')!);
      expect(pkl[0]).toBe(0x80); // pickle PROTO
      expect(z.readRange(z.get('tiny-ar/data.pkl')!, 0, 2)).toEqual(pkl.subarray(0, 2));
    } finally {
      z.close();
    }
  });

  it('rejects missing, truncated and non-ZIP files with typed errors naming the file', () => {
    const missing = join(root, 'nope.ckpt');
    expect(errorOf(() => ZipReader.open(missing)).code).toBe('ERR_IO');
    const bytes = readFileSync(ESOLM_CKPT);
    const cut = tmp('cut.ckpt');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    const e = errorOf(() => ZipReader.open(cut));
    expect(e.code).toBe('ERR_BAD_WEIGHTS');
    expect(e.message).toContain(cut);
    const junk = tmp('junk.bin');
    writeFileSync(junk, Buffer.alloc(1000, 7));
    expect(errorOf(() => ZipReader.open(junk)).code).toBe('ERR_BAD_WEIGHTS');
  });
});

describe('TorchArchive', () => {
  const ref = () => weightsOf(join(MDLM_HF, 'model.safetensors'));

  it('unpickles a Lightning checkpoint: top-level keys, scalars, hyper_parameters', () => {
    using a = TorchArchive.open(ESOLM_CKPT);
    const r = a.root as Map<string, unknown>;
    expect([...r.keys()]).toEqual(['epoch', 'global_step', 'pytorch-lightning_version', 'state_dict', 'loops', 'callbacks',
      'optimizer_states', 'lr_schedulers', 'ema', 'hparams_name', 'hyper_parameters']);
    expect(r.get('epoch')).toBe(1);
    expect(r.get('global_step')).toBe(10);
    const hp = toPlain(r.get('hyper_parameters')) as { config: { model: Record<string, unknown>; algo: Record<string, unknown> }; tokenizer: Record<string, unknown> };
    expect(hp.config.model).toMatchObject({ hidden_size: 32, n_heads: 4, n_blocks: 2, cond_dim: 16, length: 64 });
    expect(hp.config.algo.name).toBe('esolm');
    expect(hp.tokenizer.name_or_path).toBe('gpt2');
    const ema = r.get('ema') as Map<string, unknown>;
    expect(ema.get('decay')).toBe(0.9999);
    expect((ema.get('shadow_params') as unknown[]).length).toBe(31);
  });

  it('rebuilds tensors: dtypes, a transposed view, offset views of a shared storage, I64', () => {
    using a = TorchArchive.open(ESOLM_CKPT);
    const reference = ref();
    const sd = (a.root as Map<string, unknown>).get('state_dict') as Map<string, TorchTensor>;
    const keys = [...sd.keys()];
    expect(keys.slice(0, 7)).toEqual(['backbone.vocab_embed.embedding', 'backbone.sigma_map.mlp.0.weight', 'backbone.sigma_map.mlp.0.bias',
      'backbone.sigma_map.mlp.2.weight', 'backbone.sigma_map.mlp.2.bias', 'backbone.rotary_emb.inv_freq', 'backbone.blocks.0.norm1.weight']);

    const i64 = sd.get('train_metrics.count')!;
    expect(i64.dtype).toBe('I64');
    expect([...(i64.read() as BigInt64Array)]).toEqual([0n, 1000000007n, 2000000014n, 3000000021n, 4000000028n]);

    const t = sd.get('backbone.blocks.0.attn_out.weight')!;
    expect(t.dtype).toBe('F32');
    expect(t.stride).toEqual([1, 32]);
    expect(t.contiguous).toBe(false);
    expect([...t.readF32()]).toEqual([...reference['blocks.0.attn_out.weight']!.values].map((v) => 2 * v));

    const n2 = sd.get('backbone.blocks.0.norm2.weight')!;
    expect(n2.storageOffset).toBeGreaterThan(0);
    expect(n2.storage).toBe(sd.get('backbone.blocks.0.norm1.weight')!.storage);
    expect([...n2.readF32()]).toEqual([...reference['blocks.0.norm2.weight']!.values].map((v) => 2 * v));

    const bf = sd.get('backbone.blocks.1.mlp.0.weight')!;
    expect(bf.dtype).toBe('BF16');
    expect([...bf.readF32()]).toEqual([...reference['blocks.1.mlp.0.weight']!.values].map((v) => 2 * v));

    const shadow = ((a.root as Map<string, unknown>).get('ema') as Map<string, unknown>).get('shadow_params') as TorchTensor[];
    const f16 = shadow.find((s) => s.dtype === 'F16')!;
    const f64 = shadow.find((s) => s.dtype === 'F64')!;
    expect([...f16.readF32()]).toEqual([...reference['output_layer.norm_final.weight']!.values]);
    expect([...(f64.read() as Float64Array)]).toEqual([...reference['sigma_map.mlp.2.bias']!.values]);
    expect(errorOf(() => i64.readF32('count')).code).toBe('ERR_BAD_WEIGHTS');
  });

  it('rejects a data.pkl that is not a pickle, naming the file', () => {
    // Corrupt the first byte of data.pkl, keeping the ZIP valid.
    const bytes = Buffer.from(readFileSync(AR_CKPT));
    const z = ZipReader.open(AR_CKPT);
    const pkl = z.dataOffset(z.get('tiny-ar/data.pkl')!);
    z.close();
    const broken = Buffer.from(bytes);
    broken[pkl] = 0xee;
    const f = tmp('badpickle.ckpt');
    writeFileSync(f, broken);
    const e = errorOf(() => TorchArchive.open(f));
    expect(e.code).toBe('ERR_BAD_WEIGHTS');
    expect(e.message).toMatch(/data\.pkl/);
    expect(e.message).toContain(f);
  });
});

describe('convertCheckpoint', () => {
  it('converts a Lightning .ckpt to its EMA weights: exact weights, same logits as the source weights', async () => {
    const warnings: string[] = [];
    const c = await convert(ESOLM_CKPT, { onWarning: (w) => warnings.push(w) });
    // The Hydra config's training settings are recorded (algo.alpha_0, model.length).
    const withTraining = { ...ESOLM_CONFIG, training: { algo: 'esolm', alpha0: 1, length: 64 } };
    expect(c.config).toEqual(withTraining);
    expect(JSON.parse(readFileSync(join(c.out, 'config.json'), 'utf8'))).toEqual(withTraining);
    expect(c.tensors).toBe(30);
    expect(c.source).toMatch(/Lightning checkpoint tiny-esolm\.ckpt, EMA weights \(30 parameters matched by parameter order/);
    expect(c.source).toMatch(/global_step 10/);
    expect(c.warnings).toEqual(warnings);
    expect(warnings.join('\n')).toMatch(/ignored 1 EMA tensor/);
    expect(readdirSync(c.out).sort()).toEqual(['config.json', 'model.safetensors']);
    expect(Object.values(c.weights).every((w) => w.dtype === 'F32')).toBe(true);
    expectSameWeights(c.weights, weightsOf(join(MDLM_HF, 'model.safetensors')));

    const ref = referenceFolder(ESOLM_CONFIG, join(MDLM_HF, 'model.safetensors'));
    for (const mode of ['causal', 'bidirectional'] as const) {
      const [a, b] = [await logits(c.out, mode), await logits(ref, mode)];
      expect(a.length).toBe(TOKENS.length * 61);
      expect(a).toEqual(b);
    }
  });

  it('takes the raw weights with ema: false, and writes bf16 on request', async () => {
    const raw = await convert(ESOLM_CKPT, { ema: false });
    expect(raw.source).toMatch(/raw weights \(EMA not used\)/);
    expectSameWeights(raw.weights, weightsOf(join(MDLM_HF, 'model.safetensors')), 2);
    const ref = referenceFolder(ESOLM_CONFIG, join(MDLM_HF, 'model.safetensors'));
    expect(await logits(raw.out, 'causal')).not.toEqual(await logits(ref, 'causal'));

    const bf = await convert(ESOLM_CKPT, { dtype: 'bf16' });
    expect(Object.values(bf.weights).every((w) => w.dtype === 'BF16')).toBe(true);
    expectSameWeights(bf.weights, weightsOf(join(MDLM_HF, 'model.safetensors'))); // every value is bf16-exact
  });

  it('converts the zip64 AR checkpoint: arch ar inferred, exact weights and logits', async () => {
    const c = await convert(AR_CKPT);
    expect(c.config).toEqual({ ...AR_CONFIG, training: { algo: 'ar', length: 64 } });
    expect(c.warnings).toEqual([]);
    expect(c.tensors).toBe(20);
    expectSameWeights(c.weights, weightsOf(join(AR_HUB, 'model.safetensors')));
    const ref = referenceFolder(AR_CONFIG, join(AR_HUB, 'model.safetensors'));
    expect(await logits(c.out, 'causal')).toEqual(await logits(ref, 'causal'));
  });

  it('converts the MDLM Hugging Face folder: arch mdlm from its config, fields from MDLMConfig', async () => {
    const c = await convert(MDLM_HF);
    expect(c.config).toEqual({ ...ESOLM_CONFIG, arch: 'mdlm' });
    expect(c.source).toMatch(/Hugging Face folder/);
    expect(c.warnings).toEqual([]);
    expectSameWeights(c.weights, weightsOf(join(MDLM_HF, 'model.safetensors')));
    const ref = referenceFolder(ESOLM_CONFIG, join(MDLM_HF, 'model.safetensors'));
    expect(await logits(c.out, 'bidirectional')).toEqual(await logits(ref, 'bidirectional'));
    // --arch esolm overrides the config
    expect((await convert(MDLM_HF, { arch: 'esolm' })).config.arch).toBe('esolm');
  });

  it('converts an export without the backbone. prefix and a nested hub-mixin config (ar-hub)', async () => {
    const c = await convert(AR_HUB);
    expect(c.config).toEqual({ ...AR_CONFIG, training: { algo: 'ar', length: 64 } });
    expectSameWeights(c.weights, weightsOf(join(AR_HUB, 'model.safetensors')));
  });

  it('reads an Eso-LM (B) Hugging Face config (EsoLMConfig: hidden_size, hidden_dim, mask_index, model_length)', async () => {
    const dir = tmp('esolm-b');
    mkdirSync(dir);
    copyFileSync(join(MDLM_HF, 'model.safetensors'), join(dir, 'model.safetensors'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({
      architectures: ['EsoLM'], model_type: 'EsoLM', vocab_size: 61, mask_index: 60, model_length: 64,
      hidden_size: 32, hidden_dim: 32, cond_dim: 16, n_blocks: 2, n_heads: 4, dropout: 0.1, return_dict: false,
    }));
    const c = await convert(dir);
    expect(c.config).toEqual(ESOLM_CONFIG);
    expect(c.warnings).toEqual([]);
  });

  it('infers n_heads from rotary_emb.inv_freq and defaults the length when there is no config', async () => {
    const f = join(tmp('bare'), 'weights.safetensors');
    mkdirSync(join(f, '..'));
    copyFileSync(join(MDLM_HF, 'model.safetensors'), f);
    const c = await convert(f);
    expect(c.config).toEqual({ ...ESOLM_CONFIG, length: 1024 });
    expect(c.warnings.join('\n')).toMatch(/context length is not in the source; using 1024/);
    expect((await convert(f, { length: 64 })).config).toEqual(ESOLM_CONFIG);
    // next to a config.json, a .safetensors file takes its fields from it
    expect((await convert(join(MDLM_HF, 'model.safetensors'))).config).toEqual({ ...ESOLM_CONFIG, arch: 'mdlm' });
  });

  it('needs nHeads when neither a config nor inv_freq gives it (hidden != 768)', async () => {
    const src = readSafetensors(readFileSync(join(MDLM_HF, 'model.safetensors')));
    const specs: Record<string, TensorSpec> = {};
    for (const [k, v] of Object.entries(src)) if (!k.endsWith('inv_freq')) specs[k] = { dtype: v.dtype as 'F32', shape: v.shape, data: v.values };
    const f = join(tmp('noinv'), 'weights.safetensors');
    mkdirSync(join(f, '..'));
    writeSafetensors(f, specs);
    const e = await rejectionOf(convertCheckpoint(f, tmp('out')));
    expect(e.code).toBe('ERR_INVALID_ARG');
    expect(e.message).toMatch(/--n-heads/);
    const c = await convert(f, { nHeads: 4, length: 64 });
    expect(c.config).toEqual(ESOLM_CONFIG);
  });

  it('takes mask 50257 and tokenizer gpt2 from a GPT-2 vocabulary, and reads our own config.json', async () => {
    // a GPT-2-vocabulary model (hidden 32) without config.json: mask and tokenizer from the vocab size
    const gen = makeRandomModel(tmp('gpt2vocab'), { vocab_size: 50258, prefix: true, invFreq: true, dtype: 'BF16' });
    rmSync(join(gen.dir, 'config.json'));
    const c = await convert(gen.dir);
    expect(c.config).toEqual({ arch: 'esolm', ...TINY, vocab_size: 50258, cond_dim: 16, mask_index: 50257, length: 1024, tokenizer: 'gpt2' });
    expect(Object.values(c.weights).every((w) => w.dtype === 'BF16')).toBe(true); // all-BF16 source → bf16
    expect(await loadTokenizer(c.config, c.out)).not.toBeNull();
    // converting one of our own folders reads its config.json (arch included)
    const own = makeRandomModel(tmp('own'), { arch: 'mdlm', seed: 5 });
    const c2 = await convert(own.dir);
    expect(c2.config).toEqual({ ...own.config });
    expect(c2.warnings).toEqual([]);
  });

  it('assumes 12 heads for hidden 768 when nothing says (with a warning)', async () => {
    const cfg: ModelConfig = { arch: 'esolm', hidden_size: 768, n_heads: 12, n_blocks: 1, cond_dim: 16, vocab_size: 8, mask_index: 7, length: 16 };
    const header: Record<string, unknown> = {};
    let offset = 0;
    for (const [name, shape] of expectedTensors(cfg)) {
      const dims = shape.map((d) => (d < 0 ? 256 : d));
      const bytes = dims.reduce((a, b) => a * b, 1) * 2;
      header['backbone.' + name] = { dtype: 'BF16', shape: dims, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    const f = join(tmp('h768'), 'model.safetensors');
    mkdirSync(join(f, '..'));
    writeFileSync(f, assembleSafetensors({ header: header as Header, data: Buffer.alloc(offset) }));
    const c = await convert(f, { length: 16 });
    expect(c.config).toEqual(cfg);
    expect(c.warnings.join('\n')).toMatch(/assuming 12/);
    expect(Object.values(c.weights).every((w) => w.dtype === 'BF16')).toBe(true);
  });

  it('copies a user tokenizer.json into the folder', async () => {
    const c = await convert(ESOLM_CKPT, { tokenizer: BERT_TOKENIZER });
    expect(c.config.tokenizer).toBe('tokenizer.json');
    expect(existsSync(join(c.out, 'tokenizer.json'))).toBe(true);
    expect(existsSync(join(c.out, 'tokenizer_config.json'))).toBe(true);
    const t = await loadTokenizer(c.config, c.out);
    expect([...t!.encode('hello world')]).toEqual([5, 6]);
    expect((await convert(ESOLM_CKPT, { tokenizer: 'bytes', arch: 'mdlm' })).config).toMatchObject({ tokenizer: 'bytes', arch: 'mdlm' });
  });

  it('rejects bad options and inputs with typed errors', async () => {
    const out = tmp('out');
    expect((await rejectionOf(convertCheckpoint(join(root, 'missing.ckpt'), out))).code).toBe('ERR_IO');
    expect((await rejectionOf(convertCheckpoint(ESOLM_CKPT, out, { dtype: 'f16' as 'f32' }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejectionOf(convertCheckpoint(ESOLM_CKPT, out, { arch: 'ar' }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejectionOf(convertCheckpoint(AR_CKPT, out, { arch: 'esolm' }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejectionOf(convertCheckpoint(ESOLM_CKPT, out, { tokenizer: 'no-such-tokenizer' }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejectionOf(convertCheckpoint(ESOLM_CKPT, out, { nHeads: 5 }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejectionOf(convertCheckpoint(MDLM_HF, MDLM_HF))).code).toBe('ERR_INVALID_ARG');

    const junk = tmp('junk.ckpt');
    writeFileSync(junk, 'not a checkpoint at all');
    const e = await rejectionOf(convertCheckpoint(junk, out));
    expect(e.code).toBe('ERR_BAD_WEIGHTS');
    expect(e.message).toContain(junk);

    const bytes = readFileSync(ESOLM_CKPT);
    const cut = tmp('cut.ckpt');
    writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    expect((await rejectionOf(convertCheckpoint(cut, out))).code).toBe('ERR_BAD_WEIGHTS');

    // a missing tensor is named
    const src = readSafetensors(readFileSync(join(MDLM_HF, 'model.safetensors')));
    const specs: Record<string, TensorSpec> = {};
    for (const [k, v] of Object.entries(src)) if (k !== 'backbone.blocks.1.mlp.2.bias') specs[k] = { dtype: v.dtype as 'F32', shape: v.shape, data: v.values };
    const dir = tmp('missing-tensor');
    mkdirSync(dir);
    copyFileSync(join(MDLM_HF, 'config.json'), join(dir, 'config.json'));
    writeSafetensors(join(dir, 'model.safetensors'), specs);
    const m = await rejectionOf(convertCheckpoint(dir, out));
    expect(m.code).toBe('ERR_BAD_WEIGHTS');
    expect(m.message).toContain("'blocks.1.mlp.2.bias'");

    // another model's shard in the output folder
    const busy = tmp('busy');
    mkdirSync(busy);
    writeFileSync(join(busy, 'model-00001-of-00002.safetensors'), '');
    expect((await rejectionOf(convertCheckpoint(ESOLM_CKPT, busy))).code).toBe('ERR_INVALID_ARG');
  });
});
