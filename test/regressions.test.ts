// Issue #12 regressions: each bullet of "Why" as a named test. Where a signal, an abort or
// a hang is possible the case runs in a child process with a timeout (helpers/child.ts),
// so a failure is reported, not suffered.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TorchArchive, toPlain, MAX_PLAIN_VALUES } from '../lib/checkpoint/torch.js';
import { ZipReader } from '../lib/checkpoint/zip.js';
import { EsolmError, Model, Sampler } from '../lib/index.js';
import { describeChild, DIST, ROOT, runChild } from './helpers/child.js';
import { makeRandomModel, TINY } from './helpers/random-model.js';
import { buildZip, dagPickle } from './helpers/zip.js';

let tmp: string;
let tiny: string;   // TINY esolm model
let slow: string;   // a model whose MDLM generation takes a while (threads: 1)
let model: Model;
let slowModel: Model;

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<EsolmError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(EsolmError);
    return e as EsolmError;
  }
  throw new Error('expected a rejection');
}

function copyModel(name: string, edit?: (dir: string) => void): string {
  const dir = path.join(tmp, name);
  mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors']) writeFileSync(path.join(dir, f), readFileSync(path.join(tiny, f)));
  edit?.(dir);
  return dir;
}

function editConfig(dir: string, fn: (c: Record<string, unknown>) => void): void {
  const file = path.join(dir, 'config.json');
  const c = JSON.parse(readFileSync(file, 'utf8'));
  fn(c);
  writeFileSync(file, JSON.stringify(c));
}

/** A slow generation (about a second or more) on slowModel. */
function slowGenerate(opts: Record<string, unknown> = {}) {
  return slowModel.generate({ sampler: new Sampler({ method: 'mdlm', steps: 128, seed: 3 }), length: 128, ...opts });
}

beforeAll(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), 'esolm-reg-'));
  tiny = makeRandomModel(path.join(tmp, 'tiny'), { arch: 'esolm', seed: 5 }).dir;
  slow = makeRandomModel(path.join(tmp, 'slow'), { arch: 'esolm', seed: 6, hidden_size: 128, n_heads: 4, n_blocks: 4, length: 128 }).dir;
  model = await Model.load(tiny, { backend: 'cpu' });
  slowModel = await Model.load(slow, { backend: 'cpu', threads: 1 });
});

