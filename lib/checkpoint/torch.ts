/**
 * Reads torch.save archives (PyTorch Lightning .ckpt, pytorch_model.bin) without Python:
 * the ZIP (zip.ts) holds `<archive>/data.pkl`, a pickle, and `<archive>/data/<key>`, the raw
 * little-endian bytes of each storage. The pickle is parsed by pickleparser; no Python code
 * runs. Only the names torch uses to rebuild tensors are given meaning:
 *
 * - `('storage', torch.<T>Storage, key, location, numel)` persistent ids → {@link TorchStorage};
 * - `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` (and _v3, the legacy
 *   `_rebuild_tensor`, `_rebuild_parameter*`, `torch._tensor._rebuild_from_type_v2`) →
 *   {@link TorchTensor}, a lazy view that honours storage_offset and stride;
 * - `collections.OrderedDict` → Map; `_codecs.encode` → bytes.
 *
 * Every other class (omegaconf configs, tokenizers, ...) becomes an inert object that keeps
 * its pickled state (dict items, list items, BUILD state) so nothing fails on it.
 * Tensor data is read only when asked for.
 */
import { NameRegistry, Parser } from 'pickleparser';
import { EsolmError } from '../errors.js';
import { ZipReader, type ZipEntry } from './zip.js';

export type TorchDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const ITEMSIZE: Record<TorchDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

const STORAGE_TYPES: Record<string, TorchDType> = {
  DoubleStorage: 'F64', FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8',
  ByteStorage: 'U8', BoolStorage: 'BOOL', UntypedStorage: 'U8',
};

const DTYPES: Record<string, TorchDType> = {
  float64: 'F64', double: 'F64', float32: 'F32', float: 'F32', float16: 'F16', half: 'F16',
  bfloat16: 'BF16', int64: 'I64', long: 'I64', int32: 'I32', int: 'I32', int16: 'I16',
  short: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
};

/** One storage (`data/<key>` in the archive), shared by every view of it. */
export class TorchStorage {
  constructor(
    readonly archive: TorchArchive,
    readonly key: string,
    /** Element type, or null for a storage class this reader does not know. */
    readonly dtype: TorchDType | null,
    readonly typeName: string,
    readonly entry: ZipEntry,
  ) {}
}

export type TensorData = Float64Array | Float32Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/** A tensor as pickled: a strided view of a storage. */
export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly dtype: TorchDType,
    readonly shape: number[],
    readonly stride: number[],
    readonly storageOffset: number,
  ) {}

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Whether the view is C-contiguous (its elements are one run of the storage). */
  get contiguous(): boolean {
    let expect = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.stride[i] !== expect) return false;
      expect *= this.shape[i]!;
    }
    return true;
  }

  /**
   * The values in C order: F64 → Float64Array, F32/F16/BF16 → Float32Array (exact),
   * I64 → BigInt64Array, I32/I16/I8 → Int32Array/Int16Array/Int8Array, U8/BOOL → Uint8Array.
   */
  read(): TensorData {
    const raw = gatherRaw(this);
    switch (this.dtype) {
      case 'F64': return new Float64Array(raw.buffer);
      case 'F32': return new Float32Array(raw.buffer);
      case 'F16': return f16ToF32(new Uint16Array(raw.buffer));
      case 'BF16': return bf16ToF32(new Uint16Array(raw.buffer));
      case 'I64': return new BigInt64Array(raw.buffer);
      case 'I32': return new Int32Array(raw.buffer);
      case 'I16': return new Int16Array(raw.buffer);
      case 'I8': return new Int8Array(raw.buffer);
      default: return raw;
    }
  }

  /** The values as float32 (floating dtypes only; F64 is rounded to nearest). */
  readF32(name = 'tensor'): Float32Array {
    if (this.dtype !== 'F32' && this.dtype !== 'F16' && this.dtype !== 'BF16' && this.dtype !== 'F64') {
      throw new EsolmError('ERR_BAD_WEIGHTS', `${this.storage.archive.file}: ${name} has dtype ${this.dtype}, expected a floating-point tensor`);
    }
    const v = this.read();
    return v instanceof Float32Array ? v : Float32Array.from(v as Float64Array);
  }
}

