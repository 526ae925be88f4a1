// Tokenizers (lib/tokenizers): GPT-2 BPE as Hugging Face's GPT2TokenizerFast encodes and decodes,
// a tokenizer.json (WordPiece) through @huggingface/tokenizers, the byte tokenizer, and
// loadTokenizer's selection and errors.
//
// GPT-2 ids are pinned from the r50k_base vocabulary, which PACKAGING-NOTES.md §5.2 checked
// entry by entry against HF's vocab.json (and 2,573 texts encoded identically by HF's port).
// test/fixtures/tokenizers/tiny-bert/ is a hand-made bert-base-uncased-style tokenizer.json
// (BertNormalizer lowercase, BertPreTokenizer, WordPiece "##", 28 tokens, [MASK] = 4).
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '../lib/config.js';
import { EsolmError } from '../lib/errors.js';
import {
  type Tokenizer, cleanUpTokenization, createBytesTokenizer, createGpt2Tokenizer, loadTokenizer, loadTokenizerJson,
} from '../lib/tokenizers/index.js';

const BERT_DIR = fileURLToPath(new URL('./fixtures/tokenizers/tiny-bert', import.meta.url));

function errorOf(fn: () => unknown): EsolmError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(EsolmError);
    return e as EsolmError;
  }
  throw new Error('expected an EsolmError');
}

async function rejectionOf(p: Promise<unknown>): Promise<EsolmError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(EsolmError);
    return e as EsolmError;
  }
  throw new Error('expected a rejection');
}

const ids = (a: Int32Array): number[] => [...a];

describe('gpt2', () => {
  let gpt2: Tokenizer;
  let raw: Tokenizer;
  beforeAll(async () => {
    gpt2 = await createGpt2Tokenizer();
    raw = await createGpt2Tokenizer({ cleanup: false });
  });

  it('describes itself', () => {
    expect(gpt2.name).toBe('gpt2');
    expect(gpt2.vocabSize).toBe(50258);
    expect(gpt2.maskId).toBe(50257);
    expect(gpt2.bosId).toBe(50256);
    expect(gpt2.eosId).toBe(50256);
  });

  it('encodes known texts to the GPT-2 ids', () => {
    expect(ids(gpt2.encode('Hello world'))).toEqual([15496, 995]);
    expect(ids(gpt2.encode(' Hello world'))).toEqual([18435, 995]);
    expect(ids(gpt2.encode('Hello, my dog is cute'))).toEqual([15496, 11, 616, 3290, 318, 13779]);
    expect(ids(gpt2.encode("Hello , world . It 's"))).toEqual([15496, 837, 995, 764, 632, 705, 82]);
    expect(ids(gpt2.encode(''))).toEqual([]);
    expect(gpt2.encode('x')).toBeInstanceOf(Int32Array);
  });

  it('recognises <|endoftext|> anywhere in the text, as HF does', () => {
    expect(ids(gpt2.encode('<|endoftext|>'))).toEqual([50256]);
    expect(ids(gpt2.encode(' <|endoftext|>'))).toEqual([220, 50256]);
    // gpt-tokenizer alone gives [64, 27, 91, 437, 1659, 5239, 91, 29, 65] here
    expect(ids(gpt2.encode('a<|endoftext|>b'))).toEqual([64, 50256, 65]);
    expect(ids(gpt2.encode('Hello world<|endoftext|><|endoftext|>Hello world'))).toEqual([15496, 995, 50256, 50256, 15496, 995]);
    // a near miss is plain text
    expect(ids(gpt2.encode('<|endoftext|'))).not.toContain(50256);
  });

  it('decodes 50256 as <|endoftext|> and drops the mask id', () => {
    expect(gpt2.decode([15496, 995, 50256])).toBe('Hello world<|endoftext|>');
    expect(gpt2.decode([50257])).toBe('');
    expect(gpt2.decode([15496, 50257, 995, 50257])).toBe('Hello world');
    expect(gpt2.decode([])).toBe('');
    expect(gpt2.decode(new Int32Array([15496, 995]))).toBe('Hello world');
  });

  it("applies HF's clean_up_tokenization on decode (GPT-2's default), and not with cleanup: false", () => {
    const t = gpt2.encode("Hello , world . It 's");
    expect(gpt2.decode(t)).toBe("Hello, world. It's");
    expect(raw.decode(t)).toBe("Hello , world . It 's");
    const s = "a . b ? c ! d , e ' f n't g 'm h 's i 've j 're k";
    expect(cleanUpTokenization(s)).toBe("a. b? c! d, e'fn't g'm h's i've j're k");
    expect(gpt2.decode(raw.encode(s))).toBe(cleanUpTokenization(s));
    expect(raw.decode(raw.encode(s))).toBe(s);
  });

  it('round-trips unicode text', () => {
    const texts = [
      'Ünïcödé façade — naïve café, 東京は晴れ。 Привет, мир! Γειά σου 👍🏽 🇯🇵 e\u0301',
      '\u00a0non-breaking\u2003em space\u200bzero width\ttab\r\nCRLF',
      '\ufeffleading BOM',
      'emoji family 👨‍👩‍👧‍👦 and math ∑∫√ and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
      '   leading and trailing spaces   ',
    ];
    for (const s of texts) {
      const t = raw.encode(s);
      expect(raw.decode(t)).toBe(s);
      expect(gpt2.decode(t)).toBe(s); // none of these contain a cleanup pattern
    }
  });

  it('decodes a trailing partial UTF-8 character as one U+FFFD (HF rule)', () => {
    const thumbs = gpt2.encode('👍');
    expect(thumbs.length).toBeGreaterThan(1);
    expect(gpt2.decode(thumbs)).toBe('👍');
    expect(gpt2.decode(thumbs.subarray(0, thumbs.length - 1))).toBe('\ufffd');
    expect(gpt2.decode([41840])).toBe('\ufffd');
    const t = gpt2.encode('ok 👍');
    expect(gpt2.decode(t.subarray(0, t.length - 1))).toBe('ok \ufffd');
    // an incomplete character in the middle is replaced too, the rest is kept
    expect(gpt2.decode([...thumbs.subarray(0, thumbs.length - 1), 15496])).toBe('\ufffdHello');
  });

  it('rejects bad input with ERR_INVALID_ARG', () => {
    for (const bad of [[50258], [-1], [1.5], [Number.NaN]]) {
      const e = errorOf(() => gpt2.decode(bad));
      expect(e.code).toBe('ERR_INVALID_ARG');
      expect(e.message).toMatch(/ids\[0\]/);
    }
    expect(errorOf(() => gpt2.decode(null as unknown as number[])).code).toBe('ERR_INVALID_ARG');
    expect(errorOf(() => gpt2.encode(42 as unknown as string)).code).toBe('ERR_INVALID_ARG');
  });
});

