/**
 * Likelihood estimators (MODEL-REFERENCE.md §3.1, §3.3) built on {@link Model.forward}, so
 * they run on every backend. `model.nll(tokens, opts)` delegates to {@link computeNll}.
 *
 * Estimators, for one clean sequence x of n tokens (n <= the model's context length; each
 * sequence is scored as it is, with positions 0..n-1):
 *
 * - `nelbo`: the Eso-LM hybrid bound  −log p(x) <= seq + diff, estimated by Monte Carlo.
 *   Each of the `samples` estimates is one draw of each term:
 *   - sequential term (skipped when alpha0 = 1): z0 masks each token independently with
 *     probability 1 − alpha0; slot order = the clean tokens in a random order, then the
 *     masked ones left to right (`keep_masks_unshuffled`). One `sequential` forward with
 *     tokens = z0 and x0 = x, both in that slot order, positions = the order. Term =
 *     Σ over masked slots of −log p(x).
 *   - diffusion term (skipped when alpha0 = 0): t stratified over the samples as in the
 *     official antithetic sampling (`_sample_t`): t_s = ε_s + (1 − ε_s)·(u_s + s)/S with an
 *     independent u_s ~ U[0, 1) per stratum s, ε_s = 1e-3; alpha_t = alpha0·(1 − (1 − ε)t),
 *     ε = 1e-3; xt masks each token w.p. 1 − alpha_t; slot order = clean tokens in a random
 *     order, then masked tokens in a random order (Eso-LM (B), `diffusion_shuffle=True`);
 *     one `causal` forward (`bidirectional` for an mdlm model). Term =
 *     alpha0(1 − ε)/(1 − alpha_t) · Σ over masked slots of −log p(x).
 *   alpha0 = 1 is MDLM's bound. alpha0 = 0 is deterministic: every token is masked and the
 *   sequential forward left to right is the exact AR chain rule (one forward, stderr 0).
 * - `exact`: the importance-weighted any-order bound of §3.3. One estimate = one group of
 *   `orders` = K orders; for each: D ~ Binomial(n, alpha0), σ a uniform permutation with
 *   σ[D:] sorted ascending; one `sequential` forward with z = all masks and x0 = x, both in
 *   σ order, positions = σ; log p(x|σ) = Σ_i log p(x_σ(i) | row i). Estimate of −log p(x) =
 *   −(logsumexp_k log p(x|σ_k) − log K). `samples` independent groups give the mean and its
 *   standard error (the mean of −log p̂_K over groups is an estimate of the expected IW
 *   bound −E log p̂_K, which is >= −log p(x) and tightens as K grows). alpha0 = 0: one
 *   left-to-right order, deterministic, equal to the `nelbo` value at alpha0 = 0.
 * - `imdce`: the importance-sampled masked-diffusion cross entropy of the official
 *   icml-rebuttal branch (`_imdce_loss`). One estimate = `orders` = K draws; for each: the
 *   number of clean tokens k ∈ [0, n) is drawn with p(k) = 1/((n − k)·H_n), H_n = Σ_{i=1..n}
 *   1/i, a uniform k-subset stays clean, the rest are masked; slot order = clean tokens in
 *   a random order, then masks in a random order; one diffusion-mode forward (causal for
 *   esolm, mixed2 for esolm-a, bidirectional for mdlm). Estimate = H_n/K · Σ_k Σ over masked
 *   slots of −log p(x): an unbiased estimate of Σ_{k<n} 1/(n − k) · E[Σ masked −log p] (the
 *   any-order cross entropy the masked-diffusion loss integrates). alpha0 is not used.
 * - `ar` (arch `ar` only): the left-to-right likelihood of the official AR. With
 *   `prepend` none (`prepend_token=none`): one `causal` forward of x[0..n−2] predicts
 *   x[1..n−1]; the first token is not scored, so `tokens` = n − 1 (n >= 2). With `bos` /
 *   `mask`: the forward of [BOS or MASK, x[0..n−2]] predicts all n tokens. Deterministic.
 *   `prepend` defaults to the model's training setting (config.json "training").
 *
 * Everywhere the MASK column of the logits is set to −1e6 before the log-softmax (as the
 * official code does); log-softmax is computed in float64 from the float32 logits.
 * Orders and attention are those of Eso-LM (B), the released evaluation setting (§2.4). For
 * Eso-LM (A) (arch esolm-a) the diffusion forwards use mixed2 attention and the sequential
 * term its "mixed" mask (the clean tokens of z0 form a bidirectional prefix of the x-half;
 * Model.forwardScores `prefix`, one cached step per masked token, so slower). `exact`'s
 * z is all masks, so its prefix is empty and it equals the Eso-LM (B) forward, as in the
 * official code.
 *
 * alpha0 defaults to the model's training alpha0 (config.json "training", recorded by
 * `esolm convert`), as the official evaluation must use it; else 1.
 *
 * Standard error: the sample standard deviation of the per-sample estimates over
 * sqrt(samples). The per-sample estimates are independent except that `nelbo`'s t is
 * stratified across them, which only lowers the true variance of the mean: the reported
 * stderr is then conservative. It is 0 for deterministic estimates and NaN for one sample.
 *
 * Randomness: a seeded PRNG of our own (xoshiro128** seeded by splitmix32 from a hash of
 * (seed, sequence index, sample index, stream)), so results depend only on `seed` and the
 * index of each sequence in the call, not on `batch`, the backend, or the call order.
 *
 * Batching: work is one row per (sequence, sample, term); rows with the same attention
 * mode and length are stacked into forward calls of up to `batch` rows. The next forward
 * is queued before the previous one's logits are scored, so JS scoring overlaps the engine.
 */
