/**
 * The `esolm` command line: generate, eval, serve, convert, info, doctor, bench, build.
 * Every command that reads a model takes -m/--model, defaulting to the model shipped in the
 * package (models/default). Ctrl-C aborts the running command, restores the terminal and
 * exits 130 (serve: Ctrl-C or SIGTERM drains, then exits 0).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import { EsolmError } from './errors.js';
import { Model, readModelFolder, weightsFileFormat, type LoadOptions, type StepEvent } from './model.js';
import { Sampler, type NamedOrder, type Prepend, type SamplerMethod } from './sampler.js';
import { addonReport, cudaUnavailableReason, defaultModelDir, loadCpuAddon, loadCudaAddon, packageVersion } from './loader.js';
import { registerEvalCommand } from './eval-command.js';
import { convertCheckpoint } from './checkpoint/convert.js';
import { addRedisOptions, redisOptionsFromCli, registerWorkerCommand, type RedisCli } from './queue/cli.js';
import type { Tokenizer } from './tokenizers/index.js';
import type { ServeOptions } from './serve/index.js';
import { benchSvg, denoisingSvg } from './svg.js';

type BackendOpt = 'cpu' | 'cuda' | 'auto';

/** Aborted by the first Ctrl-C (SIGINT); commands that honour it pass it on as `signal`. */
let interrupt = new AbortController();
/** Set by a command that stops on `interrupt`; otherwise Ctrl-C exits at once. */
let interruptible = false;
let interrupted = false;

/** Shows the cursor again (cli-progress and --stream hide or move it). */
function restoreTerminal(): void {
  if (process.stderr.isTTY) process.stderr.write('\x1b[?25h');
  if (process.stdout.isTTY) process.stdout.write('\x1b[?25h');
}

function onSigint(): void {
  restoreTerminal();
  if (interrupted || !interruptible) process.exit(130);
  interrupted = true;
  interrupt.abort();
}

/** Options named in API errors ("Expected ... for topP"), as the command line spells them. */
const FLAGS: Record<string, string> = {
  topP: '--top-p', temperature: '--temperature', alpha0: '--alpha0', steps: '--steps', seed: '--seed',
  batch: '--batch', length: '--length', blocks: '--blocks', method: '--method', greedy: '--greedy',
  backend: '--backend', 'options.backend': '--backend', 'options.weights': '--weights', 'options.math': '--math', estimator: '--estimator', samples: '--samples', orders: '--orders',
  order: '--order', prepend: '--prepend',
};

/** Rewrites "for topP but received" into "for --top-p but received" (sharp-style messages, errors.ts). */
export function flagWorded(message: string): string {
  return message.replace(/ for ([\w.]+) but received /g, (m, name: string) => (FLAGS[name] ? ` for ${FLAGS[name]} but received ` : m));
}

function int(v: string): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isSafeInteger(x)) throw new InvalidArgumentError('Not an integer.');
  return x;
}
function posInt(v: string): number {
  const x = int(v);
  if (x < 1) throw new InvalidArgumentError('Not a positive integer.');
  return x;
}
function num(v: string): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x)) throw new InvalidArgumentError('Not a number.');
  return x;
}
function backendOpt(v: string): BackendOpt {
  if (v !== 'cpu' && v !== 'cuda' && v !== 'auto') throw new InvalidArgumentError('Expected cpu, cuda or auto.');
  return v;
}

type WeightsOpt = NonNullable<LoadOptions['weights']>;
type MathOpt = NonNullable<LoadOptions['math']>;
function weightsOpt(v: string): WeightsOpt {
  if (v !== 'auto' && v !== 'f32' && v !== 'bf16' && v !== 'q8') throw new InvalidArgumentError('Expected auto, f32, bf16 or q8.');
  return v;
}
function mathOpt(v: string): MathOpt {
  if (v !== 'f32' && v !== 'bf16' && v !== 'int8') throw new InvalidArgumentError('Expected f32, bf16 or int8.');
  return v;
}
/** How the CPU holds and multiplies the weights (Model.load `weights` and `math`). */
interface StorageCli { weights?: WeightsOpt; math?: MathOpt }
function addStorageOptions(c: Command): Command {
  return c
    .option('--weights <w>', 'how the CPU holds the matrices: auto | f32 | bf16 | q8 (default: auto, the file\'s own precision)', weightsOpt)
    .option('--math <m>', 'CPU matrix products: f32 | bf16 (BF16 weights, AVX512_BF16) | int8 (q8 weights, AVX512_VNNI); default f32', mathOpt);
}

