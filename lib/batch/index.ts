/** The batcher (batcher.ts) and model-free Eso-LM plans (plan.ts): one scheduling policy for the server and the queue worker. */
export { Batcher, sliceEvent } from './batcher.js';
export type { BatcherOptions, BatchJob, BatchJobResult, BatchInfo, AcceptedInfo } from './batcher.js';
export { esolmStepSizes } from './plan.js';
export type { EsolmPlanOptions, EsolmPlanSteps } from './plan.js';
export type { GenerationSource } from './source.js';
