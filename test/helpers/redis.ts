// A real redis-server for a test file: a free loopback port, a temporary directory, an
// append-only file (so a restart keeps the queue, as a production Redis would), and stop /
// restart on the same port. Also: spawning `esolm worker` processes against it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const REDIS_BIN = process.env.REDIS_SERVER ?? 'redis-server';
export const BIN = path.resolve(import.meta.dirname, '..', '..', 'dist', 'bin.js');

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  port: number;
  url: string;
  dir: string;
  /** Stops it (SIGTERM: Redis flushes the append-only file). */
  stop(): Promise<void>;
  /** Starts it again on the same port and directory. */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  dispose(): Promise<void>;
}

/** A self-signed certificate for 127.0.0.1 (openssl), as files in `dir`. */
export function selfSignedCert(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key };
}

/**
 * Starts redis-server; `extraArgs` e.g. ['--requirepass', 'secret']. With `tls`, it listens
 * only with TLS (the URL is rediss://) using that certificate.
 */
export async function startRedis(extraArgs: string[] = [], tls?: { cert: string; key: string }): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'esolm-redis-'));
  const portArgs = tls
    ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', tls.cert, '--tls-key-file', tls.key, '--tls-ca-cert-file', tls.cert, '--tls-auth-clients', 'no']
    : ['--port', String(port)];
  let proc: ChildProcess | null = null;
  const start = (): Promise<void> => new Promise((resolve, reject) => {
    const p = spawn(REDIS_BIN, [...portArgs, '--bind', '127.0.0.1', '--dir', dir, '--save', '',
      '--appendonly', 'yes', '--appendfsync', 'always', '--protected-mode', 'no', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (/Ready to accept connections/.test(out)) {
        p.stdout?.off('data', onData);
        resolve();
      }
    };
    p.stdout?.on('data', onData);
    p.once('error', reject);
    p.once('exit', (code) => reject(new Error(`redis-server exited (${code}) before it was ready:\n${out}`)));
  });
  const stop = (): Promise<void> => new Promise((resolve) => {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  });
  await start();
  return {
    port, url: `${tls ? 'rediss' : 'redis'}://127.0.0.1:${port}`, dir, stop, start,
    async dispose() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface WorkerProcess {
  proc: ChildProcess;
  pid: number;
  /** stderr so far. */
  log(): string;
  /** Resolves when it takes jobs. */
  ready: Promise<void>;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
}

/** Spawns `esolm worker --redis url --model dir ...args` (CPU backend). */
export function spawnWorker(url: string, modelDir: string, args: string[] = [], env: Record<string, string> = {}): WorkerProcess {
  const proc = spawn(process.execPath, [BIN, 'worker', '--redis', url, '--model', modelDir, '--backend', 'cpu', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env },
  });
  let err = '';
  const ready = new Promise<void>((resolve, reject) => {
    proc.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (/taking jobs/.test(err)) resolve();
    });
    proc.once('exit', (code, sig) => reject(new Error(`worker exited (${code ?? sig}) before it was ready:\n${err}`)));
  });
  ready.catch(() => undefined);
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  return { proc, pid: proc.pid as number, log: () => err, ready, exited };
}

/** SIGKILLs what is still running. */
export function killAll(workers: WorkerProcess[]): void {
  for (const w of workers) if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill('SIGKILL');
}
