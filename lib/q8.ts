/**
 * 8-bit weights in a model folder (README "Model folders"): a linear matrix `<name>` stored
 * as I8 [rows, cols] with `<name>_scale` F32 [rows], W[r, c] = q[r, c] * scale[r]. Only the
 * large linear matrices may be 8-bit (isQ8Matrix). The quantization rule is the engine's
 * (binding/engine/q8.h), bit for bit: every step below is one correctly rounded F32 operation
 * (Math.fround of the double result), so `esolm convert --dtype q8` writes exactly the int8
 * values and scales that `Model.load(dir, { weights: 'q8' })` makes from the same F32 file.
 */
import { EsolmError } from './errors.js';

/** Suffix of an 8-bit matrix's scale tensor. */
export const Q8_SCALE_SUFFIX = '_scale';
/** safetensors `__metadata__.quantization` of a file with 8-bit matrices (informative; any other value is refused). */
export const Q8_METADATA = 'q8-row';
const Q8_MAX = 127;

const MATRIX = /^blocks\.\d+\.(attn_qkv|attn_out|mlp\.0|mlp\.2)\.weight$|^output_layer\.linear\.weight$/;

/** Whether `name` (without `backbone.`) is a linear matrix that may be stored 8-bit. */
export function isQ8Matrix(name: string): boolean {
  return MATRIX.test(name);
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/**
 * Quantizes W [rows, cols] (row-major) per row: scale = max |w| / 127, q = round half to even
 * (w / scale). ERR_BAD_WEIGHTS naming `what` when W holds NaN or Inf (which the engine refuses).
 */
export function quantizeQ8(w: Float32Array, rows: number, cols: number, what = 'a matrix'): { q: Int8Array; scale: Float32Array } {
  const q = new Int8Array(rows * cols);
  const scale = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let amax = 0;
    for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(w[o + c]!));
    if (!Number.isFinite(amax)) throw new EsolmError('ERR_BAD_WEIGHTS', `${what} holds NaN or Inf, so it cannot be quantized`);
    const s = Math.fround(amax / Q8_MAX);
    scale[r] = s;
    if (s === 0) continue;  // an all-zero row: q stays 0
    for (let c = 0; c < cols; c++) {
      const v = roundHalfEven(Math.fround(w[o + c]! / s));
      q[o + c] = Math.max(-Q8_MAX, Math.min(Q8_MAX, v));
    }
  }
  return { q, scale };
}

/** W[r, c] = q[r, c] * scale[r] in F32, as the engine dequantizes for a float backend. */
export function dequantizeQ8(q: Int8Array, scale: Float32Array, cols: number): Float32Array {
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = q[i]! * scale[Math.floor(i / cols)]!;
  return out;
}
