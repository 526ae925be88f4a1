/**
 * GPT-2 byte-level BPE, identical to Hugging Face's GPT2TokenizerFast (PACKAGING-NOTES.md §5.2):
 * gpt-tokenizer's r50k_base ranks and split regex, plus the Eso-LM conventions.
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

type R50k = { encode: (text: string) => number[]; ranks: readonly (string | readonly number[])[] };
let r50k: Promise<R50k> | null = null;

function loadR50k(): Promise<R50k> {
  r50k ??= (async () => {
    const [enc, ranks] = await Promise.all([
      import('gpt-tokenizer/encoding/r50k_base'),
      import('gpt-tokenizer/bpeRanks/r50k_base'),
    ]);
    return { encode: (t: string) => enc.encode(t), ranks: ranks.default };
  })();
  return r50k;
}

/** Creates the GPT-2 tokenizer (loads the ~575 KB rank table on first use). */
export async function createGpt2Tokenizer(opts: Gpt2Options = {}): Promise<Tokenizer> {
  const { encode: bpe, ranks } = await loadR50k();
  const cleanup = opts.cleanup ?? true;
  let table: Uint8Array[] | null = null;
  const tokenBytes = (): Uint8Array[] => {
    if (table) return table;
    const te = new TextEncoder();
    const t: Uint8Array[] = new Array(GPT2_EOT_ID + 1);
    for (let i = 0; i < GPT2_EOT_ID; i++) {
      const r = ranks[i];
      t[i] = typeof r === 'string' ? te.encode(r) : Uint8Array.from(r as readonly number[]);
    }
    t[GPT2_EOT_ID] = te.encode(GPT2_EOT);
    table = t;
    return t;
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
        if (p.length > 0) for (const id of bpe(p)) out.push(id);
      }
      return Int32Array.from(out);
    },
    decode(ids: ArrayLike<number>): string {
      const a = checkIds('gpt2 decode', ids, GPT2_VOCAB_SIZE);
      const t = tokenBytes();
      const sink = new ByteSink();
      for (let i = 0; i < a.length; i++) {
        const id = a[i]!;
        if (id !== GPT2_MASK_ID) sink.push(t[id]!);
      }
      const text = decodeUtf8Lossy(sink.bytes());
      return cleanup ? cleanUpTokenization(text) : text;
    },
  };
}