import type { AttentionMode, Model } from './model.js';
import { EsolmError, expected, invalidArg } from './errors.js';

export type NllEstimator = 'nelbo' | 'exact' | 'imdce' | 'ar';

/** ε of the log-linear schedule alpha_t = alpha0(1 − (1 − ε)t). */
export const SCHEDULE_EPS = 1e-3;
/** Smallest t sampled for the diffusion term (`sampling_eps`). */
export const SAMPLING_EPS = 1e-3;
/** Value the MASK column of the logits is set to before the log-softmax. */
export const MASK_LOGIT = -1e6;

export interface NllOptions {
  /** `nelbo`, `exact`, `imdce` or `ar`. Defaults to `ar` for arch ar, else `nelbo`. */
  estimator?: NllEstimator;
  /** Eso-LM alpha0 in [0, 1]: the fraction of tokens left to diffusion. Defaults to the model's training alpha0 (config.json "training"), else 1 (MDLM's bound). */
  alpha0?: number;
  /** Independent Monte Carlo estimates per sequence (nelbo: draws of both terms; exact: groups of K orders). Integer >= 1, defaults to 8. Ignored (1) when the estimate is deterministic. */
  samples?: number;
  /** exact, imdce: K, the number of orders per estimate. Integer >= 1, defaults to 4. */
  orders?: number;
  /** PRNG seed (any safe integer). Defaults to 0. */
  seed?: number;
  /** Rows (sequence × sample × term) per forward call. Defaults to as many as keep a call under 16384 token rows, between 1 and 16. */
  batch?: number;
  /** Called with (0, total) before the first forward call, then after each one. */
  onProgress?: (done: number, total: number) => void;
  /** Checked before each forward call; when aborted the promise rejects with ERR_ABORTED. */
  signal?: AbortSignal;
  /** ar only: the official prepend_token. Defaults to the model's training setting, else `none`. */
  prepend?: 'none' | 'bos' | 'mask';
  /** Return every draw and term value in `sequences[i].trace` (for tests and debugging). */
  trace?: boolean;
}

/** One forward row of an estimate: its draws and its value. */
export interface NllTermTrace {
  kind: 'sequential' | 'diffusion' | 'order' | 'imdce' | 'ar';
  attention: AttentionMode;
  /** order[i] = original position of slot i (also the rotary position fed to the model). */
  order: Int32Array;
  /** The model input in slot order (for `sequential` forwards the z-half; x0 = x[order]). */
  input: Int32Array;
  /** Slots before the sorted tail: clean tokens (sequential, diffusion) or D (order). */
  prefix: number;
  /** diffusion only: t and alpha_t. */
  t?: number;
  alphaT?: number;
  /** Weight of the term in the estimate (1 except for diffusion and imdce). */
  weight: number;
  /** Σ over scored slots of −log p(target): unweighted, nats. */
  value: number;
}

