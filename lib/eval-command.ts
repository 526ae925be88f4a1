/**
 * `esolm eval <text-file> [-m model]`: the perplexity of a text file with {@link evalText}.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import type { Model } from './model.js';
import { EsolmError, expected } from './errors.js';
import type { NllEstimator } from './likelihood.js';
import { defaultModelDir } from './loader.js';
import { evalText } from './eval-text.js';

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
  model?: string;
  estimator?: NllEstimator;
  alpha0: number;
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
 * Adds `eval <text-file> [-m model]` to `program`: perplexity ± 1.96 · standard error, bits
 * per token (and per byte when the tokenizer reports bytes), tokens scored and time;
 * `--json` prints one JSON object instead (NaN as null). A progress bar goes to stderr
 * when it is a TTY and `--json` is not given.
 */
export function registerEvalCommand(program: Command, deps: EvalCommandDeps): Command {
  return program
    .command('eval')
    .description('estimate the perplexity of a text file (Eso-LM NELBO, importance-weighted "exact" bound, or AR likelihood)')
    .argument('<text-file>', 'UTF-8 text to score')
    .option('-m, --model <dir>', 'model folder (default: the model shipped in the package)')
    .option('--estimator <name>', 'nelbo | exact | ar (default: ar for an ar model, else nelbo)')
    .option('--alpha0 <x>', 'Eso-LM alpha0 in [0, 1] (use the training value; 1 = MDLM bound, 0 = AR)', parseNumber, 1)
    .option('--samples <n>', 'Monte Carlo estimates per chunk', parseInteger, 8)
    .option('--orders <k>', 'orders per importance-weighted estimate (exact)', parseInteger, 4)
    .option('--seed <n>', 'random seed', parseInteger, 0)
    .option('--batch <n>', 'rows per forward call (default: automatic)', parseInteger)
    .option('--backend <name>', 'cpu | cuda | auto', 'auto')
    .option('--json', 'print one JSON object')
    .action(async (textFile: string, o: EvalCliOptions) => {
      const modelDir = o.model ?? defaultModelDir();
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
          alpha0: o.alpha0,
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
        const how = res.estimator === 'ar' ? 'ar (left to right)'
          : res.deterministic ? `${res.estimator} (alpha0 = 0: exact AR likelihood)`
            : res.estimator === 'exact'
              ? `exact (alpha0 = ${res.alpha0}, ${res.samples} x ${res.orders} orders, seed ${res.seed})`
              : `nelbo (alpha0 = ${res.alpha0}, ${res.samples} samples, seed ${res.seed})`;
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
