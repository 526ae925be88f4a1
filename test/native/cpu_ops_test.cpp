// cpu_ops_test.cpp — every fast CPU op (SIMD kernels, threads) against the plain-loop
// reference backend on awkward shapes, for every kernel set this CPU runs (AVX-512, AVX2,
// portable; each forced with ESOLM_CPU_KERNELS), and the floors' helpers of each set;
// then the opt-in BF16-math GEMM (AVX512_BF16) and int8-math GEMM (AVX512_VNNI) against
// their own references.
// Tolerance: fp32 accumulation in a different order than the float64 reference gives
// errors ~ sqrt(k) * 2^-24 * |terms|; 2e-5 relative to the row scale is ample and still
// catches indexing bugs (which give O(1) errors).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/floors.h"
#include "cpu/kernels.h"
#include "cpu/ops_reference.h"
#include "cpu/layernorm_rows.h"
#include "cpu/rope_rows.h"
#include "engine/backend.h"
#include "engine/q8.h"

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

// bf16_kv: the fast backend's K and V are a BF16 cache (BF16 and int8 math, Backend::kv_dtype),
// the reference's the same values rounded to BF16, held in F32.
static void test_attention(Backend& fast, Backend& ref, int batch, int heads, int hd, int n_q, int q_slot0,
                           int n_kv, int capacity, AttnMode mode, bool bf16_kv = false) {
  const int d = heads * hd;
  auto q = randn(size_t(batch) * n_q * d), k = randn(size_t(batch) * capacity * d),
       v = randn(size_t(batch) * capacity * d);
  std::vector<float> kr = k, vr = v;
  if (bf16_kv)
    for (size_t i = 0; i < k.size(); ++i) {
      kr[i] = round_to_bf16(k[i]);
      vr[i] = round_to_bf16(v[i]);
    }
  std::vector<int32_t> clean(size_t(batch) * capacity);
  for (auto& c : clean) c = (rng() % 3) != 0;
  AttnParams p;
  p.batch = batch; p.n_q = n_q; p.q_slot0 = q_slot0; p.n_kv = n_kv; p.n_heads = heads; p.head_dim = hd;
  p.capacity = capacity; p.mode = mode;
  std::vector<float> outs[2];
  Backend* bes[2] = {&fast, &ref};
  for (int i = 0; i < 2; ++i) {
    Backend& be = *bes[i];
    const DType kvt = i == 0 && bf16_kv ? DType::bf16 : DType::f32;
    Tensor tq = make(be, DType::f32, int64_t(batch) * n_q, d, &q),
           tk = make(be, kvt, int64_t(batch) * capacity, d, i == 0 ? &k : &kr),
           tv = make(be, kvt, int64_t(batch) * capacity, d, i == 0 ? &v : &vr),
           to = make(be, DType::f32, int64_t(batch) * n_q, d, nullptr),
           tc = make(be, DType::i32, int64_t(batch) * capacity, 1, nullptr);
    be.upload_i32(tc, clean.data(), int64_t(clean.size()));
    p.clean = &tc;
    be.attention(tq, tk, tv, p, to);
    if (!be.attention(tq, tk, tv, p, to)) { std::printf("FAIL attention refused\n"); ++failures; }
    outs[i] = get(be, to);
    for (Tensor* t : {&tq, &tk, &tv, &to, &tc}) be.release(*t);
  }
  char name[200];
  std::snprintf(name, sizeof name, "attention%s mode=%d b=%d h=%d hd=%d n_q=%d slot0=%d n_kv=%d",
                bf16_kv ? ", BF16 K/V," : "", int(mode), batch, heads, hd, n_q, q_slot0, n_kv);
  check(name, outs[0], outs[1]);
}

// The CPU backend's rotary angles come from a cached table: they must equal the
// reference's (bit for bit), for positions inside and past the first table size.
// bf16_kv: the fast backend stores into a BF16 cache; its K and V must be the reference's rounded.
static void test_rope_once(Backend& fast, Backend& ref, int batch, int n, int heads, int hd, int pos0, bool avx512,
                           bool bf16_kv = false);

// Both of rope_row's paths (AVX-512 where this CPU has it, and the scalar loop).
static void test_rope(Backend& fast, Backend& ref, int batch, int n, int heads, int hd, int pos0) {
  test_rope_once(fast, ref, batch, n, heads, hd, pos0, true);
  rope_rows_allow_avx512(false);
  test_rope_once(fast, ref, batch, n, heads, hd, pos0, false);
  rope_rows_allow_avx512(true);
}