async function openModel(dir: string | undefined, backend: BackendOpt, storage: StorageCli = {}): Promise<Model> {
  const d = dir ?? defaultModelDir();
  if (!dir && !existsSync(path.join(d, 'config.json'))) {
    throw new EsolmError('ERR_IO', `the default model is missing from this installation (${d}); pass --model <dir>`);
  }
  return Model.load(d, { backend, ...(storage.weights ? { weights: storage.weights } : {}), ...(storage.math ? { math: storage.math } : {}) });
}

/**
 * Turns an infill pattern into given tokens: every `_` is one position to generate; the
 * text between runs of `_` is tokenized and fixed at its positions, in order.
 */
export function parseInfill(pattern: string, tok: Tokenizer): { length: number; fixed: Map<number, number> } {
  const fixed = new Map<number, number>();
  let pos = 0;
  for (const part of pattern.split(/(_+)/)) {
    if (part.length === 0) continue;
    if (/^_+$/.test(part)) {
      pos += part.length;
      continue;
    }
    for (const t of tok.encode(part)) fixed.set(pos++, t);
  }
  return { length: pos, fixed };
}

/** Renders the sequence being denoised: masked positions as '░', one cell per token. */
function render(tokens: Int32Array, mask: number, tok: Tokenizer | null): string {
  if (tok?.name === 'bytes') {
    // Bytes: decode runs of revealed bytes together so multi-byte characters show.
    let out = '';
    let run: number[] = [];
    const flush = (): void => { if (run.length) out += tok.decode(run); run = []; };
    for (const t of tokens) {
      if (t === mask) { flush(); out += '░'; } else run.push(t);
    }
    flush();
    return out.replace(/\n/g, '⏎');
  }
  return Array.from(tokens, (t) => (t === mask ? '░' : tok ? tok.decode([t]) : `${t} `)).join('').replace(/\n/g, '⏎');
}

interface GenerateCli {
  model?: string; infill?: string; length?: number; steps?: number; alpha0?: number; topP?: number;
  temperature?: number; seed: number; batch: number; method?: SamplerMethod; backend: BackendOpt;
  greedy?: boolean; stream?: boolean; json?: boolean; blocks?: number; record?: string; order?: NamedOrder; prepend?: Prepend;
  weights?: WeightsOpt; math?: MathOpt;
}

