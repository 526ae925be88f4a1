// Independent float64 forward of the Eso-LM / MDLM / AR network, written from
// MODEL-REFERENCE.md §1.3–1.7 and §2.2–2.3 directly (no folding of the adaLN
// constants, explicit boolean attention masks). Slow and simple on purpose.
import type { ModelConfigJson } from './random-model.js';

// 'prefix': slots < prefix see each other both ways, everything else is causal (Eso-LM (A)'s
// sequential phase: the diffusion tokens are a bidirectional prefix, §2.3 "mixed").
export type AttentionMode = 'bidirectional' | 'causal' | 'mixed2' | 'sequential' | 'prefix';

export interface ReferenceInput {
  /** Values as stored in the weight file, names without "backbone.". */
  weights: Record<string, Float64Array>;
  config: ModelConfigJson;
  /** One sequence in slot order, n tokens. */
  tokens: ArrayLike<number>;
  /** Original (rotary) position of each slot; default 0..n-1. */
  positions?: ArrayLike<number>;
  attention: AttentionMode;
  /** sequential only: the clean sequence (x-half), n tokens in the same slot order. */
  x0?: ArrayLike<number>;
  /** prefix: the number of leading slots that attend bidirectionally; sequential: the same
   * for the x-half (Eso-LM (A)'s sequential_attn_mode "mixed"; 0 = Eso-LM (B)). */
  prefix?: number;
}

const FREQ_DIM = 256;
const LN_EPS = 1e-5;
const ROPE_BASE = 10000;

type Mat = Float64Array; // row-major

function get(w: Record<string, Float64Array>, name: string): Float64Array {
  const t = w[name];
  if (!t) throw new Error(`reference: missing weight ${name}`);
  return t;
}

/** y[r, o] = sum_i x[r, i] * W[o, i] + b[o]; W is [out, in] (torch Linear layout). */
function linear(x: Mat, rows: number, inDim: number, W: Float64Array, outDim: number, b?: Float64Array): Mat {
  if (W.length !== outDim * inDim) throw new Error(`reference: weight size ${W.length} != ${outDim}x${inDim}`);
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o]! : 0;
      const wo = o * inDim;
      const xr = r * inDim;
      for (let i = 0; i < inDim; i++) s += x[xr + i]! * W[wo + i]!;
      y[r * outDim + o] = s;
    }
  }
  return y;
}

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

function geluTanh(u: number): number {
  return 0.5 * u * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (u + 0.044715 * u * u * u)));
}

/** LayerNorm without bias: (x - mean) / sqrt(var + eps) * w, biased variance. */
function layerNorm(x: Mat, rows: number, d: number, w: Float64Array): Mat {
  const y = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[r * d + i]!;
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) {
      const t = x[r * d + i]! - mean;
      v += t * t;
    }
    v /= d;
    const inv = 1 / Math.sqrt(v + LN_EPS);
    for (let i = 0; i < d; i++) y[r * d + i] = (x[r * d + i]! - mean) * inv * w[i]!;
  }
  return y;
}

/** x * (1 + scale) + shift, per column. */
function modulate(x: Mat, rows: number, d: number, shift: Float64Array, scale: Float64Array): Mat {
  const y = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < d; i++) y[r * d + i] = x[r * d + i]! * (1 + scale[i]!) + shift[i]!;
  return y;
}

/** The constant conditioning vector c for sigma = 0 (§1.4). */
export function conditioning(weights: Record<string, Float64Array>, config: ModelConfigJson): Float64Array {
  const C = config.cond_dim;
  const e = new Float64Array(FREQ_DIM);
  for (let i = 0; i < FREQ_DIM / 2; i++) e[i] = Math.cos(0); // cos half first, then sin(0) = 0
  const h = linear(e, 1, FREQ_DIM, get(weights, 'sigma_map.mlp.0.weight'), C, get(weights, 'sigma_map.mlp.0.bias')).map(silu);
  return linear(h, 1, C, get(weights, 'sigma_map.mlp.2.weight'), C, get(weights, 'sigma_map.mlp.2.bias')).map(silu);
}

