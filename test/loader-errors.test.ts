// Every bad model folder and every bad argument gives a typed EsolmError with the right
// code and a message naming the file / field / tensor, and never takes the process down
// (DESIGN.md "Errors and bad input").
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cache, EsolmError, Model } from '../lib/index.js';
import { type RandomModel, type RandomModelOptions, makeRandomModel } from './helpers/random-model.js';
import { type Header, type HeaderEntry, assembleSafetensors, writeRawSafetensors } from './helpers/safetensors.js';

let root: string;
let good: RandomModel;
let model: Model;
let n = 0;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'esolm-errors-'));
  good = makeRandomModel(join(root, 'good'), { arch: 'esolm', seed: 17 });
  model = await Model.load(good.dir, { backend: 'cpu' });
});
afterAll(() => {
  model?.dispose();
  rmSync(root, { recursive: true, force: true });
});

function fresh(opts: RandomModelOptions = {}): RandomModel {
  return makeRandomModel(join(root, `case${n++}`), { arch: 'esolm', seed: 17, ...opts });
}

async function caught(f: () => unknown): Promise<unknown> {
  try {
    await f();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** Expect an EsolmError with `code` whose message contains every string (or matches every RegExp) in `names`. */
async function expectError(f: () => unknown, code: string, ...names: (string | RegExp)[]): Promise<EsolmError> {
  const err = await caught(f);
  expect(err, `expected ${code}, nothing was thrown`).toBeDefined();
  expect(err, String(err)).toBeInstanceOf(EsolmError);
  expect(err).toBeInstanceOf(Error);
  const e = err as EsolmError;
  expect(e.code, e.message).toBe(code);
  expect(typeof e.message).toBe('string');
  expect(e.message.length).toBeGreaterThan(0);
  for (const name of names) {
    if (typeof name === 'string') expect(e.message, `message should name ${name}`).toContain(name);
    else expect(e.message, `message should match ${name}`).toMatch(name);
  }
  return e;
}

const load = (dir: string) => () => Model.load(dir, { backend: 'cpu' });

/** Rewrite a model folder's single weight file with a corrupted header/data. */
function corrupt(rm: RandomModel, edit: (parts: { header: Header; data: Buffer }) => { header?: Header | string; data?: Buffer; declaredHeaderLength?: number | bigint; truncateTo?: number }) {
  const bytes = readFileSync(rm.files[0]!);
  const hl = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + hl).toString('utf8')) as Header;
  const data = Buffer.from(bytes.subarray(8 + hl));
  const out = edit({ header, data });
  writeRawSafetensors(rm.files[0]!, {
    header: out.header ?? header,
    data: out.data ?? data,
    declaredHeaderLength: out.declaredHeaderLength,
    truncateTo: out.truncateTo,
  });
}

function entry(h: Header, name: string): HeaderEntry {
  return h[name] as HeaderEntry;
}

describe('config.json', () => {
  it('missing config.json -> ERR_IO naming the file', async () => {
    const rm = fresh();
    unlinkSync(join(rm.dir, 'config.json'));
    await expectError(load(rm.dir), 'ERR_IO', 'config.json');
  });

  it('a folder that does not exist -> ERR_IO', async () => {
    await expectError(load(join(root, 'no-such-model')), 'ERR_IO');
  });

  it('config.json that is not JSON -> ERR_BAD_WEIGHTS naming the file', async () => {
    const rm = fresh();
    writeFileSync(join(rm.dir, 'config.json'), '{"arch": "esolm", hidden_size: 32');
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'config.json');
  });

  for (const field of ['arch', 'hidden_size', 'n_heads', 'n_blocks', 'vocab_size', 'mask_index', 'length'] as const) {
    it(`missing field ${field} -> ERR_BAD_WEIGHTS naming it`, async () => {
      const rm = fresh({ editConfig: (c) => delete c[field] });
      await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'config.json', field);
    });
  }

  it('unknown arch -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({ editConfig: (c) => (c.arch = 'gpt7') });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'arch', 'gpt7');
  });

  it('a field of the wrong type / impossible value -> ERR_BAD_WEIGHTS naming it', async () => {
    const a = fresh({ editConfig: (c) => (c.hidden_size = '32') });
    await expectError(load(a.dir), 'ERR_BAD_WEIGHTS', 'hidden_size');
    const b = fresh({ editConfig: (c) => (c.n_heads = 5) }); // 32 % 5 != 0
    await expectError(load(b.dir), 'ERR_BAD_WEIGHTS', 'n_heads');
    const c = fresh({ editConfig: (cfg) => (cfg.mask_index = 61) }); // == vocab_size
    await expectError(load(c.dir), 'ERR_BAD_WEIGHTS', 'mask_index');
  });

  it('config that disagrees with the tensors -> ERR_BAD_WEIGHTS naming a tensor', async () => {
    const rm = fresh({ editConfig: (c) => (c.vocab_size = 62) });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', /vocab_embed\.embedding|output_layer\.linear\.(weight|bias)/);
  });

  it('no .safetensors file in the folder -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    unlinkSync(rm.files[0]!);
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'safetensors');
  });
});

