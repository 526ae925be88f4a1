/**
 * Text for partial sequences: what a client sees while a sequence denoises. Masked slots
 * show as MASK_CHAR; with the bytes tokenizer, runs of revealed bytes decode together so
 * multi-byte characters show. Without a tokenizer, token ids are shown.
 */
import type { Tokenizer } from '../tokenizers/index.js';

export const MASK_CHAR = '░';

/** The current state of one sequence (mask id where not yet revealed). */
export function renderPartial(tokens: ArrayLike<number>, mask: number, tok: Tokenizer | null): string {
  let out = '';
  let run: number[] = [];
  const flush = (): void => {
    if (run.length) out += tok ? tok.decode(run) : run.join(' ') + ' ';
    run = [];
  };
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t === mask) {
      flush();
      out += MASK_CHAR;
    } else if (tok && tok.name !== 'bytes') {
      out += tok.decode([t]);  // subword tokens decode one by one
    } else {
      run.push(t);
    }
  }
  flush();
  return out;
}

/** One token's text (for the page's slots). */
export function tokenPiece(t: number, tok: Tokenizer | null): string {
  return tok ? tok.decode([t]) : String(t);
}

/** Decoded text of completed tokens (ids joined by spaces without a tokenizer). */
export function decodeTokens(tokens: ArrayLike<number>, tok: Tokenizer | null): string {
  return tok ? tok.decode(tokens) : Array.from(tokens).join(' ');
}

/**
 * OpenAI-style streaming of a sequence that fills in out of order: the text of the
 * contiguous revealed run after the prompt, sent as it grows. A trailing partial UTF-8
 * character (U+FFFD) is held back until the next byte arrives.
 */
export class PrefixStreamer {
  private sent = '';
  constructor(private readonly start: number, private readonly mask: number, private readonly tok: Tokenizer | null) {}

  /** The new text to send now ('' if none). */
  next(tokens: ArrayLike<number>): string {
    let end = this.start;
    while (end < tokens.length && tokens[end] !== this.mask) end++;
    const text = decodeTokens(Array.from(tokens).slice(this.start, end), this.tok).replace(/\uFFFD+$/, '');
    return this.advance(text);
  }

  /** The rest of the final text. */
  finish(tokens: ArrayLike<number>): string {
    return this.advance(decodeTokens(Array.from(tokens).slice(this.start), this.tok));
  }

  private advance(text: string): string {
    if (!text.startsWith(this.sent)) return '';  // a decode that changed earlier text (not seen with byte-level tokenizers)
    const delta = text.slice(this.sent.length);
    this.sent = text;
    return delta;
  }
}
