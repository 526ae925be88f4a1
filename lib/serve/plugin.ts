/**
 * The esolm Fastify plugin: the HTTP routes over one Model and one Batcher.
 *
 *   POST /v1/completions   OpenAI-compatible completions (JSON or SSE chunks, then data: [DONE])
 *   POST /v1/generate      Model.generate's request; with stream: true one SSE event per step
 *   GET  /v1/models        the served model
 *   GET  /health, /health/live, /health/ready
 *   GET  /metrics          Prometheus text
 *   GET  /                 the live denoising page
 *
 * Register it in an existing Fastify app with `app.register(esolmPlugin, { model })`; the
 * plugin then owns a Batcher that closes with the app. /v1 routes need
 * `Authorization: Bearer <apiKey>` when apiKey is set.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Batcher, type AcceptedInfo, type BatchJob, type BatchJobResult, type GenerationSource } from '../batch/index.js';
import type { Model, StepEvent } from '../model.js';
import { errorBody, HttpError, toHttpError } from './errors.js';
import { createMetrics, type ServeMetrics } from './metrics.js';
import { PAGE_HTML } from './page.js';
import { checkBearer, parseCompletion, parseGenerate, seedOut, type ServeLimits } from './requests.js';
import { SseWriter } from './sse.js';
import { decodeTokens, PrefixStreamer, renderPartial, tokenPiece } from './text.js';

export interface EsolmPluginOptions {
  model: Model;
  /** The batcher to use, or another generation source (the Redis queue producer). Defaults to a Batcher made from maxBatch / batchWindowMs / maxQueue, closed with the app. */
  batcher?: GenerationSource;
  /** Most sequences per batched generation (1 = batching off). Defaults to 8. */
  maxBatch?: number;
  /** How long a batch waits for compatible requests, ms. Defaults to 10. */
  batchWindowMs?: number;
  /** Most requests waiting before 429. Defaults to 64. */
  maxQueue?: number;
  /** When set, /v1 routes need `Authorization: Bearer <apiKey>` (401 otherwise). */
  apiKey?: string;
  /** A request's deadline from arrival, ms (504 after it). Defaults to 120000. */
  requestTimeoutMs?: number;
  /** Most bytes in a request body (413 above). Defaults to 1 MiB. */
  bodyLimit?: number;
  /** Caps on length, steps, n and prompts (400 above them). */
  limits?: Partial<ServeLimits>;
  /** The model id in /v1/models and responses. Defaults to the model folder's name. */
  modelId?: string;
  /** Metrics registry to use (createServer passes its own). Defaults to a new one. */
  metrics?: ServeMetrics;
}

const now = (): number => Math.floor(Date.now() / 1000);