static void test_rope_once(Backend& fast, Backend& ref, int batch, int n, int heads, int hd, int pos0, bool avx512,
                           bool bf16_kv) {
  const int d = heads * hd, capacity = n + 3, slot0 = 2;
  auto qkv = randn(size_t(batch) * n * 3 * d);
  std::vector<int32_t> pos(size_t(batch) * n);
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = pos0 + int32_t(i * 7 % 5000);
  std::vector<float> outs[2][3];
  Backend* bes[2] = {&fast, &ref};
  for (int i = 0; i < 2; ++i) {
    Backend& be = *bes[i];
    const DType kvt = i == 0 && bf16_kv ? DType::bf16 : DType::f32;
    Tensor tx = make(be, DType::f32, int64_t(batch) * n, 3 * d, &qkv), tp = make(be, DType::i32, int64_t(batch) * n, 1, nullptr),
           tq = make(be, DType::f32, int64_t(batch) * n, d, nullptr),
           tk = make(be, kvt, int64_t(batch) * capacity, d, nullptr),
           tv = make(be, kvt, int64_t(batch) * capacity, d, nullptr);
    be.upload_i32(tp, pos.data(), int64_t(pos.size()));
    be.rope_qkv_store(tx, tp, batch, n, heads, slot0, capacity, tq, tk, tv);
    outs[i][0] = get(be, tq);
    outs[i][1] = get(be, tk);
    outs[i][2] = get(be, tv);
    for (Tensor* t : {&tx, &tp, &tq, &tk, &tv}) be.release(*t);
  }
  if (bf16_kv)
    for (int j = 1; j < 3; ++j)
      for (float& x : outs[1][j]) x = round_to_bf16(x);
  bool same = true;
  for (int j = 0; j < 3; ++j) same = same && outs[0][j] == outs[1][j];
  std::printf("%s rope_qkv_store%s b=%d n=%d h=%d hd=%d positions from %d (%s): equal to the reference%s\n",
              same ? "ok  " : "FAIL", bf16_kv ? " into a BF16 cache" : "", batch, n, heads, hd, pos0,
              avx512 ? "AVX-512 where present" : "scalar", bf16_kv ? "'s rounded" : "");
  if (!same) ++failures;
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
  const std::vector<float> wide = get(fast, yf);
  check("layernorm rows=" + std::to_string(rows) + " d=" + std::to_string(d), wide, get(ref, yr));
  // Both of layernorm_row's paths (AVX-512 where this CPU has it, and the scalar loop): the same bits.
  layernorm_rows_allow_avx512(false);
  fast.layernorm(xf, wf, bf, yf);
  layernorm_rows_allow_avx512(true);
  const bool same = get(fast, yf) == wide;
  std::printf("%s layernorm rows=%d d=%d: AVX-512 (where present) and scalar loops give the same bits\n",
              same ? "ok  " : "FAIL", rows, d);
  if (!same) ++failures;
  for (Tensor* t : {&xf, &wf, &bf, &yf}) fast.release(*t);
  for (Tensor* t : {&xr, &wr, &br, &yr}) ref.release(*t);
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

// ---- BF16 math (kernels.h): both operands rounded to BF16, vdpbf16ps, F32 accumulation.

// Does /proc/cpuinfo list AVX512_BF16? (So that the tests below cannot skip on a CPU that
// has it because the run-time detection broke.)
static bool cpuinfo_has_avx512_bf16() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return false;
  char line[4096];
  bool has = false;
  while (!has && std::fgets(line, sizeof line, f))
    if (std::strncmp(line, "flags", 5) == 0) has = std::strstr(line, " avx512_bf16") != nullptr;
  std::fclose(f);
  return has;
}

// The kernel's row conversion equals round_to_bf16 bit for bit (ties, subnormals, NaN,
// infinities, overflow to infinity), pads an odd k with a zero and writes nothing past
// ceil(k/2) * 2 values.
static void test_bf16_pairs(const CpuBf16MathKernels& m) {
  const float specials[] = {1.0f, -0.0f, 0.0f, 1.00390625f /* a tie: stays 1 */, 1.01171875f /* a tie: up */,
                            1e-40f, -1e-40f, 1.17549435e-38f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                            3.4028235e38f /* rounds to infinity */, -2.5e-3f, 65504.0f};
  int bad = 0;
  for (int k = 1; k <= 70; ++k) {
    std::vector<float> a = randn(size_t(k), 10.0f);
    for (int i = 0; i < k; ++i)
      if (i % 3 == 0) a[size_t(i)] = specials[size_t(i / 3) % (sizeof specials / sizeof specials[0])];
    const int k2 = (k + 1) / 2 * 2;
    std::vector<uint16_t> out(size_t(k2) + 8, 0xbeef);
    m.to_bf16_pairs(a.data(), k, out.data());
    for (int i = 0; i < k2 + 8; ++i) {
      uint16_t want = 0xbeef;  // the guard past the row
      if (i < k) {
        const float r = round_to_bf16(a[size_t(i)]);
        uint32_t u;
        std::memcpy(&u, &r, 4);
        want = uint16_t(u >> 16);
      } else if (i < k2) {
        want = 0;  // the pad of an odd k
      }
      bad += out[size_t(i)] != want;
    }
  }
  std::printf("%s BF16 math: row conversion equals round_to_bf16 for k = 1..70 (%d values differ)\n",
              bad ? "FAIL" : "ok  ", bad);
  if (bad) ++failures;
}

