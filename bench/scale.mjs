// bench/scale.mjs — scaling out with `esolm worker`: throughput and p50/p99 latency of the
// HTTP API (autocannon on loopback, POST /v1/completions, default model) served by
//   local      one `esolm serve` process (its own batcher, all cores),
//   workers N  `esolm serve --redis` + N `esolm worker` processes on one redis-server, the
//              CPU threads split between them (max(1, cores / N) each),
// for N = 1, 2, 4. Every request has its own seed and one shared plan_seed (so Eso-LM requests
// can batch), and every seed answered in two setups must give the same text: the check is
// printed. Redis runs from a temporary directory on a free port, without persistence.
// Usage: node bench/scale.mjs [--duration 10] [--clients 16] [--workers 1,2,4] [--max-tokens 64]
//        [--max-batch 8] [--threads split|N] [--json out.json] [--md out.md]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { opt } from './common.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'dist', 'bin.js');
const duration = Number(opt('--duration', '10'));
const clients = Number(opt('--clients', '16'));
const workerCounts = opt('--workers', '1,2,4').split(',').map(Number);
const maxTokens = Number(opt('--max-tokens', '64'));
const maxBatch = Number(opt('--max-batch', '8'));
const jsonOut = opt('--json', null);
const mdOut = opt('--md', null);
// CPU threads per worker: 'split' (cores / N, at least 1) or a number for every worker.
const threadsOpt = opt('--threads', 'split');
const prompt = 'And God said';
const cores = cpus().length;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Spawns a process and resolves once its stderr matches `ready` (with the match). */
function start(cmd, args, ready) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const match = new Promise((resolve, reject) => {
    const on = (d) => {
      out += d;
      const m = ready.exec(out);
      if (m) resolve(m);
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.on('exit', (code) => reject(new Error(`${path.basename(cmd)} ${args[0] ?? ''} exited (${code}):\n${out}`)));
  });
  const stop = () => new Promise((r) => {
    if (child.exitCode !== null) return r();
    child.on('exit', r);
    child.kill('SIGTERM');
  });
  return { child, match, stop };
}

async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'esolm-scale-redis-'));
  const p = start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], /Ready to accept connections/);
  await p.match;
  return { url: `redis://127.0.0.1:${port}`, stop: async () => { await p.stop(); rmSync(dir, { recursive: true, force: true }); } };
}

async function startServe(extra) {
  const p = start(process.execPath, [bin, 'serve', '--port', '0', '--backend', 'cpu', '--max-batch', String(maxBatch), '--max-queue', '1024', ...extra], /on (http:\/\/[\d.:]+)/);
  const [, url] = await p.match;
  return { url, stop: p.stop };
}

/** One autocannon run; texts[seed] collects each answered seed's completion. */
async function load(url, texts) {
  let next = 1;
  return autocannon({
    url: `${url}/v1/completions`, connections: clients, duration, timeout: 120,
    requests: [{
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      setupRequest(req, context) {
        context.seed = next++;
        req.body = JSON.stringify({ model: 'default', prompt, max_tokens: maxTokens, seed: context.seed, plan_seed: 1 });
        return req;
      },
      onResponse(status, body, context) {
        if (status === 200) texts.set(context.seed, JSON.parse(body).choices[0].text);
      },
    }],
  });
}

async function warm(url) {
  await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: maxTokens, seed: 0 }) });
}

const rows = [];
const outputs = new Map();
console.log(`esolm scale bench: default model, POST /v1/completions, ${maxTokens} tokens, ${clients} clients, ${duration} s per run, ` +
  `max-batch ${maxBatch}; ${cpus()[0]?.model} x ${cores}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);

async function measure(setup, threads, run) {
  const texts = new Map();
  const r = await run(texts);
  outputs.set(setup, texts);
  const ok = r['2xx'];
  const row = {
    setup, threads, requests: ok, errors: r.errors + r.non2xx + r.timeouts, seconds: r.duration, requestsPerS: ok / r.duration,
    tokensPerS: (ok * maxTokens) / r.duration, p50ms: r.latency.p50, p99ms: r.latency.p99, load: loadavg()[0],
  };
  rows.push(row);
  console.log(`${setup.padEnd(10)}: ${row.requestsPerS.toFixed(1)} req/s, ${row.tokensPerS.toFixed(0)} tokens/s, p50 ${row.p50ms} ms, ` +
    `p99 ${row.p99ms} ms, errors ${row.errors}, load ${row.load.toFixed(2)}`);
}

// The single-process server: the baseline.
{
  const s = await startServe([]);
  await warm(s.url);
  await measure('local', cores, (texts) => load(s.url, texts));
  await s.stop();
}

for (const n of workerCounts) {
  const redis = await startRedis();
  const threads = threadsOpt === 'split' ? Math.max(1, Math.floor(cores / n)) : Number(threadsOpt);
  const workers = Array.from({ length: n }, () => start(process.execPath, [bin, 'worker', '--redis', redis.url, '--backend', 'cpu',
    '--threads', String(threads), '--max-batch', String(maxBatch)], /taking jobs/));
  await Promise.all(workers.map((w) => w.match));
  const s = await startServe(['--redis', redis.url]);
  await warm(s.url);
  await measure(`workers ${n}`, threads, (texts) => load(s.url, texts));
  await s.stop();
  await Promise.all(workers.map((w) => w.stop()));
  await redis.stop();
}

// Same seed, same text, whichever setup answered it.
const base = outputs.get('local');
let compared = 0, same = 0;
for (const [setup, texts] of outputs) {
  if (setup === 'local') continue;
  for (const [seed, text] of texts) {
    if (!base.has(seed)) continue;
    compared++;
    if (base.get(seed) === text) same++;
  }
}
console.log(`outputs: ${same} of ${compared} seeds answered both locally and through workers have identical text`);

const local = rows.find((r) => r.setup === 'local');
const table = ['| setup | threads each | requests/s | vs local | tokens/s | p50 ms | p99 ms | errors |', '|---|---:|---:|---:|---:|---:|---:|---:|'];
for (const r of rows) {
  table.push(`| ${r.setup} | ${r.setup === 'local' ? cores : r.threads} | ${r.requestsPerS.toFixed(1)} | ` +
    `${(r.requestsPerS / local.requestsPerS).toFixed(2)}x | ${r.tokensPerS.toFixed(0)} | ${r.p50ms} | ${r.p99ms} | ${r.errors} |`);
}
console.log(table.join('\n'));
const meta = { date: new Date().toISOString(), cpu: cpus()[0]?.model, cores, node: process.versions.node, duration, clients, maxTokens, maxBatch, threads: threadsOpt, prompt };
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ ...meta, rows, outputs: { compared, same } }, null, 2) + '\n');
if (mdOut) writeFileSync(mdOut, `${table.join('\n')}\n\nOutputs: ${same} of ${compared} seeds answered both locally and through workers have identical text.\n`);
