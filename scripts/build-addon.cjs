#!/usr/bin/env node
// build-addon.cjs — the one source build of the native addons (cmake-js), used by
//   - `npx esolm build [--cuda]` and ESOLM_BUILD_FROM_SOURCE=1 in an installed package
//     (cmake-js and node-addon-api are devDependencies, so they are fetched on demand into
//     <package>/.build-tools when absent);
//   - `npm ci` / `npm install` in a checkout, through the "prepare" script (`--prepare`):
//     the CPU addon, then the CUDA addon when nvcc is on the PATH (ESOLM_CUDA=0 skips it;
//     ESOLM_CUDA=1 makes its failure, or a missing nvcc, fatal: CI sets it).
// Outputs: build/Release/esolm_cpu.node and cuda/build/Release/esolm_cuda.node.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function has(cmd, args = ['--version']) {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}

/** Resolves cmake-js and node-addon-api, installing them into .build-tools if needed. */
function buildTools(root, log) {
  const resolve = (paths) => {
    try {
      return {
        cmakeJs: require.resolve('cmake-js/bin/cmake-js', { paths }),
        addonApi: path.dirname(require.resolve('node-addon-api/package.json', { paths })),
      };
    } catch {
      return null;
    }
  };
  const found = resolve([root]);
  if (found) return found;
  const tools = path.join(root, '.build-tools');
  const again = resolve([tools]);
  if (again) return again;
  const dev = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).devDependencies || {};
  const specs = ['cmake-js', 'node-addon-api'].map((n) => `${n}@${dev[n] || 'latest'}`);
  log(`esolm: fetching the build tools (${specs.join(', ')}) into ${tools}`);
  fs.mkdirSync(tools, { recursive: true });
  fs.writeFileSync(path.join(tools, 'package.json'), '{"private":true}\n');
  const r = spawnSync(NPM, ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--ignore-scripts', ...specs],
    { cwd: tools, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) return null;
  return resolve([tools]);
}

/**
 * cmake-js downloads the Node headers unless told where they are (npm passes its `nodedir`
 * setting): point it at this Node's own headers when they are installed.
 */
function cmakeJsEnv() {
  const env = { ...process.env };
  const prefix = path.dirname(path.dirname(process.execPath));
  if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node.h'))) env.npm_config_nodedir = prefix;
  return env;
}

/** Loads `file` in a child process; returns '' or why it failed. */
function probe(file) {
  if (!fs.existsSync(file)) return `${file}: not found`;
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)}).backendInfo()`], { encoding: 'utf8' });
  return r.status === 0 ? '' : `${file}: ${(r.stderr || '').split('\n').find((l) => l.includes('Error')) || 'failed to load'}`;
}

/**
 * Builds one addon in the package at `root`; returns '' on success or why it failed.
 * Build output goes to stderr (stdout stays clean for the caller's own output).
 */
function buildAddonSync(root, cuda, log = (m) => process.stderr.write(m + '\n')) {
  if (!has('cmake')) return 'cmake was not found (Debian/Ubuntu: apt-get install cmake g++)';
  if (!has(process.env.CXX || 'c++')) return 'no C++ compiler was found (Debian/Ubuntu: apt-get install g++)';
  if (cuda && !has('nvcc')) return 'nvcc was not found (install the CUDA toolkit, 12.x or 13.x)';
  const tools = buildTools(root, log);
  if (!tools) return 'could not get cmake-js and node-addon-api from the npm registry';
  const args = [tools.cmakeJs, 'compile', '--log-level', 'warn', `--CDNODE_ADDON_API_DIR=${tools.addonApi}`];
  if (cuda) args.push('-O', path.join('cuda', 'build'), '--CDESOLM_CUDA=ON');
  log(`esolm: building the ${cuda ? 'CUDA' : 'CPU'} addon from source${cuda ? ' (several minutes)' : ''}`);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', process.stderr, 'inherit'], env: cmakeJsEnv() });
  if (r.status !== 0) return `the ${cuda ? 'CUDA' : 'CPU'} build failed (cmake-js exit ${r.status}; its output is above)`;
  return probe(path.join(root, cuda ? 'cuda/build/Release/esolm_cuda.node' : 'build/Release/esolm_cpu.node'));
}

module.exports = { buildAddonSync, cmakeJsEnv };

if (require.main === module) {
  const root = path.resolve(__dirname, '..');
  const argv = process.argv.slice(2);
  const fail = (msg) => { console.error(`esolm: ${msg}`); process.exit(1); };
  if (argv.includes('--prepare')) {
    const err = buildAddonSync(root, false);
    if (err) fail(err);
    const want = process.env.ESOLM_CUDA;
    if (want === '0') console.error('esolm: CUDA addon skipped (ESOLM_CUDA=0)');
    else if (want !== '1' && !has('nvcc')) console.error('esolm: CPU only (nvcc not found, so the CUDA addon was not built)');
    else {
      const e = buildAddonSync(root, true);
      if (e && want === '1') fail(e);
      if (e) console.error(`esolm: the CUDA addon was not built: ${e}; continuing CPU only (ESOLM_CUDA=1 makes this fatal)`);
    }
  } else {
    const err = buildAddonSync(root, argv.includes('--cuda'));
    if (err) fail(err);
  }
}
