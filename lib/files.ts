/**
 * File reading for untrusted model folders: only regular files are opened for reading
 * (a FIFO or device in place of a file would block the event loop forever), and JSON
 * errors name the position, never the file's bytes.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { EsolmError } from './errors.js';

/**
 * Opens `file` for reading if it is a regular file (the open itself never blocks);
 * throws ERR_IO otherwise. The caller closes the descriptor.
 */
export function openRegular(file: string, what = 'file'): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new EsolmError('ERR_IO', `cannot open ${what} ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw new EsolmError('ERR_IO', `${what} ${file} is not a regular file`);
  }
  return { fd, size: st.size };
}

/** A regular file's whole content, up to `maxBytes` (ERR_BAD_WEIGHTS beyond). */
export function readRegularFile(file: string, what = 'file', maxBytes = 512 * 2 ** 20): Buffer {
  const { fd, size } = openRegular(file, what);
  try {
    if (size > maxBytes) throw new EsolmError('ERR_BAD_WEIGHTS', `${what} ${file} is ${size} bytes, more than the ${maxBytes} allowed`);
    const buf = Buffer.allocUnsafe(size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, buf, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return buf.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

/** JSON.parse whose error says where, not what: messages never echo file contents. */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const at = /position (\d+)/.exec((e as Error).message);
    throw new EsolmError('ERR_BAD_WEIGHTS', `${what} is not valid JSON${at ? ` (error at byte offset ${at[1]})` : ''}`);
  }
}

/** The keys of a valid JSON text's top-level object, duplicates included, in order. */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}
