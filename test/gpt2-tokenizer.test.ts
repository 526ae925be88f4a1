// The light GPT-2 tokenizer (lib/tokenizers/gpt2.ts: our BPE over the shipped r50k ranks)
// gives exactly the ids gpt-tokenizer's r50k_base gave before (the devDependency is the
// reference), on the repository's own text and on random multilingual strings, and decodes
// them back.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { encode as refEncode } from 'gpt-tokenizer/encoding/r50k_base';
import { createGpt2Tokenizer } from '../lib/tokenizers/index.js';

const root = path.resolve(import.meta.dirname, '..');

/** The old encoder: split on <|endoftext|> (50256), gpt-tokenizer for the rest. */
function reference(text: string): number[] {
  const out: number[] = [];
  text.split('<|endoftext|>').forEach((p, i) => {
    if (i > 0) out.push(50256);
    if (p) out.push(...refEncode(p));
  });
  return out;
}

function corpus(): string[] {
  const texts: string[] = [];
  for (const dir of ['.', 'lib', 'lib/tokenizers', 'lib/checkpoint', 'models/default']) {
    for (const f of readdirSync(path.join(root, dir))) {
      if (/\.(md|ts|json)$/.test(f)) texts.push(readFileSync(path.join(root, dir, f), 'utf8'));
    }
  }
  // Random strings over a mixed alphabet: scripts, digits, punctuation, emoji, whitespace runs.
  const alphabet = [...'abcXYZ 019\'"sdtmllvere.,;:!?-_()[]{}<>/\\@#$%^&*+=~`|\t\n\r  ', 'é', 'ß', 'Ж', 'λ', '中', '文', 'の', 'ह', '😀', '👍🏽', '\u00a0', '\u3000', "'s", "'ll", '<|endoftext|>'];
  let seed = 12345;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  for (let k = 0; k < 300; k++) {
    let s = '';
    for (let i = 0, n = 1 + rnd(80); i < n; i++) s += alphabet[rnd(alphabet.length)];
    texts.push(s);
  }
  return texts;
}

describe('GPT-2 tokenizer (shipped r50k ranks)', () => {
  it('encodes a corpus to the same ids as gpt-tokenizer and decodes it back', async () => {
    const tok = await createGpt2Tokenizer({ cleanup: false });
    const texts = corpus();
    let tokens = 0;
    for (const text of texts) {
      const ids = Array.from(tok.encode(text));
      expect(ids).toEqual(reference(text));
      expect(tok.decode(ids)).toBe(text);
      tokens += ids.length;
    }
    expect(tokens).toBeGreaterThan(50_000);
  });

  it('known ids', async () => {
    const tok = await createGpt2Tokenizer();
    expect(Array.from(tok.encode('Hello world'))).toEqual([15496, 995]);
    expect(Array.from(tok.encode('a<|endoftext|>b'))).toEqual([64, 50256, 65]);
    expect(tok.decode([15496, 995, 50257])).toBe('Hello world');
  });
});
