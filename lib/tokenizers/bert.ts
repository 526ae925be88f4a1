/**
 * Tokenizers read from a Hugging Face tokenizer.json (bert-base-uncased WordPiece for LM1B
 * models, or any other tokenizer.json), run by @huggingface/tokenizers.
 *
 * - encode: add_special_tokens=false (no [CLS]/[SEP] is added; special tokens typed in the
 *   text, such as "[SEP]", are still recognised as HF does).
 * - decode: HF's default decode (skip_special_tokens=false; clean_up_tokenization_spaces from
 *   a tokenizer_config.json next to tokenizer.json, default true), except that the mask id
 *   never decodes to text: it is dropped first.
 *
 * Untrusted files: only regular files are read; ids must lie in [0, maxVocab); every regex
 * (pre-tokenizer, normalizer, decoder) must be free of nested repetition, the shape that
 * backtracks exponentially (see riskyRegex); errors never echo the file's bytes.
 */
import path from 'node:path';
import { EsolmError } from '../errors.js';
import { parseJson, readRegularFile } from '../files.js';
import { badTokenizer, checkIds, checkText } from './common.js';
import type { Tokenizer } from './index.js';

export interface JsonTokenizerOptions {
  /** Tokenizer name reported by `Tokenizer.name` (default: the file path). */
  name?: string;
  /** Mask id to drop in decode (default: the id of "[MASK]" when the vocabulary has one). */
  maskId?: number;
  /** Require a WordPiece model (for `bert-base-uncased`). */
  requireWordPiece?: boolean;
  /** Every id in the file must be below this (default 2^24). */
  maxVocab?: number;
}

type HfTokenizer = {
  encode(text: string, o: { add_special_tokens: boolean }): { ids: number[] };
  decode(ids: number[], o: { skip_special_tokens: boolean }): string;
  token_to_id(token: string): number | undefined;
  get_vocab(withAdded?: boolean): Map<string, number>;
};

function readJson(file: string, what: string): Record<string, unknown> {
  const text = readRegularFile(file, what, 2 ** 28).toString('utf8');
  const v = parseJson(text, `${what} ${file}`);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badTokenizer(`${what} ${file} must hold a JSON object`);
  return v as Record<string, unknown>;
}

/**
 * Why a regex may backtrack exponentially, or null: a group repeated by a quantifier other
 * than `?` that itself holds a quantifier or an alternation (`(a+)+`, `(a|aa)*`). A static,
 * conservative check: the patterns real tokenizers use have no such group.
 */
export function riskyRegex(src: string): string | null {
  const stack: boolean[] = [false];  // per open group: holds a quantifier or alternation
  let closedInner: boolean | null = null;  // the group closed just before, if any
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    let closed: boolean | null = null;
    if (c === '\\') {
      if ((src[i + 1] === 'p' || src[i + 1] === 'P') && src[i + 2] === '{') i = src.indexOf('}', i);
      else i++;
      if (i < 0) return 'an unterminated escape';
    } else if (c === '[') {
      let j = i + 1;
      while (j < src.length && src[j] !== ']') j += src[j] === '\\' ? 2 : 1;
      i = j;
    } else if (c === '(') {
      stack.push(false);
      if (src[i + 1] === '?') {  // (?:  (?=  (?!  (?<=  (?<!  (?<name>  (?i:
        i++;
        if (src[i + 1] === '<' && src[i + 2] !== '=' && src[i + 2] !== '!') i = src.indexOf('>', i);
        else i++;
        if (i < 0) return 'an unterminated group name';
      }
    } else if (c === ')') {
      if (stack.length < 2) return 'unbalanced parentheses';
      closed = stack.pop() as boolean;
    } else if (c === '|') {
      stack[stack.length - 1] = true;
    } else if (c === '*' || c === '+' || c === '?' || c === '{') {
      if (c === '{') {
        const m = /^\{\d*(,\d*)?\}/.exec(src.slice(i));
        if (!m) continue;  // a literal brace
        i += m[0].length - 1;
      }
      if (closedInner === true && c !== '?') return 'a repeated group holds a repetition or an alternation';
      stack[stack.length - 1] = true;
      if (src[i + 1] === '?' || src[i + 1] === '+') i++;  // lazy / possessive suffix
    }
    closedInner = closed;
  }
  return stack.length === 1 ? null : 'unbalanced parentheses';
}

