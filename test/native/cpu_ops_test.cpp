// cpu_ops_test.cpp — every fast CPU op (SIMD kernels, threads) against the plain-loop
// reference backend on awkward shapes, for every kernel set this CPU runs (AVX-512, AVX2,
// portable; each forced with ESOLM_CPU_KERNELS), and the floors' helpers of each set.
// Tolerance: fp32 accumulation in a different order than the float64 reference gives
// errors ~ sqrt(k) * 2^-24 * |terms|; 2e-5 relative to the row scale is ample and still
// catches indexing bugs (which give O(1) errors).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/floors.h"
#include "cpu/kernels.h"
#include "cpu/ops_reference.h"
#include "engine/backend.h"

using namespace esolm;

static int failures = 0;
static std::mt19937 rng(42);

static std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

static Tensor make(Backend& be, DType dt, int64_t r, int64_t c, const std::vector<float>* data) {
  Tensor t;
  if (!be.alloc(t, dt, r, c)) { std::printf("alloc failed\n"); std::exit(2); }
  if (data) be.upload_f32(t, data->data(), r * c);
  return t;
}

static std::vector<float> get(Backend& be, const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  be.download_f32(t, 0, t.rows, v.data());
  return v;
}

static void check(const std::string& name, const std::vector<float>& got, const std::vector<float>& want,
                  double rel = 2e-5) {
  double scale = 1e-6, err = 0;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) err = std::max(err, double(std::fabs(got[i] - want[i])));
  const bool ok = err <= rel * scale && got.size() == want.size();
  std::printf("%s %-60s max abs err %.3g (scale %.3g)\n", ok ? "ok  " : "FAIL", name.c_str(), err, scale);
  if (!ok) ++failures;
}

static void test_linear(Backend& fast, Backend& ref, int rows, int n, int k, Epilogue ep, bool bias) {
  auto a = randn(size_t(rows) * k), w = randn(size_t(n) * k, 0.1f), b = randn(n), init = randn(size_t(rows) * n);
  for (Backend* be : {&fast, &ref}) (void)be;
  Tensor af = make(fast, DType::f32, rows, k, &a), wf = make(fast, DType::f32, n, k, &w),
         bf = bias ? make(fast, DType::f32, 1, n, &b) : Tensor{}, of = make(fast, DType::f32, rows, n, &init);
  Tensor ar = make(ref, DType::f32, rows, k, &a), wr = make(ref, DType::f32, n, k, &w),
         br = bias ? make(ref, DType::f32, 1, n, &b) : Tensor{}, orf = make(ref, DType::f32, rows, n, &init);
  fast.prepare_weight(wf);
  for (int rep = 0; rep < 2; ++rep) {  // twice: stale state must not matter
    if (ep == Epilogue::add_to) { fast.upload_f32(of, init.data(), of.numel()); ref.upload_f32(orf, init.data(), orf.numel()); }
    fast.linear(af, wf, bf, of, ep);
    ref.linear(ar, wr, br, orf, ep);
  }
  check("linear rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
            " ep=" + std::to_string(int(ep)) + (bias ? " bias" : ""),
        get(fast, of), get(ref, orf));
  check("  packed weight downloads unchanged", get(fast, wf), w, 0);
  for (Tensor* t : {&af, &wf, &bf, &of}) fast.release(*t);
  for (Tensor* t : {&ar, &wr, &br, &orf}) ref.release(*t);
}

// BF16 weight panels: the fast backend stores W as bf16; the reference gets the same
// bf16-rounded values as F32, so only accumulation order differs.
static void test_linear_bf16(Backend& fast, Backend& ref, int rows, int n, int k, Epilogue ep) {
  auto a = randn(size_t(rows) * k), w = randn(size_t(n) * k, 0.1f), init = randn(size_t(rows) * n);
  Tensor wf = make(fast, DType::bf16, n, k, &w);
  std::vector<float> w_rounded(w.size());
  fast.download_f32(wf, 0, n, w_rounded.data());
  size_t changed = 0;
  for (size_t i = 0; i < w.size(); ++i) changed += w_rounded[i] != w[i];
  fast.prepare_weight(wf);
  Tensor af = make(fast, DType::f32, rows, k, &a), of = make(fast, DType::f32, rows, n, &init);
  Tensor ar = make(ref, DType::f32, rows, k, &a), wr = make(ref, DType::f32, n, k, &w_rounded),
         orf = make(ref, DType::f32, rows, n, &init);
  fast.linear(af, wf, Tensor{}, of, ep);
  ref.linear(ar, wr, Tensor{}, orf, ep);
  check("linear bf16 weights rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " k=" + std::to_string(k),
        get(fast, of), get(ref, orf));
  check("  packed bf16 weight downloads the rounded values", get(fast, wf), w_rounded, 0);
  if (changed == 0) { std::printf("FAIL bf16 rounding changed nothing\n"); ++failures; }
  for (Tensor* t : {&af, &wf, &of}) fast.release(*t);
  for (Tensor* t : {&ar, &wr, &orf}) ref.release(*t);
}

