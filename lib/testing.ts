/** `esolm/testing`: helpers for tests and experiments (random-weight model folders). */
export { writeRandomModel, SMALL_CONFIG } from './random-model.js';
