// bench/serve.mjs — `esolm serve` under load: autocannon on loopback at 1, 8 and 32
// concurrent clients, batching on (--max-batch 32) and off (--max-batch 1), against the
// default model. Every request is POST /v1/completions with its own seed (a counter) and
// one shared plan_seed, so batching can group Eso-LM requests without changing any output.
// Reports requests/s, completion tokens/s and p50/p99 latency, and checks that every seed
// answered in both modes got the same text.
// Usage: node bench/serve.mjs [--duration 5] [--rounds 3] [--clients 1,8,32] [--modes off,on]
//        [--max-tokens 64] [--window-ms 10] [--backend cpu|cuda|auto] [--json out.json] [--md out.md]
// Both servers run at once in child processes (`node dist/bin.js serve`; the idle one costs
// nothing), so they do not share an event loop with autocannon, and the runs interleave
// (round after round of every clients x mode) so that a shared machine's load changes hit
// both modes alike; the table gives each configuration's median over the rounds.
import { spawn } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { opt } from './common.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const duration = Number(opt('--duration', '5'));
const rounds = Number(opt('--rounds', '3'));
const clientsList = opt('--clients', '1,8,32').split(',').map(Number);
const maxTokens = Number(opt('--max-tokens', '64'));
const windowMs = Number(opt('--window-ms', '10'));
const backend = opt('--backend', 'cpu');
const modes = opt('--modes', 'off,on').split(',');
const jsonOut = opt('--json', null);
const mdOut = opt('--md', null);
const prompt = 'And God said';

async function startServer(maxBatch) {
  const child = spawn(process.execPath, [path.join(root, 'dist', 'bin.js'), 'serve', '--port', '0', '--backend', backend,
    '--max-batch', String(maxBatch), '--batch-window-ms', String(windowMs), '--max-queue', '1024'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const url = await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      err += d;
      const m = /on (http:\/\/[\d.:]+)/.exec(err);
      if (m) resolve(m[1]);
    });
    child.on('exit', () => reject(new Error(`server exited: ${err}`)));
  });
  return { url, stop: () => new Promise((r) => { child.on('exit', r); child.kill('SIGTERM'); }) };
}

/** One autocannon run; texts[seed] collects each answered seed's completion. */
async function load(url, clients, texts, seedBase) {
  let next = seedBase;
  const result = await autocannon({
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
  return result;
}

const rows = [];
const outputs = { on: new Map(), off: new Map() };
console.log(`esolm serve bench: default model, POST /v1/completions, ${maxTokens} tokens after a ${prompt.length}-byte prompt, ` +
  `${rounds} rounds of ${duration} s per configuration; ${cpus()[0]?.model} x ${cpus().length}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const servers = {};
for (const mode of modes) {
  servers[mode] = await startServer(mode === 'on' ? 32 : 1);
  // Warm-up: one request, so the first run does not pay for page faults.
  await fetch(`${servers[mode].url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: maxTokens, seed: 0 }) });
}
for (let round = 0; round < rounds; round++) {
  for (const clients of clientsList) {
    for (const mode of modes) {
      // Each (round, clients) takes seeds from its own range, the same range in both modes.
      const r = await load(servers[mode].url, clients, outputs[mode], (round * 1000 + clients) * 1_000_000);
      const ok = r['2xx'];
      const row = {
        round, mode, clients, requests: ok, errors: r.errors + r.non2xx + r.timeouts, seconds: r.duration,
        requestsPerS: ok / r.duration, tokensPerS: (ok * maxTokens) / r.duration,
        p50ms: r.latency.p50, p99ms: r.latency.p99, load: loadavg()[0],
      };
      rows.push(row);
      console.log(`round ${round} batching ${mode.padEnd(3)} clients ${String(clients).padStart(2)}: ${row.requestsPerS.toFixed(1)} req/s, ` +
        `${row.tokensPerS.toFixed(0)} tokens/s, p50 ${row.p50ms} ms, p99 ${row.p99ms} ms, errors ${row.errors}, load ${row.load.toFixed(1)}`);
    }
  }
}
for (const mode of modes) await servers[mode].stop();

const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};
const summary = [];
for (const clients of clientsList) {
  for (const mode of modes) {
    const rs = rows.filter((x) => x.mode === mode && x.clients === clients);
    summary.push({
      mode, clients, requestsPerS: median(rs.map((x) => x.requestsPerS)), tokensPerS: median(rs.map((x) => x.tokensPerS)),
      p50ms: median(rs.map((x) => x.p50ms)), p99ms: median(rs.map((x) => x.p99ms)), errors: rs.reduce((a, x) => a + x.errors, 0),
    });
  }
}

// Same seed, same text, batched or not.
let compared = 0, same = 0;
for (const [seed, text] of outputs.on) {
  if (!outputs.off.has(seed)) continue;
  compared++;
  if (outputs.off.get(seed) === text) same++;
}
console.log(`outputs: ${same} of ${compared} seeds answered in both modes have identical text`);

const table = ['| clients | batching | requests/s | tokens/s | p50 ms | p99 ms | errors |', '|---:|---|---:|---:|---:|---:|---:|'];
for (const r of summary) {
  const base = summary.find((x) => x.mode === 'off' && x.clients === r.clients);
  table.push(`| ${r.clients} | ${r.mode} | ${r.requestsPerS.toFixed(1)}${r.mode === 'on' && base ? ` (${(r.requestsPerS / base.requestsPerS).toFixed(2)}x)` : ''} | ` +
    `${r.tokensPerS.toFixed(0)} | ${r.p50ms} | ${r.p99ms} | ${r.errors} |`);
}
console.log(table.join('\n'));
const meta = { date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length, node: process.versions.node, backend, duration, rounds, maxTokens, windowMs, prompt };
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ ...meta, summary, rows, outputs: { compared, same } }, null, 2) + '\n');
if (mdOut) writeFileSync(mdOut, `${table.join('\n')}\n\nOutputs: ${same} of ${compared} seeds answered in both modes have identical text.\n`);