// The BF16-math linear against the reference that rounds both operands the same way (only
// the summation order differs: the usual tolerance), and away from the F32-activation
// result by far more than that tolerance (the activations really were rounded).
static void test_linear_bf16_math(Backend& fast, Backend& ref, int rows, int n, int k, Epilogue ep, bool bias) {
  auto a = randn(size_t(rows) * k), w = randn(size_t(n) * k, 0.1f), b = randn(n), init = randn(size_t(rows) * n);
  Tensor wf = make(fast, DType::bf16, n, k, &w);
  std::vector<float> w_rounded(w.size());
  fast.download_f32(wf, 0, n, w_rounded.data());
  fast.prepare_weight(wf);
  Tensor af = make(fast, DType::f32, rows, k, &a), bf = bias ? make(fast, DType::f32, 1, n, &b) : Tensor{},
         of = make(fast, DType::f32, rows, n, &init);
  Tensor ar = make(ref, DType::f32, rows, k, &a), wr = make(ref, DType::f32, n, k, &w_rounded),
         br = bias ? make(ref, DType::f32, 1, n, &b) : Tensor{}, orf = make(ref, DType::f32, rows, n, &init),
         oex = make(ref, DType::f32, rows, n, &init);
  const Status s = fast.linear(af, wf, bf, of, ep);
  if (!s) { std::printf("FAIL BF16-math linear: %s\n", s.message.c_str()); ++failures; }
  linear_bf16_math_reference(ar, wr, br, orf, ep);
  linear_reference(ar, wr, br, oex, ep);  // F32 activations, the same BF16 weights
  const std::vector<float> got = get(fast, of), want = get(ref, orf), exact = get(ref, oex);
  check("linear bf16 math rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
            " ep=" + std::to_string(int(ep)) + (bias ? " bias" : ""),
        got, want);
  double scale = 1e-6, moved = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    scale = std::max(scale, double(std::fabs(exact[i])));
    moved = std::max(moved, double(std::fabs(got[i] - exact[i])));
  }
  // k >= 24: with fewer terms the rounding's expected move is close to this bound, and the
  // check failed on some random draws (k = 8, 2026-12-03).
  if (moved <= 10 * 2e-5 * scale && k >= 24) {
    std::printf("FAIL   the activations were not rounded (max diff to F32 activations %.3g)\n", moved);
    ++failures;
  }
  for (Tensor* t : {&af, &wf, &bf, &of}) fast.release(*t);
  for (Tensor* t : {&ar, &wr, &br, &orf, &oex}) ref.release(*t);
}

// BF16 and int8 math keep a BF16 K/V cache (half the bytes the attention reads).
static void test_bf16_kv_cache(Backend& fast, Backend& ref, const char* mode_name) {
  if (fast.kv_dtype() != DType::bf16) { std::printf("FAIL %s: the K/V cache must be BF16\n", mode_name); ++failures; }
  {  // caches of another dtype than kv_dtype(): refused, not misread
    Tensor q = make(fast, DType::f32, 1, 64, nullptr), k = make(fast, DType::f32, 4, 64, nullptr),
           v = make(fast, DType::f32, 4, 64, nullptr), o = make(fast, DType::f32, 1, 64, nullptr);
    AttnParams p;
    p.n_q = 1; p.q_slot0 = 3; p.n_kv = 4; p.n_heads = 1; p.head_dim = 64; p.capacity = 4;
    const bool refused = !fast.attention(q, k, v, p, o);
    std::printf("%s %s: attention over F32 caches refused\n", refused ? "ok  " : "FAIL", mode_name);
    if (!refused) ++failures;
    for (Tensor* t : {&q, &k, &v, &o}) fast.release(*t);
  }
  test_rope_once(fast, ref, 2, 5, 3, 64, 10, true, true);
  test_rope_once(fast, ref, 1, 40, 2, 36, 900, true, true);  // several row blocks; hd 36: a scalar rope tail
  for (AttnMode mode : {AttnMode::causal, AttnMode::mixed2, AttnMode::sequential})
    for (int hd : {64, 32, 48}) {  // 32, 64: the AVX-512 kernel reads BF16; 48: widened to F32 first
      test_attention(fast, ref, 2, 12, hd, 3, 100, 103, 130, mode, true);
      test_attention(fast, ref, 1, 3, hd, 8, 60, 68, 70, mode, true);
    }
  test_attention(fast, ref, 1, 2, 64, 70, 0, 70, 70, AttnMode::causal, true);  // many rows: packed panels
  test_attention(fast, ref, 2, 2, 64, 14, 0, 14, 14, AttnMode::sequential, true);
}