// Q8 weights: the fast backend quantizes W per output row; the reference gets the
// dequantized values (what the packed weight downloads as), so only accumulation order
// differs. The dequantized values are within half a step (scale / 2) of W, and an
// all-zero row stays zero.
static void test_linear_q8(Backend& fast_q8, Backend& ref, int rows, int n, int k, Epilogue ep, bool bias) {
  auto a = randn(size_t(rows) * k), w = randn(size_t(n) * k, 0.1f), b = randn(n), init = randn(size_t(rows) * n);
  for (int c = 0; c < k; ++c) w[size_t(n / 2) * k + c] = 0.0f;
  Tensor wf = make(fast_q8, DType::f32, n, k, &w);
  fast_q8.prepare_weight(wf);
  std::vector<float> wq = get(fast_q8, wf);
  bool within = true, changed = false;
  for (int r = 0; r < n; ++r) {
    float amax = 0;
    for (int c = 0; c < k; ++c) amax = std::max(amax, std::fabs(w[size_t(r) * k + c]));
    for (int c = 0; c < k; ++c) {
      const float e = std::fabs(wq[size_t(r) * k + c] - w[size_t(r) * k + c]);
      within = within && e <= amax / 127.0f * 0.5001f;
      changed = changed || e > 0;
    }
  }
  Tensor af = make(fast_q8, DType::f32, rows, k, &a), bf = bias ? make(fast_q8, DType::f32, 1, n, &b) : Tensor{},
         of = make(fast_q8, DType::f32, rows, n, &init);
  Tensor ar = make(ref, DType::f32, rows, k, &a), wr = make(ref, DType::f32, n, k, &wq),
         br = bias ? make(ref, DType::f32, 1, n, &b) : Tensor{}, orf = make(ref, DType::f32, rows, n, &init);
  fast_q8.linear(af, wf, bf, of, ep);
  ref.linear(ar, wr, br, orf, ep);
  check("linear q8 weights rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
            " ep=" + std::to_string(int(ep)) + (bias ? " bias" : ""),
        get(fast_q8, of), get(ref, orf));
  std::printf("%s   q8 values within half a step of W, and rounded\n", within && changed ? "ok  " : "FAIL");
  if (!within || !changed) ++failures;
  for (Tensor* t : {&af, &wf, &bf, &of}) fast_q8.release(*t);
  for (Tensor* t : {&ar, &wr, &br, &orf}) ref.release(*t);
}

// A row's output must not depend on how many rows share the call (tiles of different
// heights accumulate in the same order): row r of a rows-row linear equals, bit for bit,
// the same row computed alone. forwardScores vs forward and cached steps vs full
// forwards rely on this.
static void test_linear_row_invariance(Backend& fast, DType wdt, int rows, int n, int k) {
  auto a = randn(size_t(rows) * k), w = randn(size_t(n) * k, 0.1f), b = randn(n);
  Tensor wf = make(fast, wdt, n, k, &w), bf = make(fast, DType::f32, 1, n, &b);
  fast.prepare_weight(wf);
  Tensor af = make(fast, DType::f32, rows, k, &a), of = make(fast, DType::f32, rows, n, nullptr);
  fast.linear(af, wf, bf, of, Epilogue::gelu);
  const std::vector<float> all = get(fast, of);
  int bad = 0;
  for (int r = 0; r < rows; ++r) {
    std::vector<float> row(a.begin() + size_t(r) * k, a.begin() + size_t(r + 1) * k);
    Tensor a1 = make(fast, DType::f32, 1, k, &row), o1 = make(fast, DType::f32, 1, n, nullptr);
    fast.linear(a1, wf, bf, o1, Epilogue::gelu);
    const std::vector<float> one = get(fast, o1);
    for (int j = 0; j < n; ++j) bad += std::memcmp(&one[size_t(j)], &all[size_t(r) * n + j], sizeof(float)) != 0;
    fast.release(a1);
    fast.release(o1);
  }
  std::printf("%s linear rows=%d n=%d k=%d dtype=%d: each row equals the row computed alone (%d differ)\n",
              bad ? "FAIL" : "ok  ", rows, n, k, int(wdt), bad);
  if (bad) ++failures;
  for (Tensor* t : {&af, &wf, &bf, &of}) fast.release(*t);
}

