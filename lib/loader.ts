/**
 * Finds and loads the native addons (the types are in native.ts).
 *
 * CPU addon (esolm_cpu.node), first that loads:
 *   1. ESOLM_ADDON_PATH;
 *   2. a source build in the package (build/Release/esolm_cpu.node: a checkout, or `npx esolm build`);
 *   3. the platform package @esolm/<platform>-<arch> (an optionalDependency, prebuilt).
 * CUDA addon (esolm_cuda.node) likewise: ESOLM_CUDA_ADDON_PATH, cuda/build/Release, then
 * @esolm/<platform>-<arch>-cuda. With ESOLM_BUILD_FROM_SOURCE=1 the platform packages are
 * skipped and a missing CPU build is built from source on first use (see build.ts).
 * If nothing loads, one ERR_NO_ADDON lists every place looked at and how to fix it.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EsolmError } from './errors.js';
import type { NativeAddon } from './native.js';

const require = createRequire(import.meta.url);

let root: string | undefined;
/** @internal The package root: the nearest folder above this file whose package.json is esolm's. */
export function packageRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'esolm') return (root = dir);
      } catch { /* keep looking */ }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new EsolmError('ERR_NO_ADDON', 'cannot find the esolm package root');
    dir = up;
  }
}

/** The installed esolm version. */
export function packageVersion(): string {
  return JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version as string;
}