static void test_bf16_math(Backend& ref) {
  const CpuBf16MathKernels* m = cpu_bf16_math_kernels();
  const bool listed = cpuinfo_has_avx512_bf16();
#if defined(__x86_64__)
  if (listed && !m) {
    std::printf("FAIL /proc/cpuinfo lists avx512_bf16 but the BF16-math kernels are unavailable\n");
    ++failures;
  }
#endif
  if (!m) {
    const bool reported = cpu_bf16_math_error() != nullptr;
    std::printf("%s skip BF16 math: this CPU lacks AVX512_BF16 (reported as: %s)\n", reported ? "ok  " : "FAIL",
                reported ? cpu_bf16_math_error() : "nothing");
    if (!reported) ++failures;
    return;
  }
  std::printf("== BF16 math (%s)\n", m->name);
  if (cpu_bf16_math_error()) { std::printf("FAIL BF16 math reported unavailable: %s\n", cpu_bf16_math_error()); ++failures; }
  test_bf16_pairs(*m);
  auto fast = create_cpu_backend(2, DType::f32, true, false, /*bf16_math=*/true);
  if (fast->weight_dtype() != DType::bf16 || fast->folded_weight_dtype() != DType::bf16) {
    std::printf("FAIL BF16 math: every matrix must be BF16\n");
    ++failures;
  }
  int i = 0;
  for (int rows = 1; rows <= 20; ++rows)  // every tile height and remainder of the kernel
    for (auto nk : {std::pair<int, int>{16, 8}, {37, 24}, {130, 64}, {3, 96}, {20, 37}, {64, 1}, {33, 3}})
      test_linear_bf16_math(*fast, ref, rows, nk.first, nk.second, Epilogue(i++ % 3), rows % 2 == 1);
  for (int rows : {40, 121, 250})  // several row blocks per call
    for (Epilogue ep : {Epilogue::store, Epilogue::gelu, Epilogue::add_to})
      test_linear_bf16_math(*fast, ref, rows, 200, 65, ep, true);
  test_linear_bf16_math(*fast, ref, 7, 48, 770, Epilogue::add_to, false);  // more than one 32-float chunk per row
  for (int rows : {3, 16, 17, 40}) {
    test_linear_row_invariance(*fast, DType::bf16, rows, 37, 40);
    test_linear_row_invariance(*fast, DType::bf16, rows, 37, 41);
  }
  test_bf16_kv_cache(*fast, ref, "BF16 math");
  // ESOLM_CPU_KERNELS forcing a set without pair panels: reported, and linear() refuses.
  setenv("ESOLM_CPU_KERNELS", "avx2", 1);
  const bool refused = cpu_kernels_error() || cpu_bf16_math_error() != nullptr;
  if (!cpu_kernels_error()) {
    auto forced = create_cpu_backend(2, DType::f32, true, false, true);
    std::vector<float> w(16 * 8, 0.5f), a(8, 1.0f);
    Tensor wf = make(*forced, DType::bf16, 16, 8, &w), af = make(*forced, DType::f32, 1, 8, &a),
           of = make(*forced, DType::f32, 1, 16, nullptr);
    const Status s = forced->linear(af, wf, Tensor{}, of, Epilogue::store);
    std::printf("%s BF16 math with ESOLM_CPU_KERNELS=avx2: %s\n", !s && s.code == Code::invalid_arg ? "ok  " : "FAIL",
                s ? "ran" : s.message.c_str());
    if (s || s.code != Code::invalid_arg) ++failures;
    for (Tensor* t : {&wf, &af, &of}) forced->release(*t);
  }
  if (!refused) { std::printf("FAIL BF16 math with ESOLM_CPU_KERNELS=avx2 not reported\n"); ++failures; }
  unsetenv("ESOLM_CPU_KERNELS");
}

// ---- int8 math (kernels.h): q8 weights x activations quantized to int8 in blocks of 32,
// vpdpbusd, exact int32 block sums, F32 accumulation over the blocks.

