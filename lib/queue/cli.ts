/**
 * The `esolm worker` command and the Redis options it shares with `esolm serve --redis`.
 * Secrets come from the environment by default ($ESOLM_REDIS_URL, $ESOLM_REDIS_PASSWORD),
 * so they need not appear in process listings.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { EsolmError } from '../errors.js';
import { Model, type BackendName } from '../model.js';
import type { RedisOptions } from './connection.js';

export interface RedisCli {
  redis?: string;
  redisPassword?: string;
  redisTls?: boolean;
  redisTlsCa?: string;
  redisTlsInsecure?: boolean;
  prefix: string;
  queue?: string;
  maxPayloadBytes: number;
}

function int(v: string): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isSafeInteger(x)) throw new InvalidArgumentError('Not an integer.');
  return x;
}

/** Adds the Redis connection options to a command (`required`: --redis must be given). */
export function addRedisOptions(cmd: Command, required: boolean): Command {
  return cmd
    .option('--redis <url>', `Redis URL: redis://[:password@]host:port[/db] or rediss:// for TLS${required ? '' : ' (jobs go to workers instead of a local batcher)'} (default: $ESOLM_REDIS_URL)`)
    .option('--redis-password <password>', 'Redis AUTH password when not in the URL (default: $ESOLM_REDIS_PASSWORD)')
    .option('--redis-tls', 'connect with TLS (implied by rediss://)')
    .option('--redis-tls-ca <file>', 'PEM file of the CA that signed the Redis server certificate')
    .option('--redis-tls-insecure', 'TLS without verifying the server certificate (testing only)')
    .option('--prefix <prefix>', 'queue key prefix (deployments sharing one Redis use different ones)', 'esolm')
    .option('--queue <name>', 'queue name (default: the model folder name)')
    .addOption(new Option('--max-payload-bytes <n>', 'largest job data accepted').argParser(int).default(256 * 1024));
}

/** The RedisOptions of the parsed flags, or null when no URL is given. */
export function redisOptionsFromCli(o: RedisCli): RedisOptions | null {
  const url = o.redis ?? process.env.ESOLM_REDIS_URL;
  if (!url) return null;
  const password = o.redisPassword ?? process.env.ESOLM_REDIS_PASSWORD;
  let tls: RedisOptions['tls'];
  if (o.redisTls || o.redisTlsCa || o.redisTlsInsecure) {
    tls = {};
    if (o.redisTlsCa) {
      try {
        tls.ca = readFileSync(o.redisTlsCa);
      } catch {
        throw new EsolmError('ERR_IO', `cannot read the Redis CA file ${o.redisTlsCa}`);
      }
    }
    if (o.redisTlsInsecure) tls.rejectUnauthorized = false;
  }
  return { url, prefix: o.prefix, ...(password ? { password } : {}), ...(tls ? { tls } : {}) };
}

interface WorkerCli extends RedisCli {
  model?: string; backend: BackendName | 'auto'; threads: number; maxBatch: number; batchWindowMs: number;
  concurrency?: number; lockDurationMs: number; stalledIntervalMs: number; maxStalled: number; shutdownTimeoutMs: number;
}

/** Registers `esolm worker` (defaultModelDir: the model shipped in the package). */
export function registerWorkerCommand(program: Command, defaultModelDir: () => string): void {
  const cmd = program.command('worker')
    .description('generation worker: takes jobs from a Redis queue (BullMQ), batches them, reports each step, returns results')
    .option('-m, --model <dir>', 'model folder (default: the model shipped in the package)')
    .addOption(new Option('--backend <name>', 'cpu | cuda | auto').choices(['cpu', 'cuda', 'auto']).default('auto'))
    .option('--threads <n>', 'CPU threads (0: all cores)', int, 0)
    .option('--max-batch <n>', 'most sequences per batched generation', int, 8)
    .option('--batch-window-ms <n>', 'how long a batch waits for compatible jobs', int, 10)
    .option('--concurrency <n>', 'jobs held at once (default: 2 x max-batch)', int)
    .option('--lock-duration-ms <n>', "a dead worker's jobs are taken over after about this long", int, 30000)
    .option('--stalled-interval-ms <n>', 'how often to look for jobs of dead workers', int, 30000)
    .option('--max-stalled <n>', 'times a job may lose its worker before it fails', int, 2)
    .option('--shutdown-timeout-ms <n>', 'on SIGTERM, how long running jobs may finish before they are handed back', int, 30000);
  addRedisOptions(cmd, true).action(async (o: WorkerCli) => {
    const redis = redisOptionsFromCli(o);
    if (!redis) throw new EsolmError('ERR_INVALID_ARG', 'esolm worker needs --redis <url> (or $ESOLM_REDIS_URL)');
    const { startWorker, redactUrl } = await import('./index.js');  // bullmq loads only for this command
    const model = await Model.load(o.model ?? defaultModelDir(), { backend: o.backend, threads: o.threads });
    let down = false;
    const w = await startWorker({
      redis, model, queue: o.queue, maxBatch: o.maxBatch, batchWindowMs: o.batchWindowMs, concurrency: o.concurrency,
      lockDurationMs: o.lockDurationMs, stalledIntervalMs: o.stalledIntervalMs, maxStalled: o.maxStalled, maxPayloadBytes: o.maxPayloadBytes,
      onError: (e) => {
        if (down) return;
        down = true;
        process.stderr.write(`esolm: worker: Redis connection problem (${e.message}); reconnecting\n`);
      },
    });
    w.worker.on('ready', () => {
      if (down) process.stderr.write('esolm: worker: Redis connection restored\n');
      down = false;
    });
    await w.ready();
    process.stderr.write(`esolm: worker ${process.pid} taking jobs from ${redactUrl(redis.url)} queue ${redis.prefix}:${w.queueName} (${model.dir}, ${model.backend})\n`);
    const stop = (signal: string): void => {
      process.stderr.write(`esolm: worker: ${signal}: finishing or handing back jobs\n`);
      w.close({ deadlineMs: o.shutdownTimeoutMs }).then(() => {
        model.dispose();
        process.exit(0);
      }, (e: unknown) => {
        process.stderr.write(`esolm: worker shutdown failed: ${(e as Error).message}\n`);
        process.exit(1);
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
