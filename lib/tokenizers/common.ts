/**
 * Helpers shared by the tokenizers: id validation, lossy UTF-8 decoding and Hugging Face's
 * clean_up_tokenization.
 */
import { EsolmError, invalidArg } from '../errors.js';

/**
 * UTF-8 → string with U+FFFD for every maximal invalid subpart (the WHATWG rule, which is
 * also Rust's String::from_utf8_lossy, i.e. what Hugging Face tokenizers do). A trailing
 * partial character becomes one U+FFFD. A leading BOM is kept, not stripped.
 */
const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

export function decodeUtf8Lossy(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

/** Growable byte buffer for decoders. */
export class ByteSink {
  private buf = new Uint8Array(256);
  private n = 0;
  push(bytes: Uint8Array): void {
    if (this.n + bytes.length > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.n + bytes.length));
      next.set(this.buf.subarray(0, this.n));
      this.buf = next;
    }
    this.buf.set(bytes, this.n);
    this.n += bytes.length;
  }
  pushByte(b: number): void {
    if (this.n === this.buf.length) {
      const next = new Uint8Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = b;
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.n);
  }
}

/**
 * transformers' PreTrainedTokenizerBase.clean_up_tokenization, applied by decode() when
 * clean_up_tokenization_spaces is true (the GPT-2 and BERT default). Order matters.
 */
export function cleanUpTokenization(text: string): string {
  return text
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

export function checkText(text: unknown): string {
  if (typeof text !== 'string') {
    throw invalidArg(`Expected a string for text but received ${ArrayBuffer.isView(text) ? text.constructor.name : String(text)} of type ${typeof text}`);
  }
  return text;
}

/** Validates token ids for decode: an array-like of integers in [0, vocabSize). */
export function checkIds(name: string, ids: unknown, vocabSize: number): ArrayLike<number> {
  if (ids === null || typeof ids !== 'object' || typeof (ids as { length?: unknown }).length !== 'number') {
    throw invalidArg(`Expected an array of token ids for ${name} but received ${String(ids)} of type ${typeof ids}`);
  }
  const a = ids as ArrayLike<number>;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= vocabSize) {
      throw invalidArg(`${name}: token id ids[${i}] = ${String(v)} is outside [0, ${vocabSize})`);
    }
  }
  return a;
}

export function badTokenizer(message: string, cause?: unknown): EsolmError {
  return new EsolmError('ERR_BAD_WEIGHTS', message, cause === undefined ? undefined : { cause });
}