static void test_attention(Backend& fast, Backend& ref, int batch, int heads, int hd, int n_q, int q_slot0,
                           int n_kv, int capacity, AttnMode mode) {
  const int d = heads * hd;
  auto q = randn(size_t(batch) * n_q * d), k = randn(size_t(batch) * capacity * d),
       v = randn(size_t(batch) * capacity * d);
  std::vector<int32_t> clean(size_t(batch) * capacity);
  for (auto& c : clean) c = (rng() % 3) != 0;
  AttnParams p;
  p.batch = batch; p.n_q = n_q; p.q_slot0 = q_slot0; p.n_kv = n_kv; p.n_heads = heads; p.head_dim = hd;
  p.capacity = capacity; p.mode = mode;
  std::vector<float> outs[2];
  Backend* bes[2] = {&fast, &ref};
  for (int i = 0; i < 2; ++i) {
    Backend& be = *bes[i];
    Tensor tq = make(be, DType::f32, int64_t(batch) * n_q, d, &q), tk = make(be, DType::f32, int64_t(batch) * capacity, d, &k),
           tv = make(be, DType::f32, int64_t(batch) * capacity, d, &v), to = make(be, DType::f32, int64_t(batch) * n_q, d, nullptr),
           tc = make(be, DType::i32, int64_t(batch) * capacity, 1, nullptr);
    be.upload_i32(tc, clean.data(), int64_t(clean.size()));
    p.clean = &tc;
    be.attention(tq, tk, tv, p, to);
    be.attention(tq, tk, tv, p, to);
    outs[i] = get(be, to);
    for (Tensor* t : {&tq, &tk, &tv, &to, &tc}) be.release(*t);
  }
  char name[200];
  std::snprintf(name, sizeof name, "attention mode=%d b=%d h=%d hd=%d n_q=%d slot0=%d n_kv=%d", int(mode), batch,
                heads, hd, n_q, q_slot0, n_kv);
  check(name, outs[0], outs[1]);
}

static void test_layernorm(Backend& fast, Backend& ref, int rows, int d, bool bias) {
  auto x = randn(size_t(rows) * d, 3.0f), w = randn(d), b = randn(d);
  for (auto& v : x) v += 5.0f;  // a large mean: the two-pass variance must not cancel
  Tensor xf = make(fast, DType::f32, rows, d, &x), wf = make(fast, DType::f32, 1, d, &w),
         bf = bias ? make(fast, DType::f32, 1, d, &b) : Tensor{}, yf = make(fast, DType::f32, rows, d, nullptr);
  Tensor xr = make(ref, DType::f32, rows, d, &x), wr = make(ref, DType::f32, 1, d, &w),
         br = bias ? make(ref, DType::f32, 1, d, &b) : Tensor{}, yr = make(ref, DType::f32, rows, d, nullptr);
  fast.layernorm(xf, wf, bf, yf);
  ref.layernorm(xr, wr, br, yr);
  check("layernorm rows=" + std::to_string(rows) + " d=" + std::to_string(d), get(fast, yf), get(ref, yr));
}

// The floors' loops of the kernel set in use: the read sums what it reads, the FMA loop
// reports its FLOPs, and the measured rates are positive.
static void test_floors(const char* kernels) {
  const CpuKernels& k = cpu_kernels();
  std::vector<float> v(1000 + 13);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 7);
  double want = 0;
  for (float x : v) want += x;
  const bool sum_ok = double(k.read_sum(v.data(), int64_t(v.size()))) == want;
  const double flops = k.fma_loop(1000);
  CpuFloors f;
  const bool ok = measure_cpu_floors(2, f, 0.02) && f.read_gbps > 0 && f.fma_gflops > 0 &&
                  std::string(f.kernels) == k.name && sum_ok && flops >= 1000.0 * 12 * 8 * 2;
  std::printf("%s floors (%s): read %.1f GB/s, FMA %.1f GFLOP/s on %d threads\n", ok ? "ok  " : "FAIL", kernels,
              f.read_gbps, f.fma_gflops, f.threads);
  if (!ok) ++failures;
}

