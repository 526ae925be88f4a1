/**
 * Byte-level tokenizer for small models: token id = byte value 0..255 of the UTF-8 encoding,
 * vocab_size 257, mask id 256, no other special tokens, no BOS/EOS.
 * decode drops the mask id and decodes the bytes as UTF-8, replacing every maximal invalid
 * subpart (including a trailing partial character) with one U+FFFD. No cleanup.
 */
import { ByteSink, checkIds, checkText, decodeUtf8Lossy } from './common.js';
import type { Tokenizer } from './index.js';

export const BYTES_VOCAB_SIZE = 257;
export const BYTES_MASK_ID = 256;

const te = new TextEncoder();

export function createBytesTokenizer(): Tokenizer {
  return {
    name: 'bytes',
    vocabSize: BYTES_VOCAB_SIZE,
    maskId: BYTES_MASK_ID,
    encode(text: string): Int32Array {
      return Int32Array.from(te.encode(checkText(text)));
    },
    decode(ids: ArrayLike<number>): string {
      const a = checkIds('bytes decode', ids, BYTES_VOCAB_SIZE);
      const sink = new ByteSink();
      for (let i = 0; i < a.length; i++) if (a[i] !== BYTES_MASK_ID) sink.pushByte(a[i]!);
      return decodeUtf8Lossy(sink.bytes());
    },
  };
}