export interface NllSampleTrace {
  /** This sample's estimate of −log p(x) (nats). */
  estimate: number;
  terms: NllTermTrace[];
}

export interface NllStats {
  /** Estimated negative log-likelihood (nats): the mean of the per-sample estimates (a sum for totals). */
  nll: number;
  /** Tokens scored: n (n − 1 for `ar`). */
  tokens: number;
  nllPerToken: number;
  /** exp(nllPerToken). */
  perplexity: number;
  /** nllPerToken / ln 2. */
  bitsPerToken: number;
  /** Monte Carlo standard error of `nll`: 0 when deterministic, NaN for one stochastic sample. */
  stderr: number;
  /** stderr / tokens. */
  stderrPerToken: number;
}

export interface NllSequenceResult extends NllStats {
  /** Number of estimates averaged (1 when deterministic). */
  samples: number;
  /** The per-sample estimates of −log p(x) (nats). */
  estimates: Float64Array;
  trace?: NllSampleTrace[];
}

export interface NllResult {
  estimator: NllEstimator;
  alpha0: number;
  /** K (exact), else 1. */
  orders: number;
  seed: number;
  /** Whether the estimate is deterministic (stderr 0). */
  deterministic: boolean;
  sequences: NllSequenceResult[];
  /** Over all sequences, token-weighted: nll and stderr are sums (stderr in quadrature). */
  total: NllStats;
  /** Forward calls made. */
  forwardCalls: number;
}

// ---------------------------------------------------------------------------------------
// PRNG

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** xoshiro128** seeded by splitmix32 from a hash of the key words. */
export class NllRng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(...key: number[]) {
    let h = 0x9e3779b9;
    for (const k of key) {
      const lo = k >>> 0;
      const hi = Math.floor(k / 4294967296) >>> 0;
      h = fmix32(h ^ lo);
      h = fmix32((h + 0x9e3779b9) ^ hi);
    }
    let s = h;
    const split = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      return (z ^ (z >>> 15)) >>> 0;
    };
    this.a = split();
    this.b = split();
    this.c = split();
    this.d = split();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** Next 32-bit unsigned integer. */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.u32() >>> 5;
    const lo = this.u32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Fisher–Yates shuffle in place. */
  shuffle(a: Int32Array): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

// Streams of one (sequence, sample): sequential term, diffusion term, then one per order.
const STREAM_SEQUENTIAL = 1;
const STREAM_DIFFUSION = 2;
const STREAM_ORDER0 = 3;

// ---------------------------------------------------------------------------------------
// Options

