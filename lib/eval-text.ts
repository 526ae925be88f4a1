/**
 * Perplexity of a long text: {@link evalText} splits a token stream into chunks of the
 * model's context length and scores them with {@link computeNll} (the `esolm eval`
 * command is in eval-command.ts).
 */
import type { Model } from './model.js';
import { expected, invalidArg } from './errors.js';
import { computeNll, nllStats, type NllEstimator, type NllOptions, type NllStats } from './likelihood.js';

export interface EvalTextOptions extends Omit<NllOptions, 'trace'> {
  /** Tokens per chunk, 1..L. Defaults to the model's context length L. */
  chunkLength?: number;
}

export interface EvalTextResult extends NllStats {
  estimator: NllEstimator;
  alpha0: number;
  /** Estimates per chunk (1 when deterministic). */
  samples: number;
  /** K (exact), else 1. */
  orders: number;
  seed: number;
  deterministic: boolean;
  /** Chunks scored. */
  chunks: number;
  chunkLength: number;
  /** Tokens in the stream (`tokens` counts those scored: `ar` does not score each chunk's first token). */
  inputTokens: number;
  /** 95% interval of the perplexity: exp(nllPerToken ± 1.96 · stderrPerToken). */
  perplexityLow: number;
  perplexityHigh: number;
  forwardCalls: number;
  /** Wall time of the scoring, seconds. */
  seconds: number;
}

/**
 * Scores a token stream of any length: chunks of `chunkLength` (default: the context
 * length L) tokens, the last partial chunk scored as it is (with `ar`, a last chunk of one
 * token is dropped: it has nothing to score). Chunk j uses the draws of sequence j of one
 * {@link computeNll} call with the same seed. Totals are token-weighted: nll = Σ chunk nll,
 * stderr = sqrt(Σ chunk stderr²) (the chunks' draws are independent).
 */
export async function evalText(model: Model, tokens: Int32Array, opts: EvalTextOptions = {}): Promise<EvalTextResult> {
  if (typeof model !== 'object' || model === null || !(model as Model).config) throw expected('a Model', 'model', model);
  if (!(tokens instanceof Int32Array)) throw expected('an Int32Array', 'tokens', tokens);
  if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'evalText options', opts);
  const L = model.config.length;
  const chunkLength = opts.chunkLength ?? L;
  if (!Number.isSafeInteger(chunkLength) || chunkLength < 1 || chunkLength > L) {
    throw expected(`an integer in [1, ${L}]`, 'chunkLength', chunkLength);
  }
  const estimator = opts.estimator ?? (model.config.arch === 'ar' ? 'ar' : 'nelbo');
  const chunks: Int32Array[] = [];
  for (let i = 0; i < tokens.length; i += chunkLength) chunks.push(tokens.subarray(i, Math.min(i + chunkLength, tokens.length)));
  if (estimator === 'ar' && chunks.length > 1 && chunks[chunks.length - 1]!.length < 2) chunks.pop();
  if (chunks.length === 0) throw invalidArg('there are no tokens to score');

  const { chunkLength: _drop, ...nllOpts } = opts;
  void _drop;
  const t0 = performance.now();
  const res = await computeNll(model, chunks, nllOpts);
  const seconds = (performance.now() - t0) / 1000;
  const stats = nllStats(res.total.nll, res.total.stderr, res.total.tokens);
  const half = 1.96 * stats.stderrPerToken;
  return {
    ...stats,
    estimator: res.estimator,
    alpha0: res.alpha0,
    samples: res.sequences[0]!.samples,
    orders: res.orders,
    seed: res.seed,
    deterministic: res.deterministic,
    chunks: chunks.length,
    chunkLength,
    inputTokens: tokens.length,
    perplexityLow: Math.exp(stats.nllPerToken - half),
    perplexityHigh: Math.exp(stats.nllPerToken + half),
    forwardCalls: res.forwardCalls,
    seconds,
  };
}
