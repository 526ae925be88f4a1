/**
 * Weight sources for `esolm convert`: a torch.save archive (Lightning .ckpt with EMA, or a
 * plain state dict such as pytorch_model.bin), a .safetensors file, or a Hugging Face folder
 * (config.json + *.safetensors or pytorch_model.bin). Each yields tensors under normalised
 * names (no `backbone.` / `_orig_mod.` prefix), in source order, plus the source's config.
 */
import { closeSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { EsolmError } from '../errors.js';
import { IGNORED_TENSORS } from '../config.js';
import { dequantizeQ8, isQ8Matrix, Q8_SCALE_SUFFIX } from '../q8.js';
import { TorchArchive, TorchTensor, bf16ToF32, f16ToF32, toPlain } from './torch.js';

export interface SourceTensor {
  /** Name without `backbone.` (the official state-dict name). */
  name: string;
  shape: number[];
  /** F32, BF16, F16, F64, I64, ...; Q8: an esolm 8-bit matrix (I8 + F32 row scales, lib/q8.ts), read dequantized. */
  dtype: string;
  /** The values as float32 (ERR_BAD_WEIGHTS for a non-float tensor). */
  readF32(): Float32Array;
}

export interface Source {
  /** What was read, for messages: "Lightning checkpoint x.ckpt (EMA weights ...)". */
  description: string;
  tensors: SourceTensor[];
  /** The source's own config (HF config.json, or the Lightning hyper_parameters' config), plain JSON. */
  config: Record<string, unknown> | null;
  /** A folder whose tokenizer.json may be reused, if any. */
  folder: string | null;
  warnings: string[];
  close(): void;
}

export interface SourceOptions {
  /** Use the EMA weights of a Lightning checkpoint (default true). */
  ema: boolean;
}

function bad(msg: string): EsolmError {
  return new EsolmError('ERR_BAD_WEIGHTS', msg);
}

/** Strips the LightningModule / torch.compile prefixes: `backbone.`, `_orig_mod.`. */
export function normaliseName(name: string): string {
  let n = name;
  for (;;) {
    if (n.startsWith('backbone.')) n = n.slice(9);
    else if (n.startsWith('_orig_mod.')) n = n.slice(10);
    else return n;
  }
}

function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new EsolmError('ERR_IO', `cannot read ${file}: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw bad(`${file} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${file} must hold a JSON object`);
  return v as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// safetensors (lenient: any dtype may be present; only the tensors used must be floats)

const ST_SIZE: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

function safetensorsTensors(file: string, warnings: string[]): { tensors: SourceTensor[]; close(): void } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new EsolmError('ERR_IO', `cannot open ${file}: ${(e as Error).message}`);
  }
  const fail = (msg: string): never => {
    closeSync(fd);
    throw bad(`${file}: ${msg}`);
  };
  const size = fstatSync(fd).size;
  if (size < 8) fail(`file is ${size} bytes, too short for a safetensors header`);
  const lb = Buffer.alloc(8);
  readSync(fd, lb, 0, 8, 0);
  const n = lb.readBigUInt64LE(0);
  if (n > BigInt(size - 8) || n > 100_000_000n) fail(`header length ${n} is larger than the file (${size} bytes) allows`);
  const hb = Buffer.alloc(Number(n));
  readSync(fd, hb, 0, hb.length, 8);
  let header: Record<string, unknown> = {};
  try {
    header = JSON.parse(hb.toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header must be a JSON object');
  const base = 8 + hb.length;
  const tensors: SourceTensor[] = [];
  const entries = Object.entries(header).filter(([k]) => k !== '__metadata__');
  entries.sort((a, b) => ((a[1] as { data_offsets?: number[] }).data_offsets?.[0] ?? 0) - ((b[1] as { data_offsets?: number[] }).data_offsets?.[0] ?? 0));
  for (const [full, raw] of entries) {
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = String(t?.dtype);
    const shape = t?.shape;
    const off = t?.data_offsets;
    if (!Array.isArray(shape) || !shape.every((s) => Number.isInteger(s) && s >= 0)) fail(`tensor '${full}' has an invalid shape ${JSON.stringify(shape)}`);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[0] > off[1]) {
      fail(`tensor '${full}' has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [b, e] = off as [number, number];
    const numel = (shape as number[]).reduce((x, y) => x * y, 1);
    const width = ST_SIZE[dtype];
    if (width === undefined) {
      warnings.push(`${file}: tensor '${full}' has dtype ${dtype}; it can only be ignored`);
    } else if (e - b !== numel * width) {
      fail(`tensor '${full}' spans ${e - b} bytes but shape ${JSON.stringify(shape)} of ${dtype} needs ${numel * width}`);
    }
    if (base + e > size) fail(`tensor '${full}' ends at byte ${base + e} but the file has ${size} bytes (truncated?)`);
    tensors.push({
      name: normaliseName(full),
      shape: shape as number[],
      dtype,
      readF32(): Float32Array {
        const buf = Buffer.allocUnsafe(e - b);
        let done = 0;
        while (done < buf.length) {
          const k = readSync(fd, buf, done, buf.length - done, base + b + done);
          if (k === 0) throw bad(`${file}: unexpected end of file in tensor '${full}'`);
          done += k;
        }
        const bytes = new Uint8Array(buf);  // aligned copy
        switch (dtype) {
          case 'F32': return new Float32Array(bytes.buffer);
          case 'BF16': return bf16ToF32(new Uint16Array(bytes.buffer));
          case 'F16': return f16ToF32(new Uint16Array(bytes.buffer));
          case 'F64': return Float32Array.from(new Float64Array(bytes.buffer));
          default:
            // the int8 values of an esolm 8-bit matrix, which pairQ8 scales
            if (dtype === 'I8' && isQ8Matrix(normaliseName(full))) return Float32Array.from(new Int8Array(bytes.buffer));
            throw bad(`${file}: tensor '${full}' has dtype ${dtype}, expected a floating-point tensor`);
        }
      },
    });
  }
  return { tensors, close: () => closeSync(fd) };
}

