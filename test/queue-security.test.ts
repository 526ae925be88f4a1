// Redis security and sharing for the queue, with a real redis-server that takes only TLS
// connections and requires a password: a worker (password from $ESOLM_REDIS_PASSWORD, CA
// from --redis-tls-ca) and a producer (password in the URL, TLS options passed through)
// complete a job; a wrong password is a clear ERR_UNAVAILABLE; two prefixes on one Redis
// are two separate deployments.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../lib/index.js';
import { QueueProducer } from '../lib/queue/index.js';
import { makeRandomModel } from './helpers/random-model.js';
import { killAll, selfSignedCert, spawnWorker, startRedis, type RedisServer, type WorkerProcess } from './helpers/redis.js';

const PASSWORD = 's3cret-pass';
let dir: string;
let redis: RedisServer;
let model: Model;
let ca: Buffer;
let worker: WorkerProcess;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'esolm-queue-sec-'));
  makeRandomModel(path.join(dir, 'm'), { arch: 'esolm', seed: 44 });
  const cert = selfSignedCert(dir);
  ca = readFileSync(cert.cert);
  redis = await startRedis(['--requirepass', PASSWORD], cert);
  worker = spawnWorker(redis.url, path.join(dir, 'm'), ['--redis-tls-ca', cert.cert, '--threads', '1'], { ESOLM_REDIS_PASSWORD: PASSWORD });
  model = await Model.load(path.join(dir, 'm'), { backend: 'cpu' });
  await worker.ready;
});

afterAll(async () => {
  killAll([worker]);
  model?.dispose();
  await redis?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const authUrl = () => redis.url.replace('rediss://', `rediss://:${PASSWORD}@`);

describe('Redis AUTH, TLS and prefixes', () => {
  it('a worker and a producer complete a job over TLS with AUTH', async () => {
    expect(redis.url).toMatch(/^rediss:/);
    const p = await QueueProducer.create({ redis: { url: authUrl(), tls: { ca } }, model });
    try {
      const r = await p.submit({ sampler: { method: 'esolm', steps: 4, seed: 3 }, length: 16 });
      const lib = await model.generate({ sampler: new (await import('../lib/index.js')).Sampler({ method: 'esolm', steps: 4, seed: 3 }), length: 16 });
      expect([...r.sequences[0]]).toEqual([...lib.sequences[0]]);
    } finally {
      await p.close();
    }
  });

  it('a wrong password is ERR_UNAVAILABLE naming the cause, without the password', async () => {
    const p = await QueueProducer.create({ redis: { url: redis.url, password: 'wrong-one', tls: { ca } }, model, addTimeoutMs: 1000 });
    try {
      const err = await p.submit({ sampler: { method: 'esolm', steps: 4, seed: 3 }, length: 16 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'ERR_UNAVAILABLE' });
      expect((err as Error).message).toMatch(/WRONGPASS|NOAUTH|auth/i);
      expect((err as Error).message).not.toContain('wrong-one');
    } finally {
      await p.close();
    }
  });

  it('a producer under another prefix is another deployment: its jobs wait for its own workers', async () => {
    const other = await QueueProducer.create({ redis: { url: authUrl(), tls: { ca }, prefix: 'staging' }, model });
    const r = new Redis(authUrl(), { tls: { ca } });
    try {
      await expect(other.submit({ sampler: { method: 'esolm', steps: 4, seed: 3 }, length: 16, timeoutMs: 1500 })).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
      expect((await r.keys('staging:m:*')).length).toBeGreaterThan(0);
      expect((await r.keys('esolm:m:*')).length).toBeGreaterThan(0);  // the first test's deployment
      await expect(QueueProducer.create({ redis: { url: authUrl(), prefix: 'bad prefix!' }, model })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    } finally {
      r.disconnect();
      await other.close();
    }
  });
});
