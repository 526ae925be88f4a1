// Packaging as a user meets it: the tarballs from scripts/pack-all.mjs installed into an empty
// project whose PATH has only `node` (no compiler, no cmake; no install script runs). The
// prebuilt addon comes from @esolm/linux-x64; the CLI, the entry points and require() work;
// without the platform package the loader explains the miss and doctor fails; the CUDA package
// (when its addon is built here) loads and refuses CUDA without a driver, falling back to the CPU.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Packed, cudaBuilt, installApp, installReport, packAll, root } from './helpers/packed.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'esolm-pack-'));
const withCuda = cudaBuilt();
let packed: Packed;
let app: App;

beforeAll(() => {
  packed = packAll(path.join(tmp, 'out'), ['linux-x64', ...(withCuda ? ['linux-x64-cuda'] : [])]);
  app = installApp(path.join(tmp, 'app'), [packed.tarballs.esolm!, packed.tarballs['@esolm/linux-x64']!]);
}, 600_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const bin = (a: App): string => path.join(a.dir, 'node_modules', '.bin', 'esolm');

describe('platform packages', () => {
  it('the platform packages carry os/cpu/libc, the version of esolm, and a glibc floor', () => {
    const version = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version;
    for (const t of readdirSync(path.join(root, 'npm'))) {
      const pj = JSON.parse(readFileSync(path.join(root, 'npm', t, 'package.json'), 'utf8'));
      expect(pj.name).toBe(`@esolm/${t}`);
      expect(pj.version).toBe(version);
      expect(pj.os).toEqual(['linux']);
      expect(pj.libc).toEqual(['glibc']);
      expect(pj.cpu).toEqual([t.includes('arm64') ? 'arm64' : 'x64']);
      expect(pj.scripts).toBeUndefined();
    }
    // binding/compat/glibc_floor.cpp keeps the CPU addon loadable on old distributions
    // (Ubuntu 20.04 has 2.31, RHEL 8 2.28).
    // Every `node <file>` in package.json scripts names a file that exists (npm run bench, ...).
    const scripts = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).scripts as Record<string, string>;
    for (const [name, cmd] of Object.entries(scripts)) {
      for (const m of cmd.matchAll(/\bnode (\S+\.(?:m?js|cjs))/g)) {
        const f = m[1]!.startsWith('dist/') ? path.join('lib', m[1]!.slice(5).replace(/\.js$/, '.ts')) : m[1]!;
        expect(existsSync(path.join(root, f)), `npm run ${name}: ${m[1]}`).toBe(true);
      }
    }
    expect(packed.glibc['linux-x64']).toMatch(/^2\.\d+$/);
    expect(Number(packed.glibc['linux-x64']!.split('.')[1])).toBeLessThanOrEqual(28);
    const installed = JSON.parse(readFileSync(path.join(app.dir, 'node_modules', '@esolm', 'linux-x64', 'package.json'), 'utf8'));
    expect(installed.esolm.glibc).toBe(packed.glibc['linux-x64']);
  });

  it('installs with no compiler on the PATH and no install script; the published package.json lists the platform packages', () => {
    expect(app.run('sh', ['-c', 'command -v c++ || command -v g++ || command -v cmake']).status).not.toBe(0);
    const pj = JSON.parse(readFileSync(path.join(app.dir, 'node_modules', 'esolm', 'package.json'), 'utf8'));
    expect(Object.keys(pj.optionalDependencies).sort()).toEqual(['@esolm/linux-arm64', '@esolm/linux-x64', '@esolm/linux-x64-cuda']);
    for (const s of ['preinstall', 'install', 'postinstall', 'prepare']) expect(pj.scripts?.[s]).toBeUndefined();
    expect(pj.dependencies['cmake-js']).toBeUndefined();
    expect(pj.dependencies['node-addon-api']).toBeUndefined();
    expect(pj.dependencies['gpt-tokenizer']).toBeUndefined();
    expect(pj.license).toBe('MIT');
    expect(pj.repository).toBeDefined();
    const files = readdirSync(path.join(app.dir, 'node_modules', 'esolm'));
    expect(files).toContain('LICENSE');
    expect(files).not.toContain('build');
    const report = installReport(app.dir);
    console.log(`install: ${app.installSeconds.toFixed(1)} s, ${report.packages.length} packages, ${(report.bytes / 2 ** 20).toFixed(1)} MiB: ${report.packages.join(' ')}`);
  });

  it('npx esolm --version, doctor and generate', () => {
    const version = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version;
    const v = app.run(bin(app), ['--version']);
    expect(v.stdout.trim()).toBe(version);
    const doc = app.run(bin(app), ['doctor', '--json']);
    expect(doc.status, doc.stderr).toBe(0);
    const d = JSON.parse(doc.stdout);
    expect(d.version).toBe(version);
    expect(d.cpu.ok).toBe(true);
    expect(d.cpu.path).toBe(path.join(app.dir, 'node_modules', '@esolm', 'linux-x64', 'esolm_cpu.node'));
    const gen = app.run(bin(app), ['generate', '-n', '48', '-T', '8', '--seed', '3', 'In the beginning']);
    expect(gen.status, gen.stderr).toBe(0);
    expect(gen.stdout.startsWith('In the beginning')).toBe(true);
    expect(gen.stdout.trim().length).toBeGreaterThan('In the beginning'.length);
  });

  it('entry points: the default model, esolm/testing, esolm/cli, require(), no CLI modules in the main entry', () => {
    writeFileSync(path.join(app.dir, 'entry.mjs', ), `
      import { Model, Sampler, defaultModelDir } from 'esolm';
      import { writeRandomModel } from 'esolm/testing';
      import { buildProgram } from 'esolm/cli';
      import { createRequire } from 'node:module';
      import { fileURLToPath } from 'node:url';
      const m = await Model.load();
      const r = await m.generate({ sampler: new Sampler({ method: 'esolm', steps: 4, seed: 1 }), length: 16, prompt: 'And' });
      const cfg = fileURLToPath(import.meta.resolve('esolm/models/default/config.json'));
      const cjs = createRequire(import.meta.url)('esolm');
      console.log(JSON.stringify({ dir: m.dir, text: r.text[0], cfg, def: defaultModelDir(), rm: typeof writeRandomModel,
        cli: typeof buildProgram, cjs: typeof cjs.Model, same: cjs.Model === Model }));
      m.dispose();`);
    const r = app.run(process.execPath, ['entry.mjs']);
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    const def = path.join(app.dir, 'node_modules', 'esolm', 'models', 'default');
    expect(o).toMatchObject({ dir: def, def, cfg: path.join(def, 'config.json'), rm: 'function', cli: 'function', cjs: 'function', same: true });
    expect(o.text.startsWith('And')).toBe(true);
    // A CommonJS consumer.
    writeFileSync(path.join(app.dir, 'req.cjs'), "const { Model, EsolmError } = require('esolm'); console.log(typeof Model, typeof EsolmError);");
    const c = app.run(process.execPath, ['req.cjs']);
    expect(c.status, c.stderr).toBe(0);
    expect(c.stdout.trim()).toBe('function function');
    // The main entry's module graph does not reach commander or cli-progress.
    const dist = path.join(app.dir, 'node_modules', 'esolm', 'dist');
    const seen = new Set<string>();
    const bare = new Set<string>();
    const walk = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const m of readFileSync(file, 'utf8').matchAll(/^(?:import|export)\s[^;]*?from\s+'([^']+)'|import\('([^']+)'\)/gm)) {
        const spec = (m[1] ?? m[2])!;
        if (spec.startsWith('.')) walk(path.resolve(path.dirname(file), spec));
        else bare.add(spec);
      }
    };
    walk(path.join(dist, 'index.js'));
    expect(seen.size).toBeGreaterThan(10);
    expect([...bare].filter((s) => !s.startsWith('node:'))).not.toContain('commander');
    expect([...bare]).not.toContain('cli-progress');
    // stripInternal: no @internal members in the declarations.
    const dts = readFileSync(path.join(dist, 'model.d.ts'), 'utf8');
    const nativeDts = readFileSync(path.join(dist, 'native.d.ts'), 'utf8');
    expect(dts).not.toMatch(/native_|addon_|tail_|cancels_/);
    expect(nativeDts).toMatch(/phase: StepPhase/); // the literal union, declared once with the native shapes
  });

  it('without the platform package: one error that names the package and the fixes; doctor exits 1', () => {
    const bare = installApp(path.join(tmp, 'bare'), [packed.tarballs.esolm!], ['--omit=optional']);
    writeFileSync(path.join(bare.dir, 'load.mjs'), "import { Model } from 'esolm'; try { await Model.load(); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }");
    const r = JSON.parse(bare.run(process.execPath, ['load.mjs']).stdout);
    expect(r.code).toBe('ERR_NO_ADDON');
    expect(r.message).toContain('@esolm/linux-x64: not installed');
    expect(r.message).toContain('npm install @esolm/linux-x64@');
    expect(r.message).toContain('npx esolm build');
    const doc = bare.run(bin(bare), ['doctor']);
    expect(doc.status).toBe(1);
    expect(doc.stdout).toContain('NOT AVAILABLE');
  });

  it('a source build is only made when asked, and without a compiler says so', () => {
    const b = app.run(bin(app), ['build']);
    expect(b.status).toBe(1);
    expect(b.stderr).toContain('cmake was not found');
    expect(b.stderr).toContain('ERR_NO_ADDON');
    writeFileSync(path.join(app.dir, 'src.mjs'), "import { Model } from 'esolm'; try { await Model.load(); console.log('{}'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }");
    const r = app.run(process.execPath, ['src.mjs'], {});
    expect(JSON.parse(r.stdout)).toEqual({});  // the platform package, as usual
    const f = spawnSync(process.execPath, ['src.mjs'], { cwd: app.dir, env: { ...app.env, ESOLM_BUILD_FROM_SOURCE: '1' }, encoding: 'utf8' });
    const o = JSON.parse(f.stdout);
    expect(o.code).toBe('ERR_NO_ADDON');
    expect(o.message).toContain('skipped (ESOLM_BUILD_FROM_SOURCE=1)');
    expect(o.message).toContain('cmake was not found');
  });

  it.skipIf(!withCuda)('the CUDA package loads, refuses CUDA without a driver, and auto falls back to the CPU', () => {
    const cuda = installApp(path.join(tmp, 'cuda'), [packed.tarballs.esolm!, packed.tarballs['@esolm/linux-x64']!, packed.tarballs['@esolm/linux-x64-cuda']!]);
    const d = JSON.parse(cuda.run(bin(cuda), ['doctor', '--json']).stdout);
    expect(d.cuda.addon).toBe(true);
    expect(d.cuda.path).toBe(path.join(cuda.dir, 'node_modules', '@esolm', 'linux-x64-cuda', 'esolm_cuda.node'));
    writeFileSync(path.join(cuda.dir, 'cuda.mjs'), `
      import { Model } from 'esolm';
      const auto = await Model.load(undefined, { backend: 'auto' });
      let err = null;
      try { await Model.load(undefined, { backend: 'cuda' }); } catch (e) { err = e.code; }
      console.log(JSON.stringify({ backend: auto.backend, reason: auto.backendReason, err }));
      auto.dispose();`);
    const r = cuda.run(process.execPath, ['cuda.mjs']);
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    if (d.cuda.usable) {
      expect(o.backend).toBe('cuda');  // a GPU machine
    } else {
      expect(d.cuda.reason).toMatch(/driver|device/i);
      expect(o).toMatchObject({ backend: 'cpu', err: 'ERR_NO_CUDA' });
      expect(o.reason).toMatch(/driver|device/i);
    }
  });
});