interface Resolved {
  estimator: NllEstimator;
  alpha0: number;
  samples: number;
  orders: number;
  seed: number;
  batch: number | undefined;
  deterministic: boolean;
  diffusionAttention: AttentionMode;
  /** Eso-LM (A): the nelbo sequential term uses the prefix-LM ("mixed") sequential mask. */
  prefixLm: boolean;
  /** ar: the token fed before x[0] (BOS or MASK), or -1 for prepend none. */
  prependToken: number;
  onProgress: ((done: number, total: number) => void) | undefined;
  signal: AbortSignal | undefined;
  trace: boolean;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

function resolveOptions(model: Model, opts: NllOptions): Resolved {
  if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'nll options', opts);
  const cfg = model.config;
  const estimator = opts.estimator ?? (cfg.arch === 'ar' ? 'ar' : 'nelbo');
  if (estimator !== 'nelbo' && estimator !== 'exact' && estimator !== 'imdce' && estimator !== 'ar') {
    throw expected('"nelbo", "exact", "imdce" or "ar"', 'estimator', estimator);
  }
  const alpha0 = opts.alpha0 ?? (cfg.arch === 'mdlm' ? undefined : cfg.training?.alpha0) ?? 1;
  if (typeof alpha0 !== 'number' || !(alpha0 >= 0 && alpha0 <= 1)) throw expected('a number in [0, 1]', 'alpha0', alpha0);
  // Counts are bounded (2^16 each, 2^20 forward rows per sequence) before anything loops over them.
  const samples = opts.samples ?? 8;
  if (!isInt(samples) || samples < 1 || samples > 2 ** 16) throw expected('an integer in [1, 65536]', 'samples', samples);
  const orders = opts.orders ?? 4;
  if (!isInt(orders) || orders < 1 || orders > 2 ** 16) throw expected('an integer in [1, 65536]', 'orders', orders);
  if (estimator === 'exact' && samples * orders > 2 ** 20) throw invalidArg(`samples * orders = ${samples * orders} exceeds 2^20 forward rows per sequence`);
  const seed = opts.seed ?? 0;
  if (!isInt(seed)) throw expected('a safe integer', 'seed', seed);
  const batch = opts.batch;
  if (batch !== undefined && (!isInt(batch) || batch < 1 || batch > 2 ** 16)) throw expected('an integer in [1, 65536]', 'batch', batch);
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw expected('a function', 'onProgress', opts.onProgress);
  const signal = opts.signal;
  if (signal !== undefined && (typeof signal !== 'object' || signal === null || typeof signal.aborted !== 'boolean')) {
    throw expected('an AbortSignal', 'signal', signal);
  }
  const prepend = opts.prepend ?? (estimator === 'ar' ? cfg.training?.prepend : undefined) ?? 'none';
  if (prepend !== 'none' && prepend !== 'bos' && prepend !== 'mask') throw expected('"none", "bos" or "mask"', 'prepend', prepend);
  if (opts.prepend !== undefined && estimator !== 'ar') throw invalidArg('prepend is only used by estimator "ar"');
  let prependToken = -1;
  if (prepend === 'mask') {
    if (cfg.mask_index < 0) throw invalidArg('prepend "mask" needs a model with a mask token (config mask_index)');
    prependToken = cfg.mask_index;
  } else if (prepend === 'bos') {
    const bos = model.tokenizer?.bosId;
    if (bos === undefined) throw invalidArg('prepend "bos" needs a tokenizer with a BOS token');
    prependToken = bos;
  }
  if (estimator === 'ar') {
    if (cfg.arch !== 'ar') {
      throw invalidArg(`estimator "ar" needs a model of arch ar, but this model is ${cfg.arch}; for an Eso-LM use estimator "nelbo" with alpha0 = 0 (the exact AR likelihood)`);
    }
  } else {
    if (cfg.arch === 'ar') throw invalidArg(`estimator "${estimator}" needs a masked-diffusion model (esolm or mdlm); for an ar model use estimator "ar"`);
    if (cfg.mask_index < 0) throw invalidArg(`estimator "${estimator}" needs a model with a mask token (config mask_index)`);
    if (cfg.arch === 'mdlm') {
      if (estimator === 'exact') throw invalidArg('estimator "exact" needs an Eso-LM (arch esolm): an mdlm model has no sequential phase; use "nelbo"');
      if (alpha0 !== 1) throw expected('1 for an mdlm model (it has no sequential phase)', 'alpha0', alpha0);
    }
  }
  const deterministic = estimator === 'ar' || (alpha0 === 0 && estimator !== 'imdce');
  return {
    estimator,
    alpha0,
    samples: deterministic ? 1 : samples,
    orders: (estimator === 'exact' && !deterministic) || estimator === 'imdce' ? orders : 1,
    seed,
    batch,
    deterministic,
    diffusionAttention: cfg.arch === 'mdlm' ? 'bidirectional' : cfg.arch === 'esolm-a' ? 'mixed2' : 'causal',
    prefixLm: cfg.arch === 'esolm-a',
    prependToken,
    onProgress: opts.onProgress,
    signal,
    trace: opts.trace === true,
  };
}

function resolveTokens(model: Model, tokens: Int32Array | readonly Int32Array[], estimator: NllEstimator, prependToken = -1): Int32Array[] {
  let seqs: Int32Array[];
  if (tokens instanceof Int32Array) seqs = [tokens];
  else if (Array.isArray(tokens)) seqs = tokens as Int32Array[];
  else throw expected('an Int32Array or an array of Int32Arrays', 'tokens', tokens);
  if (seqs.length === 0) throw invalidArg('tokens holds no sequence');
  const { vocab_size: V, mask_index: M, length: L } = model.config;
  const minLen = estimator === 'ar' && prependToken < 0 ? 2 : 1;
  seqs.forEach((s, j) => {
    const name = seqs.length === 1 && tokens instanceof Int32Array ? 'tokens' : `tokens[${j}]`;
    if (!(s instanceof Int32Array)) throw expected('an Int32Array', name, s);
    if (s.length < minLen) {
      throw invalidArg(`${name} has ${s.length} tokens; estimator "${estimator}" needs at least ${minLen}`);
    }
    if (s.length > L) throw invalidArg(`${name} has ${s.length} tokens, more than the model context length ${L}; split it (evalText does)`);
    for (let i = 0; i < s.length; i++) {
      const t = s[i]!;
      if (t < 0 || t >= V) throw invalidArg(`${name}[${i}] = ${t} is outside [0, ${V})`);
      if (t === M) throw invalidArg(`${name}[${i}] is the mask token (${M}); the sequence to score must be clean`);
    }
  });
  return seqs;
}