static bool cpuinfo_has_flag(const char* flag) {  // " flag" followed by a space or the line end
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return false;
  char line[8192];
  bool has = false;
  const size_t len = std::strlen(flag);
  while (!has && std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "flags", 5) != 0) continue;
    for (const char* p = std::strstr(line, flag); p && !has; p = std::strstr(p + 1, flag))
      has = p[-1] == ' ' && (p[len] == ' ' || p[len] == '\n' || p[len] == 0);
  }
  std::fclose(f);
  return has;
}

// The rule itself on hand-made blocks (ties to even, clamp, zero, NaN, infinity), then the
// kernel's row quantization equal to it bit for bit for k = 1..100 (scales, q, corrections;
// zero past k; nothing written past the row's blocks).
static void test_int8_quantize(const CpuInt8MathKernels& m) {
  {
    const float a[6] = {127.0f, 2.5f, -3.5f, 0.5f, 1.5f, -127.0f};  // s = 1: the ties go to even
    int8_t q[kInt8Block];
    int32_t corr = 1;
    const float s = int8_quantize_block(a, 6, q, &corr);
    const int8_t want[6] = {127, 2, -4, 0, 2, -127};
    bool ok = s == 1.0f && std::memcmp(q, want, 6) == 0 && corr == -128 * (127 + 2 - 4 + 0 + 2 - 127);
    for (int i = 6; i < kInt8Block; ++i) ok = ok && q[i] == 0;
    const float z[3] = {0.0f, -0.0f, 0.0f}, bad[3] = {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f},
                inf[2] = {1.0f, -std::numeric_limits<float>::infinity()};
    ok = ok && int8_quantize_block(z, 3, q, &corr) == 0.0f && corr == 0 && q[0] == 0;
    ok = ok && std::isnan(int8_quantize_block(bad, 3, q, &corr)) && corr == 0 && q[0] == 0 && q[2] == 0;
    ok = ok && std::isnan(int8_quantize_block(inf, 2, q, &corr)) && q[0] == 0;
    std::printf("%s int8 math: the activation rule on hand-made blocks (ties to even, zero, NaN, inf)\n", ok ? "ok  " : "FAIL");
    if (!ok) ++failures;
  }
  int bad = 0;
  for (int k = 1; k <= 100; ++k) {
    std::vector<float> a = randn(size_t(k), 3.0f);
    if (k % 7 == 0) a[size_t(k / 2)] = 1e3f;                                      // an outlier
    if (k > 40) for (int i = 32; i < 40; ++i) a[size_t(i)] = 1e-41f * float(i - 35);  // subnormals only
    if (k > 64) for (int i = 64; i < std::min(k, 96); ++i) a[size_t(i)] = 0.0f;     // a zero block
    if (k == 97) a[70] = std::numeric_limits<float>::quiet_NaN();
    const int blocks = (k + kInt8Block - 1) / kInt8Block;
    std::vector<int8_t> q(size_t(blocks + 1) * kInt8Block, 0x55), wq(size_t(blocks) * kInt8Block);
    std::vector<float> sc(size_t(blocks) + 1, -7.0f);
    std::vector<int32_t> corr(size_t(blocks) + 1, 77);
    m.quantize_row(a.data(), k, q.data(), sc.data(), corr.data());
    for (int b = 0; b < blocks; ++b) {
      int32_t wc;
      const float ws = int8_quantize_block(a.data() + b * kInt8Block, std::min(kInt8Block, k - b * kInt8Block),
                                           wq.data() + b * kInt8Block, &wc);
      bad += std::memcmp(&ws, &sc[size_t(b)], 4) != 0 || wc != corr[size_t(b)];
    }
    bad += std::memcmp(q.data(), wq.data(), wq.size()) != 0;
    bad += sc[size_t(blocks)] != -7.0f || corr[size_t(blocks)] != 77 || q[size_t(blocks) * kInt8Block] != 0x55;
  }
  std::printf("%s int8 math: row quantization equals int8_quantize_block for k = 1..100 (%d differ)\n",
              bad ? "FAIL" : "ok  ", bad);
  if (bad) ++failures;
}

