/**
 * createServer: a Fastify 5 app (pino logging) with the esolm plugin, one model and one
 * batcher, and a graceful close: stop taking requests, finish accepted work within
 * `shutdownTimeoutMs` (then abort what is left), close the listener and free the model.
 */
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { Batcher } from '../batch/index.js';
import { expected } from '../errors.js';
import { Model, type BackendName } from '../model.js';
import { packageRoot } from '../native.js';
import { createMetrics } from './metrics.js';
import { esolmPlugin, type EsolmPluginOptions } from './plugin.js';

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
}

export interface EsolmServer {
  app: FastifyInstance;
  model: Model;
  batcher: Batcher;
  /** Starts listening; resolves with the base URL (e.g. http://127.0.0.1:8080). */
  listen(): Promise<string>;
  /** Graceful shutdown (see the file comment). Idempotent. */
  close(): Promise<void>;
}

export async function createServer(opts: ServeOptions = {}): Promise<EsolmServer> {
  if (typeof opts !== 'object' || opts === null) throw expected('an options object', 'server options', opts);
  const ownModel = !(opts.model instanceof Model);
  const model = opts.model instanceof Model ? opts.model
    : await Model.load(opts.model ?? path.join(packageRoot(), 'models', 'default'), { backend: opts.backend ?? 'auto' });
  let batcher: Batcher | null = null;
  const metrics = createMetrics(() => batcher);
  batcher = new Batcher(model, { maxBatch: opts.maxBatch ?? 8, windowMs: opts.batchWindowMs ?? 10, maxQueue: opts.maxQueue ?? 64, onBatch: metrics.onBatch });
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
