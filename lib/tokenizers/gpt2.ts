/**
 * GPT-2 byte-level BPE, identical to Hugging Face's GPT2TokenizerFast (PACKAGING-NOTES.md §5.2):
 * the r50k_base ranks (shipped as data/gpt2-r50k.bin.gz, 210 KB) and split regex, plus the
 * Eso-LM conventions.
 *
 * - encode: `<|endoftext|>` anywhere in the text is the single token 50256 (the text is split
 *   on it first, as HF's added-token pass does; gpt-tokenizer alone only recognises it at
 *   position 0). No BOS/EOS is added.
 * - decode: the bytes of every token are joined and decoded as UTF-8 with U+FFFD for invalid
 *   or incomplete sequences; a trailing partial character becomes one U+FFFD (HF's rule).
 *   50256 decodes to "<|endoftext|>" (HF's skip_special_tokens=False). The mask id 50257 is
 *   dropped: it never decodes to text. Then HF's clean_up_tokenization (GPT-2's
 *   clean_up_tokenization_spaces=True) unless `cleanup: false`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { EsolmError } from '../errors.js';
import { packageRoot } from '../loader.js';
import { ByteSink, checkIds, checkText, cleanUpTokenization, decodeUtf8Lossy } from './common.js';
import type { Tokenizer } from './index.js';

export const GPT2_EOT = '<|endoftext|>';
export const GPT2_EOT_ID = 50256;
export const GPT2_MASK_ID = 50257;
/** 50,257 BPE tokens (incl. <|endoftext|>) + the mask token. */
export const GPT2_VOCAB_SIZE = 50258;

export interface Gpt2Options {
  /** Apply HF's clean_up_tokenization in decode (default true, as HF's GPT-2 decode does). */
  cleanup?: boolean;
}

/** The GPT-2 split regex (r50k_base; the same as Hugging Face's GPT-2 pre-tokenizer). */
const SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

interface Ranks {
  /** Bytes of each rank 0..50255. */
  bytes: Uint8Array[];
  /** Rank of a byte sequence, keyed by its latin1 string. */
  rank: Map<string, number>;
}
let ranks: Ranks | null = null;

/** Reads data/gpt2-r50k.bin.gz (written by tools/gpt2-ranks.mjs): per rank a length byte, then the bytes. */
function loadRanks(): Ranks {
  if (ranks) return ranks;
  const file = path.join(packageRoot(), 'data', 'gpt2-r50k.bin.gz');
  const raw = gunzipSync(readFileSync(file));
  const bytes: Uint8Array[] = [];
  const rank = new Map<string, number>();
  for (let i = 0; i < raw.length;) {
    const n = raw[i]!;
    const b = raw.subarray(i + 1, i + 1 + n);
    rank.set(latin1(b, 0, n), bytes.length);
    bytes.push(b);
    i += 1 + n;
  }
  if (bytes.length !== GPT2_EOT_ID) throw new EsolmError('ERR_INTERNAL', `${file}: expected ${GPT2_EOT_ID} ranks, read ${bytes.length}`);
  return (ranks = { bytes, rank });
}

function latin1(b: Uint8Array, from: number, to: number): string {
  let s = '';
  for (let i = from; i < to; i++) s += String.fromCharCode(b[i]!);
  return s;
}

/**
 * Byte-level BPE of one pre-tokenized piece: repeatedly merge the adjacent pair whose
 * concatenation has the lowest rank (tiktoken's byte_pair_merge).
 */
function bpe(piece: Uint8Array, r: Ranks, out: number[]): void {
  const whole = r.rank.get(latin1(piece, 0, piece.length));
  if (whole !== undefined) {
    out.push(whole);
    return;
  }
  // starts[i] is where part i begins; part i ends at starts[i + 1].
  const starts = Array.from({ length: piece.length + 1 }, (_, i) => i);
  const pairRank = (i: number): number => (i + 2 < starts.length
    ? r.rank.get(latin1(piece, starts[i]!, starts[i + 2]!)) ?? Infinity : Infinity);
  const pr = starts.slice(0, -1).map((_, i) => pairRank(i));
  for (;;) {
    let best = Infinity, at = -1;
    for (let i = 0; i < pr.length; i++) if (pr[i]! < best) { best = pr[i]!; at = i; }
    if (at < 0) break;
    starts.splice(at + 1, 1);
    pr.splice(at + 1, 1);
    pr[at] = pairRank(at);
    if (at > 0) pr[at - 1] = pairRank(at - 1);
  }
  for (let i = 0; i + 1 < starts.length; i++) out.push(r.rank.get(latin1(piece, starts[i]!, starts[i + 1]!))!);
}

/** Creates the GPT-2 tokenizer (reads the 210 KB rank table on first use). */
export async function createGpt2Tokenizer(opts: Gpt2Options = {}): Promise<Tokenizer> {
  const r = loadRanks();
  const cleanup = opts.cleanup ?? true;
  const te = new TextEncoder();
  const eot = te.encode(GPT2_EOT);
  const encodePart = (text: string, out: number[]): void => {
    for (const m of text.matchAll(SPLIT)) bpe(te.encode(m[0]), r, out);
  };

  return {
    name: 'gpt2',
    vocabSize: GPT2_VOCAB_SIZE,
    maskId: GPT2_MASK_ID,
    bosId: GPT2_EOT_ID,
    eosId: GPT2_EOT_ID,
    encode(text: string): Int32Array {
      checkText(text);
      const out: number[] = [];
      const parts = text.split(GPT2_EOT);
      for (let i = 0; i < parts.length; i++) {
        if (i > 0) out.push(GPT2_EOT_ID);
        const p = parts[i]!;
        if (p.length > 0) encodePart(p, out);
      }
      return Int32Array.from(out);
    },
    decode(ids: ArrayLike<number>): string {
      const a = checkIds('gpt2 decode', ids, GPT2_VOCAB_SIZE);
      const sink = new ByteSink();
      for (let i = 0; i < a.length; i++) {
        const id = a[i]!;
        if (id === GPT2_EOT_ID) sink.push(eot);
        else if (id !== GPT2_MASK_ID) sink.push(r.bytes[id]!);
      }
      const text = decodeUtf8Lossy(sink.bytes());
      return cleanup ? cleanUpTokenization(text) : text;
    },
  };
}
