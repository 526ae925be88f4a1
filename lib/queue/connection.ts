/**
 * Redis connection options shared by the producer (`serve --redis`) and the worker:
 * the URL (redis:// or rediss:// for TLS, with user:password for AUTH), an explicit
 * password or TLS options passed through to ioredis, and the key prefix that lets several
 * deployments share one Redis. Connections reconnect forever (ioredis' backoff): a
 * restarted Redis is picked up without manual action.
 */
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import { Redis, type RedisOptions as IoRedisOptions } from 'ioredis';
import { EsolmError, expected } from '../errors.js';

export interface RedisOptions {
  /** redis://[[user]:password@]host[:port][/db], or rediss://… for TLS. */
  url: string;
  /** AUTH password when it is not in the URL. */
  password?: string;
  /** AUTH user (Redis 6 ACL) when it is not in the URL. */
  username?: string;
  /** TLS: true for the defaults, or node:tls options (ca, cert, key, servername, rejectUnauthorized…). rediss:// turns it on. */
  tls?: boolean | TlsOptions;
  /** Key prefix of every queue key (BullMQ's `prefix`). Defaults to 'esolm'. */
  prefix?: string;
}

export const DEFAULT_PREFIX = 'esolm';

/** Checks the options and returns the prefix. */
export function checkRedisOptions(o: RedisOptions): string {
  if (typeof o !== 'object' || o === null) throw expected('Redis options', 'redis', o);
  if (typeof o.url !== 'string') throw expected('a redis:// or rediss:// URL', 'redis url', o.url);
  let u: URL;
  try {
    u = new URL(o.url);
  } catch {
    throw new EsolmError('ERR_INVALID_ARG', `the Redis URL ${JSON.stringify(redactUrl(o.url))} is not a URL (expected redis://host:port)`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new EsolmError('ERR_INVALID_ARG', `the Redis URL must start with redis:// or rediss://, got ${u.protocol}//`);
  }
  if (o.password !== undefined && typeof o.password !== 'string') throw expected('a string', 'redis password', '(hidden)');
  if (o.username !== undefined && typeof o.username !== 'string') throw expected('a string', 'redis username', o.username);
  if (o.tls !== undefined && typeof o.tls !== 'boolean' && (typeof o.tls !== 'object' || o.tls === null)) throw expected('a boolean or TLS options', 'redis tls', o.tls);
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(prefix)) {
    throw expected('1-64 characters of [A-Za-z0-9_.:-]', 'queue prefix', prefix);
  }
  return prefix;
}

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):([^@/]*)@/, '//$1:***@');
}

/**
 * A new ioredis connection. `failFast`: commands fail at once while disconnected (the
 * producer answers 503) instead of waiting in ioredis' offline queue.
 */
export function connectRedis(o: RedisOptions, failFast = false): Redis {
  const extra: IoRedisOptions = {
    // BullMQ needs this for blocking commands; the producer fails fast instead.
    maxRetriesPerRequest: failFast ? 1 : null,
    enableOfflineQueue: !failFast,
    // Reconnect forever, backing off to 1 s.
    retryStrategy: (times) => Math.min(times * 100, 1000),
    lazyConnect: false,
  };
  if (o.password !== undefined) extra.password = o.password;
  if (o.username !== undefined) extra.username = o.username;
  if (o.tls) extra.tls = o.tls === true ? {} : o.tls;
  return new Redis(o.url, extra);
}

/** Is this a connection-level failure (Redis down, refused, closed) rather than a command error? */
export function isConnectionError(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown; name?: unknown };
  const msg = typeof err?.message === 'string' ? err.message : '';
  return ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH'].includes(String(err?.code))
    || /Stream isn't writeable|Connection is closed|enableOfflineQueue|max retries per request|ECONNREFUSED|MaxRetriesPerRequest/i.test(msg);
}

/** ERR_UNAVAILABLE for a Redis that cannot be reached. */
export function unavailable(o: RedisOptions, cause: unknown): EsolmError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  const what = /WRONGPASS|NOAUTH|AUTH/.test(detail) ? 'refused our credentials (check the password / --redis-password)' : 'cannot be reached';
  return new EsolmError('ERR_UNAVAILABLE', `the job queue is unavailable: Redis at ${redactUrl(o.url)} ${what} (${detail}); retry shortly`, { cause });
}
