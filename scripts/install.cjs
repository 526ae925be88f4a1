#!/usr/bin/env node
// install.cjs — npm "install" hook. The runtime loader (lib/native.ts) is the source of
// truth; this script only makes sure something loadable exists:
//   1. if a bundled prebuild (or an existing local build) loads in a child process, done;
//   2. otherwise build the CPU addon with cmake-js (needs cmake + a C++17 compiler);
//   3. the CUDA addon is optional: built when nvcc is on PATH and ESOLM_CUDA != 0, and
//      its failure never fails the install.
// ESOLM_BUILD_FROM_SOURCE=1 or `npm install --build-from-source` skips step 1.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const fromSource = process.env.npm_config_build_from_source === 'true' || process.env.ESOLM_BUILD_FROM_SOURCE === '1';

function probe(file) {
  if (!fs.existsSync(file)) return `${file}: not found`;
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)}).backendInfo()`], { encoding: 'utf8' });
  return r.status === 0 ? null : `${file}: ${(r.stderr || '').split('\n').find((l) => l.includes('Error')) || 'failed to load'}`;
}

function cmakeJs(args) {
  const bin = require.resolve('cmake-js/bin/cmake-js');
  return spawnSync(process.execPath, [bin, ...args], { cwd: root, stdio: 'inherit' });
}

const cpuCandidates = [
  path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'esolm.node'),
  path.join(root, 'build', 'Release', 'esolm_cpu.node'),
];
const why = [];
let ok = false;
if (!fromSource) {
  for (const f of cpuCandidates) {
    const err = probe(f);
    if (!err) { ok = true; break; }
    why.push(err);
  }
}
if (!ok) {
  console.log('esolm: building the CPU addon from source with cmake-js');
  const r = cmakeJs(['compile', '--log-level', 'warn']);
  const err = r.status === 0 ? probe(cpuCandidates[1]) : 'cmake-js failed';
  if (err) {
    console.error([
      'esolm: could not install a working native addon.',
      `  platform ${process.platform}-${process.arch}, Node ${process.versions.node}`,
      ...why.map((w) => `  prebuild rejected: ${w}`),
      `  source build: ${err}`,
      '  Fix: install cmake and a C++17 compiler (Debian/Ubuntu: apt-get install cmake g++), then npm rebuild esolm',
    ].join('\n'));
    process.exit(1);
  }
}

// Optional CUDA addon.
const cudaPrebuilt = path.join(root, 'cuda', 'prebuilds', `${process.platform}-${process.arch}`, 'esolm.node');
const cudaLocal = path.join(root, 'cuda', 'build', 'Release', 'esolm_cuda.node');
const nvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
if (process.env.ESOLM_CUDA === '0') {
  console.log('esolm: CUDA addon skipped (ESOLM_CUDA=0)');
} else if (!fromSource && (!probe(cudaPrebuilt) || !probe(cudaLocal))) {
  // a CUDA addon already loads
} else if (nvcc.status !== 0) {
  console.log('esolm: CPU only (nvcc not found, so the CUDA addon was not built)');
} else {
  console.log('esolm: building the CUDA addon (optional) with cmake-js');
  const r = cmakeJs(['compile', '--log-level', 'warn', '-O', 'cuda/build', '--CDESOLM_CUDA=ON']);
  if (r.status !== 0) console.log('esolm: the CUDA addon failed to build; continuing CPU only');
}
