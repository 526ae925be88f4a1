// Test-only safetensors writer (and a few tools to build corrupt files).
//
// Format: 8-byte little-endian u64 header length N, N bytes of JSON header
// ({ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": {...} }),
// then the data buffer; offsets are relative to the start of the data buffer.
// Tensors are stored contiguously in the header's order.
//
// Rounding: F32 = Math.fround (round to nearest even); BF16 = round-to-nearest-even
// of the f32 bits (so f64 -> f32 -> bf16, as torch does for an f32 tensor); F16 =
// correctly rounded IEEE binary16 (round to nearest even) straight from the f64 value.
// roundTo(dtype, data) returns exactly the values the file holds.
import { writeFileSync } from 'node:fs';

export type Dtype = 'F32' | 'BF16' | 'F16';

export interface TensorSpec {
  dtype: Dtype;
  shape: number[];
  data: Float64Array | Float32Array;
}

export interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export type Header = Record<string, HeaderEntry | Record<string, string>>;

export const DTYPE_BYTES: Record<Dtype, number> = { F32: 4, BF16: 2, F16: 2 };

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f32 value -> bf16 bits, round to nearest even (NaN -> quiet NaN). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) return ((u >>> 16) | 0x0040) & 0xffff;
  const rounded = (u + 0x7fff + ((u >>> 16) & 1)) >>> 0;
  return (rounded >>> 16) & 0xffff;
}

export function bf16BitsToNumber(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

function roundHalfEven(v: number): number {
  // v >= 0, exact in f64 for the magnitudes used here (< 2^53)
  const fl = Math.floor(v);
  const d = v - fl;
  if (d > 0.5) return fl + 1;
  if (d < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

/** f64 value -> IEEE binary16 bits, correctly rounded (nearest even). */
export function numberToF16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  let a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  if (a === 0) return sign;
  // subnormal range: a < 2^-14 -> multiples of 2^-24
  if (a < 2 ** -14) {
    const m = roundHalfEven(a * 2 ** 24); // exact scaling
    return sign | m; // m may be 1024 = smallest normal, which is the right encoding
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  if (2 ** (e + 1) <= a) e += 1;
  let m = roundHalfEven((a / 2 ** e) * 1024); // in [1024, 2048]
  if (m === 2048) {
    m = 1024;
    e += 1;
  }
  if (e > 15) return sign | 0x7c00; // overflow -> inf
  return sign | ((e + 15) << 10) | (m - 1024);
}

export function f16BitsToNumber(b: number): number {
  const sign = b & 0x8000 ? -1 : 1;
  const e = (b >>> 10) & 0x1f;
  const m = b & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/** The values a tensor of this dtype holds after storing `data`. */
export function roundTo(dtype: Dtype, data: Float64Array | Float32Array | ArrayLike<number>): Float64Array {
  const out = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (dtype === 'F32') out[i] = Math.fround(x);
    else if (dtype === 'BF16') out[i] = bf16BitsToNumber(f32ToBf16Bits(Math.fround(x)));
    else if (dtype === 'F16') out[i] = f16BitsToNumber(numberToF16Bits(x));
    else throw new Error(`unknown dtype ${dtype as string}`);
  }
  return out;
}

/** Little-endian bytes of `data` in `dtype`. */
export function encodeTensor(dtype: Dtype, data: Float64Array | Float32Array | ArrayLike<number>): Buffer {
  const bytes = Buffer.alloc(data.length * DTYPE_BYTES[dtype]);
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (dtype === 'F32') bytes.writeFloatLE(x, 4 * i);
    else if (dtype === 'BF16') bytes.writeUInt16LE(f32ToBf16Bits(Math.fround(x)), 2 * i);
    else bytes.writeUInt16LE(numberToF16Bits(x), 2 * i);
  }
  return bytes;
}

export interface Parts {
  /** Header object (tensor entries in data order, then "__metadata__"). Mutable: edit it to corrupt. */
  header: Header;
  /** The data buffer that follows the header. */
  data: Buffer;
  /** Names in data order. */
  order: string[];
}

/** Header + data of a valid file, not yet serialised. */
export function safetensorsParts(tensors: Record<string, TensorSpec>, metadata: Record<string, string> = { format: 'pt' }): Parts {
  const header: Header = {};
  const chunks: Buffer[] = [];
  const order: string[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new Error(`${name}: shape [${t.shape}] needs ${count} values, got ${t.data.length}`);
    const bytes = encodeTensor(t.dtype, t.data);
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    order.push(name);
    offset += bytes.length;
  }
  header['__metadata__'] = metadata;
  return { header, data: Buffer.concat(chunks), order };
}

export interface AssembleOptions {
  /** Header: an object (JSON-serialised, padded with spaces to 8 bytes), or raw text/bytes used as they are. */
  header: Header | string | Uint8Array;
  data: Uint8Array;
  /** Value written in the 8-byte length prefix (default: the real header length). */
  declaredHeaderLength?: number | bigint;
}

/** Serialise header + data into file bytes (no validation: used for corrupt files too). */
export function assembleSafetensors(opts: AssembleOptions): Buffer {
  let headerBytes: Buffer;
  if (typeof opts.header === 'string') headerBytes = Buffer.from(opts.header, 'utf8');
  else if (opts.header instanceof Uint8Array) headerBytes = Buffer.from(opts.header);
  else {
    let json = JSON.stringify(opts.header);
    while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
    headerBytes = Buffer.from(json, 'utf8');
  }
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(opts.declaredHeaderLength ?? headerBytes.length));
  return Buffer.concat([prefix, headerBytes, Buffer.from(opts.data)]);
}

/** Write a valid safetensors file. Returns the values each tensor holds (after dtype rounding). */
export function writeSafetensors(
  path: string,
  tensors: Record<string, TensorSpec>,
  metadata?: Record<string, string>,
): Record<string, Float64Array> {
  const parts = safetensorsParts(tensors, metadata);
  writeFileSync(path, assembleSafetensors({ header: parts.header, data: parts.data }));
  const stored: Record<string, Float64Array> = {};
  for (const [name, t] of Object.entries(tensors)) stored[name] = roundTo(t.dtype, t.data);
  return stored;
}

/** Write raw bytes (header + data built by the caller, possibly truncated). */
export function writeRawSafetensors(path: string, opts: AssembleOptions & { truncateTo?: number }): void {
  let bytes = assembleSafetensors(opts);
  if (opts.truncateTo !== undefined) bytes = bytes.subarray(0, opts.truncateTo);
  writeFileSync(path, bytes);
}

/** Parse a file's bytes back (for self-checks of this helper). */
export function readSafetensors(bytes: Buffer): Record<string, { dtype: string; shape: number[]; values: Float64Array }> {
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Header;
  const base = 8 + n;
  const out: Record<string, { dtype: string; shape: number[]; values: Float64Array }> = {};
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const entry = e as HeaderEntry;
    const [b, end] = entry.data_offsets;
    const width = DTYPE_BYTES[entry.dtype as Dtype];
    const count = (end - b) / width;
    const values = new Float64Array(count);
    for (let i = 0; i < count; i++) {
      const at = base + b + i * width;
      if (entry.dtype === 'F32') values[i] = bytes.readFloatLE(at);
      else if (entry.dtype === 'BF16') values[i] = bf16BitsToNumber(bytes.readUInt16LE(at));
      else values[i] = f16BitsToNumber(bytes.readUInt16LE(at));
    }
    out[name] = { dtype: entry.dtype, shape: entry.shape, values };
  }
  return out;
}
