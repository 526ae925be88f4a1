/**
 * createServer: a Fastify 5 app (pino logging) with the esolm plugin, one model and one
 * batcher, and a graceful close: stop taking requests, finish accepted work within
 * `shutdownTimeoutMs` (then abort what is left), close the listener and free the model.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { Batcher, type GenerationSource } from '../batch/index.js';
import { expected } from '../errors.js';
import { Model, type BackendName } from '../model.js';
import { defaultModelDir } from '../loader.js';
import { createMetrics } from './metrics.js';
import { esolmPlugin, type EsolmPluginOptions } from './plugin.js';
import type { RedisOptions } from '../queue/connection.js';

export interface ServeOptions extends Omit<EsolmPluginOptions, 'model' | 'batcher' | 'metrics'> {
  /** A loaded Model, or a model folder. Defaults to the model shipped in the package. */
  model?: Model | string;
  /** Backend when loading a folder. Defaults to 'auto'. */
  backend?: BackendName | 'auto';
  /** Defaults to 127.0.0.1. */
  host?: string;
  /** Defaults to 8080; 0 picks a free port. */
  port?: number;
  /** pino logging: true (info), false, or Fastify logger options. Defaults to true. */
  logger?: boolean | Record<string, unknown>;
  /** How long close() lets accepted requests finish before aborting them, ms. Defaults to 30000. */
  shutdownTimeoutMs?: number;
  /**
   * Send generations as BullMQ jobs to `esolm worker`s over Redis (lib/queue) instead of a
   * local batcher. The model is still loaded here (default backend: cpu) to validate and
   * tokenize requests at the edge.
   */
  redis?: RedisOptions & { queue?: string; maxPayloadBytes?: number };
}

export interface EsolmServer {
  app: FastifyInstance;
  model: Model;
  /** Where generations run: the local Batcher, or the queue producer with `redis`. */
  batcher: GenerationSource;
  /** Starts listening; resolves with the base URL (e.g. http://127.0.0.1:8080). */
  listen(): Promise<string>;
  /** Graceful shutdown (see the file comment). Idempotent. */
  close(): Promise<void>;
}

export async function createServer(opts: ServeOptions = {}): Promise<EsolmServer> {
  if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'server options', opts);
  const ownModel = !(opts.model instanceof Model);
  const model = opts.model instanceof Model ? opts.model
    : await Model.load(opts.model ?? defaultModelDir(), { backend: opts.backend ?? (opts.redis ? 'cpu' : 'auto') });
  let batcher: GenerationSource | null = null;
  const metrics = createMetrics(() => batcher);
  batcher = opts.redis ? await queueProducer(model, opts.redis, opts.maxQueue)
    : new Batcher(model, { maxBatch: opts.maxBatch ?? 8, windowMs: opts.batchWindowMs ?? 10, maxQueue: opts.maxQueue ?? 64, onBatch: metrics.onBatch });
  const b = batcher;
  const logger = opts.logger ?? true;
  const app = Fastify({
    logger: logger === true ? { level: 'info' } : logger,
    bodyLimit: opts.bodyLimit ?? 1 << 20,
    // Draining: requests on kept-alive connections get 503 while in-flight ones finish.
    return503OnClosing: true,
  });
  await app.register(esolmPlugin, { ...opts, model, batcher: b, metrics });
  let closing: Promise<void> | null = null;
  return {
    app, model, batcher: b,
    async listen() {
      return app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 8080 });
    },
    close() {
      closing ??= (async () => {
        const drained = b.close({ deadlineMs: opts.shutdownTimeoutMs ?? 30_000 });
        await Promise.all([drained, app.close()]);
        if (ownModel) model.dispose();
      })();
      return closing;
    },
  };
}

/** The Redis queue producer (bullmq loads only in this mode); connection trouble is logged once per outage. */
async function queueProducer(model: Model, redis: NonNullable<ServeOptions['redis']>, maxQueue: number | undefined): Promise<GenerationSource> {
  const { QueueProducer, redactUrl } = await import('../queue/index.js');
  let down = false;
  const p = await QueueProducer.create({
    redis, model, queue: redis.queue, maxPayloadBytes: redis.maxPayloadBytes, maxQueue,
    onError: (e) => {
      if (down) return;
      down = true;
      process.stderr.write(`esolm: serve: Redis at ${redactUrl(redis.url)} unreachable (${e.message}); answering 503 until it is back\n`);
    },
    onReady: () => {
      if (down) process.stderr.write('esolm: serve: Redis connection restored\n');
      down = false;
    },
  });
  return p;
}