// ---------------------------------------------------------------------------------------
// Draws → forward rows

interface Row {
  seq: number;
  sample: number;
  term: number;
  kind: NllTermTrace['kind'];
  attention: AttentionMode;
  order: Int32Array;
  input: Int32Array;
  x0: Int32Array | null;
  /** Target token per slot, −1 = not scored. */
  targets: Int32Array;
  prefix: number;
  t?: number;
  alphaT?: number;
  weight: number;
}

/** Slot order: `clean` positions shuffled, then `masked` positions (shuffled or ascending). */
function maskedRow(x: Int32Array, maskIndex: number, rng: NllRng, keep: number, shuffleMasks: boolean) {
  const n = x.length;
  const isMasked = new Uint8Array(n);
  let nm = 0;
  for (let i = 0; i < n; i++) {
    if (rng.next() < 1 - keep) {
      isMasked[i] = 1;
      nm++;
    }
  }
  const clean = new Int32Array(n - nm);
  const masked = new Int32Array(nm);
  for (let i = 0, c = 0, m = 0; i < n; i++) {
    if (isMasked[i]) masked[m++] = i;
    else clean[c++] = i;
  }
  rng.shuffle(clean);
  if (shuffleMasks) rng.shuffle(masked);
  const order = new Int32Array(n);
  order.set(clean, 0);
  order.set(masked, clean.length);
  const input = new Int32Array(n);
  const targets = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const p = order[i]!;
    if (isMasked[p]) {
      input[i] = maskIndex;
      targets[i] = x[p]!;
    } else {
      input[i] = x[p]!;
      targets[i] = -1;
    }
  }
  return { order, input, targets, prefix: clean.length };
}

function gather(x: Int32Array, order: Int32Array): Int32Array {
  const out = new Int32Array(order.length);
  for (let i = 0; i < order.length; i++) out[i] = x[order[i]!]!;
  return out;
}