function isSafetensorsFile(file: string): boolean {
  try {
    const fd = openSync(file, 'r');
    try {
      const b = Buffer.alloc(9);
      if (readSync(fd, b, 0, 9, 0) < 9) return false;
      return b.readBigUInt64LE(0) < BigInt(fstatSync(fd).size) && b[8] === 0x7b; // '{'
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

function isZip(file: string): boolean {
  try {
    const fd = openSync(file, 'r');
    try {
      const b = Buffer.alloc(4);
      return readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === 0x04034b50;
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// torch archives

function torchTensor(file: string, name: string, t: TorchTensor): SourceTensor {
  return { name, shape: t.shape, dtype: t.dtype, readF32: () => t.readF32(`${path.basename(file)}: tensor '${name}'`) };
}

function mapLike(v: unknown): Map<unknown, unknown> | null {
  return v instanceof Map ? v : null;
}

function torchSource(file: string, opts: SourceOptions, hfConfig: Record<string, unknown> | null, folder: string | null): Source {
  const archive = TorchArchive.open(file);
  try {
    const warnings: string[] = [];
    const root = mapLike(archive.root);
    if (!root) throw bad(`${file}: the pickled object is not a dict (not a checkpoint or state dict)`);
    const base = path.basename(file);
    const sdRaw = root.has('state_dict') ? mapLike(root.get('state_dict')) : root;
    if (!sdRaw) throw bad(`${file}: 'state_dict' is not a dict`);
    const all: [string, TorchTensor][] = [];
    for (const [k, v] of sdRaw) if (typeof k === 'string' && v instanceof TorchTensor) all.push([k, v]);
    if (all.length === 0) {
      throw bad(`${file}: no tensors found (top-level keys: ${[...root.keys()].slice(0, 12).map(String).join(', ')})`);
    }
    // The LightningModule holds the network as `backbone`; other modules (noise schedule,
    // metrics) are not part of it. A bare state dict may have no prefix at all.
    const hasBackbone = all.some(([k]) => k.startsWith('backbone.'));
    const picked = hasBackbone ? all.filter(([k]) => k.startsWith('backbone.')) : all;
    const tensors = picked.map(([k, t]) => torchTensor(file, normaliseName(k), t));

    let config: Record<string, unknown> | null = hfConfig;
    const hp = toPlain(root.get('hyper_parameters'));
    if (!config && hp && typeof hp === 'object') {
      const h = hp as Record<string, unknown>;
      const c = h.config ?? h.cfg ?? h;
      if (c && typeof c === 'object' && !Array.isArray(c)) config = c as Record<string, unknown>;
    }

    const isLightning = root.has('state_dict');
    let what = isLightning ? `Lightning checkpoint ${base}` : `torch state dict ${base}`;
    const step = root.get('global_step');
    const epoch = root.get('epoch');
    const progress = [typeof epoch === 'number' ? `epoch ${epoch}` : '', typeof step === 'number' ? `global_step ${step}` : ''].filter(Boolean).join(', ');

    const ema = mapLike(root.get('ema'));
    const shadow = ema?.get('shadow_params');
    if (opts.ema && isLightning) {
      if (!Array.isArray(shadow)) {
        warnings.push(`${base} has no EMA weights (no ema.shadow_params); using the raw weights`);
        what += ', raw weights (no EMA in the checkpoint)';
      } else {
        // shadow_params follow backbone.parameters(): the state-dict order without buffers.
        const params = tensors.filter((t) => !IGNORED_TENSORS.has(t.name));
        if (shadow.length < params.length) {
          throw bad(`${file}: ema.shadow_params has ${shadow.length} tensors but the backbone has ${params.length} parameters`);
        }
        for (let i = 0; i < params.length; i++) {
          const s = shadow[i];
          const p = params[i]!;
          if (!(s instanceof TorchTensor)) throw bad(`${file}: ema.shadow_params[${i}] is not a tensor`);
          if (s.shape.length !== p.shape.length || s.shape.some((d, j) => d !== p.shape[j])) {
            throw bad(`${file}: ema.shadow_params[${i}] has shape [${s.shape.join(', ')}] but parameter '${p.name}' ` +
              `(number ${i} in parameter order) has shape [${p.shape.join(', ')}]; the EMA list does not follow this state dict`);
          }
          const ix = tensors.indexOf(p);
          tensors[ix] = torchTensor(file, p.name, s);
        }
        if (shadow.length > params.length) {
          warnings.push(`${base}: ignored ${shadow.length - params.length} EMA tensor(s) after the ${params.length} backbone parameters (noise-schedule parameters)`);
        }
        const upd = ema?.get('num_updates');
        what += `, EMA weights (${params.length} parameters matched by parameter order${typeof upd === 'number' ? `, ${upd} updates` : ''})`;
      }
    } else if (isLightning) {
      what += Array.isArray(shadow) ? ', raw weights (EMA not used)' : ', raw weights';
    }
    if (progress) what += `; ${progress}`;
    return { description: what, tensors, config, folder, warnings, close: () => archive.close() };
  } catch (e) {
    archive.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * An esolm q8 folder's 8-bit matrices: each I8 `<name>` with its F32 `<name>_scale` [rows]
 * becomes one Q8 tensor read dequantized (q * scale in F32, as the engine does); the scale
 * tensor is dropped. An I8 tensor without a scale stays I8 (refused if it is used).
 */
function pairQ8(tensors: SourceTensor[]): SourceTensor[] {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const scaleNames = new Set<string>();
  const out = tensors.map((t): SourceTensor => {
    const sc = byName.get(t.name + Q8_SCALE_SUFFIX);
    if (t.dtype !== 'I8' || !isQ8Matrix(t.name) || t.shape.length !== 2 || !sc) return t;
    if (sc.dtype !== 'F32' || sc.shape.length !== 1 || sc.shape[0] !== t.shape[0]) {
      throw bad(`scale tensor '${sc.name}' is ${sc.dtype} [${sc.shape.join(', ')}], expected F32 [${t.shape[0]}]`);
    }
    scaleNames.add(sc.name);
    return {
      name: t.name, shape: t.shape, dtype: 'Q8',
      readF32(): Float32Array {
        const scale = sc.readF32();
        if (!scale.every((v) => Number.isFinite(v) && v >= 0)) throw bad(`scale tensor '${sc.name}' holds a negative, NaN or Inf value`);
        return dequantizeQ8(Int8Array.from(t.readF32()), scale, t.shape[1]!);
      },
    };
  });
  return out.filter((t) => !scaleNames.has(t.name));
}

function safetensorsSource(files: string[], config: Record<string, unknown> | null, folder: string | null, label: string): Source {
  const warnings: string[] = [];
  const opened: { tensors: SourceTensor[]; close(): void }[] = [];
  try {
    for (const f of files) opened.push(safetensorsTensors(f, warnings));
  } catch (e) {
    for (const o of opened) o.close();
    throw e;
  }
  return {
    description: label,
    tensors: pairQ8(opened.flatMap((o) => o.tensors)),
    config,
    folder,
    warnings,
    close: () => { for (const o of opened) o.close(); },
  };
}

/** Opens a .ckpt / .bin / .pt (torch.save), a .safetensors file, or a Hugging Face folder. */
export function openSource(input: string, opts: SourceOptions): Source {
  let st;
  try {
    st = statSync(input);
  } catch (e) {
    throw new EsolmError('ERR_IO', `cannot read ${input}: ${(e as Error).message}`);
  }
  if (st.isDirectory()) {
    const cfgFile = path.join(input, 'config.json');
    let config: Record<string, unknown> | null = null;
    try {
      if (statSync(cfgFile).isFile()) config = readJsonObject(cfgFile);
    } catch (e) {
      if (e instanceof EsolmError) throw e;
    }
    const names = readdirSync(input).sort();
    const st = names.filter((f) => f.endsWith('.safetensors')).map((f) => path.join(input, f));
    if (st.length > 0) return safetensorsSource(st, config, input, `Hugging Face folder ${input} (${st.length} safetensors file${st.length > 1 ? 's' : ''})`);
    const bin = names.find((f) => f === 'pytorch_model.bin');
    if (bin) {
      const s = torchSource(path.join(input, bin), opts, config, input);
      s.description = `Hugging Face folder ${input} (${s.description})`;
      return s;
    }
    throw bad(`folder ${input} has no .safetensors file and no pytorch_model.bin`);
  }
  if (isZip(input)) {
    return torchSource(input, opts, null, null);
  }
  if (isSafetensorsFile(input)) {
    const dir = path.dirname(input);
    const cfgFile = path.join(dir, 'config.json');
    let config: Record<string, unknown> | null = null;
    try {
      if (statSync(cfgFile).isFile()) config = readJsonObject(cfgFile);
    } catch (e) {
      if (e instanceof EsolmError) throw e;
    }
    return safetensorsSource([input], config, dir, `safetensors file ${path.basename(input)}`);
  }
  const head = Buffer.alloc(2);
  try {
    const fd = openSync(input, 'r');
    readSync(fd, head, 0, 2, 0);
    closeSync(fd);
  } catch { /* reported below */ }
  if (head[0] === 0x80) {
    throw bad(`${input} is a legacy (pre-1.6, non-zip) torch file, which is not supported; ` +
      're-save it with torch.save(obj, path) from torch >= 1.6');
  }
  throw bad(`${input} is neither a torch.save archive (.ckpt, .pt, .bin) nor a safetensors file`);
}
