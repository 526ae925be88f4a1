// Writes data/gpt2-r50k.bin.gz, the GPT-2 (r50k_base) BPE ranks that lib/tokenizers/gpt2.ts
// reads: for rank 0..50255 in order, one length byte then the token's bytes; gzipped.
// Source: gpt-tokenizer's r50k_base table (a devDependency; the same vocabulary as Hugging
// Face's GPT-2, PACKAGING-NOTES.md §5.2). Run: node tools/gpt2-ranks.mjs
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import ranks from 'gpt-tokenizer/bpeRanks/r50k_base';

const te = new TextEncoder();
const parts = [];
for (const r of ranks) {
  const bytes = typeof r === 'string' ? te.encode(r) : Uint8Array.from(r);
  if (bytes.length === 0 || bytes.length > 255) throw new Error(`token of ${bytes.length} bytes`);
  parts.push(Uint8Array.of(bytes.length), bytes);
}
if (parts.length / 2 !== 50256) throw new Error(`expected 50256 ranks, got ${parts.length / 2}`);
const out = path.resolve(import.meta.dirname, '..', 'data', 'gpt2-r50k.bin.gz');
mkdirSync(path.dirname(out), { recursive: true });
const gz = gzipSync(Buffer.concat(parts), { level: 9 });
writeFileSync(out, gz);
console.log(`wrote ${out}: ${gz.length} bytes`);
