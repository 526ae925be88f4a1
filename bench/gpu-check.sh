#!/usr/bin/env bash
# gpu-check.sh — the one script run on a GPU machine, from the repo root (GPU-CHECKS.md).
#
# Builds the CUDA backend for the card (sm_90a), runs the CUDA-vs-CPU parity tests of every
# op and of whole forwards/steps, compute-sanitizer memcheck on the --quick subset, and the
# benchmark; writes logs, JSON and a README (card, driver, CUDA, commit, date) into
# ${OUT:-bench/results/gpu-latest} (<= 8 files, no subfolders) and prints a short table last.
# Each stage has its own timeout so one hang cannot eat the budget, and no stage may run past
# the script's budget (ESOLM_CHECK_BUDGET seconds, default 510: the whole check stays under
# 9 minutes; a stage cut by it counts as a TIMEOUT). Needs no Node.js, no network.
set -u -o pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUTDIR="${OUT:-bench/results/gpu-latest}"
mkdir -p "$OUTDIR"
BUILD="${ESOLM_BUILD_DIR:-build-gpu}"
export ESOLM_REQUIRE_CUDA=1
ARCH="${ESOLM_CUDA_ARCH:-90a}"
T0=$(date +%s)
BUDGET="${ESOLM_CHECK_BUDGET:-510}"
declare -a SUMMARY=()

stage() {  # stage NAME TIMEOUT LOGFILE CMD...
  local name=$1 limit=$2 log=$3
  shift 3
  local t=$(date +%s)
  local left=$(( BUDGET - (t - T0) - 10 ))  # 10 s kept for the README
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 5 ]; then
    echo "=== $name: TIMEOUT (script budget of ${BUDGET}s spent before it started) ===" | tee -a "$log"
    SUMMARY+=("| $name | TIMEOUT (script budget) | 0s | $(basename "$log") |")
    return 124
  fi
  echo "=== $name (timeout ${limit}s) ===" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t ))
  local st="ok"
  [ $rc -ne 0 ] && st="FAIL(rc=$rc)"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && st="TIMEOUT"
  echo "=== $name: $st in ${dt}s ===" | tee -a "$log"
  SUMMARY+=("| $name | $st | ${dt}s | $(basename "$log") |")
  return $rc
}

# ---- environment
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi 2>&1 || echo "nvidia-smi not available"
  echo
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
} >"$OUTDIR/nvidia-smi.txt"
cat "$OUTDIR/nvidia-smi.txt"
NVCC="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
SANITIZER="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
DRIVER="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
CUDA_VER="$("$NVCC" --version 2>/dev/null | grep -o 'release [0-9.]*' | head -1)"
# The device copy may come without .git: ESOLM_COMMIT names the commit then.
COMMIT="${ESOLM_COMMIT:-$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)}"
DIRTY=""
[ "$COMMIT" != unknown ] && ! git diff --quiet HEAD 2>/dev/null && DIRTY=" (+ uncommitted changes)"

# ---- build
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
BUILD_OK=0
stage "configure" 60 "$OUTDIR/build.log" cmake -S . -B "$BUILD" "${GEN[@]}" -DESOLM_NATIVE_TESTS=ON \
  -DESOLM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER="$NVCC" &&
  stage "build" 180 "$OUTDIR/build.log" cmake --build "$BUILD" -j16 && BUILD_OK=1
tail -n 30 "$OUTDIR/build.log"

# ---- tests (every test/native/cuda/*_test executable), sanitizer, bench
if [ $BUILD_OK -eq 1 ]; then
  for src in test/native/cuda/*_test.cpp; do
    exe="$BUILD/$(basename "$src" .cpp)"
    stage "test $(basename "$exe")" 120 "$OUTDIR/tests.log" "$exe"
  done
  grep -E "^(FAIL|PASSED|FAILED)" "$OUTDIR/tests.log" | tail -n 40
  if [ -x "$SANITIZER" ] || command -v compute-sanitizer >/dev/null; then
    stage "memcheck ops_test --quick" 120 "$OUTDIR/sanitizer.log" \
      "$SANITIZER" --tool memcheck --error-exitcode 3 --leak-check no "$BUILD/ops_test" --quick
    grep -E "ERROR SUMMARY|^FAIL|PASSED|FAILED" "$OUTDIR/sanitizer.log" | tail -n 10
  else
    echo "compute-sanitizer not found" | tee "$OUTDIR/sanitizer.log"
    SUMMARY+=("| memcheck | SKIPPED (no compute-sanitizer) | 0s | sanitizer.log |")
  fi
  stage "bench cuda_bench" 280 "$OUTDIR/bench.log" "$BUILD/cuda_bench" "$OUTDIR/bench.json"
  grep -E "^\|" "$OUTDIR/bench.log" | tail -n 60
fi

# Logs name files relative to the repo root, not by this machine's absolute path.
sed -i "s#$ROOT/#./#g; s#$ROOT#.#g" "$OUTDIR"/*.log 2>/dev/null || true

# ---- README (card, driver, CUDA, commit, date, stage table)
{
  echo "# GPU check"
  echo
  echo "- card: ${GPU_NAME:-unknown}"
  echo "- driver: ${DRIVER:-unknown}"
  echo "- CUDA toolkit: ${CUDA_VER:-unknown} (build arch $ARCH, cudart static)"
  echo "- commit: ${COMMIT}${DIRTY}"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- total: $(( $(date +%s) - T0 ))s"
  echo
  echo "| stage | status | time | log |"
  echo "|---|---|---|---|"
  for l in "${SUMMARY[@]}"; do echo "$l"; done
  echo
  echo "Files: nvidia-smi.txt, build.log, tests.log, sanitizer.log, bench.log, bench.json."
  echo "Tests compare every CUDA op against the CPU backend (tolerances printed per case)."
  echo "Anything not listed as ok above is unverified on this card."
  if [ -f "$OUTDIR/bench.log" ]; then
    echo
    echo "## Bench"
    echo
    grep -E "^\|" "$OUTDIR/bench.log"
  fi
} >"$OUTDIR/README.md"

echo
echo "== results in $OUTDIR ($(ls "$OUTDIR" | wc -l) files) =="
echo "| stage | status | time | log |"
echo "|---|---|---|---|"
for l in "${SUMMARY[@]}"; do echo "$l"; done
FAILS=$(printf '%s\n' "${SUMMARY[@]}" | grep -c -E "FAIL|TIMEOUT")
exit $(( FAILS > 0 ? 1 : 0 ))
