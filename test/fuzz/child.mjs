// Fuzz worker: runs cases [start, start + count) of one target against the built package
// (dist/) and prints one line per case: `c <index>` before it starts, `r <index> <outcome>`
// after. Outcomes: `ok` (accepted), `E:<code>` (a typed EsolmError), `U:<name>` (anything
// else: a bug), `slow` suffix when a case took over SLOW_MS. The parent (fuzz.test.ts) reads
// the last `c` line to name a case that crashed or hung the process.
// Usage: node child.mjs <target> <seed> <start> <count> <workdir>
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const dist = (p) => import(path.join(ROOT, 'dist', p));
const esolm = await dist('index.js');
const { EsolmError, Model, Sampler } = esolm;
const { TorchArchive, toPlain, TorchTensor } = await dist('checkpoint/torch.js');
const { loadTokenizerJson } = await dist('tokenizers/index.js');
const SLOW_MS = 5_000;

const [target, seedArg, startArg, countArg, work] = process.argv.slice(2);
const seed = Number(seedArg), start = Number(startArg), count = Number(countArg);

// ---- deterministic randomness (mulberry32 per case) ---------------------------------
function rng(s) {
  let a = s >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n) => Math.floor(next() * n), pick: (arr) => arr[Math.floor(next() * arr.length)] };
}

const INTERESTING_NUMBERS = [0, 1, -1, 2, 3, 7, 8, 16, 61, 64, 255, 256, 2 ** 15, 2 ** 16, 2 ** 24, 2 ** 31 - 1, 2 ** 31,
  2 ** 32, 2 ** 32 + 1, 2 ** 32 + 16, 2 ** 53, 2 ** 53 + 2, 1e9, 1e300, -(2 ** 31), 0.5, 2.5, -0.0001, 1e-300];
const INTERESTING_VALUES = [...INTERESTING_NUMBERS, null, true, false, '', 'x', '../../etc/passwd', '(a+)+$', [], [1, 2], {}, { a: 1 }];

/** Byte-level mutations of a buffer. */
function mutateBytes(r, buf) {
  let b = Buffer.from(buf);
  const n = 1 + r.int(4);
  for (let k = 0; k < n; k++) {
    if (b.length === 0) b = Buffer.from([r.int(256)]);
    const at = r.int(b.length);
    switch (r.int(8)) {
      case 0: b[at] ^= 1 << r.int(8); break;
      case 1: b[at] = r.int(256); break;
      case 2: b[at] = r.pick([0, 0xff, 0x7f, 0x80, 0x22, 0x7b, 0x7d, 0x5b, 0x2c]); break;
      case 3: b = b.subarray(0, at); break;  // truncate
      case 4: b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + r.int(16)))]); break;  // delete
      case 5: { const len = 1 + r.int(32); b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + len), b.subarray(at)]); break; }  // duplicate
      case 6: if (b.length >= 8) { const p = r.int(b.length - 7); b.writeBigUInt64LE(BigInt(r.pick([0, 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1])) , p); } break;
      default: if (b.length >= 4) { const p = r.int(b.length - 3); b.writeUInt32LE(r.pick([0, 0xffffffff, 0x7fffffff, 0x80000000, 1]), p); }
    }
  }
  return b;
}

/** Structure-aware mutation of a JSON value: replace, delete or add at a random path. */
function mutateJson(r, value) {
  const v = structuredClone(value);
  const n = 1 + r.int(3);
  for (let k = 0; k < n; k++) {
    let node = v;
    for (let depth = 0; depth < 6; depth++) {
      const keys = node && typeof node === 'object' ? Object.keys(node) : [];
      if (keys.length === 0) break;
      const key = r.pick(keys);
      const child = node[key];
      if (child && typeof child === 'object' && r.next() < 0.6) { node = child; continue; }
      const op = r.int(10);
      if (op < 7) node[key] = r.pick(INTERESTING_VALUES);
      else if (op < 9 && !Array.isArray(node)) delete node[key];
      else node[r.pick(['x', 'type', 'vocab', 'id', 'pattern'])] = r.pick(INTERESTING_VALUES);
      break;
    }
  }
  return v;
}

