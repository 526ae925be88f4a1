// 8-bit weights as a file format (README "Model folders"): `esolm convert --dtype q8` and
// writeRandomModel({ dtype: 'Q8' }) write I8 `<name>` + F32 `<name>_scale` [rows] by the
// engine's rule bit for bit, so a q8 folder loaded with weights 'q8' runs exactly as its F32
// source loaded with weights 'q8'; loaded with 'f32' it is dequantized; malformed q8 files
// get typed errors from the TS loader and (behind it) from the engine.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { defaultModelDir, Model, readModelFolder, readSafetensorsHeader } from '../lib/index.js';
import { weightsFileFormat } from '../lib/model.js';
import { convertCheckpoint } from '../lib/checkpoint/convert.js';
import { buildProgram } from '../lib/cli.js';
import { loadCpuAddon } from '../lib/loader.js';
import { quantizeQ8 } from '../lib/q8.js';
import { writeRandomModel } from '../lib/testing.js';
import type { ModelConfig } from '../lib/config.js';

const CFG: ModelConfig = { arch: 'esolm', hidden_size: 64, n_heads: 4, n_blocks: 2, cond_dim: 16, vocab_size: 61, mask_index: 60, length: 64 };
const TOKENS = Int32Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 60);

let root: string;
const dir = (name: string): string => path.join(root, name);

interface RawTensor { dtype: string; shape: number[]; bytes: Buffer }

/** The tensors of a safetensors file with their raw bytes, in file order. */
function readRaw(file: string): Map<string, RawTensor> {
  const buf = readFileSync(file);
  const out = new Map<string, RawTensor>();
  for (const e of readSafetensorsHeader(file)) out.set(e.name, { dtype: e.dtype, shape: e.shape, bytes: buf.subarray(e.offset, e.offset + e.nbytes) });
  return out;
}

/** Writes tensors (in map order) and optional metadata as a safetensors file. */
function writeRaw(file: string, tensors: Map<string, RawTensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let off = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, json);
    for (const t of tensors.values()) writeSync(fd, t.bytes);
  } finally {
    closeSync(fd);
  }
}

/** A copy of the q8 folder with its tensors edited. */
function editedQ8(name: string, edit: (t: Map<string, RawTensor>) => void, metadata?: Record<string, string>): string {
  const out = dir(name);
  writeRandomModel(out, CFG, { seed: 7, dtype: 'Q8' });
  const file = path.join(out, 'model.safetensors');
  const tensors = readRaw(file);
  edit(tensors);
  writeRaw(file, tensors, metadata);
  return out;
}

async function logits(folder: string, weights: 'f32' | 'q8' | 'auto'): Promise<{ out: Float32Array; storage: string }> {
  const m = await Model.load(folder, { backend: 'cpu', weights });
  try {
    return { out: await m.forward({ tokens: TOKENS }), storage: m.weights };
  } finally {
    m.dispose();
  }
}