export async function esolmPlugin(app: FastifyInstance, opts: EsolmPluginOptions): Promise<void> {
  const model = opts.model;
  const ownBatcher = !opts.batcher;
  let batcher: GenerationSource | null = opts.batcher ?? null;
  const metrics = opts.metrics ?? createMetrics(() => batcher);
  batcher ??= new Batcher(model, { maxBatch: opts.maxBatch ?? 8, windowMs: opts.batchWindowMs ?? 10, maxQueue: opts.maxQueue ?? 64, onBatch: metrics.onBatch });
  const b = batcher;
  const limits: ServeLimits = {
    maxLength: Math.min(opts.limits?.maxLength ?? model.config.length, model.config.length),
    maxSteps: opts.limits?.maxSteps ?? 1024,
    maxN: opts.limits?.maxN ?? 16,
    maxPrompts: opts.limits?.maxPrompts ?? 16,
  };
  const timeoutMs = opts.requestTimeoutMs ?? 120_000;
  const bodyLimit = opts.bodyLimit ?? 1 << 20;
  const modelId = opts.modelId ?? (model.dir.split(/[\\/]/).filter(Boolean).pop() ?? 'esolm');
  const tok = model.tokenizer;
  const mask = model.config.mask_index;
  if (ownBatcher) {
    app.addHook('preClose', async () => { await b.close(); });
  }

  // Errors in OpenAI's shape (also Fastify's own: bad JSON, body too large).
  app.setErrorHandler((err, _req, reply) => {
    const h = toHttpError(err, () => b.retryAfterSeconds());
    if (h.retryAfter !== undefined) void reply.header('retry-after', String(h.retryAfter));
    void reply.status(h.status).send(errorBody(h));
  });
  app.addHook('onRequest', async (req) => {
    (req as FastifyRequest & { t0?: number }).t0 = performance.now();
    if (opts.apiKey !== undefined && (req.routeOptions.config as { auth?: boolean }).auth) checkBearer(req.headers.authorization, opts.apiKey);
  });
  // Streams record their own latency and outcome (their status line said 200 before the end).
  const streamed = new WeakSet<FastifyRequest>();
  app.addHook('onResponse', async (req, reply) => {
    if (streamed.has(req)) return;
    const t0 = (req as FastifyRequest & { t0?: number }).t0 ?? performance.now();
    metrics.observeRequest(req.routeOptions.url ?? 'unknown', reply.statusCode, (performance.now() - t0) / 1000);
  });

  /** Aborts `ctl` when the client goes away before the response is complete. */
  const abortOnDisconnect = (reply: FastifyReply, ctl: AbortController): void => {
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ctl.abort(); });
  };
  const submit = (job: BatchJob, ctl: AbortController): Promise<BatchJobResult> =>
    b.submit({ ...job, signal: ctl.signal, timeoutMs });
  const v1 = { config: { auth: true }, bodyLimit };

  // ---- /v1/completions ----------------------------------------------------------------
  app.post('/v1/completions', v1, async (req, reply) => {
    const parsed = parseCompletion(req.body, model, limits);
    const id = `cmpl-${randomUUID()}`;
    const created = now();
    const ctl = new AbortController();
    const n = parsed.n;
    const usage = (results: BatchJobResult[]) => {
      const prompt = parsed.promptTokens.reduce((a, p) => a + p.length, 0);
      const completion = results.reduce((a, r, i) => a + r.sequences.reduce((c, s) => c + s.length - parsed.promptTokens[i].length, 0), 0);
      return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
    };
    const extension = (results: BatchJobResult[]) => ({
      method: parsed.jobs[0].sampler.method,
      results: results.map((r, i) => ({
        prompt_index: i, seed: seedOut(r.seed), plan_seed: seedOut(r.planSeed), steps: r.steps, nfe: r.nfe,
        n_diffusion: r.nDiffusion, batch: r.batch, queue_ms: r.queueMs, run_ms: r.runMs,
      })),
    });
    if (!parsed.stream) {
      abortOnDisconnect(reply, ctl);
      let results: BatchJobResult[];
      try {
        results = await Promise.all(parsed.jobs.map((j) => submit(j, ctl)));
      } catch (e) {
        ctl.abort();  // the other prompts' work is no longer wanted
        throw e;
      }
      return {
        id, object: 'text_completion', created, model: modelId, system_fingerprint: `esolm-${model.backend}`,
        choices: results.flatMap((r, i) => r.sequences.map((s, j) => ({
          text: decodeTokens(s.subarray(parsed.promptTokens[i].length), tok), index: i * n + j, logprobs: null, finish_reason: 'length',
        }))),
        usage: usage(results),
        esolm: extension(results),
      };
    }
    // Streaming: each choice sends the contiguous revealed text after its prompt as it grows.
    const t0 = performance.now();
    let sse: SseWriter | null = null;
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      sse?.send({ id, object: 'text_completion', created, model: modelId, system_fingerprint: `esolm-${model.backend}`, choices, ...extra });
    const accepted: boolean[] = [];
    const runs = parsed.jobs.map((job, i) => {
      const P = parsed.promptTokens[i].length;
      const states: Int32Array[] = [];
      const streamers: PrefixStreamer[] = [];
      const onAccepted = (a: AcceptedInfo): void => {
        accepted[i] = true;
        for (let j = 0; j < n; j++) {
          states.push(initialState(a, mask));
          streamers.push(new PrefixStreamer(P, mask, tok));
        }
      };
      const onStep = (e: StepEvent): void => {
        const choices: unknown[] = [];
        for (let j = 0; j < n; j++) {
          applyEvent(states[j], e, j);
          const text = streamers[j].next(states[j]);
          if (text) choices.push({ text, index: i * n + j, logprobs: null, finish_reason: null });
        }
        if (choices.length) chunk(choices);
      };
      return submit({ ...job, onAccepted, onStep }, ctl).then((r) => {
        chunk(r.sequences.map((s, j) => ({ text: streamers[j].finish(s), index: i * n + j, logprobs: null, finish_reason: 'length' })));
        return r;
      });
    });
    await refuseEarly(runs, accepted, ctl);
    reply.hijack();
    streamed.add(req);
    sse = new SseWriter(reply.raw);
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ctl.abort(); });
    let status = 200;
    try {
      const results = await Promise.all(runs);
      if (parsed.includeUsage) chunk([], { usage: usage(results), esolm: extension(results) });
      sse.done();
    } catch (e) {
      ctl.abort();
      const h = toHttpError(e, () => b.retryAfterSeconds());
      status = h.status;
      sse.send(errorBody(h));
      sse.end();
    }
    metrics.observeRequest('/v1/completions', status, (performance.now() - t0) / 1000);
  });

  // ---- /v1/generate -------------------------------------------------------------------
  app.post('/v1/generate', v1, async (req, reply) => {
    const { job, stream } = parseGenerate(req.body, model, limits);
    const ctl = new AbortController();
    const n = job.n ?? 1;
    const body = (r: BatchJobResult) => ({
      sequences: r.sequences.map((s, j) => ({ tokens: Array.from(s), ...(r.text ? { text: r.text[j] } : {}) })),
      seed: seedOut(r.seed), planSeed: seedOut(r.planSeed), steps: r.steps, nfe: r.nfe, nDiffusion: r.nDiffusion,
      batch: r.batch, queueMs: r.queueMs, runMs: r.runMs,
    });
    if (!stream) {
      abortOnDisconnect(reply, ctl);
      return body(await submit(job, ctl));
    }
    const t0 = performance.now();
    let sse: SseWriter | null = null;
    let start: AcceptedInfo | null = null;
    const states: Int32Array[] = [];
    const onAccepted = (a: AcceptedInfo): void => {
      start = a;
      for (let j = 0; j < n; j++) states.push(initialState(a, mask));
    };
    const onStep = (e: StepEvent): void => {
      for (let j = 0; j < n; j++) applyEvent(states[j], e, j);
      sse?.send({
        step: e.step, steps: e.steps, nfe: e.nfe, phase: e.phase, perSequence: e.perSequence,
        positions: Array.from(e.positions), tokens: Array.from(e.tokens),
        pieces: Array.from(e.tokens, (t) => (t >= 0 ? tokenPiece(t, tok) : '')),
        text: states.map((s) => renderPartial(s, mask, tok)),
      }, 'step');
    };
    const run = submit({ ...job, onAccepted, onStep }, ctl);
    await refuseEarly([run], [start !== null], ctl);
    reply.hijack();
    streamed.add(req);
    sse = new SseWriter(reply.raw);
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ctl.abort(); });
    const a = start as unknown as AcceptedInfo;
    sse.send({
      seed: seedOut(a.seed), planSeed: seedOut(a.planSeed), length: a.length, n, mask,
      given: { positions: Array.from(a.givenPositions), tokens: Array.from(a.givenTokens), pieces: Array.from(a.givenTokens, (t) => tokenPiece(t, tok)) },
    }, 'start');
    let status = 200;
    try {
      sse.send(body(await run), 'result');
      sse.done();
    } catch (e) {
      const h = toHttpError(e, () => b.retryAfterSeconds());
      status = h.status;
      sse.send(errorBody(h), 'error');
      sse.end();
    }
    metrics.observeRequest('/v1/generate', status, (performance.now() - t0) / 1000);
  });

  // ---- models, health, metrics, page --------------------------------------------------
  const modelCard = () => ({
    id: modelId, object: 'model', created: 0, owned_by: 'esolm',
    esolm: { arch: model.config.arch, length: model.config.length, vocab_size: model.config.vocab_size, tokenizer: tok?.name ?? null, backend: model.backend, sampling: model.config.sampling ?? null },
  });
  app.get('/v1/models', { config: { auth: true } }, async () => ({ object: 'list', data: [modelCard()] }));
  app.get('/v1/models/:id', { config: { auth: true } }, async (req) => {
    const { id } = req.params as { id: string };
    if (id !== modelId) throw new HttpError(404, `the model '${id}' does not exist (this server serves '${modelId}')`, { code: 'model_not_found', param: 'model' });
    return modelCard();
  });
  // Not ready while draining, or while the generation source cannot take work (serve
  // --redis with Redis unreachable): status `unavailable`.
  const available = () => b.available ?? b.state === 'open';
  const health = () => ({
    status: b.state !== 'open' ? 'draining' : available() ? 'ok' : 'unavailable', live: true, ready: available(),
    model: modelId, backend: model.backend, queue: b.queued, inFlight: b.inFlight,
  });
  app.get('/health', async (_req, reply) => {
    const h = health();
    return reply.status(h.ready ? 200 : 503).send(h);
  });
  app.get('/health/live', async () => ({ live: true }));
  app.get('/health/ready', async (_req, reply) => reply.status(available() ? 200 : 503).send({ ready: available() }));
  app.get('/metrics', async (_req, reply) => {
    void reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/', async (_req, reply) => {
    void reply.header('content-type', 'text/html; charset=utf-8');
    void reply.header('content-security-policy', "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'");
    return PAGE_HTML;
  });
}

/**
 * Before a stream starts (status 200 sent): when a job was refused (queue full, bad input,
 * shutting down) cancel the others and throw its error, so it gets its own HTTP status.
 */
async function refuseEarly(runs: Promise<unknown>[], accepted: boolean[], ctl: AbortController): Promise<void> {
  for (const r of runs) r.catch(() => undefined);  // observed below or by the stream
  const i = runs.findIndex((_, k) => !accepted[k]);
  if (i < 0) return;
  ctl.abort();
  await runs[i];
}

/** A row's state before any step: masks, with the given tokens in place. */
function initialState(a: AcceptedInfo, mask: number): Int32Array {
  const s = new Int32Array(a.length).fill(mask);
  a.givenPositions.forEach((p, q) => { s[p] = a.givenTokens[q]; });
  return s;
}

/** Writes row j's revealed tokens of a step event into its state (MDLM pads with -1). */
function applyEvent(state: Int32Array, e: StepEvent, j: number): void {
  for (let q = 0; q < e.perSequence; q++) {
    const p = e.positions[j * e.perSequence + q];
    if (p >= 0) state[p] = e.tokens[j * e.perSequence + q];
  }
}