/** `glibc`, `musl` or '' (not Linux). */
function libc(): string {
  if (process.platform !== 'linux') return '';
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

/** @internal The platform packages built from this repo (npm/<name>/package.json). */
export const PLATFORM_PACKAGES: Record<string, { cpu?: string; cuda?: string }> = {
  'linux-x64-glibc': { cpu: '@esolm/linux-x64', cuda: '@esolm/linux-x64-cuda' },
  'linux-arm64-glibc': { cpu: '@esolm/linux-arm64' },
};

/** The platform key for PLATFORM_PACKAGES. */
function platformKey(): string {
  return `${process.platform}-${process.arch}${libc() ? `-${libc()}` : ''}`;
}

export interface Attempt { where: string; error: string }

const loadedFrom = new Map<NativeAddon, string>();

function tryFile(file: string, attempts: Attempt[]): NativeAddon | null {
  if (!existsSync(file)) {
    attempts.push({ where: file, error: 'not found' });
    return null;
  }
  try {
    const addon = require(file) as NativeAddon;
    loadedFrom.set(addon, file);
    return addon;
  } catch (e) {
    attempts.push({ where: file, error: (e as Error).message.split('\n')[0]! });
    return null;
  }
}

/** Loads the addon file of platform package `name`, checking that its version is esolm's. */
function tryPackage(name: string, file: string, attempts: Attempt[]): NativeAddon | null {
  let pj: string;
  try {
    pj = require.resolve(`${name}/package.json`, { paths: [packageRoot()] });
  } catch {
    attempts.push({ where: name, error: 'not installed' });
    return null;
  }
  const version = JSON.parse(readFileSync(pj, 'utf8')).version as string;
  if (version !== packageVersion()) {
    attempts.push({ where: pj, error: `version ${version} does not match esolm ${packageVersion()}` });
    return null;
  }
  return tryFile(path.join(path.dirname(pj), file), attempts);
}

function fromSource(): boolean {
  return process.env.ESOLM_BUILD_FROM_SOURCE === '1';
}

/** @internal Where a source build puts each addon, relative to the package root. */
export const SOURCE_BUILDS = {
  cpu: path.join('build', 'Release', 'esolm_cpu.node'),
  cuda: path.join('cuda', 'build', 'Release', 'esolm_cuda.node'),
} as const;

let cpuAddon: NativeAddon | null = null;
let cpuAttempts: Attempt[] = [];
let cudaAddon: NativeAddon | null | undefined;
let cudaAttempts: Attempt[] = [];

/** The file an addon was loaded from. */
export function addonPath(addon: NativeAddon): string | undefined {
  return loadedFrom.get(addon);
}

function load(kind: 'cpu' | 'cuda', attempts: Attempt[]): NativeAddon | null {
  const env = kind === 'cpu' ? process.env.ESOLM_ADDON_PATH : process.env.ESOLM_CUDA_ADDON_PATH;
  if (env) return tryFile(path.resolve(env), attempts);
  const local = path.join(packageRoot(), SOURCE_BUILDS[kind]);
  const built = tryFile(local, attempts);
  if (built) return built;
  if (fromSource()) {
    attempts.push({ where: 'platform packages', error: 'skipped (ESOLM_BUILD_FROM_SOURCE=1)' });
    return null;
  }
  const pkg = PLATFORM_PACKAGES[platformKey()]?.[kind];
  if (!pkg) {
    attempts.push({ where: `@esolm/${process.platform}-${process.arch}${kind === 'cuda' ? '-cuda' : ''}`, error: `no prebuilt ${kind.toUpperCase()} addon is published for ${platformKey()}` });
    return null;
  }
  return tryPackage(pkg, kind === 'cpu' ? 'esolm_cpu.node' : 'esolm_cuda.node', attempts);
}

/** Loads the CPU addon or throws ERR_NO_ADDON listing what was tried and how to fix it. */
export function loadCpuAddon(): NativeAddon {
  if (cpuAddon) return cpuAddon;
  cpuAttempts = [];
  cpuAddon = load('cpu', cpuAttempts);
  if (!cpuAddon && fromSource()) {
    // Opt-in source build on first use: the same as `npx esolm build`.
    const { buildAddonSync } = require(path.join(packageRoot(), 'scripts', 'build-addon.cjs')) as { buildAddonSync: (root: string, cuda: boolean) => string };
    const err = buildAddonSync(packageRoot(), false);
    if (err) cpuAttempts.push({ where: 'source build (ESOLM_BUILD_FROM_SOURCE=1)', error: err });
    else cpuAddon = tryFile(path.join(packageRoot(), SOURCE_BUILDS.cpu), cpuAttempts);
  }
  if (cpuAddon) return cpuAddon;
  const pkg = PLATFORM_PACKAGES[platformKey()]?.cpu;
  const tried = cpuAttempts.map((a) => `  - ${a.where}: ${a.error}`).join('\n');
  throw new EsolmError('ERR_NO_ADDON',
    `esolm: no native addon could be loaded for ${platformKey()} (Node ${process.versions.node}, esolm ${packageVersion()}).\n` +
    `Tried:\n${tried}\n` +
    'Possible solutions:\n' +
    (pkg
      ? `  - install the prebuilt addon: npm install ${pkg}@${packageVersion()} (npm skips optional dependencies under --omit=optional or\n` +
        '    when the lockfile was made on another platform; pnpm and yarn need it to be allowed for this platform)\n'
      : `  - no prebuilt addon exists for ${platformKey()}; build one:\n`) +
    '  - build from source: npx esolm build (needs cmake and a C++17 compiler: apt-get install cmake g++)\n' +
    '  - run `npx esolm doctor` for details');
}

/** Loads the CUDA addon, or returns null and remembers why (see cudaUnavailableReason). */
export function loadCudaAddon(): NativeAddon | null {
  if (cudaAddon !== undefined) return cudaAddon;
  cudaAttempts = [];
  cudaAddon = load('cuda', cudaAttempts);
  return cudaAddon;
}

/** Why CUDA cannot be used, or '' when it can. */
export function cudaUnavailableReason(): string {
  const addon = loadCudaAddon();
  if (!addon) {
    return 'the CUDA addon is not installed or did not load (' +
      cudaAttempts.map((a) => `${a.where}: ${a.error}`).join('; ') + ')';
  }
  const info = addon.backendInfo().cuda;
  if (!info) return 'the CUDA addon reports no CUDA support';
  return info.usable ? '' : info.reason || 'CUDA is not usable';
}

/** What the loader found: per addon the file loaded (or null) and every place it looked at. */
export interface AddonReport {
  version: string;
  platform: string;
  cpu: { path: string | null; tried: Attempt[] };
  cuda: { path: string | null; tried: Attempt[] };
}

/** @internal For `esolm doctor`. */
export function addonReport(): AddonReport {
  let cpu: string | null = null;
  try { cpu = addonPath(loadCpuAddon()) ?? null; } catch { /* listed in tried */ }
  const cuda = loadCudaAddon();
  return {
    version: packageVersion(), platform: platformKey(),
    cpu: { path: cpu, tried: cpuAttempts }, cuda: { path: cuda ? addonPath(cuda) ?? null : null, tried: cudaAttempts },
  };
}

/**
 * The small byte-level Eso-LM shipped in the package (models/default; trained on the King
 * James Bible): what `Model.load()` with no folder loads. Also reachable as the export
 * `esolm/models/default/config.json` (import.meta.resolve).
 */
export function defaultModelDir(): string {
  return path.join(packageRoot(), 'models', 'default');
}
