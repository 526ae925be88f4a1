/**
 * Where the server's generations come from: the local Batcher, or the BullMQ producer of
 * `serve --redis` (lib/queue), which hands the same jobs to workers running that batcher.
 * The HTTP layer talks to this interface only.
 */
import type { BatchJob, BatchJobResult } from './batcher.js';

export interface GenerationSource {
  /** Runs one request (see Batcher.submit for its errors; a queue adds ERR_UNAVAILABLE and ERR_WORKER_LOST). */
  submit(job: BatchJob): Promise<BatchJobResult>;
  /** A guess, in whole seconds (>= 1), of when a refused request could be accepted. */
  retryAfterSeconds(): number;
  /** `open`, then `draining` after close(), then `closed`. */
  readonly state: 'open' | 'draining' | 'closed';
  /**
   * Whether a request submitted now could be accepted: open, and (for a queue) connected to
   * Redis. `/health/ready` reports it, so a load balancer stops sending work while it is false.
   * Optional for other sources: absent means "while open".
   */
  readonly available?: boolean;
  /** Requests waiting to start. */
  readonly queued: number;
  /** Sequences now being generated. */
  readonly inFlight: number;
  /** Stops taking requests and waits for accepted ones (aborted after `deadlineMs`). */
  close(opts?: { deadlineMs?: number }): Promise<void>;
}
