/** Queue and channel names: one queue per model name, under the deployment's prefix. */
import path from 'node:path';
import { EsolmError } from '../errors.js';
import type { Model } from '../model.js';

/** The queue for a model: `queue` if given, else the model folder's name. */
export function queueNameFor(queue: string | undefined, model: Model): string {
  const name = queue ?? path.basename(path.resolve(model.dir));
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,100}$/.test(name)) {
    throw new EsolmError('ERR_INVALID_ARG', `the queue name ${JSON.stringify(name)} must be 1-100 characters of [A-Za-z0-9_.-] (pass --queue)`);
  }
  return name;
}

/**
 * A cancelled job's mark (kept an hour): a worker that (re)starts the job after the cancel
 * message went out (e.g. a rerun after a stall) sees it and drops the job.
 */
export function cancelKey(prefix: string, queue: string, jobId: string): string {
  return `${prefix}:${queue}:esolm-cancelled:${jobId}`;
}

/** The pub/sub channel on which the producer names jobs whose client went away. */
export function cancelChannel(prefix: string, queue: string): string {
  return `${prefix}:${queue}:esolm-cancel`;
}