describe('tokenizer.json (WordPiece, bert-base-uncased style)', () => {
  let bert: Tokenizer;
  beforeAll(async () => {
    bert = await loadTokenizerJson(join(BERT_DIR, 'tokenizer.json'), { name: 'bert-base-uncased', requireWordPiece: true });
  });

  it('encodes lowercased, accent-stripped word pieces without [CLS]/[SEP]', () => {
    expect(bert.vocabSize).toBe(28);
    expect(bert.maskId).toBe(4);
    expect(bert.bosId).toBe(2);
    expect(bert.eosId).toBe(3);
    expect(ids(bert.encode('Hello, my dog is cute'))).toEqual([5, 7, 20, 21, 22, 23]);
    expect(ids(bert.encode('unaffable'))).toEqual([15, 16, 17]);
    expect(ids(bert.encode('Naïve CAFÉ'))).toEqual([18, 19]);
    expect(ids(bert.encode('hello [MASK] world'))).toEqual([5, 4, 6]);
    expect(ids(bert.encode('zebra'))).toEqual([1]);
    expect(ids(bert.encode(''))).toEqual([]);
  });

  it("decodes as HF does (joins pieces, cleans up spaces), dropping the mask id", () => {
    expect(bert.decode([5, 7, 6, 8])).toBe('hello, world.');
    expect(bert.decode([15, 16, 17])).toBe('unaffable');
    expect(bert.decode([14, 11, 12, 24, 27, 9])).toBe("it's the cat!");
    expect(bert.decode([2, 5, 3])).toBe('[CLS] hello [SEP]');
    expect(bert.decode([5, 4, 6])).toBe('hello world');
    expect(bert.decode([4])).toBe('');
    expect(bert.decode([])).toBe('');
    expect(errorOf(() => bert.decode([28])).code).toBe('ERR_INVALID_ARG');
  });
});

describe('bytes', () => {
  const b = createBytesTokenizer();

  it('maps UTF-8 bytes to ids 0..255; vocab 257, mask 256', () => {
    expect(b.name).toBe('bytes');
    expect(b.vocabSize).toBe(257);
    expect(b.maskId).toBe(256);
    expect(ids(b.encode('hé'))).toEqual([104, 195, 169]);
    expect(ids(b.encode(''))).toEqual([]);
  });

  it('round-trips text and drops the mask', () => {
    for (const s of ['plain ascii', 'Ünïcödé 東京 👍🏽', '\ufeffBOM kept', "no cleanup: it 's . ,"]) {
      expect(b.decode(b.encode(s))).toBe(s);
    }
    expect(b.decode([104, 256, 105, 256])).toBe('hi');
  });

  it('replaces invalid UTF-8 with U+FFFD (one per maximal invalid subpart)', () => {
    expect(b.decode([104, 195])).toBe('h\ufffd'); // trailing partial character
    expect(b.decode([0xf0, 0x9f, 0x91])).toBe('\ufffd'); // 3 of 4 bytes of 👍
    expect(b.decode([0xff, 65])).toBe('\ufffdA');
    expect(b.decode([0xc3, 65])).toBe('\ufffdA');
  });

  it('rejects ids outside [0, 257)', () => {
    expect(errorOf(() => b.decode([257])).code).toBe('ERR_INVALID_ARG');
    expect(errorOf(() => b.decode([-1])).code).toBe('ERR_INVALID_ARG');
  });
});

