// Conversions that say what they did: an Eso-LM (A) Lightning checkpoint trained with
// alpha0 = 0.25 (test/fixtures/checkpoints/tiny-esolma.ckpt, tools/make_checkpoint_fixtures.py)
// becomes arch esolm-a with a config.json "training" block; sampling and `info` use it;
// the CLI prints every warning, takes --mask-index and keeps BF16 sources BF16.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Model, Sampler } from '../lib/index.js';
import { buildProgram } from '../lib/cli.js';
import { convertCheckpoint } from '../lib/checkpoint/convert.js';
import { makeRandomModel } from './helpers/random-model.js';
import { readSafetensors } from './helpers/safetensors.js';

const FIX = join(__dirname, 'fixtures', 'checkpoints');
const ESOLMA_CKPT = join(FIX, 'tiny-esolma.ckpt');
const ESOLM_CKPT = join(FIX, 'tiny-esolm.ckpt');
const TRAINING_A = {
  algo: 'esolm', alpha0: 0.25, batch_split: 0.5, diffusion_attn_mode: 'mixed2', diffusion_shuffle: true,
  sequential_attn_mode: 'mixed', sequential_shuffle: false, length: 64,
};

let dir: string;
let n = 0;
const out = (): string => join(dir, `out${n++}`);
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'esolm-conv-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI in-process; returns stdout (console.log included) and stderr. */
async function run(...argv: string[]): Promise<{ stdout: string; stderr: string }> {
  let stdout = '', stderr = '';
  const spyOut = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => { stdout += String(c); return true; });
  const spyErr = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => { stderr += String(c); return true; });
  const spyLog = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => { stdout += a.join(' ') + '\n'; });
  try {
    await buildProgram().exitOverride().parseAsync(['node', 'esolm', ...argv]);
  } finally {
    spyOut.mockRestore();
    spyErr.mockRestore();
    spyLog.mockRestore();
  }
  return { stdout, stderr };
}

describe('Eso-LM (A) checkpoint conversion', () => {
  it('is detected from its mixed2 attention and records the training settings', async () => {
    const o = out();
    const r = await convertCheckpoint(ESOLMA_CKPT, o);
    expect(r.config.arch).toBe('esolm-a');
    expect(r.config.training).toEqual(TRAINING_A);
    expect(JSON.parse(readFileSync(join(o, 'config.json'), 'utf8')).training).toEqual(TRAINING_A);
    // the same EMA tensors as the (B) fixture: only the training settings differ
    const b = out();
    await convertCheckpoint(ESOLM_CKPT, b);
    const wa = readSafetensors(readFileSync(join(o, 'model.safetensors')));
    const wb = readSafetensors(readFileSync(join(b, 'model.safetensors')));
    expect(Object.keys(wa).sort()).toEqual(Object.keys(wb).sort());
    for (const k of Object.keys(wa)) expect(Array.from(wa[k]!.values)).toEqual(Array.from(wb[k]!.values));

    const model = await Model.load(o, { backend: 'cpu' });
    try {
      expect(model.config.arch).toBe('esolm-a');
      // sampling defaults to the training alpha0 (0.25 of the tokens by diffusion, in expectation)
      const req = model.generateRequest({ sampler: new Sampler({ method: 'esolm-a', steps: 8 }), length: 64 });
      expect(req.alpha0).toBe(0.25);
      const res = await model.generate({ sampler: new Sampler({ method: 'esolm-a', steps: 8, seed: 1 }), length: 64 });
      expect(res.nDiffusion).toBeLessThan(40);
      expect(model.generateRequest({ sampler: new Sampler({ method: 'esolm-a', steps: 8, alpha0: 1 }), length: 64 }).alpha0).toBe(1);
    } finally {
      model.dispose();
    }
  });

  it('an explicit arch that disagrees with the training attention is warned about', async () => {
    const w: string[] = [];
    const r = await convertCheckpoint(ESOLMA_CKPT, out(), { arch: 'esolm', onWarning: (m) => w.push(m) });
    expect(r.config.arch).toBe('esolm');
    expect(w.join('\n')).toMatch(/trained as Eso-LM \(A\).*Eso-LM \(B\) sampler/);
    const w2: string[] = [];
    await convertCheckpoint(ESOLM_CKPT, out(), { arch: 'esolm-a', onWarning: (m) => w2.push(m) });
    expect(w2.length).toBe(1); // the ignored EMA tensor; no attention mode recorded to disagree with
  });
});