/** Boolean attention mask [rows x rows] (true = q may attend kv), slot order. */
export function attentionMask(
  mode: AttentionMode,
  n: number,
  tokens: ArrayLike<number>,
  maskIndex: number,
  prefix = 0,
): { rows: number; allowed: (q: number, kv: number) => boolean; table: Uint8Array } {
  const rows = mode === 'sequential' ? 2 * n : n;
  const table = new Uint8Array(rows * rows);
  for (let q = 0; q < rows; q++) {
    for (let kv = 0; kv < rows; kv++) {
      let ok: boolean;
      switch (mode) {
        case 'bidirectional':
          ok = true;
          break;
        case 'causal':
          ok = kv <= q;
          break;
        case 'mixed2':
          ok = kv <= q || (tokens[q] !== maskIndex && tokens[kv] !== maskIndex);
          break;
        case 'prefix':
          ok = kv <= q || (q < prefix && kv < prefix);
          break;
        case 'sequential': {
          // rows [0, n) = z-half, rows [n, 2n) = x-half (BD3-LM block_diff_mask, block size 1)
          const qz = q < n;
          const kz = kv < n;
          const qi = qz ? q : q - n;
          const ki = kz ? kv : kv - n;
          if (qz) ok = kz ? ki === qi : ki < qi;
          else ok = !kz && (ki <= qi || (qi < prefix && ki < prefix)); // Eso-LM (A) "mixed": x prefix both ways
          break;
        }
      }
      table[q * rows + kv] = ok ? 1 : 0;
    }
  }
  return { rows, table, allowed: (q, kv) => table[q * rows + kv] === 1 };
}

/** Half-split RoPE over the full head dim (§1.5), in place on a [rows, d] matrix of H heads. */
function rope(x: Mat, rows: number, d: number, H: number, pos: ArrayLike<number>): void {
  const hd = d / H;
  const half = hd / 2;
  for (let r = 0; r < rows; r++) {
    const p = pos[r]!;
    for (let h = 0; h < H; h++) {
      const base = r * d + h * hd;
      for (let i = 0; i < half; i++) {
        const theta = 1 / ROPE_BASE ** ((2 * i) / hd);
        const cs = Math.cos(p * theta);
        const sn = Math.sin(p * theta);
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        x[base + i] = a * cs - b * sn;
        x[base + i + half] = b * cs + a * sn;
      }
    }
  }
}