afterAll(() => {
  model?.dispose();
  slowModel?.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

describe('native seam', () => {
  it('two worker threads (and the main thread) load and generate without aborting', () => {
    const r = runChild(`
      const { Worker } = await import('node:worker_threads');
      const body = \`
        import { parentPort, workerData } from 'node:worker_threads';
        const esolm = await import(workerData.dist);
        const m = await esolm.Model.load(workerData.dir, { backend: 'cpu', threads: 1 });
        const r = await m.generate({ sampler: new esolm.Sampler({ method: 'mdlm', steps: 4, seed: 1 }), length: 16 });
        m.dispose();
        parentPort.postMessage(r.sequences[0].length);\`;
      const run = () => new Promise((res, rej) => {
        const w = new Worker(body, { eval: true, workerData: { dist: ${JSON.stringify(DIST)}, dir: process.env.DIR } });
        w.once('message', res); w.once('error', rej);
      });
      const main = await esolm.Model.load(process.env.DIR, { backend: 'cpu', threads: 1 });
      const got = await Promise.all([run(), run()]);
      got.push(await run());
      // After the workers' environments are gone, the main thread's classes must still work.
      const again = await esolm.Model.load(process.env.DIR, { backend: 'cpu', threads: 1 });
      const r = await again.generate({ sampler: new esolm.Sampler({ method: 'mdlm', steps: 4, seed: 1 }), length: 16 });
      got.push(r.sequences[0].length);
      main.dispose();
      again.dispose();
      console.log('ok', got.join(','));
    `, { env: { DIR: tiny }, timeoutMs: 60_000 });
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.stdout).toContain('ok 16,16,16,16');
  });

  it('a load that cannot fit is refused with ERR_OUT_OF_MEMORY before allocating (sparse 4 TiB file), also by the CLI', () => {
    // AR, one block, hidden 2^16, vocab 2^24, BF16: the file is sparse, the header is real.
    const dir = path.join(tmp, 'huge');
    mkdirSync(dir);
    const d = 2 ** 16, V = 2 ** 24;
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ arch: 'ar', hidden_size: d, n_heads: 64, n_blocks: 1, vocab_size: V, mask_index: -1, length: 128 }));
    const shapes: [string, number[]][] = [
      ['vocab_embed.embedding', [V, d]], ['blocks.0.norm1.weight', [d]], ['blocks.0.attn_qkv.weight', [3 * d, d]],
      ['blocks.0.attn_out.weight', [d, d]], ['blocks.0.norm2.weight', [d]], ['blocks.0.mlp.0.weight', [4 * d, d]],
      ['blocks.0.mlp.0.bias', [4 * d]], ['blocks.0.mlp.2.weight', [d, 4 * d]], ['blocks.0.mlp.2.bias', [d]],
      ['output_layer.norm_final.weight', [d]], ['output_layer.linear.weight', [V, d]], ['output_layer.linear.bias', [V]],
    ];
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const [name, shape] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1) * 2;
      header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + n] };
      off += n;
    }
    const h = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    const file = path.join(dir, 'model.safetensors');
    writeFileSync(file, Buffer.concat([len, h]));
    truncateSync(file, 8 + h.length + off);
    const r = runChild(`
      const t = Date.now();
      try { await esolm.Model.load(process.env.DIR, { backend: 'cpu' }); console.log('loaded'); }
      catch (e) { console.log(e.code, Date.now() - t, e.message); }
    `, { env: { DIR: dir }, timeoutMs: 30_000 });
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.stdout).toMatch(/^ERR_OUT_OF_MEMORY \d+ loading this model needs [\d.]+ GiB/);
    expect(Number(r.stdout.split(' ')[1])).toBeLessThan(10_000);
    const cli = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bin.js'), 'generate', '-m', dir, '--backend', 'cpu', '-n', '4'], { encoding: 'utf8', timeout: 30_000 });
    expect(cli.status).toBe(1);
    expect(cli.stderr).toContain('ERR_OUT_OF_MEMORY');
  });

  it('the native loader refuses weights larger than the machine, and rejects (never hangs) on engine errors', async () => {
    const addon = (model as unknown as { addon_: { loadModel: (...a: unknown[]) => Promise<unknown> } }).addon_;
    const cfg = { arch: 'ar', hidden_size: 32, n_heads: 4, n_blocks: 1, cond_dim: 0, vocab_size: 61, mask_index: -1, length: 8 };
    const big = { name: 'vocab_embed.embedding', file: path.join(tiny, 'model.safetensors'), dtype: 'F32', shape: [2 ** 40, 32], offset: 0, nbytes: 2 ** 47 };
    const e = await addon.loadModel(cfg, [big], 'cpu', 1, 'f32').then(() => null, (x: { code: string }) => x);
    expect(e?.code).toBe('ERR_OUT_OF_MEMORY');
    // A strict seam: a missing or mistyped field is an error, never a default.
    const missing = { ...cfg } as Record<string, unknown>;
    delete missing.cond_dim;
    expect(() => addon.loadModel(missing, [], 'cpu', 1, 'f32')).toThrow(/cond_dim/);
    expect(() => addon.loadModel({ ...cfg, length: 2 ** 32 + 16 }, [], 'cpu', 1, 'f32')).toThrow(/32-bit integer for length/);
    const bad = await addon.loadModel(cfg, [], 'cpu', 1, 'f32').then(() => null, (x: { code: string }) => x);
    expect(bad?.code).toBe('ERR_BAD_WEIGHTS');
  });

  it('the native generate request is read strictly (batch 2^32 + 1 is not batch 1)', () => {
    const nm = (model as unknown as { native_: { generate: (...a: unknown[]) => unknown } }).native_;
    const req = model.generateRequest({ sampler: new Sampler({ method: 'mdlm', steps: 2 }), length: 8 }) as unknown as Record<string, unknown>;
    expect(() => nm.generate({ ...req, batch: 2 ** 32 + 1 }, null, null)).toThrow(/32-bit integer for batch/);
    const noTopP = { ...req };
    delete noTopP.topP;
    expect(() => nm.generate(noTopP, null, null)).toThrow(/missing field topP/);
    expect(() => nm.generate({ ...req, greedy: 0 }, null, null)).toThrow(/boolean for greedy/);
  });
});