describe('safetensors container', () => {
  it('file shorter than the 8-byte prefix -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    writeFileSync(rm.files[0]!, Buffer.from([1, 2, 3]));
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'model.safetensors');
  });

  it('header length larger than the file -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    const size = readFileSync(rm.files[0]!).length;
    corrupt(rm, () => ({ declaredHeaderLength: size + 100 }));
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'model.safetensors');
  });

  it('absurd header length (2^63) does not overflow -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    corrupt(rm, () => ({ declaredHeaderLength: 2n ** 63n }));
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS');
  });

  it('header that is not JSON -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    corrupt(rm, () => ({ header: '{"vocab_embed.embedding": {"dtype": "F32", ' + ' '.repeat(10) }));
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'model.safetensors');
  });

  it('header JSON of the wrong shape (an array) -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    corrupt(rm, () => ({ header: '[1, 2, 3]     ' }));
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS');
  });

  it('offsets past the end of the data -> ERR_BAD_WEIGHTS naming the tensor', async () => {
    const rm = fresh();
    corrupt(rm, ({ header, data }) => {
      const e = entry(header, 'output_layer.linear.bias');
      e.data_offsets = [data.length - 4, data.length + 4 * 60];
      return {};
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'output_layer.linear.bias');
  });

  it('offsets that disagree with shape x dtype -> ERR_BAD_WEIGHTS naming the tensor', async () => {
    const rm = fresh();
    corrupt(rm, ({ header }) => {
      const e = entry(header, 'blocks.0.norm2.weight');
      e.shape = [33];
      return {};
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.0.norm2.weight');
  });

  it('overlapping tensors -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    corrupt(rm, ({ header }) => {
      const a = entry(header, 'blocks.0.norm1.weight');
      const b = entry(header, 'blocks.0.norm2.weight');
      b.data_offsets = [...a.data_offsets] as [number, number]; // same size: [32] F32 each
      return {};
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS');
  });

  it('non-contiguous data (a gap between tensors) -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    corrupt(rm, ({ header, data }) => {
      // shift every tensor after the first by 8 bytes, leaving a hole
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      const first = names.reduce((m, k) => (entry(header, k).data_offsets[0] < entry(header, m).data_offsets[0] ? k : m));
      const firstEnd = entry(header, first).data_offsets[1];
      for (const k of names) {
        const e = entry(header, k);
        if (e.data_offsets[0] >= firstEnd) e.data_offsets = [e.data_offsets[0] + 8, e.data_offsets[1] + 8];
      }
      return { data: Buffer.concat([data.subarray(0, firstEnd), Buffer.alloc(8), data.subarray(firstEnd)]) };
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS');
  });

  it('truncated data -> ERR_BAD_WEIGHTS', async () => {
    const rm = fresh();
    const size = readFileSync(rm.files[0]!).length;
    corrupt(rm, () => ({ truncateTo: size - 100 }));
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'model.safetensors');
  });

  it('unknown dtype -> ERR_BAD_WEIGHTS naming the tensor', async () => {
    const rm = fresh();
    corrupt(rm, ({ header }) => {
      entry(header, 'blocks.1.mlp.0.bias').dtype = 'Q4_K';
      return {};
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.1.mlp.0.bias');
  });

  it('an integer dtype for a weight -> ERR_BAD_WEIGHTS naming the tensor', async () => {
    const rm = fresh();
    corrupt(rm, ({ header }) => {
      entry(header, 'blocks.1.mlp.0.bias').dtype = 'I32'; // same width as F32
      return {};
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.1.mlp.0.bias');
  });

  it('the same tensor in two shard files -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({ shards: 2 });
    // copy one tensor of shard 1 into shard 2
    const bytes = readFileSync(rm.files[0]!);
    const hl = Number(bytes.readBigUInt64LE(0));
    const h1 = JSON.parse(bytes.subarray(8, 8 + hl).toString('utf8')) as Header;
    const e = entry(h1, 'vocab_embed.embedding');
    const raw = bytes.subarray(8 + hl + e.data_offsets[0], 8 + hl + e.data_offsets[1]);
    const b2 = readFileSync(rm.files[1]!);
    const hl2 = Number(b2.readBigUInt64LE(0));
    const h2 = JSON.parse(b2.subarray(8, 8 + hl2).toString('utf8')) as Header;
    const d2 = Buffer.from(b2.subarray(8 + hl2));
    h2['vocab_embed.embedding'] = { dtype: 'F32', shape: e.shape, data_offsets: [d2.length, d2.length + raw.length] };
    writeFileSync(rm.files[1]!, assembleSafetensors({ header: h2, data: Buffer.concat([d2, raw]) }));
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'vocab_embed.embedding');
  });
});