/** The forward rows of one sample (one estimate) of sequence `j`. */
function sampleRows(model: Model, r: Resolved, x: Int32Array, j: number, s: number): Row[] {
  const M = model.config.mask_index;
  const n = x.length;
  const rows: Row[] = [];
  const base = { seq: j, sample: s };
  if (r.estimator === 'ar') {
    // prepend none: x[0..n-2] predicts x[1..]; bos/mask: [P, x[0..n-2]] predicts all of x.
    const P = r.prependToken;
    const m = P < 0 ? n - 1 : n;
    const order = new Int32Array(m);
    for (let i = 0; i < m; i++) order[i] = i;
    const input = P < 0 ? x.slice(0, n - 1) : Int32Array.from([P, ...x.subarray(0, n - 1)]);
    rows.push({
      ...base, term: 0, kind: 'ar', attention: 'causal', order, input, x0: null,
      targets: P < 0 ? x.slice(1) : x.slice(), prefix: m, weight: 1,
    });
    return rows;
  }
  if (r.estimator === 'nelbo') {
    if (r.alpha0 < 1) {
      const rng = new NllRng(r.seed, j, s, STREAM_SEQUENTIAL);
      const d = maskedRow(x, M, rng, r.alpha0, false);
      rows.push({ ...base, term: rows.length, kind: 'sequential', attention: 'sequential', ...d, x0: gather(x, d.order), weight: 1 });
    }
    if (r.alpha0 > 0) {
      const rng = new NllRng(r.seed, j, s, STREAM_DIFFUSION);
      const u = (rng.next() + s) / r.samples;
      const t = SAMPLING_EPS + (1 - SAMPLING_EPS) * u;
      const alphaT = r.alpha0 * (1 - (1 - SCHEDULE_EPS) * t);
      const weight = (r.alpha0 * (1 - SCHEDULE_EPS)) / (1 - alphaT);
      const d = maskedRow(x, M, rng, alphaT, true);
      rows.push({ ...base, term: rows.length, kind: 'diffusion', attention: r.diffusionAttention, ...d, x0: null, t, alphaT, weight });
    }
    return rows;
  }
  if (r.estimator === 'imdce') {
    const H = harmonic(n);
    for (let k = 0; k < r.orders; k++) {
      const rng = new NllRng(r.seed, j, s, STREAM_ORDER0 + k);
      const kept = imdceKept(rng.next(), n, H);
      // A uniform kept-subset: the first `kept` of a random permutation.
      const perm = new Int32Array(n);
      for (let i = 0; i < n; i++) perm[i] = i;
      rng.shuffle(perm);
      const clean = perm.slice(0, kept), masked = perm.slice(kept);
      rng.shuffle(clean);
      rng.shuffle(masked);
      const order = new Int32Array(n);
      order.set(clean, 0);
      order.set(masked, kept);
      const input = gather(x, order), targets = new Int32Array(n).fill(-1);
      for (let i = kept; i < n; i++) {
        targets[i] = input[i]!;
        input[i] = M;
      }
      rows.push({ ...base, term: k, kind: 'imdce', attention: r.diffusionAttention, order, input, x0: null, targets, prefix: kept, weight: H / r.orders });
    }
    return rows;
  }
  // exact
  for (let k = 0; k < r.orders; k++) {
    const rng = new NllRng(r.seed, j, s, STREAM_ORDER0 + k);
    let D = 0;
    for (let i = 0; i < n; i++) if (rng.next() < r.alpha0) D++;
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    rng.shuffle(order);
    order.subarray(D).sort();
    const input = new Int32Array(n).fill(M);
    const x0 = gather(x, order);
    rows.push({ ...base, term: k, kind: 'order', attention: 'sequential', order, input, x0, targets: x0.slice(), prefix: D, weight: 1 });
  }
  return rows;
}

/** H_n = Σ_{i=1..n} 1/i. */
function harmonic(n: number): number {
  let h = 0;
  for (let i = n; i >= 1; i--) h += 1 / i;
  return h;
}

/** IMDCE's number of clean tokens k ∈ [0, n) for a uniform u: p(k) = 1/((n − k)·H_n), by inversion. */
export function imdceKept(u: number, n: number, H = harmonic(n)): number {
  let c = 0;
  for (let k = 0; k < n; k++) {
    c += 1 / ((n - k) * H);
    if (u < c) return k;
  }
  return n - 1;  // rounding left u a hair above the total
}

function rowsPerSample(r: Resolved): number {
  if (r.estimator === 'exact' || r.estimator === 'imdce') return r.orders;
  if (r.estimator === 'ar') return 1;
  return (r.alpha0 < 1 ? 1 : 0) + (r.alpha0 > 0 ? 1 : 0);
}

/** Attention mode and row length of every row of a sequence of length n (for counting). */
function rowKeys(r: Resolved, n: number): Array<{ attention: AttentionMode; len: number }> {
  if (r.estimator === 'ar') return [{ attention: 'causal', len: r.prependToken < 0 ? n - 1 : n }];
  if (r.estimator === 'exact') return Array.from({ length: r.orders }, () => ({ attention: 'sequential' as const, len: n }));
  if (r.estimator === 'imdce') return Array.from({ length: r.orders }, () => ({ attention: r.diffusionAttention, len: n }));
  const keys: Array<{ attention: AttentionMode; len: number }> = [];
  if (r.alpha0 < 1) keys.push({ attention: 'sequential', len: n });
  if (r.alpha0 > 0) keys.push({ attention: r.diffusionAttention, len: n });
  return keys;
}

// Rows are scored in the engine (forwardScores), so a call's memory is its activations,
// which grow with the token rows it runs.
const TOKEN_ROWS_BUDGET = 16384;
const MAX_AUTO_BATCH = 16;

function batchFor(r: Resolved, len: number): number {
  if (r.batch !== undefined) return r.batch;
  return Math.max(1, Math.min(MAX_AUTO_BATCH, Math.floor(TOKEN_ROWS_BUDGET / len)));
}