function maxDiff(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  let diff = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return { diff, scale };
}

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'esolm-q8-'));
  writeRandomModel(dir('f32'), CFG, { seed: 7 });
  // Ties for the rounding rule in the (ungated) head: row r holds 127 and values k + 0.5, so
  // scale = 1 and w / scale = k + 0.5 exactly; they must round half to even, as the engine does.
  const file = path.join(dir('f32'), 'model.safetensors');
  const tensors = readRaw(file);
  const head = tensors.get('output_layer.linear.weight')!;
  const w = new Float32Array(head.bytes.buffer.slice(head.bytes.byteOffset, head.bytes.byteOffset + head.bytes.length));
  const [V, d] = head.shape as [number, number];
  for (let r = 0; r < V; r++) {
    for (let c = 0; c < d; c++) w[r * d + c] = c === 0 ? 127 : ((r * 31 + c * 17) % 253) - 126.5;
  }
  // ... scaled down by a power of two (exact), so the logits stay moderate
  for (let i = 0; i < w.length; i++) w[i] = w[i]! / 1024;
  tensors.set('output_layer.linear.weight', { ...head, bytes: Buffer.from(w.buffer) });
  writeRaw(file, tensors, { format: 'pt' });
  const r = await convertCheckpoint(dir('f32'), dir('conv'), { dtype: 'q8' });
  expect(r.warnings.join('\n')).toMatch(/dtype q8 was asked for/);
  writeRandomModel(dir('q8'), CFG, { seed: 7, dtype: 'Q8' });
  writeRandomModel(dir('f32b'), CFG, { seed: 7 });  // the same seed without the edited head
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('q8 model folders', () => {
  it('convert --dtype q8 writes I8 matrices with F32 row scales by the rule, the rest as F32', () => {
    const t = readRaw(path.join(dir('conv'), 'model.safetensors'));
    const src = readRaw(path.join(dir('f32'), 'model.safetensors'));
    const i8 = [...t].filter(([, v]) => v.dtype === 'I8').map(([k]) => k).sort();
    expect(i8).toEqual([
      'blocks.0.attn_out.weight', 'blocks.0.attn_qkv.weight', 'blocks.0.mlp.0.weight', 'blocks.0.mlp.2.weight',
      'blocks.1.attn_out.weight', 'blocks.1.attn_qkv.weight', 'blocks.1.mlp.0.weight', 'blocks.1.mlp.2.weight',
      'output_layer.linear.weight',
    ]);
    for (const name of i8) {
      const sc = t.get(name + '_scale')!;
      expect(sc.dtype).toBe('F32');
      expect(sc.shape).toEqual([t.get(name)!.shape[0]]);
    }
    for (const [name, v] of t) {
      if (v.dtype !== 'I8' && !name.endsWith('_scale')) expect(v.bytes.equals(src.get(name)!.bytes), name).toBe(true);
    }
    // the head's ties round half to even: q = round(w / (1/1024)) for row 0
    const head = t.get('output_layer.linear.weight')!.bytes;
    const q = new Int8Array(head.buffer, head.byteOffset, head.length);
    const scale0 = t.get('output_layer.linear.weight_scale')!.bytes.readFloatLE(0);
    expect(scale0).toBe(1 / 1024);
    const expectRow0 = Array.from({ length: CFG.hidden_size }, (_, c) => {
      if (c === 0) return 127;
      const v = ((c * 17) % 253) - 126.5;
      const f = Math.floor(v);
      return f % 2 === 0 ? f : f + 1;
    });
    expect(Array.from(q.subarray(0, CFG.hidden_size))).toEqual(expectRow0);
    expect(readSafetensorsHeader(path.join(dir('conv'), 'model.safetensors')).length).toBe(src.size + 9);
  });

  it('quantizeQ8 follows the rule: per-row max / 127, half to even, zero rows stay zero', () => {
    const w = Float32Array.from([127, 0.5, 1.5, -2.5, -127, 0, 0, 0, 0, 0, 2, -1, 1 / 3, 0.5, 0]);
    const { q, scale } = quantizeQ8(w, 3, 5);
    expect(Array.from(scale)).toEqual([1, 0, Math.fround(2 / 127)]);
    expect(Array.from(q)).toEqual([127, 0, 2, -2, -127, 0, 0, 0, 0, 0, 127, -64, 21, 32, 0]);
    expect(() => quantizeQ8(Float32Array.from([1, NaN]), 1, 2, 'tensor x')).toThrow(/tensor x holds NaN or Inf/);
  });

  it('writeRandomModel Q8 is the F32 folder of the same seed converted', async () => {
    const conv = dir('conv-b');
    await convertCheckpoint(dir('f32b'), conv, { dtype: 'q8' });
    const a = readRaw(path.join(conv, 'model.safetensors'));
    const b = readRaw(path.join(dir('q8'), 'model.safetensors'));
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
    for (const [name, t] of a) expect(t.bytes.equals(b.get(name)!.bytes), name).toBe(true);
  });

  it("weights 'q8' on a q8 folder runs exactly as its F32 source with weights 'q8' (the gated matrices too)", async () => {
    const fromF32 = await logits(dir('f32'), 'q8');
    const fromFile = await logits(dir('conv'), 'q8');
    expect(fromFile.storage).toBe('q8');
    expect(Array.from(fromFile.out)).toEqual(Array.from(fromF32.out));
    const random = await logits(dir('q8'), 'q8');
    expect(Array.from(random.out)).toEqual(Array.from((await logits(dir('f32b'), 'q8')).out));
  });

  it("weights 'auto' picks q8 for a q8 folder; 'f32' dequantizes it, within int8 rounding of the F32 weights", async () => {
    const auto = await logits(dir('q8'), 'auto');
    expect(auto.storage).toBe('q8');
    const q8 = await logits(dir('q8'), 'q8');
    expect(Array.from(auto.out)).toEqual(Array.from(q8.out));
    const deq = await logits(dir('q8'), 'f32');
    expect(deq.storage).toBe('f32');
    const ref = await logits(dir('f32b'), 'f32');
    const e = maxDiff(ref.out, deq.out);
    expect(e.diff).toBeGreaterThan(0);               // the file really is 8-bit
    expect(e.diff).toBeLessThan(0.05 * e.scale);     // ... and close to its F32 source
    // the same values, only another kernel: F32 dequantized vs int8 in the kernel
    const same = maxDiff(deq.out, q8.out);
    expect(same.diff).toBeLessThan(1e-4 * same.scale);
  });

  it('convert reads a q8 folder: dequantized to f32, or kept q8 by default', async () => {
    const r = await convertCheckpoint(dir('q8'), dir('q8-to-f32'), { dtype: 'f32' });
    expect(r.warnings.join('\n')).toMatch(/8-bit matrices are dequantized/);
    expect(readSafetensorsHeader(path.join(dir('q8-to-f32'), 'model.safetensors')).every((e) => e.dtype === 'F32')).toBe(true);
    expect(Array.from((await logits(dir('q8-to-f32'), 'f32')).out)).toEqual(Array.from((await logits(dir('q8'), 'f32')).out));
    await convertCheckpoint(dir('q8'), dir('q8-to-q8'), {});
    const a = readRaw(path.join(dir('q8-to-q8'), 'model.safetensors'));
    const b = readRaw(path.join(dir('q8'), 'model.safetensors'));
    for (const [name, t] of b) {
      if (t.dtype === 'I8') expect(a.get(name)!.bytes.equals(t.bytes), name).toBe(true);  // int8 values survive
    }
  });

  it('a Lightning checkpoint converts to q8 as to F32 quantized at load', async () => {
    const ckpt = path.join(import.meta.dirname, 'fixtures', 'checkpoints', 'tiny-esolm.ckpt');
    await convertCheckpoint(ckpt, dir('ckpt-f32'), { dtype: 'f32' });
    await convertCheckpoint(ckpt, dir('ckpt-q8'), { dtype: 'q8' });
    expect(weightsFileFormat(readModelFolder(dir('ckpt-q8')).entries)).toBe('q8 + F32');
    const { vocab_size: V } = readModelFolder(dir('ckpt-q8')).config;
    const tokens = Int32Array.from({ length: 12 }, (_, i) => (i * 5) % (V - 1));
    const a = await Model.load(dir('ckpt-q8'), { backend: 'cpu' });
    const b = await Model.load(dir('ckpt-f32'), { backend: 'cpu', weights: 'q8' });
    expect(Array.from(await a.forward({ tokens }))).toEqual(Array.from(await b.forward({ tokens })));
    a.dispose();
    b.dispose();
  });

  it('the packaged default model converts to q8, keeping its tokenizer and sampling settings, and runs as BF16 + q8', async () => {
    const out = dir('default-q8');
    await convertCheckpoint(defaultModelDir(), out, { dtype: 'q8' });
    const { config, entries } = readModelFolder(out);
    const own = readModelFolder(defaultModelDir()).config;
    expect(config.tokenizer).toBe('bytes');
    expect(config.sampling).toEqual(own.sampling);
    expect(config.training).toEqual(own.training);
    expect(weightsFileFormat(entries)).toBe('q8 + BF16');
    const tokens = Int32Array.from({ length: 40 }, (_, i) => (i * 11) % 256);
    const a = await Model.load(out, { backend: 'cpu' });
    const b = await Model.load(defaultModelDir(), { backend: 'cpu', weights: 'q8' });
    expect(Array.from(await a.forward({ tokens }))).toEqual(Array.from(await b.forward({ tokens })));
    a.dispose();
    b.dispose();
  });

  it('esolm convert --dtype q8 and esolm info (file format and storage)', async () => {
    let out = '';
    const spyLog = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => { out += a.join(' ') + '\n'; });
    const spyOut = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => { out += String(c); return true; });
    const spyErr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await buildProgram().exitOverride().parseAsync(['node', 'esolm', 'convert', dir('f32b'), dir('cli-q8'), '--dtype', 'q8']);
      await buildProgram().exitOverride().parseAsync(['node', 'esolm', 'info', '-m', dir('cli-q8'), '--backend', 'cpu']);
      await buildProgram().exitOverride().parseAsync(['node', 'esolm', 'info', '-m', dir('f32b'), '--backend', 'cpu', '--json']);
    } finally {
      spyLog.mockRestore();
      spyOut.mockRestore();
      spyErr.mockRestore();
    }
    expect(out).toContain(`wrote ${dir('cli-q8')}`);
    expect(out).toContain('weights    file q8 + F32, held as q8 on cpu');
    expect(JSON.parse(out.slice(out.indexOf('{'))).weights).toEqual({ file: 'F32', storage: 'f32' });
  });
});