/** Reference logits [n, vocab] (z-half for sequential), float64. */
export function referenceForward(input: ReferenceInput): Float64Array {
  const { weights: w, config: cfg, attention } = input;
  const n = input.tokens.length;
  const d = cfg.hidden_size;
  const H = cfg.n_heads;
  const hd = d / H;
  const V = cfg.vocab_size;
  const F = 4 * d;
  const adaln = cfg.arch !== 'ar';
  const pos0 = input.positions ?? Array.from({ length: n }, (_, i) => i);
  if (pos0.length !== n) throw new Error('reference: positions length');

  // Rows of the network input.
  let toks: number[];
  let pos: number[];
  if (attention === 'sequential') {
    if (!input.x0 || input.x0.length !== n) throw new Error('reference: sequential needs x0 of length n');
    toks = [...Array.from(input.tokens), ...Array.from(input.x0)];
    pos = [...Array.from(pos0), ...Array.from(pos0)];
  } else {
    toks = Array.from(input.tokens);
    pos = Array.from(pos0);
  }
  const rows = toks.length;
  const mask = attentionMask(attention, n, input.tokens, cfg.mask_index, input.prefix ?? 0);

  // Embedding.
  const E = get(w, 'vocab_embed.embedding');
  let x = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    const t = toks[r]!;
    if (!(t >= 0 && t < V)) throw new Error(`reference: token ${t} out of range`);
    for (let i = 0; i < d; i++) x[r * d + i] = E[t * d + i]!;
  }

  const c = adaln ? conditioning(w, cfg) : null;
  const ones = new Float64Array(d).fill(1);
  const zeros = new Float64Array(d);

  for (let blk = 0; blk < cfg.n_blocks; blk++) {
    const p = `blocks.${blk}.`;
    let shiftA = zeros, scaleA = zeros, gateA = ones, shiftM = zeros, scaleM = zeros, gateM = ones;
    if (c) {
      const mod = linear(c, 1, cfg.cond_dim, get(w, p + 'adaLN_modulation.weight'), 6 * d, get(w, p + 'adaLN_modulation.bias'));
      const chunk = (k: number) => mod.slice(k * d, (k + 1) * d);
      [shiftA, scaleA, gateA, shiftM, scaleM, gateM] = [chunk(0), chunk(1), chunk(2), chunk(3), chunk(4), chunk(5)];
    }

    // Attention branch.
    const aIn = modulate(layerNorm(x, rows, d, get(w, p + 'norm1.weight')), rows, d, shiftA, scaleA);
    const qkv = linear(aIn, rows, d, get(w, p + 'attn_qkv.weight'), 3 * d);
    const q = new Float64Array(rows * d);
    const k = new Float64Array(rows * d);
    const v = new Float64Array(rows * d);
    for (let r = 0; r < rows; r++)
      for (let i = 0; i < d; i++) {
        q[r * d + i] = qkv[r * 3 * d + i]!;
        k[r * d + i] = qkv[r * 3 * d + d + i]!;
        v[r * d + i] = qkv[r * 3 * d + 2 * d + i]!;
      }
    rope(q, rows, d, H, pos);
    rope(k, rows, d, H, pos);
    const o = new Float64Array(rows * d);
    const scale = 1 / Math.sqrt(hd);
    const s = new Float64Array(rows);
    for (let h = 0; h < H; h++) {
      for (let qi = 0; qi < rows; qi++) {
        let mx = -Infinity;
        for (let kj = 0; kj < rows; kj++) {
          if (!mask.allowed(qi, kj)) {
            s[kj] = -Infinity;
            continue;
          }
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[qi * d + h * hd + i]! * k[kj * d + h * hd + i]!;
          s[kj] = dot * scale;
          if (s[kj]! > mx) mx = s[kj]!;
        }
        let den = 0;
        for (let kj = 0; kj < rows; kj++) {
          const e = s[kj] === -Infinity ? 0 : Math.exp(s[kj]! - mx);
          s[kj] = e;
          den += e;
        }
        for (let kj = 0; kj < rows; kj++) {
          const pw = s[kj]! / den;
          if (pw === 0) continue;
          for (let i = 0; i < hd; i++) o[qi * d + h * hd + i] = o[qi * d + h * hd + i]! + pw * v[kj * d + h * hd + i]!;
        }
      }
    }
    const attnOut = linear(o, rows, d, get(w, p + 'attn_out.weight'), d);
    const x1 = new Float64Array(rows * d);
    for (let r = 0; r < rows; r++) for (let i = 0; i < d; i++) x1[r * d + i] = x[r * d + i]! + gateA[i]! * attnOut[r * d + i]!;
    x = x1;

    // MLP branch.
    const mIn = modulate(layerNorm(x, rows, d, get(w, p + 'norm2.weight')), rows, d, shiftM, scaleM);
    const hmid = linear(mIn, rows, d, get(w, p + 'mlp.0.weight'), F, get(w, p + 'mlp.0.bias')).map(geluTanh);
    const mOut = linear(hmid, rows, F, get(w, p + 'mlp.2.weight'), d, get(w, p + 'mlp.2.bias'));
    const x2 = new Float64Array(rows * d);
    for (let r = 0; r < rows; r++) for (let i = 0; i < d; i++) x2[r * d + i] = x[r * d + i]! + gateM[i]! * mOut[r * d + i]!;
    x = x2;
  }

  // Final layer.
  let shiftF = zeros, scaleF = zeros;
  if (c) {
    const mod = linear(c, 1, cfg.cond_dim, get(w, 'output_layer.adaLN_modulation.weight'), 2 * d, get(w, 'output_layer.adaLN_modulation.bias'));
    shiftF = mod.slice(0, d);
    scaleF = mod.slice(d, 2 * d);
  }
  const fIn = modulate(layerNorm(x, rows, d, get(w, 'output_layer.norm_final.weight')), rows, d, shiftF, scaleF);
  const outRows = attention === 'sequential' ? fIn.slice(0, n * d) : fIn; // z-half only
  return linear(outRows, n, d, get(w, 'output_layer.linear.weight'), V, get(w, 'output_layer.linear.bias'));
}

/** Max |a - b| over all entries (lengths must match). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const dlt = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(dlt)) return NaN;
    if (dlt > m) m = dlt;
  }
  return m;
}
