/**
 * Writes a model folder with random weights (official tensor names) — for the demo, the
 * benchmarks and quick experiments. Weights are scaled so that attention and the adaLN
 * gates matter: linear std max(0.02, 1/sqrt(fan_in)), embedding N(0, 1).
 */
import { mkdirSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { expectedTensors, type ModelConfig } from './config.js';
import { isQ8Matrix, Q8_METADATA, Q8_SCALE_SUFFIX, quantizeQ8 } from './q8.js';

/** The Eso-LM "small" configuration (MODEL-REFERENCE.md §1.1). */
export const SMALL_CONFIG: ModelConfig = {
  arch: 'esolm', hidden_size: 768, n_heads: 12, n_blocks: 12, cond_dim: 128,
  vocab_size: 50258, mask_index: 50257, length: 1024,
};

/** xorshift128+ → normal via Box–Muller; deterministic in the seed. */
function makeNormal(seed: number): () => number {
  let s0 = BigInt(seed) * 0x9E3779B97F4A7C15n + 1n, s1 = 0x2545F4914F6CDD1Dn ^ BigInt(seed);
  const mask = (1n << 64n) - 1n;
  const next = (): number => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= (x << 23n) & mask;
    s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return Number(((s1 + y) & mask) >> 11n) / 2 ** 53;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) { const v = spare; spare = null; return v; }
    const u = Math.max(next(), 1e-300), v = next();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

function stdFor(name: string, shape: number[]): { std: number; mean: number } {
  if (name === 'vocab_embed.embedding') return { std: 1, mean: 0 };
  if (name.endsWith('norm1.weight') || name.endsWith('norm2.weight') || name.endsWith('norm_final.weight')) return { std: 0.1, mean: 1 };
  if (name.endsWith('.bias')) return { std: 0.05, mean: 0 };
  const fanIn = shape[shape.length - 1];
  return { std: Math.max(0.02, 1 / Math.sqrt(fanIn)), mean: 0 };
}

/**
 * Writes config.json and model.safetensors into `dir`: every tensor F32 or BF16, or with
 * `Q8` the linear matrices 8-bit (I8 `<name>` + F32 `<name>_scale`, lib/q8.ts) and the rest
 * F32. The values drawn depend on the seed only, so the Q8 folder is the F32 folder of the
 * same seed quantized (what `esolm convert --dtype q8` makes of it).
 */
export function writeRandomModel(dir: string, config: ModelConfig, opts: { seed?: number; dtype?: 'F32' | 'BF16' | 'Q8' } = {}): void {
  const dtype = opts.dtype ?? 'F32';
  const normal = makeNormal(opts.seed ?? 1);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const shapes = [...expectedTensors(config)].map(([name, s]) => [name, s.map((d) => (d < 0 ? 256 : d))] as const);
  const quantized = (name: string): boolean => dtype === 'Q8' && isQ8Matrix(name);
  const esize = dtype === 'BF16' ? 2 : 4;
  const header: Record<string, unknown> = {
    __metadata__: { format: 'pt', generator: 'esolm random-model', ...(dtype === 'Q8' ? { quantization: Q8_METADATA } : {}) },
  };
  let offset = 0;
  const put = (name: string, dt: string, shape: readonly number[], bytes: number): void => {
    header[name] = { dtype: dt, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  };
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (quantized(name)) {
      put(name + Q8_SCALE_SUFFIX, 'F32', [shape[0]], shape[0] * 4);  // each scale right before its matrix
      put(name, 'I8', shape, n);
    } else {
      put(name, dtype === 'BF16' ? 'BF16' : 'F32', shape, n * esize);
    }
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const fd = openSync(path.join(dir, 'model.safetensors'), 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, Buffer.from(json, 'utf8'));
    for (const [name, shape] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      const { std, mean } = stdFor(name, shape);
      const f32 = new Float32Array(n);
      for (let i = 0; i < n; i++) f32[i] = mean + std * normal();
      if (quantized(name)) {
        const { q, scale } = quantizeQ8(f32, shape[0], shape[1]);
        writeSync(fd, new Uint8Array(scale.buffer));
        writeSync(fd, new Uint8Array(q.buffer));
      } else if (dtype !== 'BF16') {
        writeSync(fd, new Uint8Array(f32.buffer));
      } else {
        const u32 = new Uint32Array(f32.buffer), out = new Uint16Array(n);
        for (let i = 0; i < n; i++) {
          const u = u32[i];
          out[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;  // round to nearest even
        }
        writeSync(fd, new Uint8Array(out.buffer));
      }
    }
  } finally {
    closeSync(fd);
  }
}
