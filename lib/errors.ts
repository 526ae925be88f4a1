/**
 * Typed errors. Every error esolm throws or rejects with is an {@link EsolmError} with a
 * stable `code`; native errors are converted at the boundary.
 */
export type ErrorCode =
  | 'ERR_INVALID_ARG'
  | 'ERR_BAD_WEIGHTS'
  | 'ERR_NO_CUDA'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_DISPOSED'
  | 'ERR_ABORTED'
  | 'ERR_IO'
  | 'ERR_NO_ADDON'
  | 'ERR_INTERNAL';

export class EsolmError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EsolmError';
    this.code = code;
  }
}

const KNOWN = new Set<string>([
  'ERR_INVALID_ARG', 'ERR_BAD_WEIGHTS', 'ERR_NO_CUDA', 'ERR_OUT_OF_MEMORY', 'ERR_DISPOSED',
  'ERR_ABORTED', 'ERR_IO', 'ERR_NO_ADDON', 'ERR_INTERNAL',
]);

/** Converts an error thrown by the native addon into an EsolmError (keeps EsolmErrors). */
export function fromNative(e: unknown): EsolmError {
  if (e instanceof EsolmError) return e;
  const err = e as { code?: unknown; message?: unknown; cause?: unknown };
  const code = typeof err?.code === 'string' && KNOWN.has(err.code) ? (err.code as ErrorCode) : 'ERR_INTERNAL';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  // A native error with a cause (what a step callback threw) passes that cause on.
  return new EsolmError(code, message, { cause: err !== null && typeof err === 'object' && 'cause' in err ? err.cause : e });
}

/** Awaits a native promise, converting its rejection. */
export async function native<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw fromNative(e);
  }
}

/** Runs a synchronous native call, converting what it throws. */
export function nativeSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNative(e);
  }
}

export function invalidArg(message: string): EsolmError {
  return new EsolmError('ERR_INVALID_ARG', message);
}

/** "Expected {what} for {name} but received {value}" (sharp style). */
export function expected(what: string, name: string, value: unknown): EsolmError {
  const shown = typeof value === 'string' ? JSON.stringify(value) : ArrayBuffer.isView(value) ? value.constructor.name : String(value);
  return invalidArg(`Expected ${what} for ${name} but received ${shown} of type ${typeof value}`);
}
