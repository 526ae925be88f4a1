#!/usr/bin/env node
// pack-all.mjs — builds the prebuilt addons and packs every tarball into .pack/ (npm run pack:all):
//   esolm-<v>.tgz                  the main package; its package.json gains optionalDependencies on
//                                  the platform packages here (a checkout cannot list them: `npm ci`
//                                  needs every dependency in the lockfile, and they are published
//                                  together with esolm);
//   esolm-linux-x64-<v>.tgz        CPU addon, x64        (npm/linux-x64)
//   esolm-linux-arm64-<v>.tgz      CPU addon, arm64, cross-compiled with aarch64-linux-gnu-g++
//   esolm-linux-x64-cuda-<v>.tgz   CUDA addon, x64       (nvcc; several minutes)
// Options: --targets linux-x64,linux-arm64,linux-x64-cuda (default: all)
//          --reuse   take build/Release/esolm_cpu.node and cuda/build/Release/esolm_cuda.node when
//                    present instead of building again (they are built with the same options)
//          --out DIR (default .pack)
// Every addon is linked with static libstdc++/libgcc; its glibc floor (the highest GLIBC_x.y
// symbol version it needs) is read from the file and written into its package.json.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const require = createRequire(import.meta.url);
const { cmakeJsEnv } = require('./build-addon.cjs');
const args = process.argv.slice(2);
const arg = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const out = path.resolve(arg('--out', path.join(root, '.pack')));
const reuse = args.includes('--reuse');
const ALL = ['linux-x64', 'linux-arm64', 'linux-x64-cuda'];
const targets = arg('--targets', ALL.join(',')).split(',');
for (const t of targets) if (!ALL.includes(t)) throw new Error(`unknown target ${t} (known: ${ALL.join(', ')})`);

const rootPkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const version = rootPkg.version;
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (exit ${r.status})`);
  return r.stdout;
}

/** The highest GLIBC_x.y version named in an ELF file (its dynamic symbol versions). */
export function glibcFloor(file) {
  const text = readFileSync(file).toString('latin1');
  let best = [0, 0];
  for (const m of text.matchAll(/GLIBC_(\d+)\.(\d+)/g)) {
    const v = [Number(m[1]), Number(m[2])];
    if (v[0] > best[0] || (v[0] === best[0] && v[1] > best[1])) best = v;
  }
  return `${best[0]}.${best[1]}`;
}

const TARGETS = {
  'linux-x64': { file: 'esolm_cpu.node', reuse: 'build/Release/esolm_cpu.node', flags: [] },
  'linux-arm64': {
    file: 'esolm_cpu.node', flags: [
      '--CDCMAKE_SYSTEM_NAME=Linux', '--CDCMAKE_SYSTEM_PROCESSOR=aarch64',
      '--CDCMAKE_C_COMPILER=aarch64-linux-gnu-gcc', '--CDCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++',
    ],
  },
  'linux-x64-cuda': { file: 'esolm_cuda.node', reuse: 'cuda/build/Release/esolm_cuda.node', flags: ['--CDESOLM_CUDA=ON'] },
};

/** Builds (or reuses) one target's addon; returns its path. */
function buildTarget(t) {
  const spec = TARGETS[t];
  if (reuse && spec.reuse && existsSync(path.join(root, spec.reuse))) return path.join(root, spec.reuse);
  const dir = path.join(out, 'build', t);
  const addonApi = path.dirname(require.resolve('node-addon-api/package.json'));
  console.error(`pack-all: building ${t}`);
  run(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--log-level', 'warn', '-O', dir,
    `--CDNODE_ADDON_API_DIR=${addonApi}`, ...spec.flags], { cwd: root, stdio: ['ignore', process.stderr, 'inherit'], env: cmakeJsEnv() });
  return path.join(dir, 'Release', spec.file);
}

function pack(dir) {
  const name = run(NPM, ['pack', '--ignore-scripts', '--pack-destination', out], { cwd: dir }).trim().split('\n').pop();
  return path.join(out, name);
}

mkdirSync(out, { recursive: true });
const result = { version, tarballs: {}, glibc: {} };

for (const t of targets) {
  const addon = buildTarget(t);
  const stage = path.join(out, 'stage', t);
  rmSync(stage, { recursive: true, force: true });
  cpSync(path.join(root, 'npm', t), stage, { recursive: true });
  copyFileSync(path.join(root, 'LICENSE'), path.join(stage, 'LICENSE'));
  copyFileSync(addon, path.join(stage, TARGETS[t].file));
  const pj = JSON.parse(readFileSync(path.join(stage, 'package.json'), 'utf8'));
  if (pj.version !== version) throw new Error(`npm/${t}/package.json has version ${pj.version}, esolm has ${version}`);
  const floor = glibcFloor(addon);
  pj.description += ` (glibc >= ${floor})`;
  pj.esolm = { addon: TARGETS[t].file, glibc: floor };
  writeFileSync(path.join(stage, 'package.json'), JSON.stringify(pj, null, 2) + '\n');
  result.glibc[t] = floor;
  result.tarballs[pj.name] = pack(stage);
}

// The main package: the files `npm pack` would take, plus optionalDependencies.
const listed = JSON.parse(run(NPM, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root }))[0].files.map((f) => f.path);
const stage = path.join(out, 'stage', 'esolm');
rmSync(stage, { recursive: true, force: true });
for (const f of listed) {
  mkdirSync(path.dirname(path.join(stage, f)), { recursive: true });
  copyFileSync(path.join(root, f), path.join(stage, f));
}
const pj = { ...rootPkg, scripts: { ...rootPkg.scripts } };
delete pj.scripts.prepare;  // a checkout's build step: users run no install-time script
pj.optionalDependencies = Object.fromEntries(ALL.map((t) => [`@esolm/${t}`, version]));
writeFileSync(path.join(stage, 'package.json'), JSON.stringify(pj, null, 2) + '\n');
result.tarballs.esolm = pack(stage);
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
