// CPU kernel sets and 8-bit weights through the public API: every kernel set this CPU runs
// (ESOLM_CPU_KERNELS) gives the same logits as the default one to fp32 rounding, an
// unknown or unsupported set is a typed error, the floors are measured, `weights: 'q8'`
// stays within int8 rounding of the F32 weights, and BF16 and int8 math run where they can.
// (The kernels themselves are tested op by op against the reference in
// test/native/cpu_ops_test.cpp.)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Model, loadCpuAddon } from '../lib/index.js';
import { convertCheckpoint } from '../lib/checkpoint/convert.js';
import { makeRandomModel } from './helpers/random-model.js';

let dir: string;
const saved = process.env.ESOLM_CPU_KERNELS;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-k-'));
  makeRandomModel(dir, { arch: 'esolm', seed: 23, hidden_size: 64, n_heads: 4 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  if (saved === undefined) delete process.env.ESOLM_CPU_KERNELS;
  else process.env.ESOLM_CPU_KERNELS = saved;
});

const tokens = Int32Array.from({ length: 24 }, (_, i) => (i * 7) % 60);
function maxDiff(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]));
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
  }
  return { diff, scale };
}

describe('CPU kernel sets', () => {
  it('every supported set gives the default logits to fp32 rounding, and is reported', async () => {
    delete process.env.ESOLM_CPU_KERNELS;
    const best = await Model.load(dir, { backend: 'cpu', weights: 'f32' });
    const want = await best.forward({ tokens });
    best.dispose();
    let ran = 0;
    for (const set of ['avx512', 'avx2', 'portable']) {
      process.env.ESOLM_CPU_KERNELS = set;
      const info = loadCpuAddon().backendInfo();
      if (info.cpuKernelsError) {
        expect(set).not.toBe('portable');
        await expect(Model.load(dir, { backend: 'cpu' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
        continue;
      }
      expect(info.cpuKernels.startsWith(set)).toBe(true);
      const m = await Model.load(dir, { backend: 'cpu', weights: 'f32' });
      const { diff, scale } = maxDiff(await m.forward({ tokens }), want);
      expect(diff).toBeLessThan(2e-5 * scale);
      m.dispose();
      ran++;
    }
    expect(ran).toBeGreaterThan(0);
  });

  it('rejects an unknown ESOLM_CPU_KERNELS with a typed error', async () => {
    process.env.ESOLM_CPU_KERNELS = 'sse9';
    expect(loadCpuAddon().backendInfo().cpuKernelsError).toMatch(/ESOLM_CPU_KERNELS/);
    await expect(Model.load(dir, { backend: 'cpu' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });

  it('measures the floors of the kernel set in use', () => {
    delete process.env.ESOLM_CPU_KERNELS;
    const f = loadCpuAddon().measureCpuFloors(1, 0.01);
    expect(f.threads).toBe(1);
    expect(f.kernels).toBe(loadCpuAddon().backendInfo().cpuKernels);
    expect(f.readGBps).toBeGreaterThan(0);
    expect(f.fmaGFlops).toBeGreaterThan(0);
    expect(() => loadCpuAddon().measureCpuFloors(1, 2)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
  });

  it('times a streaming read of a given size (the paired floor of bench/)', () => {
    const addon = loadCpuAddon();
    const small = addon.timeStreamingRead(1, 4 << 20);
    const large = addon.timeStreamingRead(1, 64 << 20);
    expect(small).toBeGreaterThan(0);
    expect(large).toBeGreaterThan(small);  // 16x the bytes: the passes are really made
    for (const bad of [0, -1, NaN, Infinity])
      expect(() => addon.timeStreamingRead(1, bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
  });
});

// BF16 math (Model.load math: 'bf16'): the vdpbf16ps kernel is tested op by op against its
// reference in cpu_ops_test; here, through the API, it must run wherever /proc/cpuinfo lists
// AVX512_BF16, change the logits by BF16 rounding of the activations only, keep cached steps
// equal to the full forward, and be refused with a typed error where it cannot run.
function cpuinfoHasAvx512Bf16(): boolean {
  try {
    const flags = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? '';
    return flags.split(/\s+/).includes('avx512_bf16');
  } catch {
    return false;  // not Linux: the run-time detection alone decides
  }
}

describe('BF16 math', () => {
  const info = loadCpuAddon().backendInfo();
  const available = info.cpuBf16Math !== undefined;

  it('is available exactly when the CPU has AVX512_BF16, and reported', () => {
    if (cpuinfoHasAvx512Bf16()) expect(info.cpuBf16Math).toBe('avx512bf16');
    if (available) expect(info.cpuBf16MathError).toBeUndefined();
    else expect(info.cpuBf16MathError).toMatch(/AVX512_BF16/);
  });

  it('refuses bad combinations with typed errors', async () => {
    await expect(Model.load(dir, { backend: 'cpu', math: 'fp8' as 'bf16' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(Model.load(dir, { backend: 'cpu', weights: 'f32', math: 'bf16' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(Model.load(dir, { backend: 'cpu', weights: 'q8', math: 'bf16' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    if (!available) {
      await expect(Model.load(dir, { backend: 'cpu', math: 'bf16' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/AVX512_BF16/) });
      return;
    }
    process.env.ESOLM_CPU_KERNELS = 'portable';  // no BF16 pair panels
    expect(loadCpuAddon().backendInfo().cpuBf16MathError).toMatch(/ESOLM_CPU_KERNELS/);
    await expect(Model.load(dir, { backend: 'cpu', math: 'bf16' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/ESOLM_CPU_KERNELS/) });
  });

  it.skipIf(!available)(`changes the logits by activation rounding only, and cached steps equal the forward${available ? '' : ' (skipped: this CPU lacks AVX512_BF16)'}`, async () => {
    delete process.env.ESOLM_CPU_KERNELS;
    const exact = await Model.load(dir, { backend: 'cpu', weights: 'bf16' });
    const m = await Model.load(dir, { backend: 'cpu', weights: 'bf16', math: 'bf16' });
    const want = await exact.forward({ tokens });
    const got = await m.forward({ tokens });
    const { diff, scale } = maxDiff(got, want);
    console.log(`max |logit error| of BF16 math vs F32 math (BF16 weights): ${diff.toExponential(2)} (logit scale ${scale.toFixed(2)})`);
    expect(diff).toBeGreaterThan(1e-4 * scale);  // the activations really were rounded
    expect(diff).toBeLessThan(2e-2 * scale);     // ... and only to BF16
    // The same rows from cached steps (16 tokens, then 8): few-row products, same numerics.
    const cache = m.createCache({ batch: 1, capacity: tokens.length });
    const first = await m.step(cache, { tokens: tokens.subarray(0, 16), commit: 16, logitsFrom: 0 });
    const rest = await m.step(cache, { tokens: tokens.subarray(16), commit: 8, logitsFrom: 0 });
    const stepped = new Float32Array(got.length);
    stepped.set(first);
    stepped.set(rest, first.length);
    const s = maxDiff(stepped, got);
    console.log(`BF16 math, cached steps vs forward: max |diff| ${s.diff.toExponential(2)}`);
    expect(s.diff).toBeLessThan(2e-5 * s.scale);
    cache.dispose();
    for (const x of [exact, m]) x.dispose();
  });
});

// int8 math (Model.load math: 'int8'): the vpdpbusd kernel is tested op by op against its
// reference in cpu_ops_test; here, through the API, it must run wherever /proc/cpuinfo lists
// AVX512_VNNI, change the q8 logits by int8 quantization of the activations only, keep
// cached steps equal to the full forward, run a q8 file (weights 'auto') exactly as its F32
// source quantized at load, and be refused with a typed error where it cannot run.
function cpuinfoHasFlag(flag: string): boolean {
  try {
    const flags = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? '';
    return flags.split(/\s+/).includes(flag);
  } catch {
    return false;  // not Linux: the run-time detection alone decides
  }
}

describe('int8 math', () => {
  const info = loadCpuAddon().backendInfo();
  const available = info.cpuInt8Math !== undefined;

  it('is available exactly when the CPU has AVX512_VNNI, and reported', () => {
    if (cpuinfoHasFlag('avx512_vnni')) expect(info.cpuInt8Math).toBe('avx512vnni');
    if (available) expect(info.cpuInt8MathError).toBeUndefined();
    else expect(info.cpuInt8MathError).toMatch(/AVX512_VNNI/);
    if (available) expect(loadCpuAddon().measureCpuFloors(1, 0.01).int8DotGOps).toBeGreaterThan(0);
  });

  it('refuses bad combinations with typed errors', async () => {
    for (const weights of ['f32', 'bf16'] as const)
      await expect(Model.load(dir, { backend: 'cpu', weights, math: 'int8' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/8-bit/) });
    // auto on a file without I8 matrices: not 8-bit weights
    await expect(Model.load(dir, { backend: 'cpu', math: 'int8' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/8-bit/) });
    if (!available) {
      await expect(Model.load(dir, { backend: 'cpu', weights: 'q8', math: 'int8' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/AVX512_VNNI/) });
      return;
    }
    process.env.ESOLM_CPU_KERNELS = 'portable';  // not the AVX-512 set
    expect(loadCpuAddon().backendInfo().cpuInt8MathError).toMatch(/ESOLM_CPU_KERNELS/);
    await expect(Model.load(dir, { backend: 'cpu', weights: 'q8', math: 'int8' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/ESOLM_CPU_KERNELS/) });
  });

  it.skipIf(!available)(`changes the q8 logits by activation quantization only, cached steps equal the forward, and a q8 file runs as its source${available ? '' : ' (skipped: this CPU lacks AVX512_VNNI)'}`, async () => {
    delete process.env.ESOLM_CPU_KERNELS;
    const exact = await Model.load(dir, { backend: 'cpu', weights: 'q8' });
    const m = await Model.load(dir, { backend: 'cpu', weights: 'q8', math: 'int8' });
    const want = await exact.forward({ tokens });
    const got = await m.forward({ tokens });
    const { diff, scale } = maxDiff(got, want);
    console.log(`max |logit error| of int8 math vs F32 math (q8 weights): ${diff.toExponential(2)} (logit scale ${scale.toFixed(2)})`);
    expect(diff).toBeGreaterThan(1e-4 * scale);  // the activations really were quantized
    expect(diff).toBeLessThan(5e-2 * scale);     // ... and only to int8 in blocks
    // The same rows from cached steps (16 tokens, then 8): few-row products, same numerics.
    const cache = m.createCache({ batch: 1, capacity: tokens.length });
    const first = await m.step(cache, { tokens: tokens.subarray(0, 16), commit: 16, logitsFrom: 0 });
    const rest = await m.step(cache, { tokens: tokens.subarray(16), commit: 8, logitsFrom: 0 });
    const stepped = new Float32Array(got.length);
    stepped.set(first);
    stepped.set(rest, first.length);
    const s = maxDiff(stepped, got);
    console.log(`int8 math, cached steps vs forward: max |diff| ${s.diff.toExponential(2)}`);
    expect(s.diff).toBeLessThan(2e-5 * s.scale);
    cache.dispose();
    // A q8 file (auto picks q8) runs with int8 math exactly as its F32 source quantized at load.
    const q8dir = mkdtempSync(path.join(tmpdir(), 'esolm-k8-'));
    try {
      await convertCheckpoint(dir, q8dir, { dtype: 'q8' });
      const fromFile = await Model.load(q8dir, { backend: 'cpu', math: 'int8' });
      expect(fromFile.weights).toBe('q8');
      expect(Array.from(await fromFile.forward({ tokens }))).toEqual(Array.from(got));
      fromFile.dispose();
    } finally {
      rmSync(q8dir, { recursive: true, force: true });
    }
    for (const x of [exact, m]) x.dispose();
  });
});

describe('8-bit weights', () => {
  it("weights: 'q8' gives logits within int8 rounding of the F32 weights", async () => {
    const f32 = await Model.load(dir, { backend: 'cpu', weights: 'f32' });
    const q8 = await Model.load(dir, { backend: 'cpu', weights: 'q8' });
    const bf16 = await Model.load(dir, { backend: 'cpu', weights: 'bf16' });
    const a = await f32.forward({ tokens });
    const q = maxDiff(await q8.forward({ tokens }), a);
    const b = maxDiff(await bf16.forward({ tokens }), a);
    console.log(`max |logit error| vs F32: q8 ${q.diff.toExponential(2)}, bf16 ${b.diff.toExponential(2)} (logit scale ${q.scale.toFixed(2)})`);
    expect(q.diff).toBeGreaterThan(0);             // the weights really were quantized
    expect(q.diff).toBeLessThan(5e-2 * q.scale);   // ... and only by int8 rounding
    for (const m of [f32, q8, bf16]) m.dispose();
  });
});
