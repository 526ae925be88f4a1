/** Scale-out on BullMQ over Redis: the producer of `serve --redis` and the worker of `esolm worker`. */
export { QueueProducer, failureToError } from './producer.js';
export type { ProducerOptions } from './producer.js';
export { startWorker } from './worker.js';
export type { WorkerOptions, GenerationWorker } from './worker.js';
export type { RedisOptions } from './connection.js';
export { DEFAULT_PREFIX, redactUrl } from './connection.js';
export { DEFAULT_MAX_PAYLOAD_BYTES, PAYLOAD_VERSION } from './payload.js';
