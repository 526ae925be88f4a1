// `esolm serve` over real HTTP on 127.0.0.1 with the default model: the official `openai`
// client (plain and streaming) against the library's own results for the same seed,
// /v1/generate SSE parsed by eventsource-parser, batched == unbatched seed for seed,
// models/health/metrics, OpenAI-shaped 400/401/404/413 errors, and the plugin embedded in
// another Fastify app.
import path from 'node:path';
import Fastify from 'fastify';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model, Sampler } from '../lib/index.js';
import { createServer, esolmPlugin, type EsolmServer } from '../lib/serve/index.js';
import { readSse, type SseEvent } from './helpers/sse.js';

const root = path.join(import.meta.dirname, '..');
let model: Model;
let server: EsolmServer;
let url: string;
let client: OpenAI;

// The default model's recommended settings (models/default/config.json), which the server uses.
const DEFAULTS = { method: 'esolm', steps: 64, alpha0: 0.1, topP: 0.9, temperature: 0.7 } as const;

beforeAll(async () => {
  model = await Model.load(path.join(root, 'models', 'default'), { backend: 'cpu' });
  server = await createServer({ model, port: 0, logger: false, batchWindowMs: 40, maxBatch: 8, limits: { maxSteps: 256, maxN: 4 } });
  url = await server.listen();
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await server?.close();
  model?.dispose();
});

/** The completion text the library gives for this prompt, length and seed. */
async function libraryText(prompt: string, maxTokens: number, seed: number, batch = 1): Promise<string[]> {
  const P = model.tokenizer!.encode(prompt).length;
  const r = await model.generate({ sampler: new Sampler({ ...DEFAULTS, seed }), prompt, length: P + maxTokens, batch });
  return r.sequences.map((s) => model.tokenizer!.decode(s.subarray(P)));
}

