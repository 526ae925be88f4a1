/**
 * Prometheus metrics (prom-client, one registry per server so several can share a
 * process): queue depth, sequences in flight, batch sizes, tokens and NFE (rates give
 * tokens/s), batch durations, and request latency by route and status.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BatchInfo, GenerationSource } from '../batch/index.js';

export interface ServeMetrics {
  registry: Registry;
  /** Feed each finished batch (Batcher onBatch). */
  onBatch(info: BatchInfo): void;
  /** Record one HTTP request. */
  observeRequest(route: string, status: number, seconds: number): void;
}

export function createMetrics(getBatcher: () => GenerationSource | null): ServeMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'esolm_process_' });
  new Gauge({
    name: 'esolm_queue_depth', help: 'Requests waiting for their batch to start', registers: [registry],
    collect() { this.set(getBatcher()?.queued ?? 0); },
  });
  new Gauge({
    name: 'esolm_in_flight_sequences', help: 'Sequences in the batched generation now running', registers: [registry],
    collect() { this.set(getBatcher()?.inFlight ?? 0); },
  });
  const batchSize = new Histogram({
    name: 'esolm_batch_size', help: 'Sequences per batched generation', registers: [registry],
    buckets: [1, 2, 4, 8, 16, 32, 64],
  });
  const batchSeconds = new Histogram({
    name: 'esolm_batch_duration_seconds', help: 'Wall time of one batched generation', labelNames: ['method'], registers: [registry],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  });
  const tokens = new Counter({ name: 'esolm_generated_tokens_total', help: 'Tokens generated (rate() gives tokens/s)', labelNames: ['method'], registers: [registry] });
  const tokensPerS = new Gauge({ name: 'esolm_tokens_per_second', help: 'Tokens per second of the last batched generation', registers: [registry] });
  const nfe = new Counter({ name: 'esolm_nfe_total', help: 'Network function evaluations', labelNames: ['method'], registers: [registry] });
  const batches = new Counter({ name: 'esolm_batches_total', help: 'Batched generations by outcome', labelNames: ['method', 'outcome'], registers: [registry] });
  const latency = new Histogram({
    name: 'esolm_request_duration_seconds', help: 'HTTP request latency (streams: until the last event)', labelNames: ['route', 'status'], registers: [registry],
    buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  });
  return {
    registry,
    onBatch(info) {
      batches.inc({ method: info.method, outcome: info.ok ? 'ok' : 'failed' });
      if (!info.ok) return;
      batchSize.observe(info.rows);
      batchSeconds.observe({ method: info.method }, info.ms / 1000);
      tokens.inc({ method: info.method }, info.tokens);
      nfe.inc({ method: info.method }, info.nfe);
      if (info.ms > 0) tokensPerS.set(info.tokens / (info.ms / 1000));
    },
    observeRequest(route, status, seconds) {
      latency.observe({ route, status: String(status) }, seconds);
    },
  };
}
