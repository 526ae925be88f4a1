/**
 * Errors over HTTP in OpenAI's shape: `{ error: { message, type, param, code } }`, with the
 * status each EsolmError code maps to (the official `openai` client turns these into its
 * BadRequestError, AuthenticationError, RateLimitError, ... classes).
 */
import { EsolmError } from '../errors.js';

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error the routes throw on purpose: status + OpenAI error fields. */
export class HttpError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string | null;
  readonly param: string | null;
  /** Seconds for a Retry-After header (429, 503). */
  readonly retryAfter: number | undefined;
  constructor(status: number, message: string, opts: { type?: string; code?: string | null; param?: string | null; retryAfter?: number } = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.type = opts.type ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
    this.code = opts.code ?? null;
    this.param = opts.param ?? null;
    this.retryAfter = opts.retryAfter;
  }
}

/** A 400 naming the offending field. */
export function badRequest(param: string, message: string): HttpError {
  return new HttpError(400, message, { param, code: 'invalid_value' });
}

/** Maps anything a route threw to an HttpError. */
export function toHttpError(e: unknown, retryAfter: () => number): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof EsolmError) {
    switch (e.code) {
      case 'ERR_INVALID_ARG': return new HttpError(400, e.message, { code: 'invalid_value' });
      case 'ERR_QUEUE_FULL': return new HttpError(429, e.message, { type: 'rate_limit_error', code: 'queue_full', retryAfter: retryAfter() });
      case 'ERR_SHUTTING_DOWN': return new HttpError(503, e.message, { code: 'shutting_down', retryAfter: retryAfter() });
      case 'ERR_TIMEOUT': return new HttpError(504, e.message, { type: 'timeout_error', code: 'timeout' });
      case 'ERR_ABORTED': return new HttpError(499, e.message, { code: 'aborted' });
      case 'ERR_UNAVAILABLE': return new HttpError(503, e.message, { code: 'unavailable', retryAfter: retryAfter() });
      case 'ERR_OUT_OF_MEMORY': return new HttpError(503, e.message, { code: 'out_of_memory', retryAfter: retryAfter() });
      default: return new HttpError(500, e.message, { code: e.code.toLowerCase() });
    }
  }
  // Fastify's own errors (bad JSON, body too large, wrong content type) carry a statusCode.
  const f = e as { statusCode?: unknown; message?: unknown; code?: unknown };
  if (typeof f?.statusCode === 'number' && f.statusCode >= 400 && f.statusCode < 500) {
    return new HttpError(f.statusCode, String(f.message), { code: typeof f.code === 'string' ? f.code : null });
  }
  return new HttpError(500, e instanceof Error ? e.message : String(e));
}

export function errorBody(e: HttpError): OpenAiErrorBody {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}