describe('loadTokenizer', () => {
  let dir: string;
  const base: ModelConfig = { arch: 'esolm', hidden_size: 32, n_heads: 4, n_blocks: 2, cond_dim: 16, vocab_size: 50258, mask_index: 50257, length: 64 };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'esolm-tok-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('returns null without a tokenizer field', async () => {
    expect(await loadTokenizer(base, dir)).toBeNull();
  });

  it('selects gpt2 and bytes, and checks them against the model', async () => {
    const g = await loadTokenizer({ ...base, tokenizer: 'gpt2' }, dir);
    expect(g?.name).toBe('gpt2');
    expect(ids(g!.encode('Hello world'))).toEqual([15496, 995]);
    expect(await loadTokenizer({ ...base, arch: 'ar', mask_index: -1, tokenizer: 'gpt2' }, dir)).not.toBeNull();
    expect((await rejectionOf(loadTokenizer({ ...base, mask_index: 5, tokenizer: 'gpt2' }, dir))).code).toBe('ERR_BAD_WEIGHTS');
    expect((await rejectionOf(loadTokenizer({ ...base, vocab_size: 1000, mask_index: 999, tokenizer: 'gpt2' }, dir))).code).toBe('ERR_BAD_WEIGHTS');

    const y = await loadTokenizer({ ...base, vocab_size: 257, mask_index: 256, tokenizer: 'bytes' }, dir);
    expect(y?.name).toBe('bytes');
    expect((await rejectionOf(loadTokenizer({ ...base, vocab_size: 257, mask_index: 0, tokenizer: 'bytes' }, dir))).code).toBe('ERR_BAD_WEIGHTS');
    expect((await rejectionOf(loadTokenizer({ ...base, vocab_size: 61, mask_index: 60, tokenizer: 'bytes' }, dir))).code).toBe('ERR_BAD_WEIGHTS');
  });

  it('reads bert-base-uncased from the folder tokenizer.json, with the config mask id', async () => {
    const cfg: ModelConfig = { ...base, vocab_size: 28, mask_index: 4, tokenizer: 'bert-base-uncased' };
    const t = await loadTokenizer(cfg, BERT_DIR);
    expect(t?.name).toBe('bert-base-uncased');
    expect(t?.maskId).toBe(4);
    expect(ids(t!.encode('Hello, my dog is cute'))).toEqual([5, 7, 20, 21, 22, 23]);
    // a mask row after the tokenizer's vocabulary
    const t2 = await loadTokenizer({ ...cfg, vocab_size: 29, mask_index: 28 }, BERT_DIR);
    expect(t2?.decode([5, 28, 6])).toBe('hello world');

    const e = await rejectionOf(loadTokenizer(cfg, dir));
    expect(e.code).toBe('ERR_IO');
    expect(e.message).toMatch(/tokenizer\.json/);
    const small = await rejectionOf(loadTokenizer({ ...cfg, vocab_size: 10, mask_index: 4 }, BERT_DIR));
    expect(small.code).toBe('ERR_BAD_WEIGHTS');
  });

  it('reads a tokenizer.json path relative to the model folder', async () => {
    mkdirSync(join(dir, 'tok'), { recursive: true });
    copyFileSync(join(BERT_DIR, 'tokenizer.json'), join(dir, 'tok', 'my-tokenizer.json'));
    const t = await loadTokenizer({ ...base, vocab_size: 28, mask_index: 4, tokenizer: 'tok/my-tokenizer.json' }, dir);
    expect(t?.name).toBe('tok/my-tokenizer.json');
    expect(ids(t!.encode('unaffable'))).toEqual([15, 16, 17]);
    const e = await rejectionOf(loadTokenizer({ ...base, tokenizer: 'nope/tokenizer.json' }, dir));
    expect(e.code).toBe('ERR_IO');
    expect(e.message).toMatch(/nope[/\\]tokenizer\.json/);
  });

  it('names the file of a malformed or wrong tokenizer.json (ERR_BAD_WEIGHTS)', async () => {
    const bad = join(dir, 'broken');
    mkdirSync(bad, { recursive: true });
    writeFileSync(join(bad, 'tokenizer.json'), '{ not json');
    let e = await rejectionOf(loadTokenizer({ ...base, tokenizer: 'bert-base-uncased' }, bad));
    expect(e.code).toBe('ERR_BAD_WEIGHTS');
    expect(e.message).toContain(join(bad, 'tokenizer.json'));

    writeFileSync(join(bad, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] } }));
    e = await rejectionOf(loadTokenizer({ ...base, tokenizer: 'bert-base-uncased' }, bad));
    expect(e.code).toBe('ERR_BAD_WEIGHTS');
    expect(e.message).toMatch(/WordPiece/);

    writeFileSync(join(bad, 'tokenizer.json'), JSON.stringify({ hello: 1 }));
    e = await rejectionOf(loadTokenizer({ ...base, tokenizer: 'tokenizer.json' }, bad));
    expect(e.code).toBe('ERR_BAD_WEIGHTS');
  });
});