describe('tensor set', () => {
  it('a tensor with the wrong shape (same element count) -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({ editTensors: (t) => (t['blocks.1.mlp.0.weight']!.shape = [32, 128]) });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.1.mlp.0.weight');
  });

  it('a tensor with the wrong size -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({
      editTensors: (t) => {
        t['blocks.0.attn_out.weight'] = { dtype: 'F32', shape: [32, 31], data: new Float64Array(32 * 31) };
      },
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.0.attn_out.weight');
  });

  it('a missing tensor -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({ editTensors: (t) => delete t['blocks.1.norm2.weight'] });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.1.norm2.weight');
  });

  it('a missing tensor under the backbone. prefix -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({ prefix: true, editTensors: (t) => delete t['backbone.output_layer.adaLN_modulation.bias'] });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'output_layer.adaLN_modulation.bias');
  });

  it('an extra tensor -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({
      editTensors: (t) => {
        t['blocks.0.attn_qkv.bias'] = { dtype: 'F32', shape: [96], data: new Float64Array(96) };
      },
    });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.0.attn_qkv.bias');
  });

  it('a block beyond n_blocks -> ERR_BAD_WEIGHTS naming it', async () => {
    const rm = fresh({ editConfig: (c) => (c.n_blocks = 1) });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.1.');
  });

  it('an ar folder with adaLN tensors (an esolm checkpoint labelled ar) -> ERR_BAD_WEIGHTS naming one', async () => {
    const rm = fresh({ editConfig: (c) => (c.arch = 'ar') });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', /adaLN_modulation|sigma_map/);
  });

  it('NaN in a weight -> ERR_BAD_WEIGHTS naming the tensor', async () => {
    const rm = fresh({ editTensors: (t) => (t['blocks.0.mlp.2.weight']!.data[77] = NaN) });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'blocks.0.mlp.2.weight');
  });

  it('Inf in a BF16 weight -> ERR_BAD_WEIGHTS naming the tensor', async () => {
    const rm = fresh({ dtype: 'BF16', editTensors: (t) => (t['sigma_map.mlp.2.bias']!.data[3] = -Infinity) });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'sigma_map.mlp.2.bias');
  });

  it('NaN in an F16 embedding -> ERR_BAD_WEIGHTS naming the tensor', async () => {
    const rm = fresh({ dtype: 'F16', editTensors: (t) => (t['vocab_embed.embedding']!.data[5] = NaN) });
    await expectError(load(rm.dir), 'ERR_BAD_WEIGHTS', 'vocab_embed.embedding');
  });
});

describe('forward arguments', () => {
  const toks = (...t: number[]) => Int32Array.from(t);

  it('token id out of range or negative -> ERR_INVALID_ARG', async () => {
    const V = good.config.vocab_size;
    await expectError(() => model.forward({ tokens: toks(1, 2, V) }), 'ERR_INVALID_ARG');
    await expectError(() => model.forward({ tokens: toks(1, -1, 2) }), 'ERR_INVALID_ARG');
    await expectError(() => model.forward({ tokens: toks(1, 2, 3), x0: toks(1, 2, V + 5), attention: 'sequential' }), 'ERR_INVALID_ARG');
  });

  it('positions length mismatch -> ERR_INVALID_ARG', async () => {
    await expectError(() => model.forward({ tokens: toks(1, 2, 3), positions: toks(0, 1) }), 'ERR_INVALID_ARG', 'positions');
    await expectError(() => model.forward({ tokens: toks(1, 2, 3, 4), batch: 2, positions: toks(0, 1) }), 'ERR_INVALID_ARG', 'positions');
  });

  it('positions outside [0, length) -> ERR_INVALID_ARG naming positions', async () => {
    const L = good.config.length;
    await expectError(() => model.forward({ tokens: toks(1, 2, 3), positions: toks(0, L, 1) }), 'ERR_INVALID_ARG', 'positions');
    await expectError(() => model.forward({ tokens: toks(1, 2, 3), positions: toks(0, -1, 1) }), 'ERR_INVALID_ARG', 'positions');
  });

  it('tokens that are not an Int32Array -> ERR_INVALID_ARG naming tokens', async () => {
    await expectError(() => model.forward({ tokens: [1, 2, 3] as unknown as Int32Array }), 'ERR_INVALID_ARG', 'tokens');
    await expectError(() => model.forward({ tokens: Float32Array.from([1, 2, 3]) as unknown as Int32Array }), 'ERR_INVALID_ARG', 'tokens');
  });

  it('n over the context length -> ERR_INVALID_ARG', async () => {
    const L = good.config.length;
    await expectError(() => model.forward({ tokens: new Int32Array(L + 1) }), 'ERR_INVALID_ARG');
    await expectError(() => model.forward({ tokens: new Int32Array(2 * (L + 1)), batch: 2 }), 'ERR_INVALID_ARG');
  });

  it('tokens not a multiple of batch / bad batch -> ERR_INVALID_ARG', async () => {
    await expectError(() => model.forward({ tokens: toks(1, 2, 3, 4, 5, 6, 7), batch: 2 }), 'ERR_INVALID_ARG');
    await expectError(() => model.forward({ tokens: toks(1, 2), batch: 0 }), 'ERR_INVALID_ARG');
    await expectError(() => model.forward({ tokens: toks(1, 2), batch: 1.5 }), 'ERR_INVALID_ARG');
    await expectError(() => model.forward({ tokens: new Int32Array(0) }), 'ERR_INVALID_ARG');
  });

  it('sequential without x0, x0 of the wrong length, unknown attention mode -> ERR_INVALID_ARG', async () => {
    await expectError(() => model.forward({ tokens: toks(1, 2, 3), attention: 'sequential' }), 'ERR_INVALID_ARG', 'x0');
    await expectError(() => model.forward({ tokens: toks(1, 2, 3), attention: 'sequential', x0: toks(1, 2) }), 'ERR_INVALID_ARG', 'x0');
    await expectError(
      () => model.forward({ tokens: toks(1, 2, 3), attention: 'sideways' as unknown as 'causal' }),
      'ERR_INVALID_ARG',
      'sideways',
    );
  });

  it('the model still works after all of that', async () => {
    const l = await model.forward({ tokens: toks(1, 2, 3) });
    expect(l.length).toBe(3 * good.config.vocab_size);
    expect(l.every(Number.isFinite)).toBe(true);
  });
});

