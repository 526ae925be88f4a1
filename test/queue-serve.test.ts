// `esolm serve --redis` over real HTTP, a real redis-server and real `esolm worker` processes:
// the same API as the local server (the official openai client, /v1/generate SSE with one
// event per step) with results equal to the library's for the same seed; the CLI's serve
// --redis; a client that disconnects stops its job in the worker; Redis down answers 503 with
// a clear message; Redis restarted under load: every accepted request still completes, and
// new ones are served, without manual action.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model, Sampler } from '../lib/index.js';
import { createServer, type EsolmServer } from '../lib/serve/index.js';
import { makeRandomModel } from './helpers/random-model.js';
import { BIN, killAll, spawnWorker, startRedis, type RedisServer, type WorkerProcess } from './helpers/redis.js';
import { readSse } from './helpers/sse.js';

const root = path.join(import.meta.dirname, '..');
const DEFAULTS = { method: 'esolm', steps: 64, alpha0: 0.1, topP: 0.9, temperature: 0.7 } as const;
let dir: string;
let redis: RedisServer;
let model: Model;
let server: EsolmServer;
let url: string;
let slow: Model;  // a random model whose generations last about a second
let slowServer: EsolmServer;
let slowUrl: string;
const workers: WorkerProcess[] = [];
const FAST_STALL = ['--lock-duration-ms', '1200', '--stalled-interval-ms', '400', '--threads', '1'];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-queue-serve-'));
  makeRandomModel(path.join(dir, 'slow'), { arch: 'esolm', seed: 43, hidden_size: 128, n_heads: 4, n_blocks: 8, vocab_size: 1000, length: 512 });
  redis = await startRedis();
  const modelDir = path.join(root, 'models', 'default');
  for (let i = 0; i < 2; i++) workers.push(spawnWorker(redis.url, modelDir, FAST_STALL));
  workers.push(spawnWorker(redis.url, path.join(dir, 'slow'), FAST_STALL));
  model = await Model.load(modelDir, { backend: 'cpu' });
  server = await createServer({ model, port: 0, logger: false, redis: { url: redis.url }, limits: { maxSteps: 256 } });
  url = await server.listen();
  slow = await Model.load(path.join(dir, 'slow'), { backend: 'cpu' });
  slowServer = await createServer({ model: slow, port: 0, logger: false, redis: { url: redis.url } });
  slowUrl = await slowServer.listen();
  await Promise.all(workers.map((w) => w.ready));
});