int main() {
  auto ref = create_cpu_reference_backend();
  // The default is the widest set this CPU runs.
  unsetenv("ESOLM_CPU_KERNELS");
  const std::string best = cpu_kernels().name;
  const std::string want_best = cpu_kernels_avx512() ? "avx512" : cpu_kernels_avx2() ? "avx2+fma" : "portable";
  std::printf("%s default kernels %s\n", best == want_best ? "ok  " : "FAIL", best.c_str());
  if (best != want_best) ++failures;
  setenv("ESOLM_CPU_KERNELS", "sse9", 1);
  if (!cpu_kernels_error()) { std::printf("FAIL an unknown ESOLM_CPU_KERNELS is not reported\n"); ++failures; }
  int paths = 0;
  for (const char* kernels : {"avx512", "avx2", "portable"}) {
    setenv("ESOLM_CPU_KERNELS", kernels, 1);
    if (cpu_kernels_error()) {
      std::printf("skip kernels %s: this CPU or build cannot run them (%s)\n", kernels, cpu_kernels_error());
      continue;
    }
    ++paths;
    auto fast = create_cpu_backend(2);
    std::printf("== kernels: %s (%s)\n", kernels, cpu_backend_kernels(*fast));
    if (std::string(cpu_backend_kernels(*fast)).rfind(kernels, 0) != 0) ++failures;
    for (int rows : {1, 2, 5, 6, 7, 8, 13, 16, 17, 100})
      for (auto nk : {std::pair<int, int>{16, 8}, {37, 24}, {130, 64}, {3, 96}, {20, 37}})
        for (Epilogue ep : {Epilogue::store, Epilogue::gelu, Epilogue::add_to})
          test_linear(*fast, *ref, rows, nk.first, nk.second, ep, rows % 2 == 1);
    // Many rows (>= 64): calls of up to 4 panels; 7, 6 and 9 panels leave 3, 2 and 1 over,
    // and 130 rows split into two blocks of 65 (row tails).
    for (int rows : {67, 130})
      for (int n : {110, 90, 130})
        for (Epilogue ep : {Epilogue::store, Epilogue::gelu, Epilogue::add_to})
          test_linear(*fast, *ref, rows, n, 40, ep, ep != Epilogue::store);
    for (int rows : {1, 3, 7, 9, 16, 40, 70})
      for (Epilogue ep : {Epilogue::store, Epilogue::add_to}) test_linear_bf16(*fast, *ref, rows, 37, 64, ep);
    test_linear_bf16(*fast, *ref, 2, 40, 33, Epilogue::gelu);
    test_linear_bf16(*fast, *ref, 100, 110, 33, Epilogue::gelu);
    for (int rows : {3, 16, 17, 40, 70})
      for (DType wdt : {DType::f32, DType::bf16}) test_linear_row_invariance(*fast, wdt, rows, 37, 40);
    for (DType wdt : {DType::f32, DType::bf16}) test_linear_row_invariance(*fast, wdt, 131, 110, 40);
    auto fast_q8 = create_cpu_backend(2, DType::f32, true, true);
    test_linear_row_invariance(*fast_q8, DType::f32, 23, 50, 33);
    test_linear_row_invariance(*fast_q8, DType::f32, 70, 110, 33);
    for (int rows : {1, 2, 9, 16, 30, 70})
      for (Epilogue ep : {Epilogue::store, Epilogue::gelu, Epilogue::add_to})
        test_linear_q8(*fast_q8, *ref, rows, 37, 64, ep, rows % 2 == 0);
    test_linear_q8(*fast_q8, *ref, 3, 16, 37, Epilogue::store, true);
    for (AttnMode mode : {AttnMode::causal, AttnMode::bidirectional, AttnMode::mixed2})
      for (int hd : {8, 64, 24, 10}) {
        test_attention(*fast, *ref, 2, 3, hd, 1, 0, 1, 8, mode);
        test_attention(*fast, *ref, 1, 2, hd, 7, 0, 7, 7, mode);
        test_attention(*fast, *ref, 2, 2, hd, 5, 33, 38, 40, mode);
        test_attention(*fast, *ref, 1, 2, hd, 70, 0, 70, 70, mode);
        test_attention(*fast, *ref, 1, 1, hd, 3, 100, 103, 130, mode);
        test_attention(*fast, *ref, 2, 2, hd, 8, 60, 68, 70, mode);   // the most rows read directly
        test_attention(*fast, *ref, 1, 2, hd, 9, 60, 69, 70, mode);   // the fewest rows packed
      }
    for (AttnMode mode : {AttnMode::causal, AttnMode::bidirectional, AttnMode::mixed2})
      for (int hd : {48, 64})  // many key panels (13) and 3 or 4 value panels in one call
        test_attention(*fast, *ref, 1, 2, hd, 100, 100, 200, 200, mode);
    for (int hd : {8, 64}) {
      test_attention(*fast, *ref, 2, 2, hd, 14, 0, 14, 14, AttnMode::sequential);
      test_attention(*fast, *ref, 1, 3, hd, 100, 0, 100, 100, AttnMode::sequential);
    }
    for (int rows : {1, 3, 17}) test_layernorm(*fast, *ref, rows, 48, rows != 3);
    test_layernorm(*fast, *ref, 5, 53, true);  // d not a multiple of 8
    test_floors(kernels);
  }
  unsetenv("ESOLM_CPU_KERNELS");
  if (paths == 0) { std::printf("FAIL no kernel set ran\n"); ++failures; }
  std::printf("%s: %d failure(s), %d kernel set(s) tested\n", failures ? "FAILED" : "PASSED", failures, paths);
  return failures ? 1 : 0;
}
