// Runs a snippet of ESM in a child Node process (so a signal, an abort or a hang is caught,
// not suffered): `esolm` is the built package (dist/index.js). Returns how it ended.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const DIST = pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href;

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

export function runChild(code: string, opts: { timeoutMs?: number; env?: Record<string, string>; nodeArgs?: string[] } = {}): ChildResult {
  const src = `const esolm = await import(${JSON.stringify(DIST)});\n${code}`;
  const r = spawnSync(process.execPath, [...(opts.nodeArgs ?? []), '--input-type=module', '-e', src], {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 30_000,
    killSignal: 'SIGKILL',
    env: { ...process.env, ...opts.env },
    maxBuffer: 64 * 2 ** 20,
  });
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  return { status: r.status, signal: r.signal, timedOut, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** A readable account of a child run for assertion messages. */
export function describeChild(r: ChildResult): string {
  return `status ${r.status} signal ${r.signal} timedOut ${r.timedOut}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`;
}