// The int8-math linear against its reference (the same quantization; integer products
// exact, only the F32 summation over blocks differs: the usual tolerance), its weight
// downloading as the q8 values, and its result away from the F32-activation one by far
// more than that tolerance (the activations really were quantized).
static void test_linear_int8_math(Backend& fast, Backend& ref, int rows, int n, int k, Epilogue ep, bool bias) {
  auto a = randn(size_t(rows) * k), w = randn(size_t(n) * k, 0.1f), b = randn(n), init = randn(size_t(rows) * n);
  for (int c = 0; c < k; ++c) w[size_t(n / 2) * k + c] = 0.0f;  // an all-zero row: scale 0
  std::vector<int8_t> wq8(w.size());
  std::vector<float> wq(w.size()), wdq(w.size()), ws(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    ws[size_t(r)] = q8_quantize_row(w.data() + size_t(r) * k, k, wq8.data() + size_t(r) * k, 1);
    for (int c = 0; c < k; ++c) {
      wq[size_t(r) * k + c] = float(wq8[size_t(r) * k + c]);
      wdq[size_t(r) * k + c] = wq[size_t(r) * k + c] * ws[size_t(r)];
    }
  }
  Tensor wf = make(fast, DType::f32, n, k, &w);
  fast.prepare_weight(wf);
  Tensor af = make(fast, DType::f32, rows, k, &a), bf = bias ? make(fast, DType::f32, 1, n, &b) : Tensor{},
         of = make(fast, DType::f32, rows, n, &init);
  Tensor ar = make(ref, DType::f32, rows, k, &a), wr = make(ref, DType::f32, n, k, &wq), sr = make(ref, DType::f32, 1, n, &ws),
         wdr = make(ref, DType::f32, n, k, &wdq), br = bias ? make(ref, DType::f32, 1, n, &b) : Tensor{},
         orf = make(ref, DType::f32, rows, n, &init), oex = make(ref, DType::f32, rows, n, &init);
  const Status s = fast.linear(af, wf, bf, of, ep);
  if (!s) { std::printf("FAIL int8-math linear: %s\n", s.message.c_str()); ++failures; }
  linear_int8_math_reference(ar, wr, sr, br, orf, ep);
  linear_reference(ar, wdr, br, oex, ep);  // F32 activations, the same q8 weights
  const std::vector<float> got = get(fast, of), want = get(ref, orf), exact = get(ref, oex);
  const std::string name = "linear int8 math rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
                           " k=" + std::to_string(k) + " ep=" + std::to_string(int(ep)) + (bias ? " bias" : "");
  check(name, got, want);
  check("  VNNI-packed weight downloads the q8 values", get(fast, wf), wdq, 0);
  double scale = 1e-6, moved = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    scale = std::max(scale, double(std::fabs(exact[i])));
    moved = std::max(moved, double(std::fabs(got[i] - exact[i])));
  }
  // k >= 24: with fewer terms the rounding's expected move is close to this bound, and the
  // check failed on some random draws (k = 8, 2026-12-03).
  if (moved <= 10 * 2e-5 * scale && k >= 24) {
    std::printf("FAIL   the activations were not quantized (max diff to F32 activations %.3g)\n", moved);
    ++failures;
  }
  for (Tensor* t : {&af, &wf, &bf, &of}) fast.release(*t);
  for (Tensor* t : {&ar, &wr, &sr, &wdr, &br, &orf, &oex}) ref.release(*t);
}

// upload_q8 (a q8 file) packs the same VNNI panels as prepare_weight: equal results, bit
// for bit; a NaN in one input row makes that row's outputs NaN and leaves the others.
static void test_int8_upload_and_nan(Backend& fast) {
  const int rows = 5, n = 40, k = 70;
  auto a = randn(size_t(rows) * k), w = randn(size_t(n) * k, 0.1f);
  std::vector<int8_t> q(w.size());
  std::vector<float> sc(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) sc[size_t(r)] = q8_quantize_row(w.data() + size_t(r) * k, k, q.data() + size_t(r) * k, 1);
  Tensor w1 = make(fast, DType::f32, n, k, &w), w2;
  fast.prepare_weight(w1);
  const Status up = fast.upload_q8(w2, n, k, q.data(), sc.data());
  a[size_t(2) * k + 50] = std::numeric_limits<float>::quiet_NaN();
  Tensor af = make(fast, DType::f32, rows, k, &a), o1 = make(fast, DType::f32, rows, n, nullptr),
         o2 = make(fast, DType::f32, rows, n, nullptr);
  fast.linear(af, w1, Tensor{}, o1, Epilogue::store);
  fast.linear(af, w2, Tensor{}, o2, Epilogue::store);
  const std::vector<float> g1 = get(fast, o1), g2 = get(fast, o2);
  bool ok = bool(up) && std::memcmp(g1.data(), g2.data(), g1.size() * 4) == 0;
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < n; ++j) ok = ok && (r == 2) == std::isnan(g1[size_t(r) * n + j]);
  std::printf("%s int8 math: upload_q8 equals prepare_weight bit for bit; a NaN input row gives NaN outputs only\n",
              ok ? "ok  " : "FAIL");
  if (!ok) ++failures;
  for (Tensor* t : {&w1, &w2, &af, &o1, &o2}) fast.release(*t);
}

