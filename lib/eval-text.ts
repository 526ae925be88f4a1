/**
 * Perplexity of a long text: {@link evalText} splits a token stream into chunks of the
 * model's context length and scores them with {@link computeNll}; {@link registerEvalCommand}
 * adds `esolm eval <model> <text-file>` to a commander program.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import type { Model } from './model.js';
import { EsolmError, expected, invalidArg } from './errors.js';
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
  /** K (exact, imdce), else 1. */
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

export type TokenizeResult = Int32Array | { tokens: Int32Array; bytes?: number };

export interface EvalCommandDeps {
  /** Loads a model folder (the command disposes it when done). */
  loadModel(dir: string, backend: 'cpu' | 'cuda' | 'auto'): Promise<Model>;
  /** Tokenizes the text with the model's tokenizer; `bytes` (the UTF-8 bytes the tokens cover) enables bits per byte. */
  tokenize(model: Model, text: string): TokenizeResult | Promise<TokenizeResult>;
  /** Where the report goes. Defaults to process.stdout. */
  stdout?: { write(text: string): unknown };
  /** Where the progress bar goes (only when it is a TTY and not --json). Defaults to process.stderr. */
  stderr?: NodeJS.WritableStream & { isTTY?: boolean };
}

interface EvalCliOptions {
  estimator?: NllEstimator;
  prepend?: 'none' | 'bos' | 'mask';
  alpha0?: number;
  samples: number;
  orders: number;
  seed: number;
  batch?: number;
  backend: 'cpu' | 'cuda' | 'auto';
  json?: boolean;
}

function parseNumber(v: string): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x)) throw new InvalidArgumentError('Not a number.');
  return x;
}

function parseInteger(v: string): number {
  const x = parseNumber(v);
  if (!Number.isSafeInteger(x)) throw new InvalidArgumentError('Not an integer.');
  return x;
}

