// `esolm serve` under pressure, over real HTTP on 127.0.0.1: a full queue answers 429 with
// Retry-After (also through the openai client), a request past its deadline gets 504, a
// client that disconnects aborts the generation it was alone in, and SIGTERM to the CLI
// stops accepting, lets the in-flight request finish and exits 0. A random model big
// enough that one generation takes seconds keeps the server busy.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { createServer, type EsolmServer } from '../lib/serve/index.js';
import { makeRandomModel } from './helpers/random-model.js';
import { readSse } from './helpers/sse.js';

const root = path.join(import.meta.dirname, '..');
let dir: string;
let slow: Model;  // a generation of 512 tokens with MDLM takes seconds to minutes on 2 cores

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-serve-'));
  makeRandomModel(path.join(dir, 'slow'), { arch: 'esolm', seed: 41, hidden_size: 128, n_heads: 4, n_blocks: 8, vocab_size: 1000, length: 512 });
  slow = await Model.load(path.join(dir, 'slow'), { backend: 'cpu' });
});

afterAll(() => {
  slow?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const long = (seed: number, steps = 512) => ({ sampler: { method: 'mdlm', steps, seed }, length: 512 });

async function withServer(opts: Parameters<typeof createServer>[0], fn: (url: string, s: EsolmServer) => Promise<void>): Promise<void> {
  const s = await createServer({ model: slow, port: 0, logger: false, shutdownTimeoutMs: 2000, ...opts });
  const url = await s.listen();
  try {
    await fn(url, s);
  } finally {
    await s.close();
  }
}

function post(url: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
}

/** Polls until cond() holds or ms pass. */
async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

describe('limits', () => {
  it('answers 429 with Retry-After when the queue is full', async () => {
    await withServer({ maxQueue: 1, batchWindowMs: 0 }, async (url, s) => {
      const ctl = new AbortController();
      // The first request runs; the second (incompatible) waits; the third is refused.
      const running = post(url, { ...long(1), stream: true }, ctl.signal);
      expect(await until(async () => s.batcher.inFlight > 0, 5000)).toBe(true);
      const waiting = post(url, { ...long(2, 511), stream: true }, ctl.signal);
      expect(await until(async () => s.batcher.queued === 1, 5000)).toBe(true);
      const refused = await post(url, long(3, 510));
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect((await refused.json()).error).toMatchObject({ type: 'rate_limit_error', code: 'queue_full' });
      // A refused stream gets the status too, not a 200 with an error event.
      const refusedStream = await post(url, { ...long(3, 509), stream: true });
      expect(refusedStream.status).toBe(429);
      expect(refusedStream.headers.get('retry-after')).not.toBeNull();
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
      const e = await client.completions.create({ model: 'slow', prompt: [1, 2], max_tokens: 8, method: 'mdlm' } as never).catch((x) => x);
      expect(e).toBeInstanceOf(OpenAI.RateLimitError);
      ctl.abort();
      await Promise.allSettled([running, waiting]);
      expect(await until(async () => s.batcher.inFlight === 0 && s.batcher.queued === 0, 10000)).toBe(true);
    });
  });

  it('answers 504 when a request passes its deadline, and the generation stops', async () => {
    await withServer({ requestTimeoutMs: 300 }, async (url, s) => {
      const t0 = Date.now();
      const r = await post(url, long(4));
      expect(r.status).toBe(504);
      expect((await r.json()).error).toMatchObject({ type: 'timeout_error', code: 'timeout' });
      expect(Date.now() - t0).toBeLessThan(20_000);
      expect(await until(async () => s.batcher.inFlight === 0, 10000)).toBe(true);
    });
  });

  it('aborts the generation when its only client disconnects', async () => {
    await withServer({}, async (url, s) => {
      const ctl = new AbortController();
      const res = await post(url, { ...long(5), stream: true }, ctl.signal);
      const t0 = Date.now();
      await readSse(res, (e) => e.event === 'step');  // the first step arrived: it is running
      ctl.abort();
      // Alone, this generation runs for minutes; it must stop within seconds.
      expect(await until(async () => s.batcher.inFlight === 0, 30_000)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(30_000);
      const m = await (await fetch(`${url}/metrics`)).text();
      expect(m).toMatch(/esolm_batches_total\{method="mdlm",outcome="failed"\} 1/);
    });
  });
});

describe('graceful shutdown of the CLI', () => {
  it('on SIGTERM stops accepting, finishes the in-flight request and exits 0', async () => {
    const child = spawn(process.execPath, [path.join(root, 'dist', 'bin.js'), 'serve', '--model', path.join(dir, 'slow'),
      '--port', '0', '--backend', 'cpu'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
        if (m) resolve(m[1]);
      });
      child.on('exit', () => reject(new Error(`the server exited: ${stderr}`)));
    });
    // A request of a few seconds is in flight when SIGTERM arrives.
    const res = await post(url, { ...long(6, 6), stream: true });
    const events: string[] = [];
    let sigterm: () => void = () => undefined;
    const sent = new Promise<void>((r) => { sigterm = r; });
    const reading = readSse(res, (e) => {
      events.push(e.event ?? e.data);
      if (events.length === 2) {  // start + first step seen
        child.kill('SIGTERM');
        sigterm();
      }
    });
    await sent;
    // While it drains, new work is refused (503, or no listener at all) ...
    const refused = await until(async () => {
      try {
        return (await fetch(`${url}/health`)).status === 503;
      } catch {
        return true;
      }
    }, 5000);
    expect(refused).toBe(true);
    expect(events).not.toContain('result');  // ... while the accepted request is still running
    await reading;
    expect(events).toContain('result');
    expect(events.at(-1)).toBe('[DONE]');
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/SIGTERM: draining/);
    await expect(fetch(`${url}/health`)).rejects.toThrow();  // nothing listens any more
  });
});
