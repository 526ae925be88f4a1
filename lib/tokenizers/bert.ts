/**
 * Tokenizers read from a Hugging Face tokenizer.json (bert-base-uncased WordPiece for LM1B
 * models, or any other tokenizer.json), run by @huggingface/tokenizers.
 *
 * - encode: add_special_tokens=false (no [CLS]/[SEP] is added; special tokens typed in the
 *   text, such as "[SEP]", are still recognised as HF does).
 * - decode: HF's default decode (skip_special_tokens=false; clean_up_tokenization_spaces from
 *   a tokenizer_config.json next to tokenizer.json, default true), except that the mask id
 *   never decodes to text: it is dropped first.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { EsolmError } from '../errors.js';
import { badTokenizer, checkIds, checkText } from './common.js';
import type { Tokenizer } from './index.js';

export interface JsonTokenizerOptions {
  /** Tokenizer name reported by `Tokenizer.name` (default: the file path). */
  name?: string;
  /** Mask id to drop in decode (default: the id of "[MASK]" when the vocabulary has one). */
  maskId?: number;
  /** Require a WordPiece model (for `bert-base-uncased`). */
  requireWordPiece?: boolean;
}

type HfTokenizer = {
  encode(text: string, o: { add_special_tokens: boolean }): { ids: number[] };
  decode(ids: number[], o: { skip_special_tokens: boolean }): string;
  token_to_id(token: string): number | undefined;
  get_vocab(withAdded?: boolean): Map<string, number>;
};

function readJson(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new EsolmError('ERR_IO', `cannot read ${what} ${file}: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw badTokenizer(`${what} ${file} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badTokenizer(`${what} ${file} must hold a JSON object`);
  return v as Record<string, unknown>;
}

/** Loads a tokenizer.json (and the tokenizer_config.json beside it, if any). */
export async function loadTokenizerJson(file: string, opts: JsonTokenizerOptions = {}): Promise<Tokenizer> {
  const json = readJson(file, 'tokenizer file');
  const model = json.model as { type?: unknown } | undefined;
  if (typeof model !== 'object' || model === null) throw badTokenizer(`tokenizer file ${file} has no "model" object (not a Hugging Face tokenizer.json?)`);
  if (opts.requireWordPiece && model.type !== 'WordPiece') {
    throw badTokenizer(`tokenizer file ${file} holds a ${JSON.stringify(model.type)} model, expected WordPiece (bert-base-uncased)`);
  }
  const cfgFile = path.join(path.dirname(file), 'tokenizer_config.json');
  let config: Record<string, unknown> = {};
  try {
    config = readJson(cfgFile, 'tokenizer config');
  } catch (e) {
    if (!(e instanceof EsolmError && e.code === 'ERR_IO')) throw e;
  }
  const { Tokenizer: HfTokenizerClass } = await import('@huggingface/tokenizers');
  let tok: HfTokenizer;
  try {
    json.added_tokens ??= [];
    tok = new HfTokenizerClass(json, config) as unknown as HfTokenizer;
  } catch (e) {
    throw badTokenizer(`tokenizer file ${file} could not be loaded: ${(e as Error).message}`, e);
  }
  let vocabSize = 0;
  for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
  if (vocabSize === 0) throw badTokenizer(`tokenizer file ${file} has an empty vocabulary`);
  const maskId = opts.maskId ?? tok.token_to_id('[MASK]');
  // A mask row appended after the tokenizer's own vocabulary still counts as a valid id.
  if (maskId !== undefined) vocabSize = Math.max(vocabSize, maskId + 1);
  const bosId = tok.token_to_id('[CLS]');
  const eosId = tok.token_to_id('[SEP]');

  return {
    name: opts.name ?? file,
    vocabSize,
    ...(maskId !== undefined ? { maskId } : {}),
    ...(bosId !== undefined ? { bosId } : {}),
    ...(eosId !== undefined ? { eosId } : {}),
    encode(text: string): Int32Array {
      checkText(text);
      if (text.length === 0) return new Int32Array(0);
      return Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids);
    },
    decode(ids: ArrayLike<number>): string {
      const a = checkIds(`${opts.name ?? 'tokenizer'} decode`, ids, vocabSize);
      const kept: number[] = [];
      for (let i = 0; i < a.length; i++) if (a[i] !== maskId) kept.push(a[i]!);
      if (kept.length === 0) return '';  // the library throws on an empty list
      return tok.decode(kept, { skip_special_tokens: false });
    },
  };
}
