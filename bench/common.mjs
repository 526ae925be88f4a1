// bench/common.mjs — what the benchmark scripts share: command-line options and the small
// model (hidden 768, 12 heads, 12 blocks, vocab 50258) with random F32 weights, written
// once to a temporary folder and reused.
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model } from '../dist/index.js';
import { writeRandomModel, SMALL_CONFIG } from '../dist/testing.js';

const args = process.argv.slice(2);

/** The value after `--name` on the command line, or `dflt`. */
export function opt(name, dflt) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}

/** Loads the small random model (writing it first if needed). */
export async function loadSmallModel(loadOptions) {
  const dir = path.join(os.tmpdir(), 'esolm-bench-small-f32');
  if (!existsSync(path.join(dir, 'model.safetensors'))) {
    console.log(`writing random small model to ${dir} ...`);
    writeRandomModel(dir, SMALL_CONFIG, { seed: 7, dtype: 'F32' });
  }
  return Model.load(dir, loadOptions);
}