async function generateCommand(prompt: string | undefined, o0: GenerateCli): Promise<void> {
  const model = await openModel(o0.model, o0.backend, o0);
  try {
    // Without --method a model samples the way it was trained: esolm-a, mdlm and ar models
    // with their own sampler, everything else with Eso-LM (B).
    const arch = model.config.arch;
    const o = { ...o0, method: o0.method ?? (arch === 'esolm' ? 'esolm' : arch) } as GenerateCli & { method: SamplerMethod };
    const usesAlpha0 = o.method === 'esolm' || o.method === 'esolm-a';
    const planned = o.blocks !== undefined || o.order !== undefined;
    const tok = model.tokenizer;
    const L0 = o.length ?? model.config.length;
    let length = L0;
    let fixed: Map<number, number> | undefined;
    let promptTokens: Int32Array | undefined;
    if (o.infill !== undefined) {
      if (!tok) throw new EsolmError('ERR_INVALID_ARG', '--infill needs a model with a tokenizer');
      if (prompt !== undefined) throw new EsolmError('ERR_INVALID_ARG', 'give either a prompt or --infill, not both');
      const p = parseInfill(o.infill, tok);
      fixed = p.fixed;
      length = Math.max(p.length, o.length ?? 0);
    } else if (prompt !== undefined) {
      if (!tok) throw new EsolmError('ERR_INVALID_ARG', 'a text prompt needs a model with a tokenizer');
      promptTokens = tok.encode(prompt);
    }
    // Options not given on the command line come from the model's config.json "sampling"
    // (its recommended settings), then from the built-in defaults.
    const rec = model.config.sampling ?? {};
    const steps = o.steps ?? rec.steps ?? 64;
    const alpha0 = o.alpha0 ?? rec.alpha0 ?? model.config.training?.alpha0 ?? 1;
    const sampler = new Sampler({
      method: o.method,
      ...(o.method !== 'ar' && (!planned || o.steps !== undefined) ? { steps } : {}),
      ...(usesAlpha0 ? { alpha0 } : {}),
      ...(o.blocks !== undefined ? { blocks: { length: o.blocks, shuffle: true } } : {}),
      ...(o.order !== undefined ? { order: o.order } : {}),
      ...(o.prepend !== undefined ? { prepend: o.prepend } : {}),
      topP: o.topP ?? rec.topP ?? 0.9, temperature: o.temperature ?? rec.temperature ?? 1, seed: o.seed,
      greedy: o.greedy ?? false,
    });
    const mask = model.config.mask_index;
    const tty = process.stdout.isTTY === true;
    // --stream on a terminal redraws the sequences; anywhere else it writes one JSON object per
    // line (NDJSON): a "step" event per step, then the "result".
    const ndjson = o.stream === true && !tty && !o.json;
    const live = o.stream === true && tty && !o.json;
    const current = Array.from({ length: o.batch }, () => new Int32Array(length).fill(mask));
    const given = new Map<number, number>(fixed ?? []);
    promptTokens?.forEach((t, i) => given.set(i, t));
    for (const seq of current) for (const [p, t] of given) if (p < length) seq[p] = t;
    let shownLines = 0;
    let lastDraw = 0;
    const draw = (final: boolean): void => {
      const now = Date.now();
      if (!final && now - lastDraw < 33) return;  // ~30 frames per second
      lastDraw = now;
      const lines = current.map((s, b) => `${o.batch > 1 ? `[${b}] ` : ''}${render(s, mask, tok)}`);
      if (tty) {
        const width = process.stdout.columns || 80;
        if (shownLines > 0) process.stdout.write(`\x1b[${shownLines}F\x1b[J`);
        const text = lines.join('\n');
        process.stdout.write(text + '\n');
        shownLines = lines.reduce((n, l) => n + Math.max(1, Math.ceil([...l].length / width)), 0);
      } else if (final) {
        process.stdout.write(lines.join('\n') + '\n');
      }
    };
    // --record: when each position of sequence 0 was revealed, and in which phase.
    const revealedAt = new Array<number>(length).fill(-1);
    const phaseAt = new Array<string>(length).fill('given');
    let bar: cliProgress.SingleBar | null = null;
    const showBar = !live && !o.json && process.stderr.isTTY === true && length >= 256;
    const onStep = (e: StepEvent): void => {
      for (let b = 0; b < o.batch; b++) {
        for (let q = 0; q < e.perSequence; q++) {
          const p = e.positions[b * e.perSequence + q];
          if (p >= 0) current[b][p] = e.tokens[b * e.perSequence + q];
          if (p >= 0 && b === 0 && o.record) { revealedAt[p] = e.step; phaseAt[p] = e.phase; }
        }
      }
      if (live) draw(false);
      if (ndjson) {
        process.stdout.write(JSON.stringify({
          type: 'step', step: e.step, steps: e.steps, nfe: e.nfe, phase: e.phase, perSequence: e.perSequence,
          positions: Array.from(e.positions), tokens: Array.from(e.tokens),
        }) + '\n');
      }
      if (bar) {
        if (e.step === 0) bar.start(e.steps, 0);
        bar.update(e.step + 1);
      }
    };
    if (showBar) {
      bar = new cliProgress.SingleBar({ stream: process.stderr, format: `${o.method} [{bar}] {value}/{total} steps | {duration_formatted}`, hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic);
    }
    if (live) draw(true);
    interruptible = true;
    const res = await model.generate({
      sampler, batch: o.batch, length,
      ...(promptTokens ? { prompt: promptTokens } : {}),
      ...(fixed ? { fixed } : {}),
      onStep, signal: interrupt.signal,
    }).finally(() => bar?.stop());
    if (o.record) {
      const seq = res.sequences[0]!;
      const cells = Array.from(seq, (t) => (tok ? tok.decode([t]) : `${t} `));
      const what = o.method === 'esolm' ? `Eso-LM (B), alpha0 ${alpha0}` : o.method === 'esolm-a' ? `Eso-LM (A), alpha0 ${alpha0}` : o.method === 'mdlm' ? 'MDLM' : 'AR';
      writeFileSync(o.record, denoisingSvg({
        cells, revealedAt, phase: phaseAt, steps: res.steps,
        title: `${what} · ${length} tokens · ${res.steps} steps · ${res.nfe} network calls`,
      }));
    }
    if (ndjson) {
      process.stdout.write(JSON.stringify({
        type: 'result', model: model.dir, backend: model.backend, method: o.method, length, nfe: res.nfe, steps: res.steps,
        sequences: res.sequences.map((s, i) => ({ tokens: Array.from(s), ...(res.text ? { text: res.text[i] } : {}) })),
      }) + '\n');
      return;
    }
    if (o.json) {
      process.stdout.write(JSON.stringify({
        model: model.dir, backend: model.backend, method: o.method, length, nfe: res.nfe, steps: res.steps,
        nDiffusion: res.nDiffusion, replayedSteps: res.replayedSteps, timings: res.timings,
        sequences: res.sequences.map((s, i) => ({ tokens: Array.from(s), ...(res.text ? { text: res.text[i] } : {}) })),
      }, null, 2) + '\n');
      return;
    }
    if (live) {
      res.sequences.forEach((s, b) => current[b].set(s));
      draw(true);
    } else {
      res.sequences.forEach((s, b) => {
        if (o.batch > 1) process.stdout.write(`--- sequence ${b}\n`);
        process.stdout.write((res.text ? res.text[b] : Array.from(s).join(' ')) + '\n');
      });
    }
    process.stderr.write(`[${o.method}${usesAlpha0 ? ` alpha0=${alpha0}` : ''} T=${steps} L=${length} NFE=${res.nfe} ` +
      `${(res.timings.totalMs / 1e3).toFixed(2)} s on ${model.backend}]\n`);
  } finally {
    model.dispose();
  }
}

async function infoCommand(o: { model?: string; backend: BackendOpt; json?: boolean } & StorageCli): Promise<void> {
  const model = await openModel(o.model, o.backend, o);
  try {
    const c = model.config;
    const d = c.hidden_size;
    const blocks = c.n_blocks * (4 * d * d + 2 * 4 * d * d + 4 * d + d);
    const params = c.vocab_size * d * 2 + c.vocab_size + blocks;
    const info = {
      model: model.dir, config: c, backend: model.backend, ...(model.backendReason ? { backendReason: model.backendReason } : {}),
      tokenizer: model.tokenizer?.name ?? null,
      weights: { file: weightsFileFormat(readModelFolder(model.dir).entries), storage: model.weights },
      parameters: params, weightBytesF32: params * 4,
      // K and V per token: BF16 on CUDA and under the CPU's BF16 and int8 math, else F32.
      kvBytesPerToken: c.n_blocks * 2 * d * (model.backend === 'cuda' || (o.math ?? 'f32') !== 'f32' ? 2 : 4),
      process: { rssBytes: process.memoryUsage().rss },
    };
    if (o.json) {
      process.stdout.write(JSON.stringify(info, null, 2) + '\n');
      return;
    }
    const mb = (x: number): string => `${(x / 2 ** 20).toFixed(1)} MiB`;
    console.log(`model      ${info.model}`);
    console.log(`arch       ${c.arch}: hidden ${d}, ${c.n_heads} heads, ${c.n_blocks} blocks, vocab ${c.vocab_size} (mask ${c.mask_index}), context ${c.length}`);
    console.log(`tokenizer  ${info.tokenizer ?? '(none: token ids only)'}`);
    if (c.training) console.log(`training   ${describeTraining(c.training)}`);
    console.log(`weights    file ${info.weights.file}, held as ${info.weights.storage} on ${model.backend}`);
    console.log(`parameters ${(params / 1e6).toFixed(2)} M (after folding the constant adaLN): ${mb(info.weightBytesF32)} as F32`);
    console.log(`KV cache   ${info.kvBytesPerToken} bytes per token per sequence`);
    console.log(`backend    ${model.backend}${model.backendReason ? ` (${model.backendReason})` : ''}`);
    console.log(`memory     process RSS ${mb(info.process.rssBytes)}`);
  } finally {
    model.dispose();
  }
}

/** One line for `info`: the training settings a converted checkpoint recorded. */
export function describeTraining(t: NonNullable<Model['config']['training']>): string {
  const parts: string[] = [];
  if (t.algo !== undefined) parts.push(t.algo);
  if (t.alpha0 !== undefined) parts.push(`alpha0 ${t.alpha0} (sampling and eval default to it)`);
  if (t.batch_split !== undefined) parts.push(`batch_split ${t.batch_split}`);
  if (t.diffusion_attn_mode !== undefined) parts.push(`diffusion attention ${t.diffusion_attn_mode}`);
  if (t.sequential_attn_mode !== undefined) parts.push(`sequential attention ${t.sequential_attn_mode}`);
  if (t.prepend !== undefined) parts.push(`prepend ${t.prepend}`);
  if (t.length !== undefined) parts.push(`length ${t.length}`);
  return parts.join(', ') || '(recorded, empty)';
}

/** Which backends load here, from where, and why not. Exits 1 when the CPU addon does not load. */
function doctorCommand(o: { json?: boolean }): void {
  const addons = addonReport();
  const report: Record<string, unknown> = {
    version: packageVersion(), platform: addons.platform, node: process.versions.node, cpus: cpus().length, cpuModel: cpus()[0]?.model,
    package: path.dirname(path.dirname(defaultModelDir())),
  };
  try {
    const info = loadCpuAddon().backendInfo();
    report.cpu = { ok: true, path: addons.cpu.path, kernels: info.cpuKernels, kernelsAvailable: info.cpuKernelsAvailable, ...(info.cpuKernelsError ? { kernelsError: info.cpuKernelsError } : {}), bf16Math: info.cpuBf16Math ?? null, ...(info.cpuBf16MathError ? { bf16MathError: info.cpuBf16MathError } : {}), int8Math: info.cpuInt8Math ?? null, ...(info.cpuInt8MathError ? { int8MathError: info.cpuInt8MathError } : {}), threads: info.hardwareThreads };
  } catch (e) {
    report.cpu = { ok: false, reason: (e as Error).message, tried: addons.cpu.tried };
  }
  const cudaAddon = loadCudaAddon();
  const why = cudaUnavailableReason();
  // The planned KV loop with CUDA graphs is opt-in until a GPU check has verified it (cuda/backend_cuda.cu reads the same variables).
  const kvLoop = process.env.ESOLM_CUDA_KV_LOOP === '1', graphs = process.env.ESOLM_CUDA_GRAPHS !== '0';
  report.cuda = cudaAddon
    ? { addon: true, path: addons.cuda.path, usable: why === '', ...(why ? { reason: why } : {}), ...cudaAddon.backendInfo().cuda, kvLoop, graphs }
    : { addon: false, usable: false, reason: why };
  report.defaultModel = existsSync(path.join(defaultModelDir(), 'config.json')) ? defaultModelDir() : null;
  const cpu = report.cpu as { ok: boolean; path?: string; kernels?: string; kernelsAvailable?: string; kernelsError?: string; bf16Math?: string | null; bf16MathError?: string; int8Math?: string | null; int8MathError?: string; reason?: string };
  if (!cpu.ok) process.exitCode = 1;
  if (o.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return;
  }
  console.log(`esolm      ${report.version} (${report.package})`);
  console.log(`platform   ${report.platform}, Node ${report.node}, ${report.cpus} CPUs (${report.cpuModel})`);
  console.log(`cpu        ${cpu.ok ? `ok (kernels: ${cpu.kernels}; this CPU runs: ${cpu.kernelsAvailable}; ESOLM_CPU_KERNELS forces one)\n           ${cpu.path}` : `NOT AVAILABLE: ${cpu.reason}`}`);
  if (cpu.kernelsError) console.log(`           ESOLM_CPU_KERNELS=${process.env.ESOLM_CPU_KERNELS}: ${cpu.kernelsError}`);
  if (cpu.ok) console.log(`           BF16 math (load option math: 'bf16'): ${cpu.bf16Math ? `available (${cpu.bf16Math}, vdpbf16ps)` : `not available: ${cpu.bf16MathError}`}`);
  if (cpu.ok) console.log(`           int8 math (load option math: 'int8'): ${cpu.int8Math ? `available (${cpu.int8Math}, vpdpbusd)` : `not available: ${cpu.int8MathError}`}`);
  console.log(`cuda       ${why === '' ? `ok (${(report.cuda as { name?: string }).name})\n           ${addons.cuda.path}` : `not available: ${why}`}`);
  if (why === '') console.log(`           planned KV loop ${kvLoop ? `on, CUDA graphs ${graphs ? 'on' : 'off'}` : 'off (opt-in: ESOLM_CUDA_KV_LOOP=1)'}`);
  console.log(`default    ${report.defaultModel ?? 'missing'}`);
}

async function benchCommand(o: { model?: string; backend: BackendOpt; length: number; steps: string; alpha0: number; repeat: number; json?: boolean; svg?: string } & StorageCli): Promise<void> {
  if (o.repeat < 1) throw new EsolmError('ERR_INVALID_ARG', `Expected a positive integer for --repeat but received ${o.repeat}`);
  interruptible = true;
  const model = await openModel(o.model, o.backend, o);
  try {
    const rows: { method: string; T: number | null; nfe: number; seconds: number; tokensPerS: number }[] = [];
    const L = Math.min(o.length, model.config.length);
    // One untimed run first, so the first timed row does not pay for warming up.
    await model.generate({ sampler: new Sampler({ method: 'esolm', steps: 4, seed: 1 }), length: Math.min(L, 16), signal: interrupt.signal });
    /** The median time of --repeat runs. */
    const timed = async (sampler: Sampler): Promise<{ nfe: number; seconds: number }> => {
      const times: number[] = [];
      let nfe = 0;
      for (let i = 0; i < o.repeat; i++) {
        const r = await model.generate({ sampler, length: L, signal: interrupt.signal });
        times.push(r.timings.totalMs / 1e3);
        nfe = r.nfe;
      }
      times.sort((a, b) => a - b);
      return { nfe, seconds: times[(times.length - 1) >> 1]! };
    };
    for (const T of o.steps.split(',').map(Number)) {
      for (const method of ['esolm', 'mdlm'] as const) {
        const sampler = new Sampler({ method, steps: T, ...(method === 'esolm' ? { alpha0: o.alpha0 } : {}), topP: 0.9, seed: 1 });
        const r = await timed(sampler);
        rows.push({ method, T, nfe: r.nfe, seconds: r.seconds, tokensPerS: L / r.seconds });
      }
    }
    const bos = model.tokenizer?.bosId ?? 0;
    const r = await timed(new Sampler({ method: 'ar', topP: 0.9, seed: 1, bos }));
    rows.push({ method: 'ar', T: null, nfe: r.nfe, seconds: r.seconds, tokensPerS: L / r.seconds });
    if (o.svg) {
      const where = model.backend === 'cuda' ? (loadCudaAddon()?.backendInfo().cuda?.name ?? 'CUDA') : `${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}`;
      writeFileSync(o.svg, benchSvg(
        rows.map((x) => ({ label: x.T === null ? 'ar' : `${x.method} T=${x.T}`, seconds: x.seconds, method: x.method })),
        `Generating ${L} tokens: Eso-LM (B) vs MDLM vs AR`,
        `${path.basename(model.dir)} model on ${model.backend} (${where}), batch 1, top-p 0.9, esolm alpha0 = ${o.alpha0}, median of ${o.repeat}`));
    }
    if (o.json) {
      process.stdout.write(JSON.stringify({ model: model.dir, backend: model.backend, length: L, rows }, null, 2) + '\n');
      return;
    }
    console.log(`${model.dir} on ${model.backend}, L = ${L}, batch 1, top-p 0.9, median of ${o.repeat}\n`);
    console.log('| method | T | NFE | seconds | tokens/s | MDLM / Eso-LM |\n|---|---:|---:|---:|---:|---:|');
    for (const x of rows) {
      const eso = rows.find((y) => y.method === 'esolm' && y.T === x.T);
      console.log(`| ${x.method} | ${x.T ?? '-'} | ${x.nfe} | ${x.seconds.toFixed(3)} | ${x.tokensPerS.toFixed(0)} | ${x.method === 'mdlm' && eso ? (x.seconds / eso.seconds).toFixed(1) + 'x' : ''} |`);
    }
  } finally {
    model.dispose();
  }
}

interface ServeCli extends RedisCli {
  model?: string; host: string; port: number; backend: BackendOpt; maxBatch: number; batchWindowMs: number;
  maxQueue: number; apiKey?: string; timeoutMs: number; shutdownTimeoutMs: number;
}

async function serveCommand(o: ServeCli): Promise<void> {
  const dir = o.model ?? defaultModelDir();
  if (!o.model && !existsSync(path.join(dir, 'config.json'))) {
    throw new EsolmError('ERR_IO', `the default model is missing from this installation (${dir}); pass --model <dir>`);
  }
  const { createServer } = await import('./serve/index.js');  // fastify loads only for this command
  const server = await createServer({
    model: dir, backend: o.backend, host: o.host, port: o.port, maxBatch: o.maxBatch, batchWindowMs: o.batchWindowMs,
    maxQueue: o.maxQueue, apiKey: o.apiKey ?? process.env.ESOLM_API_KEY, requestTimeoutMs: o.timeoutMs,
    shutdownTimeoutMs: o.shutdownTimeoutMs,
    ...queueOptions(o),
  });
  const url = await server.listen();
  process.stderr.write(`esolm: serving ${server.model.dir} (${server.model.backend}) on ${url}\n`);
  // SIGTERM / SIGINT: stop accepting, let in-flight work finish (up to the deadline), exit 0.
  const stop = (signal: string): void => {
    process.stderr.write(`esolm: ${signal}: draining\n`);
    server.close().then(() => process.exit(0), (e: unknown) => {
      process.stderr.write(`esolm: shutdown failed: ${(e as Error).message}\n`);
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

/**
 * serve --redis: generations go to `esolm worker`s; the model loaded here only validates and
 * tokenizes, so `auto` means the CPU (no GPU memory for it).
 */
function queueOptions(o: ServeCli): Pick<ServeOptions, 'redis' | 'backend'> {
  const redis = redisOptionsFromCli(o);
  if (!redis) return {};
  return { redis: { ...redis, queue: o.queue, maxPayloadBytes: o.maxPayloadBytes }, ...(o.backend === 'auto' ? { backend: 'cpu' as const } : {}) };
}

export function buildProgram(): Command {
  const program = new Command();
  program.name('esolm').description('Esoteric Language Models (Eso-LMs), MDLM and AR from Node.js').showHelpAfterError()
    .version(packageVersion(), '-V, --version', 'print the esolm version');
  addStorageOptions(program.command('generate')
    .description('generate text (default: Eso-LM (B) with the default model)')
    .argument('[prompt]', 'text the sequences start with')
    .option('-m, --model <dir>', 'model folder (default: the model shipped in the package)')
    .option('--infill <pattern>', 'text with _ for each token to generate, e.g. "In the ____ God created"')
    .option('-n, --length <n>', 'tokens per sequence (default: the model context length)', posInt)
    .option('-T, --steps <n>', 'sampling steps T (default: the model\'s recommendation, else 64)', posInt)
    .option('--alpha0 <x>', 'Eso-LM alpha0 in [0, 1], the diffusion share (default: the model\'s, else 1)', num)
    .option('-p, --top-p <x>', 'nucleus top-p (default: the model\'s, else 0.9)', num)
    .option('-t, --temperature <x>', 'softmax temperature (default: the model\'s, else 1)', num)
    .option('-s, --seed <n>', 'random seed', int, 0)
    .option('-b, --batch <n>', 'sequences to generate', posInt, 1)
    .option('--method <name>', 'esolm | esolm-a | mdlm | ar (default: the model\'s arch)')
    .option('--blocks <n>', 'block ("subcontext") schedule with blocks of n positions (esolm, esolm-a, mdlm)', posInt)
    .option('--order <name>', 'named order: ar (use_ar_order) | block-ar (use_block_ar_order)')
    .option('--prepend <p>', 'AR prepend_token: none | bos | mask (default: the model\'s training setting, else none)')
    .option('--greedy', 'take the most likely token')
    .option('--backend <name>', 'cpu | cuda | auto', backendOpt, 'auto'))
    .option('--stream', 'show the denoising live (NDJSON step events when stdout is not a terminal)')
    .option('--record <file.svg>', 'write an animated SVG of sequence 0 being denoised')
    .option('--json', 'print JSON')
    .action(generateCommand);
  registerEvalCommand(program, {
    loadModel: (dir, backend) => Model.load(dir, { backend }),
    tokenize: (model, text) => {
      const t = model.tokenizer;
      if (!t) throw new EsolmError('ERR_INVALID_ARG', 'this model has no tokenizer; eval needs one to read text');
      const tokens = t.encode(text);
      return t.name === 'bytes' ? { tokens, bytes: tokens.length } : { tokens, bytes: Buffer.byteLength(text, 'utf8') };
    },
  });
  addRedisOptions(program.command('serve')
    .description('HTTP service: OpenAI-compatible completions, streaming, batching, metrics and a live page at /')
    .option('-m, --model <dir>', 'model folder (default: the model shipped in the package)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port (0 picks a free one)', int, 8080)
    .option('--backend <name>', 'cpu | cuda | auto', backendOpt, 'auto')
    .option('--max-batch <n>', 'most sequences per batched generation (1 turns batching off)', int, 8)
    .option('--batch-window-ms <n>', 'how long a batch waits for compatible requests', int, 10)
    .option('--max-queue <n>', 'most waiting requests before 429', int, 64)
    .option('--api-key <key>', 'require Authorization: Bearer <key> on /v1 (default: $ESOLM_API_KEY)')
    .option('--timeout-ms <n>', 'request deadline', int, 120000)
    .option('--shutdown-timeout-ms <n>', 'on SIGTERM, how long in-flight requests may finish', int, 30000), false)
    .action(serveCommand);
  program.command('convert')
    .description('convert an official checkpoint (.ckpt, .safetensors or a Hugging Face folder) to a model folder')
    .argument('<input>').argument('<out-dir>')
    .option('--dtype <t>', 'bf16 | f32 | q8 (q8: int8 linear matrices with F32 row scales, the rest as the default; default: bf16 when every source weight is BF16, else f32)')
    .option('--no-ema', 'take the raw weights instead of the EMA weights')
    .option('--arch <a>', 'esolm | esolm-a | mdlm | ar (default: inferred; mixed2 diffusion attention = esolm-a)')
    .option('--tokenizer <t>', 'tokenizer to record in config.json (default: gpt2 for vocab 50258)')
    .option('--n-heads <n>', 'attention heads when the source has no config', int)
    .option('--length <n>', 'context length when the source has no config', int)
    .option('--mask-index <n>', 'mask token id (default: the source config, else inferred from the vocabulary)', int)
    .action(async (input: string, out: string, o: Record<string, unknown>) => {
      // Every warning goes to stderr as it happens (the result lists them too).
      const r = await convertCheckpoint(input, out, { ...o, onWarning: (m: string) => process.stderr.write(`warning: ${m}\n`) } as never);
      console.log(`wrote ${out}: ${r.config.arch}, hidden ${r.config.hidden_size}, ${r.config.n_blocks} blocks, vocab ${r.config.vocab_size}, mask ${r.config.mask_index}, ${r.tensors} tensors (from ${r.source})`);
      if (r.config.training) console.log(`training: ${describeTraining(r.config.training)}`);
    });
  addStorageOptions(program.command('info')
    .description('model, backend and memory')
    .option('-m, --model <dir>', 'model folder (default: the model shipped in the package)')
    .option('--backend <name>', 'cpu | cuda | auto', backendOpt, 'auto'))
    .option('--json', 'print JSON')
    .action(infoCommand);
  program.command('doctor')
    .description('which backends load here, and why not')
    .option('--json', 'print JSON')
    .action(doctorCommand);
  addStorageOptions(program.command('bench')
    .description('time Eso-LM vs MDLM vs AR generation on a model')
    .option('-m, --model <dir>', 'model folder (default: the model shipped in the package)')
    .option('--backend <name>', 'cpu | cuda | auto', backendOpt, 'auto'))
    .option('-n, --length <n>', 'tokens per sequence', posInt, 256)
    .option('--steps <list>', 'comma-separated T values', '16,64')
    .option('--alpha0 <x>', 'Eso-LM alpha0', num, 1)
    .option('--json', 'print JSON')
    .option('--repeat <n>', 'runs per row; the median is reported', int, 1)
    .option('--svg <file>', 'also write the timings as an SVG bar chart')
    .action(benchCommand);
  program.command('build')
    .description('build the native addon from source into this installation (needs cmake and a C++17 compiler; --cuda: nvcc)')
    .option('--cuda', 'build the CUDA addon instead of the CPU addon')
    .action((o: { cuda?: boolean }) => {
      const root = path.dirname(path.dirname(defaultModelDir()));
      const { buildAddonSync } = createRequire(import.meta.url)(path.join(root, 'scripts', 'build-addon.cjs')) as
        { buildAddonSync: (root: string, cuda: boolean) => string };
      const err = buildAddonSync(root, o.cuda === true);
      if (err) throw new EsolmError('ERR_NO_ADDON', `the source build failed: ${err}`);
      console.log(`built ${path.join(root, o.cuda ? 'cuda/build/Release/esolm_cuda.node' : 'build/Release/esolm_cpu.node')} (it is loaded before any prebuilt package)`);
    });
  registerWorkerCommand(program, defaultModelDir);
  return program;
}

/** Runs the CLI on process.argv; errors print one line and set a non-zero exit code. */
export async function main(argv: string[] = process.argv): Promise<void> {
  interrupt = new AbortController();
  interrupted = false;
  interruptible = false;
  process.on('SIGINT', onSigint);
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (interrupted) {
      process.stderr.write('\nesolm: interrupted\n');
      process.exitCode = 130;
      return;
    }
    const err = e as { code?: string; message?: string };
    const message = e instanceof EsolmError ? flagWorded(err.message ?? '') : err.message ?? String(e);
    process.stderr.write(`esolm: ${message}${err.code ? ` (${err.code})` : ''}\n`);
    process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSigint);
    restoreTerminal();
  }
}