export function bf16ToF32(u16: Uint16Array): Float32Array {
  const out = new Uint32Array(u16.length);
  for (let i = 0; i < u16.length; i++) out[i] = u16[i]! << 16;
  return new Float32Array(out.buffer);
}

export function f16ToF32(u16: Uint16Array): Float32Array {
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) {
    const h = u16[i]!;
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1024 + m) * 2 ** (e - 25);
  }
  return out;
}

/** The view's elements, gathered in C order, as raw bytes in a fresh (aligned) buffer. */
function gatherRaw(t: TorchTensor): Uint8Array {
  const st = t.storage;
  const archive = st.archive;
  const where = `${archive.file}: storage '${st.key}'`;
  if (st.dtype === null) throw new EsolmError('ERR_BAD_WEIGHTS', `${where} has unsupported type ${st.typeName}`);
  const size = ITEMSIZE[t.dtype];
  const n = t.numel;
  if (n === 0) return new Uint8Array(0);
  if (t.storageOffset < 0 || t.stride.some((s) => s < 0)) throw new EsolmError('ERR_BAD_WEIGHTS', `${where}: negative offset or stride`);
  let last = t.storageOffset;
  for (let i = 0; i < t.shape.length; i++) last += (t.shape[i]! - 1) * t.stride[i]!;
  const capacity = Math.floor(st.entry.size / size);
  if (last >= capacity) {
    throw new EsolmError('ERR_BAD_WEIGHTS',
      `${where} holds ${capacity} elements but a tensor view of shape [${t.shape.join(', ')}] reaches element ${last} (truncated?)`);
  }
  const zip = archive.zip();
  if (t.contiguous) {
    return new Uint8Array(zip.readRange(st.entry, t.storageOffset * size, n * size));
  }
  const span = new Uint8Array(zip.readRange(st.entry, t.storageOffset * size, (last - t.storageOffset + 1) * size));
  const out = new Uint8Array(n * size);
  const rank = t.shape.length;
  const idx = new Array<number>(rank).fill(0);
  let src = 0;
  for (let k = 0; k < n; k++) {
    out.set(span.subarray(src * size, src * size + size), k * size);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      src += t.stride[d]!;
      if (idx[d]! < t.shape[d]!) break;
      src -= idx[d]! * t.stride[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

type Ctor = (new (...args: any[]) => any) | ((...args: any[]) => any); // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Classes the reader does not know: instances keep their constructor args, dict items
 * (`__items__`), list items (`__list__`) and BUILD state (own properties).
 */
function inertClass(module: string, name: string): Ctor {
  function Inert(this: Record<string, unknown> | undefined, ...args: unknown[]): object {
    const self = (new.target ? this : Object.create(Inert.prototype)) as Record<string, unknown>;
    Object.defineProperty(self, '__args__', { value: args, enumerable: false });
    return self;
  }
  Object.assign(Inert.prototype, {
    __module__: module,
    __name__: name,
    set(this: { __items__?: Map<unknown, unknown> }, k: unknown, v: unknown) {
      (this.__items__ ??= new Map()).set(k, v);
    },
    push(this: { __list__?: unknown[] }, ...v: unknown[]) {
      (this.__list__ ??= []).push(...v);
    },
    __setnewargs_ex__() {},
  });
  return Inert as unknown as Ctor;
}

class TolerantRegistry extends NameRegistry {
  override onMissingName(module: string, name: string): Ctor {
    const fqn = NameRegistry.getFullyQualifiedName(module, name);
    let c = this._registry.get(fqn);
    if (!c) {
      c = inertClass(module, name);
      this._registry.set(fqn, c);
    }
    return c;
  }
}

interface StorageMarker { __storage_dtype__: TorchDType; __storage_name__: string }
interface DtypeMarker { __torch_dtype__: TorchDType }

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

/** An opened torch.save archive. `root` is the unpickled object (dicts are Maps). */
export class TorchArchive {
  readonly file: string;
  /** Entry-name prefix of the archive's records (`<name>/`). */
  readonly prefix: string;
  root: unknown = null;
  private zip_: ZipReader | null;
  private readonly storages = new Map<string, TorchStorage>();

  private constructor(file: string, zip: ZipReader, prefix: string) {
    this.file = file;
    this.zip_ = zip;
    this.prefix = prefix;
  }

  /** @internal */
  zip(): ZipReader {
    if (!this.zip_) throw new EsolmError('ERR_IO', `${this.file} has been closed`);
    return this.zip_;
  }

  close(): void {
    this.zip_?.close();
    this.zip_ = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Opens and unpickles a torch.save ZIP archive. ERR_IO if unreadable; ERR_BAD_WEIGHTS if not a valid archive. */
  static open(file: string): TorchArchive {
    const zip = ZipReader.open(file);
    try {
      const pkls = [...zip.entries.keys()].filter((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
      if (pkls.length === 0) throw new EsolmError('ERR_BAD_WEIGHTS', `${file}: ZIP archive has no data.pkl (not a torch.save file)`);
      pkls.sort((a, b) => a.length - b.length);
      const prefix = pkls[0]!.slice(0, -'data.pkl'.length);
      const archive = new TorchArchive(file, zip, prefix);
      const bo = zip.get(prefix + 'byteorder');
      if (bo) {
        const order = zip.read(bo).toString('latin1').trim();
        if (order !== 'little') throw new EsolmError('ERR_BAD_WEIGHTS', `${file}: byteorder '${order}' is not supported (little-endian only)`);
      }
      archive.root = archive.unpickle(zip.read(zip.get(pkls[0]!)!));
      return archive;
    } catch (e) {
      zip.close();
      throw e;
    }
  }

  private bad(msg: string): EsolmError {
    return new EsolmError('ERR_BAD_WEIGHTS', `${this.file}: ${msg}`);
  }

  private storage(pid: unknown): TorchStorage {
    if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) throw this.bad(`unknown persistent id ${JSON.stringify(pid)}`);
    const [, type, key, , numel] = pid as [string, unknown, unknown, unknown, unknown];
    const k = String(key);
    const have = this.storages.get(k);
    if (have) return have;
    const entry = this.zip().get(`${this.prefix}data/${k}`);
    if (!entry) throw this.bad(`storage '${k}' is referenced by data.pkl but the archive has no ${this.prefix}data/${k}`);
    const marker = type as Partial<StorageMarker> & { prototype?: { __name__?: string } };
    const dtype = marker?.__storage_dtype__ ?? null;
    const typeName = marker?.__storage_name__ ?? marker?.prototype?.__name__ ?? String(type);
    if (dtype !== null && isInt(numel) && entry.size < numel * ITEMSIZE[dtype]) {
      throw this.bad(`storage '${k}' should hold ${numel} ${dtype} elements (${numel * ITEMSIZE[dtype]} bytes) but ${entry.name} has ${entry.size} bytes (truncated?)`);
    }
    const s = new TorchStorage(this, k, dtype, typeName, entry);
    this.storages.set(k, s);
    return s;
  }

  private tensor(storage: unknown, offset: unknown, size: unknown, stride: unknown, dtype?: TorchDType): TorchTensor {
    if (!(storage instanceof TorchStorage)) throw this.bad('a tensor is rebuilt from something that is not a storage');
    if (!isInt(offset) || !Array.isArray(size) || !size.every(isInt) || !Array.isArray(stride) || !stride.every(isInt) || size.length !== stride.length) {
      throw this.bad(`malformed tensor (offset ${String(offset)}, size ${JSON.stringify(size)}, stride ${JSON.stringify(stride)})`);
    }
    const dt = dtype ?? storage.dtype;
    if (dt === null) throw this.bad(`tensor on storage '${storage.key}' of unsupported type ${storage.typeName}`);
    return new TorchTensor(storage, dt, size as number[], stride as number[], offset);
  }

  private unpickle(pkl: Buffer): unknown {
    const reg = new TolerantRegistry();
    for (const [name, dtype] of Object.entries(STORAGE_TYPES)) {
      const marker: StorageMarker = { __storage_dtype__: dtype, __storage_name__: name };
      reg.register('torch', name, Object.assign(function storageType() { return marker; }, marker));
    }
    for (const [name, dtype] of Object.entries(DTYPES)) {
      const marker: DtypeMarker = { __torch_dtype__: dtype };
      reg.register('torch', name, Object.assign(function torchDtype() { return marker; }, marker));
    }
    reg.register('collections', 'OrderedDict', function OrderedDict(items?: unknown) {
      const m = new Map<unknown, unknown>();
      if (Array.isArray(items)) for (const kv of items) if (Array.isArray(kv)) m.set(kv[0], kv[1]);
      return m;
    });
    const setLike = function set(items?: unknown) { return Array.isArray(items) ? [...items] : []; };
    reg.register('builtins', 'set', setLike).register('builtins', 'frozenset', setLike);
    reg.register('__builtin__', 'set', setLike).register('__builtin__', 'frozenset', setLike);
    reg.register('_codecs', 'encode', function encode(s: unknown) { return Buffer.from(String(s), 'latin1'); });
    reg.register('torch', 'device', function device(d: unknown) { return String(d); });
    const u = 'torch._utils';
    reg.register(u, '_rebuild_tensor', (st: unknown, off: unknown, size: unknown, stride: unknown) => this.tensor(st, off, size, stride));
    reg.register(u, '_rebuild_tensor_v2', (st: unknown, off: unknown, size: unknown, stride: unknown) => this.tensor(st, off, size, stride));
    reg.register(u, '_rebuild_tensor_v3', (st: unknown, off: unknown, size: unknown, stride: unknown, _rg: unknown, _h: unknown, dtype: unknown) =>
      this.tensor(st, off, size, stride, (dtype as Partial<DtypeMarker>)?.__torch_dtype__));
    reg.register(u, '_rebuild_parameter', (data: unknown) => data);
    reg.register(u, '_rebuild_parameter_with_state', (data: unknown) => data);
    const fromType = (func: unknown, _type: unknown, args: unknown) =>
      typeof func === 'function' && Array.isArray(args) ? func(...args) : func;
    reg.register('torch._tensor', '_rebuild_from_type_v2', fromType);
    reg.register('torch._tensor', '_rebuild_from_type', fromType);
    const parser = new Parser({
      nameResolver: reg,
      persistentResolver: { resolve: (pid: unknown) => this.storage(pid) },
      unpicklingTypeOfDictionary: 'Map',
      unpicklingTypeOfSet: 'array',
    } as ConstructorParameters<typeof Parser>[0]);
    try {
      return parser.parse(pkl);
    } catch (e) {
      if (e instanceof EsolmError) throw e;
      throw this.bad(`cannot unpickle data.pkl (${(e as Error).message})`);
    }
  }
}

/**
 * Converts unpickled data to plain JSON-like values: Maps → objects, omegaconf containers
 * (`_content`) and nodes (`_val`) → their content, inert objects → their state. Tensors and
 * bytes are dropped (undefined). For reading hyper_parameters.
 */
export function toPlain(v: unknown): unknown {
  return plain(v, 0, new Set<unknown>(), { left: MAX_PLAIN_VALUES });
}

/**
 * The most values toPlain produces: a pickle can share one object many times (memo), so a
 * few bytes can describe a DAG whose expansion into a tree is exponential.
 */
export const MAX_PLAIN_VALUES = 1_000_000;

function plain(v: unknown, depth: number, seen: Set<unknown>, budget: { left: number }): unknown {
  if (--budget.left < 0) {
    throw new EsolmError('ERR_BAD_WEIGHTS', `the checkpoint's pickled data expands to more than ${MAX_PLAIN_VALUES} values`);
  }
  if (v === null || typeof v !== 'object') return typeof v === 'bigint' ? Number(v) : v;
  if (v instanceof TorchTensor || v instanceof TorchStorage || ArrayBuffer.isView(v)) return undefined;
  if (depth > 32 || seen.has(v)) return undefined;
  const next = (x: unknown): unknown => plain(x, depth + 1, seen, budget);
  seen.add(v);
  try {
    if (Array.isArray(v)) return v.map(next);
    if (v instanceof Map) {
      const o: Record<string, unknown> = {};
      for (const [k, x] of v) if (typeof k === 'string' || typeof k === 'number') o[String(k)] = next(x);
      return o;
    }
    const r = v as Record<string, unknown>;
    if ('_content' in r) return next(r._content);
    if ('_val' in r) return next(r._val);
    if (r.__items__ instanceof Map) return next(r.__items__);
    if (Array.isArray(r.__list__)) return next(r.__list__);
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(r)) o[k] = next(x);
    return o;
  } finally {
    seen.delete(v);
  }
}
