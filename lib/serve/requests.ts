/**
 * The HTTP edge: JSON bodies of /v1/completions and /v1/generate validated once, into the
 * batcher's BatchJob (the same typed request Model.generate takes). Errors are 400s that
 * name the field; deeper checks (token ranges, sampler options) come from the library's own
 * validation and map to 400 as well.
 */
import type { BatchJob } from '../batch/index.js';
import type { FixedTokens, Model } from '../model.js';
import type { SamplerMethod, SamplerOptions } from '../sampler.js';
import { badRequest, HttpError } from './errors.js';

export interface ServeLimits {
  /** Most tokens per sequence. Defaults to the model's context length. */
  maxLength: number;
  /** Most sampling steps. Defaults to 1024. */
  maxSteps: number;
  /** Most sequences per request (`n`). Defaults to 16. */
  maxN: number;
  /** Most prompts in one /v1/completions request. Defaults to 16. */
  maxPrompts: number;
}

type Body = Record<string, unknown>;

function isObject(v: unknown): v is Body {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function intIn(body: Body, key: string, min: number, max: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw badRequest(key, `${key} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

function numIn(body: Body, key: string, min: number, max: number, openMin = false): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v > max || (openMin ? v <= min : v < min)) {
    throw badRequest(key, `${key} must be a number in ${openMin ? '(' : '['}${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A seed in JSON: a non-negative safe integer, or a decimal string for values up to 2^64 - 1. */
export function seedIn(v: unknown, key: string): bigint | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^\d{1,20}$/.test(v) && BigInt(v) < 2n ** 64n) return BigInt(v);
  throw badRequest(key, `${key} must be a non-negative integer (a decimal string above 2^53), got ${JSON.stringify(v)}`);
}

/** Seeds in responses: a number when exact, else a decimal string. */
export function seedOut(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
}

function methodIn(v: unknown, model: Model): SamplerMethod {
  if (v === undefined || v === null) return model.config.arch === 'ar' ? 'ar' : model.config.arch === 'mdlm' ? 'mdlm' : 'esolm';
  if (v !== 'esolm' && v !== 'mdlm' && v !== 'ar') throw badRequest('method', `method must be "esolm", "mdlm" or "ar", got ${JSON.stringify(v)}`);
  return v;
}

function tokenArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((t) => typeof t === 'number' && Number.isInteger(t));
}

export interface CompletionRequest {
  /** One job per prompt; choice index = prompt index * n + sequence. */
  jobs: BatchJob[];
  /** Prompt tokens per prompt (usage, and where the completion starts). */
  promptTokens: number[][];
  n: number;
  stream: boolean;
  includeUsage: boolean;
}

/** POST /v1/completions: OpenAI's fields, plus `method`, `steps`, `alpha0`, `plan_seed`. */
export function parseCompletion(body: unknown, model: Model, limits: ServeLimits): CompletionRequest {
  if (!isObject(body)) throw badRequest('body', 'the request body must be a JSON object');
  for (const [key, ok] of [
    ['stop', (v: unknown) => v === null || (Array.isArray(v) && v.length === 0)],
    ['logprobs', (v: unknown) => v === null || v === 0],
    ['echo', (v: unknown) => v === false],
    ['suffix', (v: unknown) => v === null || v === ''],
    ['best_of', (v: unknown) => v === null || v === 1],
    ['logit_bias', (v: unknown) => v === null || (isObject(v) && Object.keys(v).length === 0)],
  ] as const) {
    if (body[key] !== undefined && !ok(body[key])) throw badRequest(key, `${key} is not supported by this server (a diffusion model decodes a fixed length)`);
  }
  const tok = model.tokenizer;
  const raw = body.prompt;
  let prompts: (string | number[])[];
  if (typeof raw === 'string' || tokenArray(raw)) prompts = [raw];
  else if (Array.isArray(raw) && raw.length > 0 && raw.every((p) => typeof p === 'string' || tokenArray(p))) prompts = raw as (string | number[])[];
  else throw badRequest('prompt', 'prompt must be a string, an array of strings, an array of token ids or an array of such arrays');
  if (prompts.length > limits.maxPrompts) throw badRequest('prompt', `at most ${limits.maxPrompts} prompts per request, got ${prompts.length}`);
  const promptTokens = prompts.map((p) => {
    if (typeof p !== 'string') return p;
    if (!tok) throw badRequest('prompt', 'this model has no tokenizer: send the prompt as token ids');
    return [...tok.encode(p)];
  });
  const n = intIn(body, 'n', 1, limits.maxN) ?? 1;
  const maxTokens = intIn(body, 'max_tokens', 1, limits.maxLength);
  const rec = model.config.sampling ?? {};
  const method = methodIn(body.method, model);
  const steps = intIn(body, 'steps', 1, limits.maxSteps) ?? Math.min(rec.steps ?? 64, limits.maxSteps);
  const alpha0 = numIn(body, 'alpha0', 0, 1) ?? rec.alpha0 ?? 1;
  const temperature = numIn(body, 'temperature', 0, 2) ?? rec.temperature ?? 1;
  const topP = numIn(body, 'top_p', 0, 1, true) ?? rec.topP ?? 1;
  const seed = seedIn(body.seed, 'seed');
  const planSeed = seedIn(body.plan_seed, 'plan_seed');
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw badRequest('stream', 'stream must be a boolean');
  const stream = body.stream === true;
  const so = body.stream_options;
  if (so !== undefined && so !== null && !isObject(so)) throw badRequest('stream_options', 'stream_options must be an object');
  const includeUsage = isObject(so) && so.include_usage === true;

  const jobs = promptTokens.map((p): BatchJob => {
    const length = maxTokens === undefined ? limits.maxLength : p.length + maxTokens;
    if (length > limits.maxLength || p.length >= limits.maxLength) {
      throw badRequest('max_tokens', `the prompt (${p.length} tokens) plus max_tokens (${maxTokens ?? 0}) must fit in ${limits.maxLength} tokens`);
    }
    const sampler: SamplerOptions = {
      method, topP,
      // OpenAI's temperature 0 means "always the most likely token".
      ...(temperature === 0 ? { greedy: true } : { temperature }),
      ...(method !== 'ar' ? { steps } : {}),
      ...(method === 'esolm' ? { alpha0 } : {}),
      ...(seed !== undefined ? { seed } : {}),
    };
    return { sampler, n, length, prompt: p, ...(planSeed !== undefined ? { planSeed } : {}) };
  });
  return { jobs, promptTokens, n, stream, includeUsage };
}

export interface NativeRequest {
  job: BatchJob;
  stream: boolean;
}

/**
 * POST /v1/generate: Model.generate's request as JSON: `{ sampler, length?, prompt?, fixed?,
 * n?, planSeed?, stream? }`, with `sampler` the Sampler options (seeds as numbers or
 * decimal strings) and `fixed` as `{ positions, tokens }` or `{ "position": token }`.
 */
export function parseGenerate(body: unknown, model: Model, limits: ServeLimits): NativeRequest {
  if (!isObject(body)) throw badRequest('body', 'the request body must be a JSON object');
  const known = new Set(['sampler', 'length', 'prompt', 'fixed', 'n', 'planSeed', 'stream']);
  for (const k of Object.keys(body)) if (!known.has(k)) throw badRequest(k, `unknown field "${k}" (expected ${[...known].join(', ')})`);
  const s = body.sampler;
  if (!isObject(s)) throw badRequest('sampler', 'sampler must be an object of Sampler options, e.g. { "method": "esolm", "steps": 64 }');
  const sampler = { ...s } as Record<string, unknown>;
  if (sampler.method === undefined) sampler.method = methodIn(undefined, model);
  const seed = seedIn(s.seed, 'sampler.seed');
  if (seed === undefined) delete sampler.seed;
  else sampler.seed = seed;
  if (typeof s.steps === 'number' && s.steps > limits.maxSteps) throw badRequest('sampler.steps', `sampler.steps must be at most ${limits.maxSteps}, got ${s.steps}`);
  const n = intIn(body, 'n', 1, limits.maxN) ?? 1;
  const length = intIn(body, 'length', 1, limits.maxLength) ?? limits.maxLength;
  const prompt = body.prompt;
  if (prompt !== undefined && typeof prompt !== 'string' && !tokenArray(prompt)) throw badRequest('prompt', 'prompt must be a string or an array of token ids');
  const fixed = body.fixed;
  if (fixed !== undefined && !isObject(fixed)) throw badRequest('fixed', 'fixed must be { positions, tokens } or an object position -> token');
  const planSeed = seedIn(body.planSeed, 'planSeed');
  if (body.stream !== undefined && typeof body.stream !== 'boolean') throw badRequest('stream', 'stream must be a boolean');
  const job: BatchJob = {
    sampler: sampler as unknown as SamplerOptions, n, length,
    ...(prompt !== undefined ? { prompt: prompt as string | number[] } : {}),
    ...(fixed !== undefined ? { fixed: fixed as FixedTokens } : {}),
    ...(planSeed !== undefined ? { planSeed } : {}),
  };
  return { job, stream: body.stream === true };
}

/** Bearer-token check (constant time in the key's length). */
export function checkBearer(header: unknown, apiKey: string): void {
  const m = typeof header === 'string' ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
  const given = m ? m[1] : '';
  let diff = given.length ^ apiKey.length;
  for (let i = 0; i < apiKey.length; i++) diff |= apiKey.charCodeAt(i) ^ (given.charCodeAt(i) || 0);
  if (diff !== 0) {
    throw new HttpError(401, header === undefined ? 'missing Authorization: Bearer <api key>' : 'invalid API key', { code: 'invalid_api_key' });
  }
}