afterAll(async () => {
  await server?.close();
  await slowServer?.close();
  killAll(workers);
  model?.dispose();
  slow?.dispose();
  await redis?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

async function libraryText(prompt: string, maxTokens: number, seed: number): Promise<string> {
  const P = model.tokenizer!.encode(prompt).length;
  const r = await model.generate({ sampler: new Sampler({ ...DEFAULTS, seed }), prompt, length: P + maxTokens });
  return model.tokenizer!.decode(r.sequences[0].subarray(P));
}

function post(base: string, pathname: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(base + pathname, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
}

describe('serve --redis', () => {
  it('answers the openai client and /v1/generate streams from workers, equal to the library for the same seed', async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const prompts = ['In the beginning', 'And God said', 'Let there be light'];
    const res = await Promise.all(prompts.map((prompt, i) => client.completions.create({ model: 'default', prompt, max_tokens: 30, seed: 20 + i })));
    for (let i = 0; i < prompts.length; i++) expect(res[i].choices[0].text).toBe(await libraryText(prompts[i], 30, 20 + i));

    // /v1/generate SSE: a start event, one event per denoising step, the result.
    const r = await post(url, '/v1/generate', { sampler: { ...DEFAULTS, seed: 5 }, length: 48, prompt: 'The', stream: true });
    expect(r.status).toBe(200);
    const events = await readSse(r);
    const steps = events.filter((e) => e.event === 'step').map((e) => JSON.parse(e.data) as { step: number });
    const result = JSON.parse(events.find((e) => e.event === 'result')!.data) as { sequences: { tokens: number[] }[]; steps: number };
    const lib = await model.generate({ sampler: new Sampler({ ...DEFAULTS, seed: 5 }), length: 48, prompt: 'The' });
    expect(result.sequences[0].tokens).toEqual([...lib.sequences[0]]);
    expect(steps.map((s) => s.step)).toEqual(Array.from({ length: lib.steps }, (_, i) => i));
    expect(events.at(-1)?.data).toBe('[DONE]');
  });

  it('the CLI: esolm serve --redis answers through the workers and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--redis', redis.url, '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const base = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /on (http:\/\/[\d.:]+)/.exec(err);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`serve exited (${code}): ${err}`)));
    });
    const r = await post(base, '/v1/completions', { prompt: 'In the beginning', max_tokens: 24, seed: 8 });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { choices: { text: string }[] }).choices[0].text).toBe(await libraryText('In the beginning', 24, 8));
    const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('a client that disconnects stops its job in the worker', async () => {
    const queue = new Queue('slow', { connection: { host: '127.0.0.1', port: redis.port }, prefix: 'esolm' });
    try {
      const ctl = new AbortController();
      const res = await post(slowUrl, '/v1/generate', { sampler: { method: 'mdlm', steps: 512, seed: 3 }, length: 512, stream: true }, ctl.signal);
      await readSse(res, (e) => e.event === 'step');  // running in the worker
      ctl.abort();
      // Alone, this generation runs for minutes; its job must end failed (aborted) within seconds.
      const t0 = Date.now();
      let failed: string | undefined;
      while (!failed && Date.now() - t0 < 15_000) {
        failed = (await queue.getJobs(['failed']))[0]?.failedReason;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(failed).toMatch(/^ERR_ABORTED/);
      expect(await queue.getActiveCount()).toBe(0);
    } finally {
      await queue.close();
    }
  });

  it('Redis down: 503 with a clear message; restarted under load: accepted requests complete and new ones are served', async () => {
    const job = (seed: number) => ({ sampler: { method: 'esolm', steps: 32, seed }, length: 256 });
    const tokensOf = async (r: Response) => ((await r.json()) as { sequences: { tokens: number[] }[] }).sequences[0].tokens;
    const library = async (seed: number) => [...(await slow.generate({ sampler: new Sampler(job(seed).sampler), length: 256 })).sequences[0]];
    // Requests running in the worker when Redis stops.
    const inFlight = [1, 2, 3, 4].map((seed) => post(slowUrl, '/v1/generate', job(seed)));
    const t0 = Date.now();
    while (!(slowServer.batcher.inFlight === 4 && slowServer.batcher.queued === 0) && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 10));
    expect(slowServer.batcher.inFlight).toBe(4);
    await redis.stop();
    // Not ready while Redis is down (a load balancer stops sending work); still live.
    const t2 = Date.now();
    while ((await fetch(`${url}/health/ready`)).status !== 503 && Date.now() - t2 < 10_000) await new Promise((r) => setTimeout(r, 50));
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as { status: string }).status).toBe('unavailable');
    expect((await fetch(`${url}/health/live`)).status).toBe(200);
    const down = await post(url, '/v1/completions', { prompt: 'In the beginning', max_tokens: 40, seed: 1 });
    expect(down.status).toBe(503);
    const err = (await down.json()) as { error: { message: string; code: string } };
    expect(err.error.code).toBe('unavailable');
    expect(err.error.message).toMatch(/Redis at redis:\/\/127\.0\.0\.1:\d+ cannot be reached/);
    expect(down.headers.get('retry-after')).toMatch(/^\d+$/);
    await new Promise((r) => setTimeout(r, 500));
    await redis.start();
    // Everything accepted before the outage completes, with the library's tokens (its worker
    // could not report the result while Redis was down; the job is rerun or its result read back).
    const results = await Promise.all(inFlight);
    for (let i = 0; i < results.length; i++) {
      expect(results[i].status).toBe(200);
      expect(await tokensOf(results[i])).toEqual(await library(i + 1));
    }
    // New requests: served again once the connections are back (no restart of server or workers).
    const t1 = Date.now();
    let after: Response;
    for (;;) {
      after = await post(url, '/v1/completions', { prompt: 'In the beginning', max_tokens: 40, seed: 77 });
      if (after.status !== 503 || Date.now() - t1 > 15_000) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(after.status).toBe(200);
    expect((await fetch(`${url}/health/ready`)).status).toBe(200);
    expect(((await after.json()) as { choices: { text: string }[] }).choices[0].text).toBe(await libraryText('In the beginning', 40, 77));
    const again = await post(slowUrl, '/v1/generate', job(9));
    expect(await tokensOf(again)).toEqual(await library(9));
  });
});
