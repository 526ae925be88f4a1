// The `esolm` command line, run in-process through buildProgram() with stdout captured:
// generate (prompt, infill, JSON, methods), info, doctor, bench and error reporting.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildProgram, parseInfill } from '../lib/cli.js';
import { createBytesTokenizer } from '../lib/tokenizers/index.js';
import { loadCpuAddon } from '../lib/loader.js';
import { makeRandomModel } from './helpers/random-model.js';

let dir: string;
let modelDir: string;

/** Runs the CLI with argv and returns what it wrote to stdout. */
async function run(...argv: string[]): Promise<string> {
  let out = '';
  const spyOut = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  });
  const spyErr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const spyLog = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => { out += a.join(' ') + '\n'; });
  try {
    await buildProgram().exitOverride().parseAsync(['node', 'esolm', ...argv]);
  } finally {
    spyOut.mockRestore();
    spyErr.mockRestore();
    spyLog.mockRestore();
  }
  return out;
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-cli-'));
  modelDir = path.join(dir, 'bytes-model');
  // A byte-level model: vocab 257, mask 256, with the bytes tokenizer.
  makeRandomModel(modelDir, {
    arch: 'esolm', seed: 5, vocab_size: 257, length: 64,
    editConfig: (c) => { c.mask_index = 256; c.tokenizer = 'bytes'; },
  });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('esolm CLI', () => {
  it('generate --json: a prompt stays at the start, tokens are bytes, text decodes', async () => {
    const out = JSON.parse(await run('generate', 'Hi', '-m', modelDir, '-n', '24', '-T', '4', '--json', '--backend', 'cpu'));
    expect(out.sequences).toHaveLength(1);
    const toks: number[] = out.sequences[0].tokens;
    expect(toks).toHaveLength(24);
    expect(toks.slice(0, 2)).toEqual([72, 105]);
    expect(toks.every((t) => t >= 0 && t < 256)).toBe(true);
    expect(typeof out.sequences[0].text).toBe('string');
    expect(out.nfe).toBeGreaterThan(0);
  });

  it('--weights and --math choose how the CPU holds and multiplies the weights', async () => {
    const storage = async (...o: string[]) => JSON.parse(await run('info', '-m', modelDir, '--json', '--backend', 'cpu', ...o)).weights.storage;
    expect(await storage()).toBe('f32');  // the random model's file is F32
    expect(await storage('--weights', 'q8')).toBe('q8');
    expect(await storage('--weights', 'bf16')).toBe('bf16');
    const q8 = JSON.parse(await run('generate', 'Hi', '-m', modelDir, '-n', '16', '-T', '4', '--weights', 'q8', '--json', '--backend', 'cpu'));
    expect(q8.sequences[0].tokens).toHaveLength(16);
    expect(q8.sequences[0].tokens.slice(0, 2)).toEqual([72, 105]);
    // int8 math runs where the CPU has AVX512_VNNI, and is refused clearly where it has not.
    const int8 = run('generate', 'Hi', '-m', modelDir, '-n', '16', '-T', '4', '--weights', 'q8', '--math', 'int8', '--json', '--backend', 'cpu');
    if (loadCpuAddon().backendInfo().cpuInt8MathError) await expect(int8).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    else expect(JSON.parse(await int8).sequences[0].tokens).toHaveLength(16);
    await expect(run('generate', 'x', '-m', modelDir, '--weights', 'bf16', '--math', 'int8', '--backend', 'cpu'))
      .rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/q8/) });
    // A value outside the lists is an option error of the command line itself (exit code 1).
    const { spawnSync } = await import('node:child_process');
    const bin = path.resolve(import.meta.dirname, '..', 'dist', 'bin.js');
    const bad = (...argv: string[]) => spawnSync(process.execPath, [bin, ...argv, '-m', modelDir, '--backend', 'cpu'], { encoding: 'utf8' });
    const math = bad('generate', 'x', '--math', 'f16');
    expect(math.status).toBe(1);
    expect(math.stderr).toMatch(/--math.*f16.*f32, bf16 or int8/s);
    const weights = bad('info', '--weights', 'int4');
    expect(weights.status).toBe(1);
    expect(weights.stderr).toMatch(/--weights.*int4.*auto, f32, bf16 or q8/s);
  });

  it('generate --infill fixes the text around the blanks', async () => {
    const out = JSON.parse(await run('generate', '-m', modelDir, '--infill', 'ab___cd__', '--greedy', '--json', '--backend', 'cpu'));
    const toks: number[] = out.sequences[0].tokens;
    expect(toks).toHaveLength(9);
    expect([toks[0], toks[1], toks[5], toks[6]]).toEqual([97, 98, 99, 100]);
    const p = parseInfill('ab___cd__', createBytesTokenizer());
    expect(p.length).toBe(9);
    expect([...p.fixed.keys()]).toEqual([0, 1, 5, 6]);
  });

  it('generate with mdlm and ar, batch 2, plain text output', async () => {
    const a = await run('generate', 'x', '-m', modelDir, '-n', '16', '-T', '4', '--method', 'mdlm', '-b', '2', '--backend', 'cpu');
    expect(a).toContain('--- sequence 1');
    const b = JSON.parse(await run('generate', 'x', '-m', modelDir, '-n', '16', '--method', 'ar', '--json', '--backend', 'cpu'));
    expect(b.nfe).toBe(15);
  });

  it('info, doctor and bench report', async () => {
    const info = JSON.parse(await run('info', '-m', modelDir, '--json', '--backend', 'cpu'));
    expect(info.config.vocab_size).toBe(257);
    expect(info.tokenizer).toBe('bytes');
    const doc = JSON.parse(await run('doctor', '--json'));
    expect(doc.cpu.ok).toBe(true);
    expect(doc.cpu.kernelsAvailable.split(' ')).toContain(doc.cpu.kernels);  // the set in use, among those this CPU runs
    expect(doc.cpu.kernelsAvailable.split(' ')).toContain('portable');
    // BF16 math (math: 'bf16'): the kernel name where it runs, else why not
    expect(doc.cpu.bf16Math === null ? doc.cpu.bf16MathError : doc.cpu.bf16Math).toMatch(doc.cpu.bf16Math === null ? /AVX512_BF16|ESOLM_CPU_KERNELS/ : /^avx512bf16$/);
    // int8 math (math: 'int8'): the same
    expect(doc.cpu.int8Math === null ? doc.cpu.int8MathError : doc.cpu.int8Math).toMatch(doc.cpu.int8Math === null ? /AVX512_VNNI|ESOLM_CPU_KERNELS/ : /^avx512vnni$/);
    expect(typeof doc.cuda.usable).toBe('boolean');
    // K/V bytes per token: F32 on the CPU, BF16 under BF16 math (where it runs)
    const c = info.config;
    expect(info.kvBytesPerToken).toBe(c.n_blocks * 2 * c.hidden_size * 4);
    if (doc.cpu.bf16Math !== null) {
      const m = JSON.parse(await run('info', '-m', modelDir, '--json', '--backend', 'cpu', '--math', 'bf16'));
      expect(m.kvBytesPerToken).toBe(c.n_blocks * 2 * c.hidden_size * 2);
    }
    const bench = JSON.parse(await run('bench', '-m', modelDir, '-n', '16', '--steps', '4', '--json', '--backend', 'cpu'));
    expect(bench.rows.map((r: { method: string }) => r.method)).toEqual(['esolm', 'mdlm', 'ar']);
  });

  it('eval reports a perplexity for a text file', async () => {
    const f = path.join(dir, 'text.txt');
    writeFileSync(f, 'In the beginning God created the heaven and the earth. '.repeat(3));
    const out = JSON.parse(await run('eval', f, '-m', modelDir, '--json', '--samples', '2', '--backend', 'cpu'));
    expect(out.perplexity).toBeGreaterThan(1);
    expect(out.bitsPerByte).toBeGreaterThan(0);
  });

  it('bad input gives a typed error, not a crash', async () => {
    await expect(run('generate', '-m', path.join(dir, 'missing'), '--backend', 'cpu')).rejects.toMatchObject({ code: 'ERR_IO' });
    await expect(run('generate', 'x', '-m', modelDir, '--top-p', '2', '--backend', 'cpu')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(run('generate', 'x', '-m', modelDir, '--infill', 'a_', '--backend', 'cpu')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});

describe('the esolm executable', () => {
  it('dist/bin.js is built, executable, and runs', async () => {
    const { statSync } = await import('node:fs');
    const { execFileSync } = await import('node:child_process');
    const bin = path.resolve(import.meta.dirname, '..', 'dist', 'bin.js');
    expect(statSync(bin).mode & 0o111).not.toBe(0);
    const out = JSON.parse(execFileSync(bin, ['doctor', '--json'], { encoding: 'utf8' }));
    expect(out.cpu.ok).toBe(true);
  });
});
