/**
 * safetensors reader: parses and strictly validates the header in JS; the tensor bytes
 * are read by native code straight from the file (no JS copy).
 * Format: u64 little-endian header length N, N bytes of JSON, then the data region.
 * Every tensor's data_offsets are relative to the data region; the tensors must tile it
 * exactly (no gaps, no overlaps), as the format requires. A name may appear only once
 * (JSON.parse would silently keep the last), and only regular files are opened.
 * I8 holds 8-bit matrices (lib/q8.ts); `__metadata__.quantization`, when present, must name
 * that format.
 */
import { readSync, closeSync } from 'node:fs';
import { EsolmError } from './errors.js';
import { openRegular, parseJson, topLevelKeys } from './files.js';
import type { TensorEntry } from './native.js';
import { Q8_METADATA } from './q8.js';

export type DType = 'F32' | 'BF16' | 'F16' | 'I8';
const DTYPE_SIZE: Record<DType, number> = { F32: 4, BF16: 2, F16: 2, I8: 1 };
const MAX_HEADER = 100 * 1024 * 1024;

function bad(file: string, msg: string): EsolmError {
  return new EsolmError('ERR_BAD_WEIGHTS', `${file}: ${msg}`);
}

/** Reads and validates one file's header; returns its tensors with absolute offsets. */
export function readSafetensorsHeader(file: string): TensorEntry[] {
  const { fd, size } = openRegular(file, 'safetensors file');
  try {
    if (size < 8) throw bad(file, `file is ${size} bytes, too short for a safetensors header`);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(size - 8)) throw bad(file, `header length ${n} exceeds the file size ${size}`);
    if (n > BigInt(MAX_HEADER)) throw bad(file, `header length ${n} is implausibly large`);
    const hlen = Number(n);
    const hbuf = Buffer.alloc(hlen);
    readSync(fd, hbuf, 0, hlen, 8);
    const text = hbuf.toString('utf8');
    const header = parseJson(text, `${file}: header`);
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad(file, 'header must be a JSON object');
    const seen = new Set<string>();
    for (const k of topLevelKeys(text)) {
      if (seen.has(k)) throw bad(file, `tensor '${k}' appears more than once in the header`);
      seen.add(k);
    }
    const dataStart = 8 + hlen;
    const dataSize = size - dataStart;
    const entries: TensorEntry[] = [];
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        const q = (raw as Record<string, unknown> | null)?.quantization;
        if (q !== undefined && q !== Q8_METADATA) {
          throw bad(file, `__metadata__ names quantization ${JSON.stringify(q)}; only "${Q8_METADATA}" (I8 matrices with F32 row scales) is supported`);
        }
        continue;
      }
      const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof t !== 'object' || t === null) throw bad(file, `tensor '${name}' has a malformed entry`);
      if (t.dtype !== 'F32' && t.dtype !== 'BF16' && t.dtype !== 'F16' && t.dtype !== 'I8') {
        throw bad(file, `tensor '${name}' has unsupported dtype ${JSON.stringify(t.dtype)} (F32, BF16, F16 and I8 are supported)`);
      }
      if (!Array.isArray(t.shape) || !t.shape.every((s) => Number.isInteger(s) && s >= 0)) {
        throw bad(file, `tensor '${name}' has an invalid shape ${JSON.stringify(t.shape)}`);
      }
      const off = t.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[0] > off[1]) {
        throw bad(file, `tensor '${name}' has invalid data_offsets ${JSON.stringify(off)}`);
      }
      const numel = (t.shape as number[]).reduce((a, b) => a * b, 1);
      const nbytes = off[1] - off[0];
      if (nbytes !== numel * DTYPE_SIZE[t.dtype]) {
        throw bad(file, `tensor '${name}' spans ${nbytes} bytes but shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${numel * DTYPE_SIZE[t.dtype]}`);
      }
      if (off[1] > dataSize) {
        throw bad(file, `tensor '${name}' data ends at byte ${off[1]} but the file holds only ${dataSize} data bytes (truncated?)`);
      }
      entries.push({ name, file, dtype: t.dtype, shape: t.shape as number[], offset: dataStart + off[0], nbytes });
    }
    // Contiguity: sorted by offset, the tensors must tile [0, dataSize) exactly.
    const sorted = [...entries].sort((a, b) => a.offset - b.offset || a.nbytes - b.nbytes);
    let cursor = dataStart;
    for (const e of sorted) {
      if (e.offset < cursor) throw bad(file, `tensor '${e.name}' overlaps the previous tensor`);
      if (e.offset > cursor) throw bad(file, `gap of ${e.offset - cursor} bytes before tensor '${e.name}' (data must be contiguous)`);
      cursor = e.offset + e.nbytes;
    }
    if (cursor !== size) throw bad(file, `${size - cursor} bytes after the last tensor (data must be contiguous)`);
    return entries;
  } finally {
    closeSync(fd);
  }
}
