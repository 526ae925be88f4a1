// Packs the tarballs with scripts/pack-all.mjs (reusing this checkout's addon builds) and
// installs them into an empty project whose PATH holds only `node`: no compiler, no cmake,
// no install scripts. Used by test/package.test.ts and test/readme-examples.test.ts.
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const root = path.resolve(import.meta.dirname, '..', '..');
/** npm's own CLI script, run with node, so that PATH needs nothing but node. */
const npmCli = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

export interface Packed {
  version: string;
  tarballs: Record<string, string>;
  glibc: Record<string, string>;
}

/** Runs pack-all for `targets` into `out`. The CUDA target only when its addon is built here. */
export function packAll(out: string, targets: string[]): Packed {
  const json = execFileSync(process.execPath, [path.join(root, 'scripts', 'pack-all.mjs'), '--reuse', '--out', out, '--targets', targets.join(',')],
    { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  return JSON.parse(json) as Packed;
}

export const cudaBuilt = (): boolean => existsSync(path.join(root, 'cuda', 'build', 'Release', 'esolm_cuda.node'));

export interface App {
  dir: string;
  /** PATH with only node on it. */
  env: NodeJS.ProcessEnv;
  installSeconds: number;
  run(file: string, args: string[], opts?: { input?: string }): SpawnSyncReturns<string>;
}

/** An empty ES-module project with `tarballs` installed by npm, PATH = node only. */
export function installApp(dir: string, tarballs: string[], extraNpmArgs: string[] = []): App {
  mkdirSync(path.join(dir, 'bin'), { recursive: true });
  symlinkSync(process.execPath, path.join(dir, 'bin', 'node'));
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  const env: NodeJS.ProcessEnv = { HOME: process.env.HOME, PATH: path.join(dir, 'bin'), npm_config_cache: process.env.npm_config_cache };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const t0 = performance.now();
  execFileSync(process.execPath, [npmCli, 'install', '--no-audit', '--no-fund', '--prefer-offline', ...extraNpmArgs, ...tarballs],
    { cwd: dir, env, stdio: 'pipe' });
  const installSeconds = (performance.now() - t0) / 1000;
  return {
    dir, env, installSeconds,
    run: (file, args, opts = {}) => spawnSync(file, args, { cwd: dir, env, encoding: 'utf8', input: opts.input ?? '', timeout: 120_000 }),
  };
}

/** The installed packages (name@version) and their total size in bytes. */
export function installReport(dir: string): { packages: string[]; bytes: number } {
  const lock = JSON.parse(readFileSync(path.join(dir, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  const packages = Object.entries(lock.packages).filter(([k]) => k !== '').map(([k, v]) => `${k.replace(/^.*node_modules\//, '')}@${v.version}`);
  const du = execFileSync('du', ['-sb', path.join(dir, 'node_modules')], { encoding: 'utf8' });
  return { packages, bytes: Number(du.split('\t')[0]) };
}
