/**
 * A small read-only ZIP reader for torch.save archives (PyTorch Lightning .ckpt, pytorch_model.bin).
 *
 * torch writes every entry STORED (method 0), 64-byte aligned, with a data descriptor (flag
 * bit 3: the local header's CRC and sizes are zero), and zip64 records once the archive or an
 * entry passes 4 GiB. So sizes and offsets come from the central directory (zip64 extra fields
 * where a 32-bit field is 0xFFFFFFFF), and the local header is read only to find where the
 * data starts. DEFLATE entries (method 8, not written by torch) are inflated in memory. Data is
 * read on demand with positioned reads: the archive is never loaded whole.
 *
 * Untrusted input: every entry's CRC-32 is verified the first time it is read (a whole
 * pass over the entry), inflation stops at the entry's declared size (at most
 * MAX_INFLATED bytes), and only regular files are opened.
 */
import { closeSync, readSync } from 'node:fs';
import { crc32, inflateRawSync } from 'node:zlib';
import { EsolmError } from '../errors.js';
import { openRegular } from '../files.js';

export interface ZipEntry {
  name: string;
  /** 0 = STORED, 8 = DEFLATE. */
  method: number;
  compressedSize: number;
  size: number;
  /** Offset of the local file header. */
  headerOffset: number;
  /** CRC-32 of the uncompressed data, from the central directory. */
  crc: number;
  /** Offset of the entry's data (resolved from the local header on first use). */
  dataOffset?: number;
  /** Whether the CRC has been checked. */
  verified?: boolean;
}

/** The most bytes a DEFLATE entry may inflate to (torch writes STORED; this caps a bomb). */
export const MAX_INFLATED = 2 ** 30;

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('a 64-bit zip field exceeds 2^53');
  return Number(v);
}

export class ZipReader {
  readonly file: string;
  readonly size: number;
  readonly entries = new Map<string, ZipEntry>();
  private fd: number | null;

  private constructor(file: string, fd: number, size: number) {
    this.file = file;
    this.fd = fd;
    this.size = size;
  }

  /** Opens a ZIP archive and reads its central directory. ERR_IO if unreadable, ERR_BAD_WEIGHTS if malformed. */
  static open(file: string): ZipReader {
    const { fd, size } = openRegular(file, 'checkpoint');
    const zip = new ZipReader(file, fd, size);
    try {
      zip.readCentralDirectory();
    } catch (e) {
      zip.close();
      if (e instanceof EsolmError) throw e;
      throw zip.bad(`malformed ZIP archive (${(e as Error).message})`);
    }
    return zip;
  }

  private bad(msg: string): EsolmError {
    return new EsolmError('ERR_BAD_WEIGHTS', `${this.file}: ${msg}`);
  }