function mutateText(r, json) {
  const text = Buffer.from(JSON.stringify(r.next() < 0.8 ? mutateJson(r, json) : json));
  return r.next() < 0.3 ? mutateBytes(r, text) : text;
}

// ---- targets: each returns a promise for one case ------------------------------------
const dir = path.join(work, `${target}-${start}`);
mkdirSync(dir, { recursive: true });
const base = JSON.parse(process.env.FUZZ_BASE);  // files the parent prepared

async function loadAndUse(modelDir) {
  const m = await Model.load(modelDir, { backend: 'cpu', threads: 1 });
  try {
    const n = Math.min(4, m.config.length);
    await m.forward({ tokens: new Int32Array(n).fill(0) });
  } finally {
    m.dispose();
  }
}

const targets = {
  // model.safetensors bytes (header and data) of a tiny model, loaded and run.
  async safetensors(r) {
    const bytes = readFileSync(path.join(base.model, 'model.safetensors'));
    writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(base.model, 'config.json')));
    let b;
    if (r.next() < 0.7) {  // aim at the header
      const n = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
      const h = r.next() < 0.7 ? Buffer.from(JSON.stringify(mutateJson(r, header))) : mutateBytes(r, bytes.subarray(8, 8 + n));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(r.next() < 0.9 ? h.length : r.pick([0, h.length + 1, 2 ** 40])));
      b = Buffer.concat([len, h, bytes.subarray(8 + n)]);
    } else {
      b = mutateBytes(r, bytes);
    }
    writeFileSync(path.join(dir, 'model.safetensors'), b);
    await loadAndUse(dir);
  },
  // config.json of a tiny model.
  async config(r) {
    const cfg = JSON.parse(readFileSync(path.join(base.model, 'config.json'), 'utf8'));
    writeFileSync(path.join(dir, 'config.json'), mutateText(r, cfg));
    rmSync(path.join(dir, 'model.safetensors'), { force: true });
    writeFileSync(path.join(dir, 'model.safetensors'), readFileSync(path.join(base.model, 'model.safetensors')));
    await loadAndUse(dir);
  },
  // tokenizer.json (WordPiece fixture): load, encode, decode.
  async tokenizer(r) {
    const json = JSON.parse(readFileSync(base.tokenizer, 'utf8'));
    const file = path.join(dir, 'tokenizer.json');
    writeFileSync(file, mutateText(r, json));
    const tok = await loadTokenizerJson(file, { maxVocab: 2 ** 16 });
    const ids = tok.encode('Hello, world! aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab [MASK] naïve 123');
    tok.decode(ids);
    tok.decode(Array.from({ length: Math.min(tok.vocabSize, 64) }, (_, i) => i));
  },
  // .ckpt: either the archive's bytes, or data.pkl's bytes rebuilt into a valid ZIP.
  async ckpt(r) {
    const file = path.join(dir, 'x.ckpt');
    if (r.next() < 0.5) {
      writeFileSync(file, mutateBytes(r, readFileSync(base.ckpt)));
    } else {
      const { buildZip } = await import(base.zipHelper);
      const pkl = readFileSync(base.pkl);
      const entries = base.entries.map((e) => ({ name: e.name, data: readFileSync(e.file) }));
      entries.find((e) => e.name.endsWith('data.pkl')).data = mutateBytes(r, pkl);
      writeFileSync(file, buildZip(entries));
    }
    const a = TorchArchive.open(file);
    try {
      toPlain(a.root);
      const seen = new Set();
      const visit = (v, depth) => {
        if (!v || typeof v !== 'object' || depth > 8 || seen.has(v)) return;
        seen.add(v);
        if (v instanceof TorchTensor) { if (v.numel <= 2 ** 20) v.read(); return; }
        for (const x of v instanceof Map ? v.values() : Object.values(v)) visit(x, depth + 1);
      };
      visit(a.root, 0);
    } finally {
      a.close();
    }
  },
  // generate / nll options on a tiny model (sizes kept either small-valid or invalid).
  async options(r) {
    const m = globalThis.__model ??= await Model.load(base.model, { backend: 'cpu', threads: 1 });
    // Mostly valid values, one hostile value now and then, so cases get past the first check.
    const pick = () => (r.next() < 0.25 ? r.pick(INTERESTING_VALUES) : r.pick([undefined, 1, 2, 4, 8]));
    const mostly = (good, bad) => (r.next() < 0.8 ? r.pick(good) : r.pick(bad));
    const small = (v) => typeof v !== 'number' || v < 1 || v > 64 || !Number.isInteger(v) || v > 2 ** 31;
    if (r.next() < 0.6) {
      let sampler;
      const so = { method: mostly(['esolm', 'mdlm', 'ar'], ['x', 1, null]), steps: pick(), alpha0: mostly([0, 0.5, 1, undefined], [-1, 2, NaN]),
        topP: mostly([0.9, 1, undefined], [0, -1, 2, NaN]), temperature: mostly([1, 0.5, undefined], [0, -1, 1e-30, Infinity]),
        seed: mostly([0, 1, undefined], [-1, 2 ** 64, 0.5]), greedy: mostly([true, false, undefined], [1, 'yes']),
        bos: mostly([undefined, 0, 5], [-2, 60, 61, 1e9]) };
      for (const k of Object.keys(so)) if (so[k] === undefined) delete so[k];
      sampler = new Sampler(so);
      const opts = { sampler, batch: pick(), length: pick(), prompt: mostly([undefined, [1, 2], new Int32Array([3])], [[60], [-1], 'text', [1e9]]),
        fixed: mostly([undefined, { 3: 5 }, new Map([[2, 7]])], [{ '-1': 2 }, new Map([[2, 60]]), { positions: [1], tokens: [2, 3] }, 5]) };
      for (const k of Object.keys(opts)) if (opts[k] === undefined) delete opts[k];
      // Valid but large requests would only be slow: keep those out (they are not bugs).
      if (opts.batch !== undefined && !small(opts.batch) && opts.batch > 4 && Number.isInteger(opts.batch) && opts.batch < 2 ** 31) opts.batch = 4;
      await m.generate(opts);
    } else {
      const tokens = r.pick([new Int32Array([1, 2, 3, 4]), [new Int32Array([1, 2]), new Int32Array([3])], new Int32Array([60, 1]),
        new Int32Array([-1]), new Int32Array(0), [1, 2], 'x', null]);
      const o = { estimator: r.pick(['nelbo', 'exact', 'ar', 'x', undefined]), alpha0: r.pick([0, 0.5, 1, 2, NaN, undefined]),
        samples: r.pick([1, 2, 0, -1, 2.5, 2 ** 32, undefined]), orders: r.pick([1, 2, 0, 2 ** 31, undefined]),
        seed: r.pick([0, 1, -1, 0.5, undefined]), batch: r.pick([1, 2, 0, 2 ** 32 + 1, undefined]) };
      for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
      await m.nll(tokens, o);
    }
  },
};

const run = targets[target];
if (!run) throw new Error(`unknown target ${target}`);
for (let i = start; i < start + count; i++) {
  process.stdout.write(`c ${i}\n`);
  const r = rng(seed * 1_000_003 + i);
  const t = performance.now();
  let outcome;
  try {
    await run(r);
    outcome = 'ok';
  } catch (e) {
    outcome = e instanceof EsolmError ? `E:${e.code}` : `U:${e?.name ?? typeof e}:${String(e?.message ?? e).slice(0, 120).replace(/\s+/g, ' ')}`;
  }
  const ms = performance.now() - t;
  process.stdout.write(`r ${i} ${outcome}${ms > SLOW_MS ? ` slow:${Math.round(ms)}` : ''}\n`);
}
globalThis.__model?.dispose();
process.stdout.write('done\n');