describe('malformed q8 files', () => {
  const bad = async (folder: string, message: RegExp): Promise<void> => {
    await expect(Model.load(folder, { backend: 'cpu' })).rejects.toMatchObject({ code: 'ERR_BAD_WEIGHTS', message: expect.stringMatching(message) });
  };
  const QKV = 'blocks.0.attn_qkv.weight';

  it('an I8 matrix without its scale, or with a scale of the wrong shape or dtype', async () => {
    await bad(editedQ8('no-scale', (t) => t.delete(QKV + '_scale')), /'blocks.0.attn_qkv.weight' is I8 but its scale tensor 'blocks.0.attn_qkv.weight_scale' is missing/);
    await bad(editedQ8('short-scale', (t) => {
      const s = t.get(QKV + '_scale')!;
      t.set(QKV + '_scale', { dtype: 'F32', shape: [s.shape[0]! - 1], bytes: s.bytes.subarray(4) });
    }), /scale tensor 'blocks.0.attn_qkv.weight_scale' is F32 \[191\], expected F32 \[192\]/);
    await bad(editedQ8('bf16-scale', (t) => {
      const s = t.get(QKV + '_scale')!;
      t.set(QKV + '_scale', { dtype: 'BF16', shape: s.shape, bytes: s.bytes.subarray(0, s.bytes.length / 2) });
    }), /is BF16 \[192\], expected F32 \[192\]/);
  });

  it('a scale whose matrix is not I8, an I8 tensor the schema does not allow, an unknown quantization', async () => {
    const f32 = readRaw(path.join(dir('f32b'), 'model.safetensors'));
    await bad(editedQ8('orphan-scale', (t) => t.set(QKV, f32.get(QKV)!)), /'blocks.0.attn_qkv.weight_scale' is a scale, but 'blocks.0.attn_qkv.weight' is not stored as I8/);
    await bad(editedQ8('i8-embedding', (t) => {
      const e = t.get('vocab_embed.embedding')!;
      t.set('vocab_embed.embedding', { dtype: 'I8', shape: e.shape, bytes: e.bytes.subarray(0, e.bytes.length / 4) });
      t.set('vocab_embed.embedding_scale', { dtype: 'F32', shape: [e.shape[0]!], bytes: Buffer.alloc(4 * e.shape[0]!) });
    }), /'vocab_embed.embedding' is I8, but only the linear matrices/);
    await bad(editedQ8('q4', () => {}, { quantization: 'q4-block' }), /quantization "q4-block"; only "q8-row"/);
  });

  it('the engine refuses negative or non-finite scales, -128, and I8 where the schema does not allow it', async () => {
    const scaleSet = (v: number) => (t: Map<string, RawTensor>): void => {
      const s = t.get(QKV + '_scale')!;
      const b = Buffer.from(s.bytes);
      b.writeFloatLE(v, 4 * 5);
      t.set(QKV + '_scale', { ...s, bytes: b });
    };
    await bad(editedQ8('neg-scale', scaleSet(-0.5)), /'blocks.0.attn_qkv.weight_scale' holds a negative, NaN or Inf value/);
    await bad(editedQ8('nan-scale', scaleSet(NaN)), /holds a negative, NaN or Inf value/);
    await bad(editedQ8('minus-128', (t) => {
      const m = t.get(QKV)!;
      const b = Buffer.from(m.bytes);
      b.writeInt8(-128, 100);
      t.set(QKV, { ...m, bytes: b });
    }), /'blocks.0.attn_qkv.weight' holds the int8 value -128/);
    // Behind the TS loader: the engine's own schema check.
    const folder = editedQ8('i8-norm-native', () => {});
    const { config, entries } = readModelFolder(folder);
    const i8 = entries.filter((e) => e.dtype === 'I8');
    // Present the head's I8 data as an extra tensor name the schema does not allow as I8.
    const renamed = entries.map((e) => (e.name === 'output_layer.linear.weight' ? { ...e, name: 'vocab_embed.embedding' }
      : e.name === 'output_layer.linear.weight_scale' ? { ...e, name: 'vocab_embed.embedding_scale' }
        : e.name === 'vocab_embed.embedding' ? { ...e, name: 'output_layer.linear.weight' } : e));
    expect(i8.length).toBe(9);
    const addon = loadCpuAddon();
    const err = await addon.loadModel({ ...config, cond_dim: config.cond_dim ?? 0 }, renamed, 'cpu', 1, 'q8').then(() => null, (x: { code: string; message: string }) => x);
    expect(err?.code).toBe('ERR_BAD_WEIGHTS');
    expect(err?.message).toMatch(/'vocab_embed.embedding' is I8, but only the linear matrices/);
  });
});
