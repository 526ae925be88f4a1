/** esolm — Esoteric Language Models (Eso-LMs), MDLM and AR from Node.js. */
export { Model, Cache, readModelFolder } from './model.js';
export type { LoadOptions, ForwardOptions, StepOptions, AttentionMode, BackendName, GenerateOptions, GenerateResult, StepEvent, FixedTokens } from './model.js';
export { Sampler } from './sampler.js';
export type { SamplerOptions, SamplerMethod } from './sampler.js';
export { EsolmError } from './errors.js';
export type { ErrorCode } from './errors.js';
export type { ModelConfig, Arch } from './config.js';
export { parseConfig } from './config.js';
export { readSafetensorsHeader } from './safetensors.js';
export { loadCpuAddon, loadCudaAddon, cudaUnavailableReason, addonPath } from './native.js';
export { writeRandomModel, SMALL_CONFIG } from './random-model.js';
export { loadTokenizer, createGpt2Tokenizer, createBytesTokenizer, loadTokenizerJson } from './tokenizers/index.js';
export type { Tokenizer } from './tokenizers/index.js';
