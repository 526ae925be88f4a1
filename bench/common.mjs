// bench/common.mjs — what the benchmark scripts share: command-line options, the small
// model (hidden 768, 12 heads, 12 blocks, vocab 50258) with random F32 weights, written
// once to a temporary folder and reused, and the machine floors every figure is compared
// with (streaming read bandwidth and peak FMA rate, measured in the same run).
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model, loadCpuAddon } from '../dist/index.js';
import { writeRandomModel, SMALL_CONFIG } from '../dist/testing.js';

const args = process.argv.slice(2);

/** The value after `--name` on the command line, or `dflt`. */
export function opt(name, dflt) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

/** Loads the small random model (writing it first if needed). */
export async function loadSmallModel(loadOptions) {
  const dir = path.join(os.tmpdir(), 'esolm-bench-small-f32');
  if (!existsSync(path.join(dir, 'model.safetensors'))) {
    console.log(`writing random small model to ${dir} ...`);
    writeRandomModel(dir, SMALL_CONFIG, { seed: 7, dtype: 'F32' });
  }
  return Model.load(dir, loadOptions);
}

/** Selects a CPU kernel set for the next Model.load ('auto' = the widest this CPU runs). */
export function useKernels(kernels) {
  if (kernels === 'auto') delete process.env.ESOLM_CPU_KERNELS;
  else process.env.ESOLM_CPU_KERNELS = kernels;
  const info = loadCpuAddon().backendInfo();
  if (info.cpuKernelsError) throw new Error(`--kernels ${kernels}: ${info.cpuKernelsError}`);
  return info.cpuKernels;
}

/**
 * The floors of the kernel set in use on `threads` cores (0 = all), measured now: best of
 * `reps` calls (each already a best of several), so a brief load spike does not set them.
 */
export function measureFloors(threads = 0, reps = 3) {
  const addon = loadCpuAddon();
  let best = null;
  for (let i = 0; i < reps; i++) {
    const f = addon.measureCpuFloors(threads);
    if (!best) best = f;
    else best = { ...best, readGBps: Math.max(best.readGBps, f.readGBps), fmaGFlops: Math.max(best.fmaGFlops, f.fmaGFlops), bf16DotGFlops: Math.max(best.bf16DotGFlops, f.bf16DotGFlops), int8DotGOps: Math.max(best.int8DotGOps, f.int8DotGOps) };
  }
  return best;
}

/** The 1-minute load average and what it means on this machine. */
export function loadLine() {
  const [l1] = os.loadavg();
  return `load average ${l1.toFixed(2)} on ${os.cpus().length} CPUs (uptime)`;
}

/** CPU model and the SIMD flags that matter here (from /proc/cpuinfo where there is one). */
export function cpuLine() {
  const model = os.cpus()[0]?.model ?? 'unknown CPU';
  let flags = [];
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    const have = new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
    flags = ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_bf16', 'avx512_vnni'].filter((f) => have.has(f));
  } catch { /* not Linux */ }
  return `${model} x ${os.cpus().length}${flags.length ? ` (${flags.join(' ')})` : ''}`;
}

/** Bytes of the linear-layer matrices a forward reads once (the embedding is only gathered). */
export function weightBytes(config, bytesPerWeight) {
  const d = config.hidden_size;
  const perBlock = d * 3 * d + d * d + 2 * d * 4 * d;
  return (config.n_blocks * perBlock + config.vocab_size * d) * bytesPerWeight;
}

/** FLOPs of n token rows through the blocks, h rows through the head, `pairs` attention pairs. */
export function forwardFlops(config, n, h, pairs) {
  const d = config.hidden_size;
  const perTok = 2 * config.n_blocks * (d * 3 * d + d * d + 2 * d * 4 * d);
  return n * perTok + h * 2 * config.vocab_size * d + pairs * config.n_blocks * 4 * d;
}

/**
 * Floor in ms of work that reads `bytes` and does `flops`: max(bytes / bandwidth, flops / peak).
 * `math` (Model.load math): the peak is that of vdpbf16ps for 'bf16',
 * of vpdpbusd for 'int8' (integer ops), else of F32 FMAs.
 */
export function floorMs(floors, bytes, flops, math = 'f32') {
  const peak = math === 'bf16' ? floors.bf16DotGFlops : math === 'int8' ? floors.int8DotGOps : floors.fmaGFlops;
  const mem = bytes / (floors.readGBps * 1e6), fma = flops / (peak * 1e6);
  return { ms: Math.max(mem, fma), bound: mem >= fma ? 'bandwidth' : 'FMA' };
}

/**
 * Ms `threads` cores take to stream-read `bytes` now (the fastest read loop here). The
 * bandwidth of a shared host moves by +-30% within seconds, so the best short read of
 * measureFloors is a floor few long runs could meet: a run's paired floor is this read of
 * its own bytes, made right before and right after it (the mean of the two).
 */
export function streamingReadMs(threads, bytes) {
  return loadCpuAddon().timeStreamingRead(threads, bytes) * 1e3;
}

export function floorsLine(f) {
  return `floors (${f.kernels}, ${f.threads} threads, measured now): streaming read ${f.readGBps.toFixed(1)} GB/s, peak FMA ${f.fmaGFlops.toFixed(0)} GFLOP/s${f.bf16DotGFlops > 0 ? `, peak vdpbf16ps ${f.bf16DotGFlops.toFixed(0)} GFLOP/s` : ''}${f.int8DotGOps > 0 ? `, peak vpdpbusd ${f.int8DotGOps.toFixed(0)} GOP/s` : ''}`;
}