describe('dispose', () => {
  it('a disposed model and a disposed cache -> ERR_DISPOSED; dispose twice is fine', async () => {
    const m = await Model.load(good.dir, { backend: 'cpu' });
    const cache: Cache = m.createCache({ batch: 1, capacity: 8 });
    await m.step(cache, { tokens: Int32Array.from([1, 2]), commit: 2 });
    cache.dispose();
    cache.dispose();
    await expectError(() => m.step(cache, { tokens: Int32Array.from([3]), commit: 1 }), 'ERR_DISPOSED');
    const other = m.createCache({ batch: 1, capacity: 8 });
    m.dispose();
    m.dispose();
    await expectError(() => m.forward({ tokens: Int32Array.from([1, 2]) }), 'ERR_DISPOSED');
    await expectError(() => m.createCache({ batch: 1, capacity: 4 }), 'ERR_DISPOSED');
    await expectError(() => m.step(other, { tokens: Int32Array.from([3]), commit: 1 }), 'ERR_DISPOSED');
    other.dispose();
  });

  it('Symbol.asyncDispose disposes the model', async () => {
    const m = await Model.load(good.dir, { backend: 'cpu' });
    const dispose = (m as unknown as Record<symbol, () => Promise<void>>)[Symbol.asyncDispose];
    expect(typeof dispose).toBe('function');
    await dispose!.call(m);
    await expectError(() => m.forward({ tokens: Int32Array.from([1]) }), 'ERR_DISPOSED');
  });
});

describe('backend selection', () => {
  it("'cuda' without a usable GPU is ERR_NO_CUDA; 'auto' then falls back to cpu and says why", async () => {
    const err = await caught(() => Model.load(good.dir, { backend: 'cuda' }).then((m) => m.dispose()));
    const auto = await Model.load(good.dir, { backend: 'auto' });
    try {
      if (err === undefined) {
        // this machine has a working CUDA backend: auto must pick it
        expect(auto.backend).toBe('cuda');
      } else {
        expect(err).toBeInstanceOf(EsolmError);
        expect((err as EsolmError).code).toBe('ERR_NO_CUDA');
        expect((err as EsolmError).message.length).toBeGreaterThan(0);
        expect(auto.backend).toBe('cpu');
        expect(typeof auto.backendReason).toBe('string');
        expect(auto.backendReason!.length).toBeGreaterThan(0);
        // and the fallback model works
        const l = await auto.forward({ tokens: Int32Array.from([1, 2, 3]) });
        expect(l.length).toBe(3 * good.config.vocab_size);
      }
    } finally {
      auto.dispose();
    }
  });

  it("unknown backend name -> ERR_INVALID_ARG", async () => {
    await expectError(() => Model.load(good.dir, { backend: 'tpu' as unknown as 'cpu' }), 'ERR_INVALID_ARG', 'tpu');
  });

  it("explicit 'cpu' has no fallback reason", () => {
    expect(model.backend).toBe('cpu');
    expect(model.backendReason ?? '').toBe('');
  });
});
