// A minimal ZIP writer for hostile-archive tests: STORED or DEFLATE entries, with the
// CRC and declared size overridable to build corrupt archives.
import { crc32, deflateRawSync } from 'node:zlib';

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
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const method = e.method ?? 0;
    const body = method === 8 ? deflateRawSync(e.data) : e.data;
    const crc = e.crc ?? crc32(e.data);
    const size = e.size ?? e.data.length;
    const name = Buffer.from(e.name, 'utf8');
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(0x800, 6);
    lh.writeUInt16LE(method, 8);
    lh.writeUInt32LE(crc >>> 0, 14);
    lh.writeUInt32LE(body.length, 18);
    lh.writeUInt32LE(size, 22);
    lh.writeUInt16LE(name.length, 26);
    locals.push(lh, name, body);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(0x800, 8);
    ch.writeUInt16LE(method, 10);
    ch.writeUInt32LE(crc >>> 0, 16);
    ch.writeUInt32LE(body.length, 20);
    ch.writeUInt32LE(size, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(offset, 42);
    central.push(ch, name);
    offset += 30 + name.length + body.length;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
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