async function post(pathname: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url + pathname, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

describe('OpenAI-compatible /v1/completions through the official client', () => {
  it('returns the library\'s completion for the same seed, with usage', async () => {
    const prompt = 'In the beginning';
    const res = await client.completions.create({ model: 'default', prompt, max_tokens: 30, seed: 7 });
    expect(res.object).toBe('text_completion');
    expect(res.choices).toHaveLength(1);
    expect(res.choices[0].finish_reason).toBe('length');
    expect(res.choices[0].text).toBe((await libraryText(prompt, 30, 7))[0]);
    expect(res.usage).toEqual({ prompt_tokens: 16, completion_tokens: 30, total_tokens: 46 });
  });

  it('streams chunks whose concatenation is the same text, then usage and [DONE]', async () => {
    const prompt = 'And God said';
    const stream = await client.completions.create({ model: 'default', prompt, max_tokens: 40, seed: 11, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let chunks = 0;
    let finish: string | null = null;
    let usage: unknown = null;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    expect(chunks).toBeGreaterThan(3);  // text arrives as it is revealed, not in one piece
    expect(finish).toBe('length');
    expect(text).toBe((await libraryText(prompt, 40, 11))[0]);
    expect(usage).toEqual({ prompt_tokens: 12, completion_tokens: 40, total_tokens: 52 });
  });

  it('serves n and several prompts (choices indexed prompt * n + j), each equal to the library', async () => {
    const res = await client.completions.create({ model: 'default', prompt: ['Thou shalt', 'The LORD is'], max_tokens: 20, n: 2, seed: 3 });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    const a = await libraryText('Thou shalt', 20, 3, 2);
    const b = await libraryText('The LORD is', 20, 3, 2);
    expect(res.choices.map((c) => c.text)).toEqual([...a, ...b]);
  });

  it('streams several prompts and n sequences, each choice\'s chunks adding up to its text', async () => {
    const req = { model: 'default', prompt: ['Thou shalt', 'The LORD is'], max_tokens: 24, n: 2, seed: 5 };
    const plain = await client.completions.create(req);
    const texts = ['', '', '', ''];
    for await (const chunk of await client.completions.create({ ...req, stream: true })) for (const c of chunk.choices) texts[c.index] += c.text;
    expect(texts).toEqual(plain.choices.map((c) => c.text));
  });

  it('maps errors to OpenAI error classes and shapes', async () => {
    const bad = await client.completions.create({ model: 'default', prompt: 'x', max_tokens: 20, temperature: 3 }).catch((e) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect(bad.status).toBe(400);
    expect(bad.error).toMatchObject({ type: 'invalid_request_error', param: 'temperature' });
    expect(bad.message).toMatch(/temperature/);
    const long = await client.completions.create({ model: 'default', prompt: 'x', max_tokens: 500 }).catch((e) => e);
    expect(long).toBeInstanceOf(OpenAI.BadRequestError);
    expect(long.message).toMatch(/128/);
    const stop = await client.completions.create({ model: 'default', prompt: 'x', stop: ['\n'] }).catch((e) => e);
    expect(stop).toBeInstanceOf(OpenAI.BadRequestError);
    expect((await client.models.retrieve('nope').catch((e) => e))).toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe('/v1/generate', () => {
  it('streams one SSE event per step: slots fill in out of order; the result equals the non-streamed one', async () => {
    const body = { sampler: { method: 'esolm', steps: 16, alpha0: 1, seed: 21 }, length: 48, prompt: 'Jesus' };
    const res = await post('/v1/generate', { ...body, stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const events: SseEvent[] = await readSse(res);
    expect(events[0].event).toBe('start');
    const start = JSON.parse(events[0].data);
    expect(start).toMatchObject({ seed: 21, planSeed: 21, length: 48, n: 1, given: { positions: [0, 1, 2, 3, 4] } });
    const steps = events.filter((e) => e.event === 'step').map((e) => JSON.parse(e.data));
    expect(steps.length).toBeGreaterThan(1);
    expect(steps.map((s) => s.step)).toEqual(steps.map((_, i) => i));
    const revealed = steps.flatMap((s) => s.positions as number[]);
    expect([...revealed].sort((a, b) => a - b)).toEqual(Array.from({ length: 43 }, (_, i) => i + 5));
    expect(revealed).not.toEqual([...revealed].sort((a, b) => a - b));  // out of order
    const result = JSON.parse(events.find((e) => e.event === 'result')!.data);
    expect(events.at(-1)!.data).toBe('[DONE]');
    expect(steps.at(-1).text[0]).toBe(result.sequences[0].text);  // the last step's text is the final text
    const plain = await (await post('/v1/generate', body)).json();
    expect(plain.sequences).toEqual(result.sequences);
    const lib = await model.generate({ sampler: new Sampler(body.sampler as never), length: 48, prompt: 'Jesus' });
    expect(plain.sequences[0].tokens).toEqual([...lib.sequences[0]]);
  });

  it('takes fixed tokens (infilling) and seeds as decimal strings', async () => {
    const res = await post('/v1/generate', { sampler: { method: 'mdlm', steps: 12, seed: '18446744073709551615' }, length: 20, fixed: { 5: 65, 19: 66 } });
    expect(res.status).toBe(200);
    const j = await res.json();
    expect(j.seed).toBe('18446744073709551615');
    expect(j.sequences[0].tokens[5]).toBe(65);
    expect(j.sequences[0].tokens[19]).toBe(66);
  });

  it('batches concurrent compatible requests, and each equals its request alone, seed for seed', async () => {
    const body = (seed: number, prompt: string) => ({ sampler: { method: 'esolm', steps: 20, alpha0: 0.5, topP: 0.9, seed }, planSeed: 99, length: 64, prompt });
    const prompts = ['In the', 'For God', 'Behold', 'Blessed', 'And he', 'Then sa'];
    const together = await Promise.all(prompts.map((p, i) => post('/v1/generate', body(i, p)).then((r) => r.json())));
    expect(Math.max(...together.map((r) => r.batch.requests))).toBeGreaterThan(1);
    for (let i = 0; i < prompts.length; i++) {
      const alone = await (await post('/v1/generate', body(i, prompts[i]))).json();
      expect(alone.batch.requests).toBe(1);
      expect(together[i].sequences).toEqual(alone.sequences);
      expect(together[i].planSeed).toBe(99);
    }
  });

  it('unseeded requests report the seeds that reproduce them', async () => {
    const body = { sampler: { method: 'esolm', steps: 10 }, length: 40, prompt: 'The' };
    const first = await Promise.all([0, 1, 2].map(() => post('/v1/generate', body).then((r) => r.json())));
    for (const r of first) {
      const again = await (await post('/v1/generate', { ...body, sampler: { ...body.sampler, seed: r.seed }, planSeed: r.planSeed })).json();
      expect(again.sequences).toEqual(r.sequences);
    }
  });

  it('refuses bad requests with 400s that name the field', async () => {
    const cases: [unknown, string][] = [
      [{ sampler: { method: 'esolm', steps: 1000 } }, 'sampler.steps'],
      [{ sampler: { method: 'esolm', steps: 8 }, length: 500 }, 'length'],
      [{ sampler: { method: 'esolm', steps: 8 }, n: 9 }, 'n'],
      [{ sampler: { method: 'esolm', steps: 8 }, bogus: 1 }, 'bogus'],
      [{ sampler: { method: 'esolm', steps: 8, seed: -1 } }, 'sampler.seed'],
      [{ sampler: 'esolm' }, 'sampler'],
    ];
    for (const [b, param] of cases) {
      const r = await post('/v1/generate', b);
      expect(r.status).toBe(400);
      const j = await r.json();
      expect(j.error).toMatchObject({ type: 'invalid_request_error', param });
    }
    const lib = await post('/v1/generate', { sampler: { method: 'esolm', steps: 8, topP: 2 } });
    expect(lib.status).toBe(400);
    expect((await lib.json()).error.message).toMatch(/topP/);
    const json = await fetch(url + '/v1/generate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{nope' });
    expect(json.status).toBe(400);
    expect((await json.json()).error.type).toBe('invalid_request_error');
    const big = await fetch(url + '/v1/generate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x'.repeat(2 << 20) }) });
    expect(big.status).toBe(413);
    expect((await big.json()).error.type).toBe('invalid_request_error');
  });
});

describe('models, health, metrics, page', () => {
  it('lists the model, reports health and exposes Prometheus metrics', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['default']);
    const h = await (await fetch(url + '/health')).json();
    expect(h).toMatchObject({ status: 'ok', live: true, ready: true });
    expect((await fetch(url + '/health/ready')).status).toBe(200);
    const m = await (await fetch(url + '/metrics')).text();
    for (const name of ['esolm_queue_depth', 'esolm_in_flight_sequences', 'esolm_batch_size_bucket', 'esolm_generated_tokens_total',
      'esolm_tokens_per_second', 'esolm_nfe_total', 'esolm_request_duration_seconds_bucket']) {
      expect(m).toContain(name);
    }
    expect(m).toMatch(/esolm_request_duration_seconds_count\{route="\/v1\/completions",status="200"\} [1-9]/);
    // A stream is counted once.
    const count = async (): Promise<number> => Number(/esolm_request_duration_seconds_count\{route="\/v1\/generate",status="200"\} (\d+)/
      .exec(await (await fetch(url + '/metrics')).text())?.[1] ?? 0);
    const before = await count();
    await (await post('/v1/generate', { sampler: { method: 'mdlm', steps: 4, seed: 1 }, length: 16, stream: true })).text();
    expect(await count()).toBe(before + 1);
    const page = await fetch(url + '/');
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(await page.text()).toContain('id="slots"');
  });
});

describe('auth and embedding', () => {
  it('requires the bearer token on /v1 when apiKey is set (401 otherwise); health stays open', async () => {
    const s = await createServer({ model, port: 0, logger: false, apiKey: 'sekret' });
    const u = await s.listen();
    try {
      const none = await fetch(`${u}/v1/models`);
      expect(none.status).toBe(401);
      expect((await none.json()).error).toMatchObject({ code: 'invalid_api_key' });
      expect((await fetch(`${u}/v1/models`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
      expect((await fetch(`${u}/health`)).status).toBe(200);
      const wrong = new OpenAI({ baseURL: `${u}/v1`, apiKey: 'wrong', maxRetries: 0 });
      expect(await wrong.completions.create({ model: 'default', prompt: 'x', max_tokens: 4 }).catch((e) => e)).toBeInstanceOf(OpenAI.AuthenticationError);
      const right = new OpenAI({ baseURL: `${u}/v1`, apiKey: 'sekret', maxRetries: 0 });
      const r = await right.completions.create({ model: 'default', prompt: 'x', max_tokens: 4, seed: 1 });
      expect(r.choices[0].text.length).toBeGreaterThan(0);
    } finally {
      await s.close();
    }
  });

  it('mounts in an existing Fastify app under a prefix', async () => {
    const app = Fastify();
    app.get('/other', async () => 'mine');
    await app.register(esolmPlugin, { model, prefix: '/llm' });
    const r = await app.inject({ method: 'POST', url: '/llm/v1/generate', payload: { sampler: { method: 'mdlm', steps: 4, seed: 2 }, length: 16 } });
    expect(r.statusCode).toBe(200);
    expect(r.json().sequences[0].tokens).toHaveLength(16);
    expect((await app.inject('/other')).body).toBe('mine');
    await app.close();
  });
});