static void test_int8_math(Backend& ref) {
  const CpuInt8MathKernels* m = cpu_int8_math_kernels();
#if defined(__x86_64__)
  if (cpuinfo_has_flag("avx512_vnni") && !m) {
    std::printf("FAIL /proc/cpuinfo lists avx512_vnni but the int8-math kernels are unavailable\n");
    ++failures;
  }
#endif
  if (!m) {
    const bool reported = cpu_int8_math_error() != nullptr;
    std::printf("%s skip int8 math: this CPU lacks AVX512_VNNI (reported as: %s)\n", reported ? "ok  " : "FAIL",
                reported ? cpu_int8_math_error() : "nothing");
    if (!reported) ++failures;
    return;
  }
  std::printf("== int8 math (%s)\n", m->name);
  if (cpu_int8_math_error()) { std::printf("FAIL int8 math reported unavailable: %s\n", cpu_int8_math_error()); ++failures; }
  test_int8_quantize(*m);
  auto fast = create_cpu_backend(2, DType::f32, true, /*q8=*/true, false, /*int8_math=*/true);
  int i = 0;
  for (int rows = 1; rows <= 20; ++rows)  // every tile height and remainder of the kernel
    for (auto nk : {std::pair<int, int>{16, 8}, {37, 24}, {130, 64}, {3, 96}, {20, 37}, {64, 1}, {33, 3}, {50, 100}})
      test_linear_int8_math(*fast, ref, rows, nk.first, nk.second, Epilogue(i++ % 3), rows % 2 == 1);
  for (int rows : {40, 121, 250})  // several row blocks per call
    for (Epilogue ep : {Epilogue::store, Epilogue::gelu, Epilogue::add_to})
      test_linear_int8_math(*fast, ref, rows, 200, 65, ep, true);
  test_linear_int8_math(*fast, ref, 7, 48, 770, Epilogue::add_to, false);  // many blocks, a partial last one
  for (int rows : {3, 16, 17, 40}) {
    test_linear_row_invariance(*fast, DType::f32, rows, 37, 40);
    test_linear_row_invariance(*fast, DType::f32, rows, 37, 41);
    test_linear_row_invariance(*fast, DType::f32, rows, 70, 300);
  }
  test_int8_upload_and_nan(*fast);
  test_bf16_kv_cache(*fast, ref, "int8 math");
  // ESOLM_CPU_KERNELS forcing a narrower set: reported, and linear() refuses.
  setenv("ESOLM_CPU_KERNELS", "avx2", 1);
  const bool refused = cpu_kernels_error() || cpu_int8_math_error() != nullptr;
  if (!cpu_kernels_error()) {
    auto forced = create_cpu_backend(2, DType::f32, true, true, false, true);
    std::vector<float> w(16 * 8, 0.5f), a(8, 1.0f);
    Tensor wf = make(*forced, DType::f32, 16, 8, &w), af = make(*forced, DType::f32, 1, 8, &a),
           of = make(*forced, DType::f32, 1, 16, nullptr);
    forced->prepare_weight(wf);
    const Status s = forced->linear(af, wf, Tensor{}, of, Epilogue::store);
    std::printf("%s int8 math with ESOLM_CPU_KERNELS=avx2: %s\n", !s && s.code == Code::invalid_arg ? "ok  " : "FAIL",
                s ? "ran" : s.message.c_str());
    if (s || s.code != Code::invalid_arg) ++failures;
    for (Tensor* t : {&wf, &af, &of}) forced->release(*t);
  }
  if (!refused) { std::printf("FAIL int8 math with ESOLM_CPU_KERNELS=avx2 not reported\n"); ++failures; }
  unsetenv("ESOLM_CPU_KERNELS");
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
    // 1-2 rows: pairs of panels; 3-8: one streamed panel at a time (AVX2, portable).
    for (int rows : {1, 2, 3, 4, 5, 6, 7, 8, 13, 16, 17, 100})
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
    for (int rows : {1, 2, 3, 5, 8, 17})  // odd k: the AVX-512 pair panels end in a padding row
      test_linear_bf16(*fast, *ref, rows, 50, 37, rows % 2 ? Epilogue::store : Epilogue::add_to);
    test_linear_bf16(*fast, *ref, 100, 110, 33, Epilogue::gelu);
    for (int rows : {3, 16, 17, 40, 70})
      for (DType wdt : {DType::f32, DType::bf16}) {
        test_linear_row_invariance(*fast, wdt, rows, 37, 40);
        test_linear_row_invariance(*fast, wdt, rows, 37, 41);
      }
    for (DType wdt : {DType::f32, DType::bf16}) {
      test_linear_row_invariance(*fast, wdt, 131, 110, 40);
      test_linear_row_invariance(*fast, wdt, 131, 110, 41);
    }
    auto fast_q8 = create_cpu_backend(2, DType::f32, true, true);
    test_linear_row_invariance(*fast_q8, DType::f32, 23, 50, 33);
    test_linear_row_invariance(*fast_q8, DType::f32, 70, 110, 33);
    for (int rows : {1, 2, 3, 4, 6, 9, 16, 30, 70})
      for (Epilogue ep : {Epilogue::store, Epilogue::gelu, Epilogue::add_to})
        test_linear_q8(*fast_q8, *ref, rows, 37, 64, ep, rows % 2 == 0);
    test_linear_q8(*fast_q8, *ref, 3, 16, 37, Epilogue::store, true);
    for (AttnMode mode : {AttnMode::causal, AttnMode::bidirectional, AttnMode::mixed2})
      for (int hd : {8, 64, 24, 10, 32, 128}) {  // 32, 64, 128: the AVX-512 few-row kernel
        test_attention(*fast, *ref, 2, 3, hd, 1, 0, 1, 8, mode);
        test_attention(*fast, *ref, 1, 2, hd, 7, 0, 7, 7, mode);
        test_attention(*fast, *ref, 2, 2, hd, 5, 33, 38, 40, mode);
        test_attention(*fast, *ref, 1, 2, hd, 70, 0, 70, 70, mode);
        test_attention(*fast, *ref, 1, 1, hd, 3, 100, 103, 130, mode);
        test_attention(*fast, *ref, 2, 2, hd, 8, 60, 68, 70, mode);   // the most rows read directly
        test_attention(*fast, *ref, 1, 2, hd, 9, 60, 69, 70, mode);   // the fewest rows packed
        test_attention(*fast, *ref, 2, 9, hd, 3, 97, 100, 120, mode);  // groups of 4 (and 1) heads, 4 slot blocks
      }
    // Many heads: a few-row task takes a group of heads (backend_cpu.cpp), over several
    // slot blocks of the AVX-512 kernel; 13 heads leave a short last group.
    for (AttnMode mode : {AttnMode::causal, AttnMode::mixed2, AttnMode::sequential}) {
      test_attention(*fast, *ref, 2, 12, 64, 3, 100, 103, 130, mode);
      test_attention(*fast, *ref, 1, 13, 32, 5, 40, 45, 50, mode);
      test_attention(*fast, *ref, 1, 9, 128, 2, 70, 72, 80, mode);
      test_attention(*fast, *ref, 1, 16, 64, 8, 0, 8, 8, mode);
    }
    for (AttnMode mode : {AttnMode::causal, AttnMode::bidirectional, AttnMode::mixed2})
      for (int hd : {48, 64})  // many key panels (13) and 3 or 4 value panels in one call
        test_attention(*fast, *ref, 1, 2, hd, 100, 100, 200, 200, mode);
    for (int hd : {8, 64}) {
      test_attention(*fast, *ref, 2, 2, hd, 14, 0, 14, 14, AttnMode::sequential);
      test_attention(*fast, *ref, 1, 3, hd, 100, 0, 100, 100, AttnMode::sequential);
    }
    for (int rows : {1, 3, 17}) test_layernorm(*fast, *ref, rows, 48, rows != 3);
    test_rope(*fast, *ref, 2, 5, 3, 16, 0);
    test_rope(*fast, *ref, 1, 9, 2, 64, 1000);   // grows the table past its first 1024 rows
    test_rope(*fast, *ref, 1, 4, 2, 8, 70000);   // positions past the table
    test_rope(*fast, *ref, 3, 2, 12, 64, 500);   // a batched step's rows (hd 64: eight pairs at a time)
    test_rope(*fast, *ref, 1, 3, 2, 36, 10);     // half = 18: eight at a time, then a scalar tail
    test_layernorm(*fast, *ref, 5, 53, true);  // d not a multiple of 8
    test_layernorm(*fast, *ref, 2, 100, true);  // six 16-float blocks, then a tail of 4
    test_rope(*fast, *ref, 2, 300, 2, 16, 900);  // many rows: blocks of rows on all threads
    test_floors(kernels);
  }
  unsetenv("ESOLM_CPU_KERNELS");
  test_bf16_math(*ref);
  test_int8_math(*ref);
  if (paths == 0) { std::printf("FAIL no kernel set ran\n"); ++failures; }
  std::printf("%s: %d failure(s), %d kernel set(s) tested\n", failures ? "FAILED" : "PASSED", failures, paths);
  return failures ? 1 : 0;
}
