// Builds the native test executables (test/native/*_test.cpp, plain C++ without Node)
// with CMake and runs each one: Philox known answers, the sampler and plan tests, and
// the fast CPU ops against the plain-loop reference backend.
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const buildDir = path.join(root, 'build-native-test');
const tests = readdirSync(path.join(root, 'test', 'native')).filter((f) => f.endsWith('_test.cpp')).map((f) => f.replace(/\.cpp$/, ''));

describe('native tests (ctest executables)', () => {
  beforeAll(() => {
    execFileSync('cmake', ['-S', root, '-B', buildDir, '-DESOLM_NATIVE_TESTS=ON', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
    execFileSync('cmake', ['--build', buildDir, '-j2', '--target', ...tests], { stdio: 'pipe' });
  }, 600_000);

  it('found the native tests', () => {
    expect(tests).toEqual(expect.arrayContaining(['philox_test', 'sampler_test', 'schedule_test', 'cpu_ops_test', 'kv_loop_test', 'mdlm_test']));
  });

  for (const t of tests) {
    it(t, () => {
      const r = spawnSync(path.join(buildDir, t), [], { encoding: 'utf8', timeout: 300_000 });
      if (r.status !== 0) console.log(r.stdout.slice(-4000), r.stderr.slice(-2000));
      expect(r.status).toBe(0);
    }, 300_000);
  }
});