  /** Reads `length` bytes at absolute `offset`; throws if the file is shorter. */
  readAt(offset: number, length: number): Buffer {
    if (this.fd === null) throw new EsolmError('ERR_IO', `${this.file} is closed`);
    if (offset < 0 || offset + length > this.size) {
      throw this.bad(`read of ${length} bytes at ${offset} runs past the end of the file (${this.size} bytes; truncated?)`);
    }
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buf, done, length - done, offset + done);
      if (n === 0) throw this.bad(`unexpected end of file at ${offset + done}`);
      done += n;
    }
    return buf;
  }

  private readCentralDirectory(): void {
    if (this.size < 22) throw this.bad(`file is ${this.size} bytes, too short for a ZIP archive`);
    // End of central directory: 22 bytes + a comment of up to 65535 bytes, at the end.
    const tailLen = Math.min(this.size, 22 + U16_MAX);
    const tailStart = this.size - tailLen;
    const tail = this.readAt(tailStart, tailLen);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === SIG_EOCD && i + 22 + tail.readUInt16LE(i + 20) <= tailLen) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw this.bad('no end-of-central-directory record (not a ZIP archive, or truncated)');
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    const eocdAbs = tailStart + eocd;
    if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
      // zip64: the locator sits right before the EOCD and points at the zip64 EOCD record.
      if (eocdAbs < 20) throw this.bad('zip64 end-of-central-directory locator is missing');
      const loc = this.readAt(eocdAbs - 20, 20);
      if (loc.readUInt32LE(0) !== SIG_ZIP64_LOCATOR) throw this.bad('zip64 end-of-central-directory locator is missing');
      const recOffset = u64(loc, 8);
      const rec = this.readAt(recOffset, 56);
      if (rec.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw this.bad(`no zip64 end-of-central-directory record at ${recOffset}`);
      count = u64(rec, 32);
      cdSize = u64(rec, 40);
      cdOffset = u64(rec, 48);
    }
    if (cdOffset + cdSize > this.size) throw this.bad('central directory lies past the end of the file (truncated?)');
    const cd = this.readAt(cdOffset, cdSize);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) throw this.bad(`central directory entry ${i} is malformed`);
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      let compressedSize = cd.readUInt32LE(p + 20);
      let size = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      let headerOffset = cd.readUInt32LE(p + 42);
      if (p + 46 + nameLen + extraLen + commentLen > cd.length) throw this.bad(`central directory entry ${i} is malformed`);
      const name = cd.toString(flags & 0x800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen);
      // zip64 extended information (header id 1): the 64-bit values of exactly those fields
      // whose 32-bit field is 0xFFFFFFFF, in the order size, compressed size, offset.
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      while (e + 4 <= eEnd) {
        const id = cd.readUInt16LE(e);
        const len = cd.readUInt16LE(e + 2);
        if (id === 0x0001) {
          let q = e + 4;
          const need = (n: number): number => {
            if (q + 8 > e + 4 + len) throw this.bad(`zip64 extra field of '${name}' is too short`);
            const v = u64(cd, q);
            q += 8;
            return n === U32_MAX ? v : n;
          };
          if (size === U32_MAX) size = need(size);
          if (compressedSize === U32_MAX) compressedSize = need(compressedSize);
          if (headerOffset === U32_MAX) headerOffset = need(headerOffset);
        }
        e += 4 + len;
      }
      if (flags & 0x1) throw this.bad(`entry '${name}' is encrypted`);
      if (method !== 0 && method !== 8) throw this.bad(`entry '${name}' uses compression method ${method} (only STORED and DEFLATE are supported)`);
      if (method === 0 && compressedSize !== size) throw this.bad(`STORED entry '${name}' has compressed size ${compressedSize} != size ${size}`);
      if (headerOffset + 30 + compressedSize > this.size) throw this.bad(`entry '${name}' lies past the end of the file (truncated?)`);
      if (method === 8 && size > MAX_INFLATED) throw this.bad(`DEFLATE entry '${name}' declares ${size} bytes, more than the ${MAX_INFLATED} allowed`);
      this.entries.set(name, { name, method, compressedSize, size, headerOffset, crc });
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  /** Absolute offset of an entry's data (its local header's name and extra field skipped). */
  dataOffset(entry: ZipEntry): number {
    if (entry.dataOffset === undefined) {
      const h = this.readAt(entry.headerOffset, 30);
      if (h.readUInt32LE(0) !== SIG_LOCAL) throw this.bad(`no local header for entry '${entry.name}' at ${entry.headerOffset}`);
      const off = entry.headerOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
      if (off + entry.compressedSize > this.size) throw this.bad(`entry '${entry.name}' runs past the end of the file (truncated?)`);
      entry.dataOffset = off;
    }
    return entry.dataOffset;
  }

  /** The entry, or undefined. */
  get(name: string): ZipEntry | undefined {
    return this.entries.get(name);
  }

  /** An entry's whole (uncompressed) content, CRC-checked. */
  read(entry: ZipEntry): Buffer {
    const raw = this.readAt(this.dataOffset(entry), entry.compressedSize);
    let out = raw;
    if (entry.method !== 0) {
      try {
        // maxOutputLength: a bomb stops at the declared size instead of filling memory.
        out = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
      } catch (e) {
        throw this.bad(`entry '${entry.name}' cannot be inflated within its declared ${entry.size} bytes (${(e as Error).message})`);
      }
      if (out.length !== entry.size) throw this.bad(`entry '${entry.name}' inflated to ${out.length} bytes, expected ${entry.size}`);
    }
    this.checkCrc(entry, crc32(out));
    return out;
  }

  private checkCrc(entry: ZipEntry, got: number): void {
    if (got !== entry.crc) {
      throw this.bad(`entry '${entry.name}' fails its CRC-32 check (stored ${entry.crc.toString(16)}, computed ${got.toString(16)}): the file is corrupt`);
    }
    entry.verified = true;
  }

  /** Checks a STORED entry's CRC once, reading it in chunks. */
  private verify(entry: ZipEntry): void {
    if (entry.verified) return;
    const start = this.dataOffset(entry);
    const chunk = 16 * 2 ** 20;
    let crc = 0;
    for (let at = 0; at < entry.size; at += chunk) crc = crc32(this.readAt(start + at, Math.min(chunk, entry.size - at)), crc);
    this.checkCrc(entry, crc);
  }

  /** `length` bytes of a STORED entry starting at `offset` within it. */
  readRange(entry: ZipEntry, offset: number, length: number): Buffer {
    if (entry.method !== 0) return this.read(entry).subarray(offset, offset + length);
    if (offset < 0 || offset + length > entry.size) {
      throw this.bad(`read of bytes [${offset}, ${offset + length}) is outside entry '${entry.name}' (${entry.size} bytes)`);
    }
    this.verify(entry);
    return this.readAt(this.dataOffset(entry) + offset, length);
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }
}