describe('config.json training block', () => {
  it('is validated: a bad field is ERR_BAD_WEIGHTS naming it', async () => {
    for (const [training, field] of [[{ alpha0: 2 }, 'training.alpha0'], [{ prepend: 'eos' }, 'training.prepend'], [[], 'training'], [{ length: 0 }, 'training.length']] as const) {
      const m = makeRandomModel(join(dir, `bad-training-${field}-${n++}`), { editConfig: (c) => { c.training = training; } });
      await expect(Model.load(m.dir, { backend: 'cpu' })).rejects.toMatchObject({ code: 'ERR_BAD_WEIGHTS', message: new RegExp(`"${field.replace('.', '\\.')}"`) });
    }
  });
});

describe('esolm convert / info (CLI)', () => {
  it('prints every warning, honours --mask-index, and info shows the training alpha0', async () => {
    const o = out();
    const c = await run('convert', ESOLMA_CKPT, o, '--mask-index', '59', '--length', '128', '--dtype', 'bf16');
    expect(c.stderr).toMatch(/warning: length 128 was asked for, but the model was trained with length 64/);
    expect(c.stderr).toMatch(/warning: dtype bf16 was asked for: the source weights \(.*\) are rounded to BF16/);
    expect(c.stdout).toMatch(/wrote .*: esolm-a, .*mask 59/);
    expect(c.stdout).toMatch(/training: esolm, alpha0 0\.25/);
    const cfg = JSON.parse(readFileSync(join(o, 'config.json'), 'utf8'));
    expect(cfg.mask_index).toBe(59);
    expect(cfg.length).toBe(128);
    const info = await run('info', '-m', o, '--backend', 'cpu');
    expect(info.stdout).toMatch(/training\s+esolm, alpha0 0\.25 \(sampling and eval default to it\), batch_split 0\.5, diffusion attention mixed2/);
    const json = JSON.parse((await run('info', '-m', o, '--backend', 'cpu', '--json')).stdout);
    expect(json.config.training.alpha0).toBe(0.25);
  });

  it('keeps a BF16 source BF16 by default; an explicit --dtype f32 is honoured and warned', async () => {
    const src = makeRandomModel(join(dir, 'bf16-src'), { arch: 'esolm', seed: 3, dtype: 'BF16' });
    const a = out();
    const d = await run('convert', src.dir, a);
    expect(d.stderr).toBe('');
    expect(Object.values(readSafetensors(readFileSync(join(a, 'model.safetensors')))).every((t) => t.dtype === 'BF16')).toBe(true);
    const b = out();
    const e = await run('convert', src.dir, b, '--dtype', 'f32');
    expect(e.stderr).toMatch(/warning: dtype f32 was asked for: the BF16 source weights are widened to F32/);
    expect(Object.values(readSafetensors(readFileSync(join(b, 'model.safetensors')))).every((t) => t.dtype === 'F32')).toBe(true);
  });

  it('generate picks the esolm-a sampler for an Eso-LM (A) model and the named orders / prepend flags', async () => {
    const o = out();
    await convertCheckpoint(ESOLMA_CKPT, o);
    const g = await run('generate', '-m', o, '-n', '16', '-T', '4', '--json', '--backend', 'cpu');
    const j = JSON.parse(g.stdout);
    expect(j.method).toBe('esolm-a');
    const m = JSON.parse((await run('generate', '-m', o, '-n', '16', '--method', 'mdlm', '--order', 'block-ar', '--json', '--backend', 'cpu')).stdout);
    expect(m.nfe).toBe(4);
  });
});