function logSumExp(a: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < a.length; i++) if (a[i]! > m) m = a[i]!;
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.exp(a[i]! - m);
  return m + Math.log(s);
}

/** Statistics from a nll, its stderr and the tokens scored. */
export function nllStats(nll: number, stderr: number, tokens: number): NllStats {
  const nllPerToken = nll / tokens;
  return {
    nll,
    tokens,
    nllPerToken,
    perplexity: Math.exp(nllPerToken),
    bitsPerToken: nllPerToken / Math.LN2,
    stderr,
    stderrPerToken: stderr / tokens,
  };
}

/** Mean and standard error of the mean (sample variance, S − 1 denominator). */
function meanAndStderr(v: Float64Array, deterministic: boolean): { mean: number; stderr: number } {
  const S = v.length;
  let mean = 0;
  for (let i = 0; i < S; i++) mean += v[i]!;
  mean /= S;
  if (deterministic) return { mean, stderr: 0 };
  if (S < 2) return { mean, stderr: NaN };
  let ss = 0;
  for (let i = 0; i < S; i++) ss += (v[i]! - mean) ** 2;
  return { mean, stderr: Math.sqrt(ss / (S - 1) / S) };
}

function aborted(signal: AbortSignal): EsolmError {
  return new EsolmError('ERR_ABORTED', 'the likelihood evaluation was aborted', { cause: signal.reason });
}

/**
 * Estimates −log p(x) of one sequence or several.
 *
 * @param model  an esolm or mdlm model (`nelbo`, `exact`) or an ar model (`ar`).
 * @param tokens one sequence (Int32Array) or several, each of 1..L clean tokens (L = the
 *   model's context length; `ar` needs >= 2). Sequences shorter than L are scored as
 *   they are, at positions 0..n−1. The mask token may not occur.
 * @returns per sequence: `nll` (nats; the mean of `samples` estimates), `nllPerToken`,
 *   `perplexity`, `bitsPerToken`, `stderr` (Monte Carlo standard error of `nll` treating
 *   the estimates as independent; the stratified t makes it conservative for `nelbo`),
 *   and the totals over all sequences (token-weighted; stderrs combined in quadrature).
 * @throws EsolmError ERR_INVALID_ARG for a bad option or token ("Expected … for … but
 *   received …"), ERR_ABORTED when `signal` aborts, and whatever `model.forward` throws.
 */
