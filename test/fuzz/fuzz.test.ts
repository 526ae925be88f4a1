// Mutation fuzzers (issue #12): safetensors header and bytes, config.json, tokenizer.json,
// the .ckpt ZIP and pickle readers, and generate/nll options. Each batch of cases runs in a
// child process (test/fuzz/child.mjs) so a signal or a hang is caught and counted, and the
// case that caused it is named; the run resumes after it. Fixed seeds, bounded counts.
// A longer run: ESOLM_FUZZ_SCALE=20 npx vitest run test/fuzz (multiplies every count).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZipReader } from '../../lib/checkpoint/zip.js';
import { makeRandomModel } from '../helpers/random-model.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const SCALE = Number(process.env.ESOLM_FUZZ_SCALE ?? 1);
const BATCH = 250;          // cases per child process
const CHILD_TIMEOUT = 90_000;

let work: string;
let base: Record<string, unknown>;

interface Tally {
  cases: number;
  crashes: string[];
  hangs: string[];
  untyped: string[];
  slow: string[];
  outcomes: Record<string, number>;
}

/** Runs `count` cases of `target` in child batches; a case that kills or hangs its child is recorded and skipped. */
function fuzz(target: string, seed: number, count: number): Tally {
  const t: Tally = { cases: 0, crashes: [], hangs: [], untyped: [], slow: [], outcomes: {} };
  let next = 0;
  while (next < count) {
    const n = Math.min(BATCH, count - next);
    const r = spawnSync(process.execPath, [path.join(HERE, 'child.mjs'), target, String(seed), String(next), String(n), work], {
      encoding: 'utf8', timeout: CHILD_TIMEOUT, killSignal: 'SIGKILL', env: { ...process.env, FUZZ_BASE: JSON.stringify(base) },
      maxBuffer: 64 * 2 ** 20,
    });
    let last = next - 1;
    let lastStarted = -1;
    for (const line of (r.stdout ?? '').split('\n')) {
      const [kind, idx, outcome, slow] = line.split(' ');
      if (kind === 'c') lastStarted = Number(idx);
      if (kind !== 'r') continue;
      last = Number(idx);
      t.cases++;
      const key = outcome.startsWith('U:') ? 'untyped' : outcome;
      t.outcomes[key] = (t.outcomes[key] ?? 0) + 1;
      if (outcome.startsWith('U:')) t.untyped.push(`${target}#${idx} ${line.slice(line.indexOf('U:'))}`);
      if (slow) t.slow.push(`${target}#${idx} ${slow}`);
    }
    const finished = (r.stdout ?? '').includes('\ndone\n');
    if (!finished) {
      const culprit = `${target}#${lastStarted} (seed ${seed})`;
      t.cases++;
      if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') t.hangs.push(culprit);
      else t.crashes.push(`${culprit}: status ${r.status} signal ${r.signal} ${(r.stderr ?? '').slice(-300)}`);
      next = Math.max(next, last, lastStarted) + 1;  // always advances, even if the child died before its first case
    } else {
      next += n;
    }
  }
  const by = Object.entries(t.outcomes).map(([k, v]) => `${k} ${v}`).join(', ');
  console.log(`fuzz ${target}: ${t.cases} cases, ${t.crashes.length} crashes, ${t.hangs.length} hangs, ${t.untyped.length} untyped errors (${by})`);
  return t;
}

function expectClean(t: Tally): void {
  expect(t.crashes, 'crashes').toEqual([]);
  expect(t.hangs, 'hangs').toEqual([]);
  expect(t.untyped, 'errors that are not a typed EsolmError').toEqual([]);
  expect(t.slow, 'cases over 5 s').toEqual([]);
}

beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'esolm-fuzz-'));
  const model = makeRandomModel(path.join(work, 'model'), { arch: 'esolm', seed: 21, length: 16 }).dir;
  // The .ckpt fixture's entries, extracted once, so the pickle fuzzer can rebuild valid ZIPs.
  const ckpt = path.join(ROOT, 'test', 'fixtures', 'checkpoints', 'tiny-esolm.ckpt');
  const zip = ZipReader.open(ckpt);
  const entries: { name: string; file: string }[] = [];
  mkdirSync(path.join(work, 'entries'));
  let pkl = '';
  for (const e of zip.entries.values()) {
    const file = path.join(work, 'entries', String(entries.length));
    writeFileSync(file, zip.read(e));
    entries.push({ name: e.name, file });
    if (e.name.endsWith('data.pkl')) pkl = file;
  }
  zip.close();
  base = {
    model, ckpt, pkl, entries,
    tokenizer: path.join(ROOT, 'test', 'fixtures', 'tokenizers', 'tiny-bert', 'tokenizer.json'),
    zipHelper: pathToFileURL(path.join(ROOT, 'test', 'helpers', 'zip-writer.mjs')).href,
  };
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('fuzz (child processes, fixed seeds)', () => {
  it('safetensors header and bytes', () => expectClean(fuzz('safetensors', 1, 300 * SCALE)), 300_000);
  it('config.json', () => expectClean(fuzz('config', 2, 250 * SCALE)), 300_000);
  it('tokenizer.json', () => expectClean(fuzz('tokenizer', 3, 250 * SCALE)), 300_000);
  it('.ckpt ZIP and pickle', () => expectClean(fuzz('ckpt', 4, 300 * SCALE)), 300_000);
  it('generate / nll options', () => expectClean(fuzz('options', 5, 400 * SCALE)), 300_000);
});