function fmt(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

/**
 * Adds `eval <model> <text-file>` to `program`: perplexity ± 1.96 · standard error, bits
 * per token (and per byte when the tokenizer reports bytes), tokens scored and time;
 * `--json` prints one JSON object instead (NaN as null). A progress bar goes to stderr
 * when it is a TTY and `--json` is not given.
 */
export function registerEvalCommand(program: Command, deps: EvalCommandDeps): Command {
  return program
    .command('eval')
    .description('estimate the perplexity of a text file (Eso-LM NELBO, importance-weighted "exact" bound, or AR likelihood)')
    .argument('<model>', 'model folder')
    .argument('<text-file>', 'UTF-8 text to score')
    .option('--estimator <name>', 'nelbo | exact | imdce | ar (default: ar for an ar model, else nelbo)')
    .option('--alpha0 <x>', 'Eso-LM alpha0 in [0, 1] (default: the model\'s training alpha0, else 1; 1 = MDLM bound, 0 = AR)', parseNumber)
    .option('--prepend <p>', 'ar: the official prepend_token none | bos | mask (default: the model\'s training setting, else none)')
    .option('--samples <n>', 'Monte Carlo estimates per chunk', parseInteger, 8)
    .option('--orders <k>', 'orders per importance-weighted estimate (exact)', parseInteger, 4)
    .option('--seed <n>', 'random seed', parseInteger, 0)
    .option('--batch <n>', 'rows per forward call (default: automatic)', parseInteger)
    .option('--backend <name>', 'cpu | cuda | auto', 'auto')
    .option('--json', 'print one JSON object')
    .action(async (modelDir: string, textFile: string, o: EvalCliOptions) => {
      if (o.backend !== 'cpu' && o.backend !== 'cuda' && o.backend !== 'auto') throw expected('"cpu", "cuda" or "auto"', '--backend', o.backend);
      let text: string;
      try {
        text = await readFile(textFile, 'utf8');
      } catch (e) {
        throw new EsolmError('ERR_IO', `cannot read ${textFile}: ${(e as Error).message}`, { cause: e });
      }
      const out = deps.stdout ?? process.stdout;
      const err = deps.stderr ?? process.stderr;
      const model = await deps.loadModel(modelDir, o.backend);
      let bar: cliProgress.SingleBar | null = null;
      try {
        const tok = await deps.tokenize(model, text);
        const tokens = tok instanceof Int32Array ? tok : tok.tokens;
        const bytes = tok instanceof Int32Array ? undefined : tok.bytes;
        const showBar = !o.json && err.isTTY === true;
        if (showBar) {
          bar = new cliProgress.SingleBar({
            stream: err,
            format: 'eval [{bar}] {percentage}% | {value}/{total} forwards | ETA {eta_formatted}',
            hideCursor: true,
            clearOnComplete: true,
          }, cliProgress.Presets.shades_classic);
        }
        let started = false;
        const res = await evalText(model, tokens, {
          ...(o.estimator !== undefined ? { estimator: o.estimator } : {}),
          ...(o.alpha0 !== undefined ? { alpha0: o.alpha0 } : {}),
          ...(o.prepend !== undefined ? { prepend: o.prepend } : {}),
          samples: o.samples,
          orders: o.orders,
          seed: o.seed,
          ...(o.batch !== undefined ? { batch: o.batch } : {}),
          onProgress: (done, total) => {
            if (!bar) return;
            if (!started) {
              bar.start(total, done);
              started = true;
            } else bar.update(done);
          },
        });
        bar?.stop();
        bar = null;
        // Bits per byte over the bytes the scored tokens cover (all of them unless `ar`).
        const bitsPerByte = bytes !== undefined && bytes > 0
          ? res.nll / Math.LN2 / (bytes * (res.tokens / res.inputTokens)) : undefined;
        if (o.json) {
          const obj = {
            model: modelDir, backend: model.backend, ...res, ...(bitsPerByte !== undefined ? { bitsPerByte, bytes } : {}),
          };
          out.write(JSON.stringify(obj, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
          return;
        }
        const se = res.deterministic ? '' : ` ± ${fmt(1.96 * res.stderrPerToken * res.perplexity, 3)} (95%: ${fmt(res.perplexityLow, 3)}–${fmt(res.perplexityHigh, 3)})`;
        // Where alpha0 came from: the command line, or the model's training settings.
        const trained = model.config.training?.alpha0;
        const from = o.alpha0 !== undefined
          ? (trained !== undefined && trained !== o.alpha0 ? `, given; the model was trained with ${trained}` : '')
          : trained !== undefined && model.config.arch !== 'mdlm' ? ', the training alpha0' : '';
        const prepend = o.prepend ?? model.config.training?.prepend ?? 'none';
        const how = res.estimator === 'ar' ? `ar (left to right${prepend !== 'none' ? `, after a ${prepend} token` : ''})`
          : res.deterministic ? `${res.estimator} (alpha0 = 0${from}: exact AR likelihood)`
            : res.estimator === 'exact'
              ? `exact (alpha0 = ${res.alpha0}${from}, ${res.samples} x ${res.orders} orders, seed ${res.seed})`
              : res.estimator === 'imdce'
                ? `imdce (${res.samples} x ${res.orders} draws, seed ${res.seed})`
                : `nelbo (alpha0 = ${res.alpha0}${from}, ${res.samples} samples, seed ${res.seed})`;
        const lines = [
          `model       ${modelDir} (${model.config.arch}, ${model.backend})`,
          `estimator   ${how}`,
          `perplexity  ${fmt(res.perplexity, 3)}${se}`,
          `nll/token   ${fmt(res.nllPerToken, 4)}${res.deterministic ? '' : ` ± ${fmt(res.stderrPerToken, 4)}`} nats`,
          `bits/token  ${fmt(res.bitsPerToken, 4)}`,
          ...(bitsPerByte !== undefined ? [`bits/byte   ${fmt(bitsPerByte, 4)}`] : []),
          `tokens      ${res.tokens} scored of ${res.inputTokens}, ${res.chunks} chunk${res.chunks === 1 ? '' : 's'} of <= ${res.chunkLength}`,
          `time        ${fmt(res.seconds, 2)} s (${fmt(res.tokens / Math.max(res.seconds, 1e-9), 1)} tokens/s, ${res.forwardCalls} forward calls)`,
        ];
        out.write(lines.join('\n') + '\n');
      } finally {
        bar?.stop();
        model.dispose();
      }
    });
}