export async function computeNll(model: Model, tokens: Int32Array | readonly Int32Array[], opts: NllOptions = {}): Promise<NllResult> {
  if (typeof model !== 'object' || model === null || typeof (model as Model).forward !== 'function' || !(model as Model).config) {
    throw expected('a Model', 'model', model);
  }
  const r = resolveOptions(model, opts);
  const seqs = resolveTokens(model, tokens, r.estimator, r.prependToken);
  if (r.signal?.aborted) throw aborted(r.signal);

  // Count forward calls: one queue per (attention, row length), flushed when full.
  const counts = new Map<string, number>();
  for (const x of seqs) {
    for (const k of rowKeys(r, x.length)) {
      const key = `${k.attention}:${k.len}`;
      counts.set(key, (counts.get(key) ?? 0) + r.samples);
    }
  }
  let total = 0;
  for (const [key, c] of counts) total += Math.ceil(c / batchFor(r, Number(key.split(':')[1])));

  const perSample = rowsPerSample(r);
  const values = seqs.map(() => new Float64Array(r.samples * perSample));
  const weights = seqs.map(() => new Float64Array(r.samples * perSample));
  const traces: NllTermTrace[][][] | null = r.trace ? seqs.map(() => Array.from({ length: r.samples }, () => [])) : null;

  let done = 0;
  r.onProgress?.(0, total);
  let prev: Promise<void> | null = null;

  const score = (rows: Row[], nll: Float64Array, len: number): void => {
    for (let b = 0; b < rows.length; b++) {
      const row = rows[b]!;
      let value = 0;
      for (let i = 0; i < len; i++) if (row.targets[i]! >= 0) value += nll[b * len + i]!;
      values[row.seq]![row.sample * perSample + row.term] = value;
      weights[row.seq]![row.sample * perSample + row.term] = row.weight;
      if (traces) {
        const tr: NllTermTrace = {
          kind: row.kind, attention: row.attention, order: row.order, input: row.input, prefix: row.prefix,
          weight: row.weight, value,
        };
        if (row.t !== undefined) {
          tr.t = row.t;
          tr.alphaT = row.alphaT;
        }
        traces[row.seq]![row.sample]![row.term] = tr;
      }
    }
    done++;
    r.onProgress?.(done, total);
  };

  const settle = async (): Promise<void> => {
    if (prev) {
      const p = prev;
      prev = null;
      await p;
    }
  };

  const flush = async (rows: Row[]): Promise<void> => {
    if (r.signal?.aborted) {
      await settle().catch(() => undefined);
      throw aborted(r.signal);
    }
    const len = rows[0]!.input.length;
    const batch = rows.length;
    const tok = new Int32Array(batch * len);
    const pos = new Int32Array(batch * len);
    const x0 = rows[0]!.x0 ? new Int32Array(batch * len) : undefined;
    // Eso-LM (A) sequential term: the clean slots of z0 are a bidirectional prefix.
    const prefix = r.prefixLm && rows[0]!.kind === 'sequential' ? Int32Array.from(rows, (row) => row.prefix) : undefined;
    const targets = new Int32Array(batch * len);
    rows.forEach((row, b) => {
      tok.set(row.input, b * len);
      pos.set(row.order, b * len);
      targets.set(row.targets, b * len);
      if (x0) x0.set(row.x0!, b * len);
    });
    // The engine scores the rows (float64 log-softmax, mask column −1e6): no logits in JS.
    const p = model
      .forwardScores({ tokens: tok, positions: pos, batch, attention: rows[0]!.attention, targets, ...(x0 ? { x0 } : {}), ...(prefix ? { prefix } : {}) })
      .then((nll) => score(rows, nll, len));
    p.catch(() => undefined); // handled when awaited below; avoids an unhandled rejection meanwhile
    try {
      await settle(); // score the previous call while this one runs
    } catch (e) {
      await p.catch(() => undefined);
      throw e;
    }
    prev = p;
  };

  const queues = new Map<string, Row[]>();
  for (let j = 0; j < seqs.length; j++) {
    const x = seqs[j]!;
    for (let s = 0; s < r.samples; s++) {
      for (const row of sampleRows(model, r, x, j, s)) {
        const key = `${row.attention}:${row.input.length}`;
        let q = queues.get(key);
        if (!q) queues.set(key, (q = []));
        q.push(row);
        if (q.length >= batchFor(r, row.input.length)) {
          queues.delete(key);
          await flush(q);
        }
      }
    }
  }
  for (const q of queues.values()) await flush(q);
  await settle();

  // Combine the terms of each sample, then the samples of each sequence.
  const sequences: NllSequenceResult[] = [];
  let nllSum = 0;
  let varSum = 0;
  let tokSum = 0;
  for (let j = 0; j < seqs.length; j++) {
    const v = values[j]!;
    const w = weights[j]!;
    const estimates = new Float64Array(r.samples);
    for (let s = 0; s < r.samples; s++) {
      const terms = v.subarray(s * perSample, (s + 1) * perSample);
      if (r.estimator === 'exact') {
        const logp = new Float64Array(terms.length);
        for (let k = 0; k < terms.length; k++) logp[k] = -terms[k]!;
        estimates[s] = -(logSumExp(logp) - Math.log(terms.length));
      } else {
        let e = 0;
        for (let k = 0; k < terms.length; k++) e += w[s * perSample + k]! * terms[k]!;
        estimates[s] = e;
      }
    }
    const { mean, stderr } = meanAndStderr(estimates, r.deterministic);
    const n = r.estimator === 'ar' && r.prependToken < 0 ? seqs[j]!.length - 1 : seqs[j]!.length;
    const res: NllSequenceResult = { ...nllStats(mean, stderr, n), samples: r.samples, estimates };
    if (traces) res.trace = traces[j]!.map((terms, s) => ({ estimate: estimates[s]!, terms }));
    sequences.push(res);
    nllSum += mean;
    varSum += stderr * stderr;
    tokSum += n;
  }
  return {
    estimator: r.estimator,
    alpha0: r.alpha0,
    orders: r.orders,
    seed: r.seed,
    deterministic: r.deterministic,
    sequences,
    total: nllStats(nllSum, Math.sqrt(varSum), tokSum),
    forwardCalls: done,
  };
}
