// Packaging: `npm run prebuild` (prebuildify through the cmake-js shim) makes the
// linux-x64 prebuild; `npm pack` bundles it; the tarball installed into an empty folder
// with install scripts disabled loads the addon from the bundled prebuild and runs a model.
// Works on a temporary copy of the package so the checkout's own build is untouched.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const tmp = mkdtempSync(path.join(tmpdir(), 'esolm-pack-'));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('prebuild, pack and install without scripts', () => {
  it('installs from the tarball and loads the bundled prebuild', () => {
    const pkg = path.join(tmp, 'pkg');
    const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard'], { cwd: root, encoding: 'utf8' })
      .split('\n').filter((f) => f && !f.startsWith('test/') && !f.startsWith('bench/') && existsSync(path.join(root, f)));
    for (const f of files) {
      mkdirSync(path.dirname(path.join(pkg, f)), { recursive: true });
      cpSync(path.join(root, f), path.join(pkg, f));
    }
    cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
    symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'), 'dir');

    execFileSync(npm, ['run', 'prebuild'], { cwd: pkg, stdio: 'pipe', env: { ...process.env, ESOLM_CMAKE_ARGS: '' } });
    const prebuild = path.join(pkg, 'prebuilds', `${process.platform}-${process.arch}`, 'esolm.node');
    expect(existsSync(prebuild)).toBe(true);

    const packOut = execFileSync(npm, ['pack', '--ignore-scripts', '--pack-destination', tmp], { cwd: pkg, encoding: 'utf8' });
    const tarball = path.join(tmp, packOut.trim().split('\n').pop() as string);
    expect(existsSync(tarball)).toBe(true);

    const app = path.join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
    execFileSync(npm, ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app, stdio: 'pipe' });
    const installed = path.join(app, 'node_modules', 'esolm');
    expect(existsSync(path.join(installed, 'build'))).toBe(false);  // nothing was built there
    expect(readdirSync(path.join(installed, 'prebuilds'))).toContain(`${process.platform}-${process.arch}`);

    const script = `
      import { Model, writeRandomModel, loadCpuAddon, addonPath } from 'esolm';
      import os from 'node:os'; import path from 'node:path';
      const dir = path.join(${JSON.stringify(tmp)}, 'model');
      writeRandomModel(dir, { arch: 'esolm', hidden_size: 32, n_heads: 4, n_blocks: 1, cond_dim: 8, vocab_size: 17, mask_index: 16, length: 8 });
      const m = await Model.load(dir, { backend: 'cpu' });
      const logits = await m.forward({ tokens: Int32Array.from([1, 2, 3, 16]) });
      console.log(JSON.stringify({ from: addonPath(loadCpuAddon()), n: logits.length, finite: logits.every(Number.isFinite) }));
      m.dispose();`;
    writeFileSync(path.join(app, 'check.mjs'), script);
    const out = JSON.parse(execFileSync(process.execPath, ['check.mjs'], { cwd: app, encoding: 'utf8' }).trim().split('\n').pop() as string);
    expect(out.from).toBe(path.join(installed, 'prebuilds', `${process.platform}-${process.arch}`, 'esolm.node'));
    expect(out.n).toBe(4 * 17);
    expect(out.finite).toBe(true);
  }, 900_000);
});
