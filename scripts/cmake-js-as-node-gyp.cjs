#!/usr/bin/env node
// prebuildify drives node-gyp; this shim turns its `rebuild --target=V --arch=A` into a
// cmake-js build so that `prebuildify --node-gyp ./scripts/cmake-js-as-node-gyp.cjs`
// works (prebuildify has no cmake-js backend). ESOLM_CMAKE_ARGS adds cmake-js flags.
'use strict';
const { spawnSync } = require('node:child_process');
const args = process.argv.slice(2);
const get = (k) => args.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3);
const extra = (process.env.ESOLM_CMAKE_ARGS || '').split(' ').filter(Boolean);
const cmd = ['rebuild', '--log-level', 'warn'];
if (get('target')) cmd.push(`--runtime-version=${get('target')}`);
if (get('arch')) cmd.push(`--arch=${get('arch')}`);
if (args.includes('--debug')) cmd.push('--debug');
const r = spawnSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), ...cmd, ...extra], { stdio: 'inherit' });
process.exit(r.status ?? 1);