/** Checks ids, unk_token and regexes of a parsed tokenizer.json. */
function checkTokenizerJson(json: Record<string, unknown>, file: string, maxVocab: number): void {
  const badId = (id: unknown): boolean => typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= maxVocab;
  const model = json.model as Record<string, unknown>;
  if (model.unk_token !== undefined && model.unk_token !== null && typeof model.unk_token !== 'string') {
    throw badTokenizer(`tokenizer file ${file}: model.unk_token must be a string`);
  }
  const vocab = model.vocab;
  if (vocab !== undefined && (typeof vocab !== 'object' || vocab === null)) throw badTokenizer(`tokenizer file ${file}: model.vocab must be an object or an array`);
  if (vocab && !Array.isArray(vocab)) {
    for (const id of Object.values(vocab)) {
      if (badId(id)) throw badTokenizer(`tokenizer file ${file}: a vocabulary id is not an integer in [0, ${maxVocab})`);
    }
  } else if (Array.isArray(vocab) && vocab.length > maxVocab) {
    throw badTokenizer(`tokenizer file ${file}: the vocabulary has ${vocab.length} entries, more than ${maxVocab}`);
  }
  if (json.added_tokens !== undefined && json.added_tokens !== null) {
    if (!Array.isArray(json.added_tokens)) throw badTokenizer(`tokenizer file ${file}: added_tokens must be an array`);
    for (const t of json.added_tokens) {
      if (typeof t !== 'object' || t === null || badId((t as { id?: unknown }).id) || typeof (t as { content?: unknown }).content !== 'string') {
        throw badTokenizer(`tokenizer file ${file}: an added token is not { id in [0, ${maxVocab}), content: string }`);
      }
    }
  }
  const walk = (v: unknown, depth: number): void => {
    if (typeof v !== 'object' || v === null || depth > 64) return;
    if (Array.isArray(v)) {
      for (const x of v) walk(x, depth + 1);
      return;
    }
    const o = v as Record<string, unknown>;
    if (typeof o.Regex === 'string') {
      const why = riskyRegex(o.Regex);
      if (why) throw badTokenizer(`tokenizer file ${file}: a regex is refused because ${why} (it could run for exponential time)`);
    }
    for (const [k, x] of Object.entries(o)) if (k !== 'vocab' && k !== 'merges' && k !== 'added_tokens') walk(x, depth + 1);
  };
  walk(json, 0);
}

/** Loads a tokenizer.json (and the tokenizer_config.json beside it, if any). */
export async function loadTokenizerJson(file: string, opts: JsonTokenizerOptions = {}): Promise<Tokenizer> {
  const json = readJson(file, 'tokenizer file');
  const model = json.model as { type?: unknown } | undefined;
  if (typeof model !== 'object' || model === null) throw badTokenizer(`tokenizer file ${file} has no "model" object (not a Hugging Face tokenizer.json?)`);
  if (opts.requireWordPiece && model.type !== 'WordPiece') {
    throw badTokenizer(`tokenizer file ${file} holds a ${JSON.stringify(model.type)} model, expected WordPiece (bert-base-uncased)`);
  }
  checkTokenizerJson(json, file, opts.maxVocab ?? 2 ** 24);
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
      try {
        return Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids);
      } catch (e) {
        throw badTokenizer(`tokenizer ${opts.name ?? file} cannot encode this text (${(e as Error).message})`, e);
      }
    },
    decode(ids: ArrayLike<number>): string {
      const a = checkIds(`${opts.name ?? 'tokenizer'} decode`, ids, vocabSize);
      const kept: number[] = [];
      for (let i = 0; i < a.length; i++) if (a[i] !== maskId) kept.push(a[i]!);
      if (kept.length === 0) return '';  // the library throws on an empty list
      try {
        return tok.decode(kept, { skip_special_tokens: false });
      } catch (e) {
        throw badTokenizer(`tokenizer ${opts.name ?? file} cannot decode these ids (${(e as Error).message})`, e);
      }
    },
  };
}