describe('callbacks', () => {
  it('a throwing onStep rejects generate with ERR_ABORTED and the thrown error as cause; the model stays usable', async () => {
    const boom = new Error('boom');
    let calls = 0;
    const e = await rejection(model.generate({
      sampler: new Sampler({ method: 'mdlm', steps: 8, seed: 1 }), length: 16,
      onStep: () => { calls++; throw boom; },
    }));
    expect(e.code).toBe('ERR_ABORTED');
    expect(e.cause).toBe(boom);
    expect(calls).toBe(1);
    const r = await model.generate({ sampler: new Sampler({ method: 'mdlm', steps: 8, seed: 1 }), length: 16 });
    expect(r.sequences[0]).toHaveLength(16);
  });

  it('breaking out of generateStream cancels the generation', async () => {
    type Handle = { promise: Promise<unknown>; cancel(): void };
    const holder = slowModel as unknown as { native_: Record<string | symbol, unknown> & { generate: (...a: unknown[]) => Handle } };
    const nm = holder.native_;
    let inner: Promise<unknown> | undefined;
    // Native methods are read-only: observe generate's handle through a proxy.
    holder.native_ = new Proxy(nm, {
      get(target, key) {
        if (key === 'generate') {
          return (...a: unknown[]) => {
            const h = target.generate(...a);
            inner = h.promise;
            return h;
          };
        }
        const v = Reflect.get(target, key, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    try {
      const t = Date.now();
      for await (const ev of slowModel.generateStream({ sampler: new Sampler({ method: 'mdlm', steps: 128, seed: 3 }), length: 128 })) {
        expect(ev.step).toBe(0);
        break;
      }
      const err = await (inner as Promise<unknown>).then(() => null, (x: { code: string }) => x);
      expect(err?.code).toBe('ERR_ABORTED');
      expect(Date.now() - t).toBeLessThan(5_000);
    } finally {
      holder.native_ = nm;
    }
  });
});

describe('no main-thread locks', () => {
  it('createCache, cache dispose and model calls never wait for a generation in flight', async () => {
    let timing = -1;
    let after = 0;
    let cache: ReturnType<Model['createCache']> | undefined;
    const done = slowGenerate({
      onStep: (ev: { step: number }) => {
        if (ev.step === 1) {
          const t = performance.now();
          cache = slowModel.createCache({ batch: 1, capacity: 16 });
          const c2 = slowModel.createCache({ batch: 2, capacity: 16 });
          c2.dispose();
          timing = performance.now() - t;
        } else if (ev.step > 1) {
          after++;
        }
      },
    });
    const r = await done;
    expect(timing).toBeGreaterThanOrEqual(0);
    expect(timing).toBeLessThan(100);
    expect(after).toBeGreaterThan(10);  // the generation kept running after createCache returned
    expect(r.sequences[0]).toHaveLength(128);
    // The cache made during the generation is allocated on first use and works.
    const logits = await slowModel.step(cache!, { tokens: new Int32Array([1, 2, 3]), commit: 3 });
    expect(logits.length).toBe(3 * TINY.vocab_size);
    expect(cache!.committed).toBe(3);
    cache!.dispose();
  });

  it('finalizers of dropped caches never block the event loop during a generation', () => {
    const r = runChild(`
      const m = await esolm.Model.load(process.env.DIR, { backend: 'cpu', threads: 1 });
      let worst = 0;
      const p = m.generate({ sampler: new esolm.Sampler({ method: 'mdlm', steps: 128, seed: 3 }), length: 128,
        onStep: (ev) => {
          if (ev.step < 1 || ev.step > 20) return;
          for (let i = 0; i < 5; i++) { const c = m.createCache({ batch: 1, capacity: 8 }); m.caches_.delete(c); }
          const t = performance.now(); globalThis.gc(); worst = Math.max(worst, performance.now() - t);
        } });
      await p;
      m.dispose();
      console.log('worst', worst.toFixed(1));
    `, { env: { DIR: slow }, nodeArgs: ['--expose-gc'], timeoutMs: 120_000 });
    expect(r.status, describeChild(r)).toBe(0);
    expect(Number(r.stdout.split(' ')[1])).toBeLessThan(200);
  });

  it('dispose during a generation rejects it with ERR_ABORTED, even with an idle cache', async () => {
    const m = await Model.load(slow, { backend: 'cpu', threads: 1 });
    m.createCache({ batch: 1, capacity: 8 });  // idle cache
    let disposedAt = -1;
    const p = m.generate({
      sampler: new Sampler({ method: 'mdlm', steps: 128, seed: 3 }), length: 128,
      onStep: (ev) => {
        if (ev.step === 1) {
          const t = performance.now();
          m.dispose();
          disposedAt = performance.now() - t;
        }
      },
    });
    const e = await rejection(p);
    expect(e.code).toBe('ERR_ABORTED');
    expect(disposedAt).toBeLessThan(100);
    expect(m.disposed).toBe(true);
  });
});

describe('memory safety and sizes', () => {
  it('forward({ out }): detaching or shrinking the buffer during the call is a typed error, not corruption', () => {
    const r = runChild(`
      const m = await esolm.Model.load(process.env.DIR, { backend: 'cpu' });
      const V = m.config.vocab_size, n = 16;
      const tokens = new Int32Array(n).fill(1);
      const out = new Float32Array(n * V);
      const p1 = m.forward({ tokens, out });
      structuredClone(out.buffer, { transfer: [out.buffer] });  // detaches out
      const e1 = await p1.then(() => 'resolved', (e) => e.code);
      const rab = new ArrayBuffer(n * V * 4, { maxByteLength: n * V * 4 });
      const out2 = new Float32Array(rab);
      const p2 = m.forward({ tokens, out: out2 });
      rab.resize(4);
      const e2 = await p2.then(() => 'resolved', (e) => e.code);
      const ok = await m.forward({ tokens, out: new Float32Array(n * V) });
      console.log(e1, e2, ok.length === n * V);
      m.dispose();
    `, { env: { DIR: tiny } });
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.stdout.trim()).toBe('ERR_INVALID_ARG ERR_INVALID_ARG true');
  });

  it('createCache({ batch: 2^26, capacity: 2^30 }) is refused, never wrapped to a 0-byte cache', () => {
    expect(() => model.createCache({ batch: 2 ** 26, capacity: 2 ** 30 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_MEMORY' }));
    expect(() => model.createCache({ batch: 2 ** 32 + 1, capacity: 8 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    // The engine's own check, below the TS one: the native call straight.
    const nm = (model as unknown as { native_: { createCache: (b: number, c: number) => unknown } }).native_;
    expect(() => nm.createCache(2 ** 26, 2 ** 30)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_MEMORY' }));
  });

  it('generate batch/length sizes are checked before any allocation or loop', async () => {
    const sampler = new Sampler({ method: 'mdlm', steps: 4 });
    const t = Date.now();
    expect((await rejection(() => model.generate({ sampler, batch: 2 ** 32 + 1, length: 8 }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejection(() => model.generate({ sampler, batch: 2 ** 31, length: 8, prompt: [1] }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejection(() => model.generate({ sampler, batch: 2 ** 30, length: 64, prompt: [1] }))).code).toBe('ERR_OUT_OF_MEMORY');
    expect((await rejection(() => model.generate({ sampler, length: 2 ** 31 }))).code).toBe('ERR_INVALID_ARG');
    expect((await rejection(() => model.generate({ sampler, length: 2 ** 32 + 16 }))).code).toBe('ERR_INVALID_ARG');
    expect(Date.now() - t).toBeLessThan(2_000);
  });

  it('config sizes are bounded integers: n_blocks 1e9 and length 2^31 / 2^32 + 16 are refused at once', async () => {
    for (const [field, value] of [['n_blocks', 1e9], ['length', 2 ** 31], ['length', 2 ** 32 + 16], ['vocab_size', 1e12], ['hidden_size', 2.5]] as const) {
      const dir = copyModel(`cfg-${field}-${value}`, (d) => editConfig(d, (c) => { c[field] = value; }));
      const t = Date.now();
      const e = await rejection(Model.load(dir, { backend: 'cpu' }));
      expect(e.code).toBe('ERR_BAD_WEIGHTS');
      expect(e.message).toContain(`"${field}"`);
      expect(Date.now() - t).toBeLessThan(2_000);
    }
  });
});

describe('files', () => {
  for (const which of ['config.json', 'model.safetensors']) {
    it(`a FIFO in place of ${which} is refused with ERR_IO, never blocks`, () => {
      const dir = copyModel(`fifo-${which}`, (d) => {
        rmSync(path.join(d, which));
        execFileSync('mkfifo', [path.join(d, which)]);
      });
      const r = runChild(`
        try { await esolm.Model.load(process.env.DIR, { backend: 'cpu' }); console.log('loaded'); }
        catch (e) { console.log(e.code, e.message); }
      `, { env: { DIR: dir }, timeoutMs: 20_000 });
      expect(r.timedOut, describeChild(r)).toBe(false);
      expect(r.stdout).toMatch(/^ERR_IO .*not a regular file/);
    });
  }

  it('duplicate tensor names in a safetensors header are refused', async () => {
    const dir = copyModel('dup', (d) => {
      const file = path.join(d, 'model.safetensors');
      const buf = readFileSync(file);
      const n = Number(buf.readBigUInt64LE(0));
      const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
      const first = Object.keys(header).find((k) => k !== '__metadata__')!;
      const text = JSON.stringify(header);
      // The same name again, same entry: JSON.parse alone would keep one silently.
      const dupHeader = text.slice(0, -1) + `,${JSON.stringify(first)}:${JSON.stringify(header[first])}}`;
      const h = Buffer.from(dupHeader.padEnd(Math.ceil(dupHeader.length / 8) * 8, ' '));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(h.length));
      writeFileSync(file, Buffer.concat([len, h, buf.subarray(8 + n)]));
    });
    const e = await rejection(Model.load(dir, { backend: 'cpu' }));
    expect(e.code).toBe('ERR_BAD_WEIGHTS');
    expect(e.message).toMatch(/appears more than once/);
  });

  it('a .ckpt whose pickled hyper-parameters form a DAG is refused quickly (expansion capped)', () => {
    const pkl = dagPickle(60);
    expect(pkl.length).toBeLessThan(700);
    const file = path.join(tmp, 'dag.ckpt');
    writeFileSync(file, buildZip([{ name: 'archive/data.pkl', data: pkl }]));
    const r = runChild(`
      const { TorchArchive, toPlain } = await import(${JSON.stringify(new URL('../dist/checkpoint/torch.js', import.meta.url).href)});
      const t = Date.now();
      const a = TorchArchive.open(process.env.FILE);
      try { toPlain(a.root.get('hyper_parameters')); console.log('expanded'); }
      catch (e) { console.log(e.code, Date.now() - t); }
    `, { env: { FILE: file }, timeoutMs: 30_000 });
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.stdout).toMatch(/^ERR_BAD_WEIGHTS \d+/);
    expect(Number(r.stdout.split(' ')[1])).toBeLessThan(10_000);
    const a = TorchArchive.open(file);
    expect(() => toPlain(a.root)).toThrow(`more than ${MAX_PLAIN_VALUES} values`);
    a.close();
  });

  it('a DEFLATE bomb in data.pkl stops at its declared size; a huge declared size is refused', () => {
    const bomb = Buffer.alloc(64 * 2 ** 20);  // 64 MiB of zeros deflates to ~64 KiB
    const lying = path.join(tmp, 'bomb.ckpt');
    writeFileSync(lying, buildZip([{ name: 'archive/data.pkl', data: bomb, method: 8, size: 1024 }]));
    expect(() => TorchArchive.open(lying)).toThrow(/cannot be inflated within its declared 1024 bytes/);
    const huge = path.join(tmp, 'bomb2.ckpt');
    writeFileSync(huge, buildZip([{ name: 'archive/data.pkl', data: bomb, method: 8, size: 2 ** 32 - 2 }]));
    expect(() => ZipReader.open(huge)).toThrow(/more than the \d+ allowed/);
  });

  it('ZIP CRC-32 is verified: a flipped byte in data.pkl or a storage is refused', () => {
    const src = path.join(ROOT, 'test', 'fixtures', 'checkpoints', 'tiny-esolm.ckpt');
    const zip = ZipReader.open(src);
    const pkl = [...zip.entries.values()].find((e) => e.name.endsWith('data.pkl'))!;
    const storage = [...zip.entries.values()].find((e) => /\/data\/\d+$/.test(e.name) && e.size > 64)!;
    const pklAt = zip.dataOffset(pkl), stAt = zip.dataOffset(storage);
    zip.close();
    const bytes = readFileSync(src);
    const flip = (at: number, name: string): string => {
      const b = Buffer.from(bytes);
      b[at] ^= 0x01;
      const f = path.join(tmp, name);
      writeFileSync(f, b);
      return f;
    };
    expect(() => TorchArchive.open(flip(pklAt + 2, 'crc-pkl.ckpt'))).toThrow(/CRC-32/);
    const z = ZipReader.open(flip(stAt + 10, 'crc-st.ckpt'));
    expect(() => z.readRange(z.get(storage.name)!, 0, 8)).toThrow(/CRC-32/);
    z.close();
  });
});

describe('tokenizers', () => {
  function withTokenizer(name: string, tokenizer: unknown, spec = 'tokenizer.json'): string {
    return copyModel(name, (d) => {
      writeFileSync(path.join(d, 'tokenizer.json'), typeof tokenizer === 'string' ? tokenizer : JSON.stringify(tokenizer));
      editConfig(d, (c) => { c.tokenizer = spec; });
    });
  }
  const wordLevel = (extra: Record<string, unknown> = {}, model: Record<string, unknown> = {}) => ({
    version: '1.0', added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null,
    model: { type: 'WordLevel', vocab: { a: 0, b: 1, '[UNK]': 2 }, unk_token: '[UNK]', ...model }, ...extra,
  });

  it('a catastrophic pre_tokenizer regex is refused at load, never run', () => {
    const dir = withTokenizer('regex', wordLevel({ pre_tokenizer: { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false } }));
    const r = runChild(`
      const t = Date.now();
      try { const m = await esolm.Model.load(process.env.DIR, { backend: 'cpu' }); m.tokenizer.encode('a'.repeat(32) + 'b'); console.log('encoded'); }
      catch (e) { console.log(e.code, Date.now() - t, e.message); }
    `, { env: { DIR: dir }, timeoutMs: 30_000 });
    expect(r.timedOut, describeChild(r)).toBe(false);
    expect(r.stdout).toMatch(/^ERR_BAD_WEIGHTS \d+ .*regex is refused/);
  });

  it('token ids near 1e9 and a non-string unk_token are typed errors, at once', async () => {
    const t = Date.now();
    const e1 = await rejection(Model.load(withTokenizer('ids', wordLevel({}, { vocab: { a: 0, b: 999_999_999 } })), { backend: 'cpu' }));
    expect(e1.code).toBe('ERR_BAD_WEIGHTS');
    expect(e1.message).toMatch(/vocabulary id/);
    const e2 = await rejection(Model.load(withTokenizer('unk', wordLevel({}, { unk_token: 5 })), { backend: 'cpu' }));
    expect(e2.code).toBe('ERR_BAD_WEIGHTS');
    expect(e2.message).toMatch(/unk_token/);
    expect(Date.now() - t).toBeLessThan(5_000);
  });

  it('a tokenizer path must stay inside the model folder, and errors never echo file bytes', async () => {
    const secret = path.join(tmp, 'secret.json');
    writeFileSync(secret, 'root:x:0:0:SECRET-BYTES');
    const rel = path.relative(path.join(tmp, 'escape'), secret);
    const e1 = await rejection(Model.load(copyModel('escape', (d) => editConfig(d, (c) => { c.tokenizer = rel; })), { backend: 'cpu' }));
    expect(e1.code).toBe('ERR_BAD_WEIGHTS');
    expect(e1.message).toMatch(/outside the model folder/);
    const e2 = await rejection(Model.load(copyModel('abs', (d) => editConfig(d, (c) => { c.tokenizer = '/etc/passwd'; })), { backend: 'cpu' }));
    expect(e2.message).toMatch(/outside the model folder/);
    const e3 = await rejection(Model.load(withTokenizer('garbage', 'root:x:0:0:SECRET-BYTES'), { backend: 'cpu' }));
    expect(e3.code).toBe('ERR_BAD_WEIGHTS');
    expect(e3.message).not.toContain('SECRET');
    expect(e3.message).not.toContain('root:x');
    const e4 = await rejection(Model.load(copyModel('badcfg', (d) => writeFileSync(path.join(d, 'config.json'), 'root:x:0:0:SECRET')), { backend: 'cpu' }));
    expect(e4.message).not.toContain('SECRET');
  });
});

describe('CLI', () => {
  const bin = path.join(ROOT, 'dist', 'bin.js');
  const cli = (args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });

  it('-n -5 is a clear option error, not "Invalid typed array length"', () => {
    for (const args of [['generate', '-m', tiny, '-n', '-5'], ['generate', '-m', tiny, '-b', '0'], ['bench', tiny, '-n', '-5']]) {
      const r = cli(args);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/Not a positive integer/);
      expect(r.stderr).not.toMatch(/typed array/i);
    }
  });

  it('convert into an existing file is a typed error, not a raw EEXIST', () => {
    const target = path.join(tmp, 'existing-file');
    writeFileSync(target, 'x');
    const r = cli(['convert', path.join(ROOT, 'test', 'fixtures', 'checkpoints', 'tiny-esolm.ckpt'), target]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/exists and is not a folder \(ERR_INVALID_ARG\)/);
    expect(r.stderr).not.toMatch(/EEXIST/);
  });
});
