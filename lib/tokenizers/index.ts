/**
 * Tokenizers, selected by a model folder's config `tokenizer` field:
 * `gpt2` (GPT-2 BPE, identical to HF GPT2TokenizerFast), `bert-base-uncased` (WordPiece from
 * the folder's tokenizer.json), `bytes` (UTF-8 bytes, mask 256), or a path to a
 * tokenizer.json relative to the model folder, which must stay inside the folder (symlinks
 * resolved). See each file for the exact encode/decode rules.
 */
import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { ModelConfig } from '../config.js';
import { EsolmError } from '../errors.js';
import { loadTokenizerJson } from './bert.js';
import { BYTES_MASK_ID, BYTES_VOCAB_SIZE, createBytesTokenizer } from './bytes.js';
import { GPT2_EOT_ID, GPT2_MASK_ID, createGpt2Tokenizer } from './gpt2.js';

export interface Tokenizer {
  /** `gpt2`, `bert-base-uncased`, `bytes`, or the tokenizer.json path. */
  name: string;
  /** Number of ids decode accepts (for gpt2: 50258, including the mask id). */
  vocabSize: number;
  /** Text → ids. Never adds BOS/EOS. */
  encode(text: string): Int32Array;
  /** Ids → text; the mask id is dropped. Throws ERR_INVALID_ARG for ids outside [0, vocabSize). */
  decode(ids: ArrayLike<number>): string;
  /** The mask token id, which decode drops. */
  maskId?: number;
  /** Beginning-of-sequence id the models were trained with (gpt2: 50256, BERT: [CLS]). */
  bosId?: number;
  /** End-of-sequence id (gpt2: 50256, BERT: [SEP]). */
  eosId?: number;
}

export { createGpt2Tokenizer, GPT2_EOT_ID, GPT2_MASK_ID, GPT2_VOCAB_SIZE } from './gpt2.js';
export type { Gpt2Options } from './gpt2.js';
export { createBytesTokenizer, BYTES_MASK_ID, BYTES_VOCAB_SIZE } from './bytes.js';
export { loadTokenizerJson } from './bert.js';
export type { JsonTokenizerOptions } from './bert.js';
export { cleanUpTokenization } from './common.js';

function bad(message: string): EsolmError {
  return new EsolmError('ERR_BAD_WEIGHTS', message);
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** `spec` resolved inside `modelDir`; ERR_BAD_WEIGHTS if it leads outside (.., absolute, symlink). */
function confined(modelDir: string, spec: string): string {
  const root = path.resolve(modelDir);
  const inside = (p: string, base: string): boolean => {
    const rel = path.relative(base, p);
    return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  };
  const file = path.resolve(root, spec);
  let ok = inside(file, root);
  if (ok) {
    try {
      ok = inside(realpathSync(file), realpathSync(root));
    } catch {
      // missing: reported by the caller as not a file
    }
  }
  if (!ok) throw bad(`config.json: tokenizer path "${spec}" leads outside the model folder (it must name a file inside it)`);
  return file;
}

/**
 * The tokenizer a model folder's config names, or null when config.tokenizer is absent.
 * Checks that the tokenizer fits the model: every id it emits is < vocab_size, and a fixed
 * mask id (gpt2: 50257, bytes: 256) equals config.mask_index when the model has one.
 */
export async function loadTokenizer(config: ModelConfig, modelDir: string): Promise<Tokenizer | null> {
  const spec = config.tokenizer;
  if (spec === undefined) return null;
  if (typeof spec !== 'string' || spec.length === 0) throw bad(`config.json: field "tokenizer" must be a non-empty string`);
  const V = config.vocab_size;
  const mask = config.mask_index;
  if (spec === 'gpt2') {
    if (V < GPT2_EOT_ID + 1) throw bad(`tokenizer "gpt2" emits ids up to ${GPT2_EOT_ID} but the model's vocab_size is ${V}`);
    if (mask >= 0 && mask !== GPT2_MASK_ID) {
      throw bad(`tokenizer "gpt2" uses mask id ${GPT2_MASK_ID} but config.json has mask_index ${mask}`);
    }
    return createGpt2Tokenizer();
  }
  if (spec === 'bytes') {
    if (V < BYTES_VOCAB_SIZE - 1) throw bad(`tokenizer "bytes" emits ids up to 255 but the model's vocab_size is ${V}`);
    if (mask >= 0 && mask !== BYTES_MASK_ID) {
      throw bad(`tokenizer "bytes" uses mask id ${BYTES_MASK_ID} but config.json has mask_index ${mask}`);
    }
    return createBytesTokenizer();
  }
  let file: string;
  let name: string;
  if (spec === 'bert-base-uncased') {
    file = path.join(modelDir, 'tokenizer.json');
    name = spec;
    if (!isFile(file)) {
      throw new EsolmError('ERR_IO',
        `model folder ${modelDir} names tokenizer "bert-base-uncased" but has no tokenizer.json ` +
        `(copy bert-base-uncased's tokenizer.json from Hugging Face into the folder)`);
    }
  } else {
    file = confined(modelDir, spec);
    name = spec;
    if (!isFile(file)) {
      throw new EsolmError('ERR_IO',
        `tokenizer "${spec}" is not gpt2, bert-base-uncased or bytes, and ${file} is not a file ` +
        `(a tokenizer path is relative to the model folder)`);
    }
  }
  const tok = await loadTokenizerJson(file, {
    name,
    maxVocab: V,
    requireWordPiece: spec === 'bert-base-uncased',
    ...(mask >= 0 ? { maskId: mask } : {}),
  });
  if (tok.vocabSize > V) {
    throw bad(`tokenizer ${file} has ${tok.vocabSize} ids but the model's vocab_size is ${V}`);
  }
  return tok;
}
