// Hostile-archive builders: ZIPs (zip-writer.mjs) and a pickle whose memo forms a DAG.
import { buildZip as buildZipJs } from './zip-writer.mjs';

export interface ZipInput {
  name: string;
  data: Buffer;
  method?: 0 | 8;
  /** Override the CRC-32 written to the headers. */
  crc?: number;
  /** Override the uncompressed size written to the headers. */
  size?: number;
}

export function buildZip(entries: ZipInput[]): Buffer {
  return buildZipJs(entries);
}

/**
 * A pickle (protocol 2) of {'hyper_parameters': L[depth]} where L[0] = [] and
 * L[i] = [L[i-1], L[i-1]] through the memo: a few bytes, 2^depth leaves when expanded.
 */
export function dagPickle(depth: number): Buffer {
  const key = Buffer.from('hyper_parameters', 'utf8');
  const parts: number[] = [0x80, 0x02, 0x7d /* } */, 0x58 /* X */];
  const len = Buffer.alloc(4);
  len.writeUInt32LE(key.length, 0);
  parts.push(...len, ...key);
  parts.push(0x5d /* ] */, 0x71, 0 /* BINPUT 0 */, 0x30 /* POP */);
  for (let i = 1; i <= depth; i++) {
    parts.push(0x28 /* MARK */, 0x68, i - 1, 0x68, i - 1 /* BINGET x2 */, 0x6c /* LIST */, 0x71, i /* BINPUT */, 0x30 /* POP */);
  }
  parts.push(0x68, depth /* BINGET */, 0x73 /* SETITEM */, 0x2e /* STOP */);
  return Buffer.from(parts);
}
