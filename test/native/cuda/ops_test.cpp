// ops_test.cpp — CUDA backend vs CPU backend, op by op, then whole-model parity.
//
// Inputs are bf16-exact (host data rounded through bf16) and uploaded identically to
// both backends; each case runs twice on CUDA with a NaN-poisoned output (unwritten
// elements and stale state both show up). Errors are reported as max|cuda - cpu| over
// max|cpu| of the tensor, against a tolerance that names its reason.
// Usage: ops_test [--quick]   (--quick: a small subset for compute-sanitizer)
// No CUDA device: prints cuda_probe's reason; exit 0 unless ESOLM_REQUIRE_CUDA=1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_probe.h"
#include "engine/backend.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/philox.h"
#include "engine/sampler.h"

using namespace esolm;

namespace {

int g_fail = 0, g_cases = 0;
bool g_quick = false;
std::mt19937_64 g_rng(12345);
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Tolerances (relative to max|ref| of the compared tensor), with their reasons.
const double kTolBf16Out = 1e-2;   // one bf16 rounding of the output: 2^-9 rel, plus fp32 order
const double kTolF32 = 1e-4;       // fp32 vs the CPU's fp32/fp64: accumulation order only
const double kTolAttnBf16 = 1.5e-2;  // bf16 output + bf16 P in the P·V tensor-core product
const double kTolModel = 2e-2;     // DESIGN.md: CUDA vs CPU logits within 2e-2 of the logit scale

float bf16_round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<float> randv(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_round(d(g_rng));
  return v;
}

#define CHECK_OK(expr)                                                                   \
  do {                                                                                   \
    Status s_ = (expr);                                                                  \
    if (!s_) {                                                                           \
      std::printf("FAIL %s:%d %s -> %s %s\n", __FILE__, __LINE__, #expr,                \
                  status_code_name(s_.code), s_.message.c_str());                        \
      ++g_fail;                                                                          \
      return;                                                                            \
    }                                                                                    \
  } while (0)

struct Ctx {
  Backend* cu;
  Backend* cpu;
};

// Tensor owned by one backend, released on scope exit.
struct T {
  Backend* be = nullptr;
  Tensor t;
  T() = default;
  T(Backend* b, DType dt, int64_t r, int64_t c) : be(b) {
    Status s = b->alloc(t, dt, r, c);
    if (!s) std::printf("alloc failed: %s\n", s.message.c_str());
  }
  T(const T&) = delete;
  ~T() { if (be) be->release(t); }
};

Status up(Backend* b, Tensor& t, const std::vector<float>& v) { return b->upload_f32(t, v.data(), int64_t(v.size())); }
Status up_i(Backend* b, Tensor& t, const std::vector<int32_t>& v) { return b->upload_i32(t, v.data(), int64_t(v.size())); }
std::vector<float> down(Backend* b, const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  Status s = b->download_f32(t, 0, t.rows, v.data());
  if (!s) {
    std::printf("download failed: %s\n", s.message.c_str());
    std::fill(v.begin(), v.end(), kNaN);
  }
  return v;
}

// max|a-b| / max|b|; NaN anywhere fails.
bool compare(const std::string& name, const std::vector<float>& got, const std::vector<float>& ref,
             double tol, const char* why) {
  ++g_cases;
  double err = 0, scale = 0;
  bool nan = got.size() != ref.size();
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(ref[i])) { nan = true; continue; }
    err = std::max(err, std::fabs(double(got[i]) - ref[i]));
    scale = std::max(scale, std::fabs(double(ref[i])));
  }
  const double rel = err / std::max(scale, 1e-30);
  const bool ok = !nan && rel <= tol;
  std::printf("%s %-58s max_err %.3e scale %.3e rel %.3e tol %.1e (%s)%s\n", ok ? "ok  " : "FAIL",
              name.c_str(), err, scale, rel, tol, why, nan ? " NaN/size" : "");
  if (!ok) ++g_fail;
  return ok;
}

// ------------------------------------------------------------------ linear
void test_linear(Ctx& c, int64_t rows, int64_t n, int64_t k, Epilogue ep, bool bias, DType out_dt,
                 DType in_dt = DType::bf16) {
  const char* epn = ep == Epilogue::store ? "store" : ep == Epilogue::gelu ? "gelu" : "add_to";
  char name[160];
  std::snprintf(name, sizeof name, "linear rows=%lld n=%lld k=%lld %s%s out=%s in=%s", (long long)rows,
                (long long)n, (long long)k, epn, bias ? "+bias" : "", out_dt == DType::f32 ? "f32" : "bf16",
                in_dt == DType::f32 ? "f32" : "bf16");
  auto x = randv(size_t(rows * k)), w = randv(size_t(n * k), 1.f / std::sqrt(float(k)));
  auto b = randv(size_t(n)), prior = randv(size_t(rows * n));
  T cx(c.cu, in_dt, rows, k), cw(c.cu, DType::bf16, n, k), cb(c.cu, DType::f32, 1, n), co(c.cu, out_dt, rows, n);
  T px(c.cpu, DType::f32, rows, k), pw(c.cpu, DType::f32, n, k), pb(c.cpu, DType::f32, 1, n), po(c.cpu, DType::f32, rows, n);
  CHECK_OK(up(c.cu, cx.t, x)); CHECK_OK(up(c.cu, cw.t, w)); CHECK_OK(up(c.cu, cb.t, b));
  CHECK_OK(up(c.cpu, px.t, x)); CHECK_OK(up(c.cpu, pw.t, w)); CHECK_OK(up(c.cpu, pb.t, b));
  CHECK_OK(c.cpu->prepare_weight(pw.t));
  CHECK_OK(c.cu->prepare_weight(cw.t));
  const bool add = ep == Epilogue::add_to;
  CHECK_OK(up(c.cpu, po.t, add ? prior : std::vector<float>(size_t(rows * n), 0.f)));
  CHECK_OK(c.cpu->linear(px.t, pw.t, bias ? pb.t : Tensor{}, po.t, ep));
  auto ref = down(c.cpu, po.t);
  std::vector<float> first;
  for (int rep = 0; rep < 2; ++rep) {
    CHECK_OK(up(c.cu, co.t, add ? prior : std::vector<float>(size_t(rows * n), kNaN)));
    CHECK_OK(c.cu->linear(cx.t, cw.t, bias ? cb.t : Tensor{}, co.t, ep));
    CHECK_OK(c.cu->synchronize());
    auto got = down(c.cu, co.t);
    compare(std::string(name) + (rep ? " #2" : ""), got, ref,
            out_dt == DType::bf16 ? kTolBf16Out : 1e-3,
            out_dt == DType::bf16 ? "bf16 output" : "f32 out, bf16 products, fp32 sums");
    if (rep == 0) first = got;
    else if (first != got) { std::printf("FAIL %s: run 2 differs from run 1\n", name); ++g_fail; }
  }
}

// ------------------------------------------------------------------ layernorm
void test_layernorm(Ctx& c, int64_t rows, int64_t d, bool bias, DType out_dt) {
  char name[128];
  std::snprintf(name, sizeof name, "layernorm rows=%lld d=%lld%s out=%s", (long long)rows, (long long)d,
                bias ? " +b" : "", out_dt == DType::f32 ? "f32" : "bf16");
  auto x = randv(size_t(rows * d), 3.f);
  for (int64_t r = 0; r < rows; ++r) x[size_t(r * d)] += 50.f;  // an offset: tests two-pass stability
  auto w = randv(size_t(d)), b = randv(size_t(d));
  T cx(c.cu, DType::f32, rows, d), cw(c.cu, DType::f32, 1, d), cb(c.cu, DType::f32, 1, d), cy(c.cu, out_dt, rows, d);
  T px(c.cpu, DType::f32, rows, d), pw(c.cpu, DType::f32, 1, d), pb(c.cpu, DType::f32, 1, d), py(c.cpu, DType::f32, rows, d);
  CHECK_OK(up(c.cu, cx.t, x)); CHECK_OK(up(c.cu, cw.t, w)); CHECK_OK(up(c.cu, cb.t, b));
  CHECK_OK(up(c.cpu, px.t, x)); CHECK_OK(up(c.cpu, pw.t, w)); CHECK_OK(up(c.cpu, pb.t, b));
  CHECK_OK(c.cpu->layernorm(px.t, pw.t, bias ? pb.t : Tensor{}, py.t));
  auto ref = down(c.cpu, py.t);
  for (int rep = 0; rep < 2; ++rep) {
    CHECK_OK(up(c.cu, cy.t, std::vector<float>(size_t(rows * d), kNaN)));
    CHECK_OK(c.cu->layernorm(cx.t, cw.t, bias ? cb.t : Tensor{}, cy.t));
    compare(std::string(name) + (rep ? " #2" : ""), down(c.cu, cy.t), ref,
            out_dt == DType::bf16 ? kTolBf16Out : kTolF32, out_dt == DType::bf16 ? "bf16 output" : "fp32");
  }
}

// ------------------------------------------------------------------ rope + cache store
void test_rope(Ctx& c, int batch, int n, int heads, int hd, int slot0, int capacity, DType dt) {
  char name[160];
  std::snprintf(name, sizeof name, "rope_qkv_store b=%d n=%d h=%d hd=%d slot0=%d cap=%d %s", batch, n,
                heads, hd, slot0, capacity, dt == DType::f32 ? "f32" : "bf16");
  const int64_t d = int64_t(heads) * hd, rows = int64_t(batch) * n;
  auto qkv = randv(size_t(rows * 3 * d));
  std::vector<int32_t> pos(static_cast<size_t>(rows));
  for (auto& p : pos) p = int32_t(g_rng() % 8192);
  std::vector<float> fill(size_t(int64_t(batch) * capacity * d), 7.f);  // untouched slots stay 7
  T cq(c.cu, dt, rows, 3 * d), cp(c.cu, DType::i32, rows, 1), co(c.cu, dt, rows, d),
      ck(c.cu, dt, int64_t(batch) * capacity, d), cv(c.cu, dt, int64_t(batch) * capacity, d);
  T pq(c.cpu, DType::f32, rows, 3 * d), pp(c.cpu, DType::i32, rows, 1), po(c.cpu, DType::f32, rows, d),
      pk(c.cpu, DType::f32, int64_t(batch) * capacity, d), pv(c.cpu, DType::f32, int64_t(batch) * capacity, d);
  CHECK_OK(up(c.cu, cq.t, qkv)); CHECK_OK(up_i(c.cu, cp.t, pos));
  CHECK_OK(up(c.cpu, pq.t, qkv)); CHECK_OK(up_i(c.cpu, pp.t, pos));
  CHECK_OK(up(c.cpu, pk.t, fill)); CHECK_OK(up(c.cpu, pv.t, fill));
  CHECK_OK(c.cpu->rope_qkv_store(pq.t, pp.t, batch, n, heads, slot0, capacity, po.t, pk.t, pv.t));
  auto rq = down(c.cpu, po.t), rk = down(c.cpu, pk.t), rv = down(c.cpu, pv.t);
  // f32: angle in float64 on both sides; bf16: one output rounding.
  const double tol = dt == DType::f32 ? 1e-5 : kTolBf16Out;
  const char* why = dt == DType::f32 ? "fp64 angle, fp32 rotate" : "bf16 output";
  for (int rep = 0; rep < 2; ++rep) {
    CHECK_OK(up(c.cu, co.t, std::vector<float>(size_t(rows * d), kNaN)));
    CHECK_OK(up(c.cu, ck.t, fill)); CHECK_OK(up(c.cu, cv.t, fill));
    CHECK_OK(c.cu->rope_qkv_store(cq.t, cp.t, batch, n, heads, slot0, capacity, co.t, ck.t, cv.t));
    const std::string s = rep ? " #2" : "";
    compare(std::string(name) + " q" + s, down(c.cu, co.t), rq, tol, why);
    compare(std::string(name) + " K" + s, down(c.cu, ck.t), rk, tol, why);
    compare(std::string(name) + " V" + s, down(c.cu, cv.t), rv, tol, why);
  }
}

// ------------------------------------------------------------------ attention
void test_attention(Ctx& c, AttnMode mode, int batch, int n_q, int q_slot0, int n_kv, int heads, int hd,
                    int capacity, DType dt) {
  char name[200];
  std::snprintf(name, sizeof name, "attention %s b=%d nq=%d q0=%d nkv=%d h=%d hd=%d cap=%d %s",
                attn_mode_name(mode), batch, n_q, q_slot0, n_kv, heads, hd, capacity,
                dt == DType::f32 ? "f32" : "bf16");
  const int64_t d = int64_t(heads) * hd, qr = int64_t(batch) * n_q, kr = int64_t(batch) * capacity;
  auto q = randv(size_t(qr * d), 1.5f), k = randv(size_t(kr * d), 1.5f), v = randv(size_t(kr * d));
  std::vector<int32_t> clean(static_cast<size_t>(kr));
  for (auto& x : clean) x = int32_t(g_rng() % 3 != 0);
  T cq(c.cu, dt, qr, d), ck(c.cu, dt, kr, d), cv(c.cu, dt, kr, d), co(c.cu, dt, qr, d), cc(c.cu, DType::i32, kr, 1);
  T pq(c.cpu, DType::f32, qr, d), pk(c.cpu, DType::f32, kr, d), pv(c.cpu, DType::f32, kr, d),
      po(c.cpu, DType::f32, qr, d), pc(c.cpu, DType::i32, kr, 1);
  CHECK_OK(up(c.cu, cq.t, q)); CHECK_OK(up(c.cu, ck.t, k)); CHECK_OK(up(c.cu, cv.t, v)); CHECK_OK(up_i(c.cu, cc.t, clean));
  CHECK_OK(up(c.cpu, pq.t, q)); CHECK_OK(up(c.cpu, pk.t, k)); CHECK_OK(up(c.cpu, pv.t, v)); CHECK_OK(up_i(c.cpu, pc.t, clean));
  AttnParams p;
  p.batch = batch; p.n_q = n_q; p.q_slot0 = q_slot0; p.n_kv = n_kv; p.n_heads = heads;
  p.head_dim = hd; p.capacity = capacity; p.mode = mode;
  p.clean = mode == AttnMode::mixed2 ? &pc.t : nullptr;
  CHECK_OK(c.cpu->attention(pq.t, pk.t, pv.t, p, po.t));
  auto ref = down(c.cpu, po.t);
  p.clean = mode == AttnMode::mixed2 ? &cc.t : nullptr;
  std::vector<float> first;
  for (int rep = 0; rep < 2; ++rep) {
    CHECK_OK(up(c.cu, co.t, std::vector<float>(size_t(qr * d), kNaN)));
    CHECK_OK(c.cu->attention(cq.t, ck.t, cv.t, p, co.t));
    CHECK_OK(c.cu->synchronize());
    auto got = down(c.cu, co.t);
    compare(std::string(name) + (rep ? " #2" : ""), got, ref, dt == DType::f32 ? 1e-4 : kTolAttnBf16,
            dt == DType::f32 ? "fp32 softmax, fast exp" : "bf16 out and P");
    if (rep == 0) first = got;
    else if (first != got) { std::printf("FAIL %s: run 2 differs from run 1\n", name); ++g_fail; }
  }
}

// ------------------------------------------------------------------ embed, gather
void test_embed_gather(Ctx& c, int64_t vocab, int64_t d, int64_t rows) {
  char name[96];
  std::snprintf(name, sizeof name, "embed V=%lld d=%lld rows=%lld", (long long)vocab, (long long)d, (long long)rows);
  auto tab = randv(size_t(vocab * d));
  std::vector<int32_t> tok(static_cast<size_t>(rows));
  for (auto& t : tok) t = int32_t(g_rng() % vocab);
  T ct(c.cu, DType::bf16, vocab, d), ci(c.cu, DType::i32, rows, 1), cx(c.cu, DType::f32, rows, d);
  T pt(c.cpu, DType::f32, vocab, d), pi(c.cpu, DType::i32, rows, 1), px(c.cpu, DType::f32, rows, d);
  CHECK_OK(up(c.cu, ct.t, tab)); CHECK_OK(up_i(c.cu, ci.t, tok));
  CHECK_OK(up(c.cpu, pt.t, tab)); CHECK_OK(up_i(c.cpu, pi.t, tok));
  CHECK_OK(c.cpu->embed(pt.t, pi.t, px.t));
  auto ref = down(c.cpu, px.t);
  for (int rep = 0; rep < 2; ++rep) {
    CHECK_OK(up(c.cu, cx.t, std::vector<float>(size_t(rows * d), kNaN)));
    CHECK_OK(c.cu->embed(ct.t, ci.t, cx.t));
    compare(std::string(name) + (rep ? " #2" : ""), down(c.cu, cx.t), ref, 0.0, "exact copy");
  }
  // gather_rows over f32 and bf16 rows (odd column count: 2-byte units)
  for (DType dt : {DType::f32, DType::bf16}) {
    const int64_t cols = d + 1, m = rows;
    auto x = randv(size_t(vocab * cols));
    std::vector<int32_t> idx(static_cast<size_t>(m));
    for (auto& t : idx) t = int32_t(g_rng() % vocab);
    T cxx(c.cu, dt, vocab, cols), cix(c.cu, DType::i32, m, 1), cox(c.cu, dt, m, cols);
    CHECK_OK(up(c.cu, cxx.t, x)); CHECK_OK(up_i(c.cu, cix.t, idx));
    std::vector<float> want(size_t(m * cols));
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(&want[size_t(i * cols)], &x[size_t(idx[size_t(i)] * cols)], size_t(cols) * 4);
    for (int rep = 0; rep < 2; ++rep) {
      CHECK_OK(up(c.cu, cox.t, std::vector<float>(size_t(m * cols), kNaN)));
      CHECK_OK(c.cu->gather_rows(cxx.t, cix.t, cox.t));
      compare(std::string("gather_rows ") + (dt == DType::f32 ? "f32" : "bf16") + " cols=" +
                  std::to_string(cols) + (rep ? " #2" : ""),
              down(c.cu, cox.t), want, 0.0, "exact copy");
    }
  }
}


// ------------------------------------------------------------------ sampler
// CUDA sample_rows vs esolm::sample_row on identical F32 logits (the CUDA tensor downloaded).
// exp/log differ by ulps between the two, so a row passes when the CUDA pick is the CPU's,
// or is kept by the nucleus definition (mass strictly above it <= p * Z, up to 1e-9) and
// its float64 Gumbel score is within 1e-9 (1 + |max|) of the CPU pick's score. Every row
// must pass and >= 99% must be exactly equal; two CUDA runs must agree exactly.
enum class LogitKind { normal, quantised, mask_top, edge };

double test_x(float f, const SampleParams& p) {
  double d = double(f);
  if (d != d) d = -std::numeric_limits<double>::infinity();
  const bool valid = p.temperature > 0 && p.temperature < std::numeric_limits<double>::infinity();
  if (valid && p.temperature != 1.0) d /= p.temperature;
  return d;
}

// Whether token t is an acceptable pick for one row (see above).
bool pick_acceptable(const float* row, int V, const SampleParams& p, const DrawKey& key, int32_t t,
                     int32_t ref) {
  if (t == ref) return true;
  if (t < 0 || t >= V || t == p.mask_index || ref < 0) return false;
  const double inf = std::numeric_limits<double>::infinity();
  const bool greedy = p.greedy || !(p.temperature > 0 && p.temperature < inf);
  if (greedy) return double(row[t]) == double(row[ref]);  // only an exact tie may differ
  double m = -inf;
  for (int i = 0; i < V; ++i)
    if (i != p.mask_index) m = std::max(m, test_x(row[i], p));
  const double xt = test_x(row[t], p), xr = test_x(row[ref], p);
  double bt = xt, br = xr;
  if (m == inf || m == -inf) {  // uniform over the tokens at m
    if (xt != m) return false;
    bt = br = 0;
  } else if (p.top_p < 1.0) {
    double z = 0, above = 0;
    for (int i = 0; i < V; ++i) {
      if (i == p.mask_index) continue;
      const double e = std::exp(test_x(row[i], p) - m);
      z += e;
      if (test_x(row[i], p) > xt) above += e;
    }
    if (above > std::max(p.top_p, 0.0) * z * (1 + 1e-9) + 1e-300) return false;
  }
  auto g = [&](int32_t tok) {
    const double u = draw_uniform(p.seed, key.sequence, key.position, key.round, uint32_t(tok));
    return -std::log(-std::log(u));
  };
  const double st = bt + g(t), sr = br + g(ref);
  return st >= sr - 1e-9 * (1 + std::fabs(sr));
}

void test_sampler(Ctx& c, int V, int rows, SampleParams p, LogitKind kind) {
  const char* kn = kind == LogitKind::normal ? "normal" : kind == LogitKind::quantised ? "quantised"
                 : kind == LogitKind::mask_top ? "mask-top" : "edge";
  char name[160];
  std::snprintf(name, sizeof name, "sample_rows V=%d rows=%d p=%.2f T=%.2f%s %s", V, rows, p.top_p,
                p.temperature, p.greedy ? " greedy" : "", kn);
  ++g_cases;
  const float inf = std::numeric_limits<float>::infinity();
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<float> lg(size_t(rows) * V);
  for (int r = 0; r < rows; ++r) {
    float* row = &lg[size_t(r) * V];
    for (int t = 0; t < V; ++t) {
      float v = nd(g_rng);
      if (kind == LogitKind::quantised) v = std::round(v) * 0.5f;  // many exact ties
      row[t] = v;
    }
    if (kind == LogitKind::mask_top && p.mask_index >= 0) row[p.mask_index] = 1e4f;
    if (kind == LogitKind::edge) {
      switch (r % 6) {
        case 0: row[r % V] = inf; row[(r + 3) % V] = inf; break;            // +inf take all
        case 1: for (int t = 0; t < V; ++t) row[t] = -inf; break;           // all -inf
        case 2: for (int t = 0; t < V; t += 3) row[t] = kNaN; break;        // NaN never wins
        case 3: for (int t = 0; t < V; ++t) row[t] = (t % 5 == 0) ? -inf : row[t]; break;
        case 4: row[(r * 7) % V] = 40.f; break;                              // one dominant
        default: for (int t = 0; t < V; ++t) row[t] = 1.f; break;           // all tied
      }
    }
  }
  T dev(c.cu, DType::f32, rows, V);
  if (!dev.t.data) { ++g_fail; std::printf("FAIL %s: alloc\n", name); return; }
  Status s = up(c.cu, dev.t, lg);
  std::vector<float> host = down(c.cu, dev.t);  // the very logits the kernel reads
  std::vector<DrawKey> keys(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) keys[size_t(r)] = DrawKey{uint32_t(r % 3), uint32_t(r * 7 + 1), uint32_t(r % 2)};
  std::vector<int32_t> got(static_cast<size_t>(rows), -7), got2(static_cast<size_t>(rows), -9), ref(static_cast<size_t>(rows));
  if (s) s = c.cu->sample_rows(dev.t, rows, p, keys.data(), got.data());
  if (s) s = c.cu->sample_rows(dev.t, rows, p, keys.data(), got2.data());
  if (!s) {
    ++g_fail;
    std::printf("FAIL %s: %s\n", name, s.message.c_str());
    return;
  }
  int exact = 0, bad = 0, first_bad = -1;
  for (int r = 0; r < rows; ++r) {
    ref[size_t(r)] = sample_row(&host[size_t(r) * V], V, p, keys[size_t(r)]);
    exact += got[size_t(r)] == ref[size_t(r)];
    if (!pick_acceptable(&host[size_t(r) * V], V, p, keys[size_t(r)], got[size_t(r)], ref[size_t(r)])) {
      ++bad;
      if (first_bad < 0) first_bad = r;
    }
  }
  const bool det = got == got2;
  const double frac = double(exact) / rows;
  const bool ok = bad == 0 && det && frac >= 0.99;
  std::printf("%s %-58s exact %d/%d, unacceptable %d, deterministic %s\n", ok ? "ok  " : "FAIL", name,
              exact, rows, bad, det ? "yes" : "no");
  if (first_bad >= 0)
    std::printf("     row %d: cuda %d cpu %d\n", first_bad, got[size_t(first_bad)], ref[size_t(first_bad)]);
  if (!ok) ++g_fail;
}

void run_sampler_tests(Ctx& c) {
  const int vocabs[] = {7, 1000, 50258};
  for (int V : vocabs) {
    if (g_quick && V != 1000) continue;
    const int rows = V == 50258 ? 64 : 130;
    for (double tp : {0.5, 0.9, 1.0})
      for (double temp : {1.0, 0.7}) {
        SampleParams p;
        p.top_p = tp;
        p.temperature = temp;
        p.mask_index = V - 1;
        p.seed = 0x1234567890ull + uint64_t(V);
        test_sampler(c, V, rows, p, LogitKind::normal);
        if (g_quick) break;
      }
    SampleParams p;
    p.mask_index = V - 1;
    p.seed = 99;
    p.greedy = true;
    test_sampler(c, V, rows, p, LogitKind::normal);
    test_sampler(c, V, rows, p, LogitKind::quantised);
    p.greedy = false;
    p.top_p = 0.9;
    test_sampler(c, V, rows, p, LogitKind::quantised);
    test_sampler(c, V, rows, p, LogitKind::edge);
    p.top_p = 0.5;
    p.temperature = 0.7;
    test_sampler(c, V, rows, p, LogitKind::quantised);
    p.mask_index = V / 2;
    test_sampler(c, V, rows, p, LogitKind::mask_top);
    p.top_p = 1.0;
    test_sampler(c, V, rows, p, LogitKind::mask_top);
    p.top_p = 0.0;  // keeps only the tokens tied at the max
    test_sampler(c, V, rows, p, LogitKind::quantised);
    p.top_p = 0.9;
    p.temperature = 0.0;  // invalid temperature = greedy
    test_sampler(c, V, rows, p, LogitKind::mask_top);
  }
}

// ------------------------------------------------------------------ whole model
ModelConfig tiny_config() {
  ModelConfig cfg;
  cfg.arch = Arch::esolm;
  cfg.hidden_size = 128;
  cfg.n_heads = 4;
  cfg.n_blocks = 2;
  cfg.cond_dim = 32;
  cfg.vocab_size = 1000;
  cfg.mask_index = 999;
  cfg.length = 256;
  return cfg;
}

// Random weights under the official names (MODEL-REFERENCE.md §1.2), bf16-exact.
HostWeights random_weights(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostWeights w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float sd) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    std::normal_distribution<float> dist(mean, sd);
    HostTensor t;
    t.shape = shape;
    t.data.resize(size_t(n));
    for (auto& x : t.data) x = bf16_round(dist(rng));
    w[name] = std::move(t);
  };
  const int64_t d = c.hidden_size, V = c.vocab_size, f = c.mlp_hidden(), cd = c.cond_dim;
  const float sd_d = 1.f / std::sqrt(float(d)), sd_f = 1.f / std::sqrt(float(f));
  add("vocab_embed.embedding", {V, d}, 0.f, 1.f);
  if (c.has_adaln()) {
    add("sigma_map.mlp.0.weight", {cd, 256}, 0.f, 0.05f);
    add("sigma_map.mlp.0.bias", {cd}, 0.f, 0.1f);
    add("sigma_map.mlp.2.weight", {cd, cd}, 0.f, 0.1f);
    add("sigma_map.mlp.2.bias", {cd}, 0.f, 0.1f);
  }
  for (int i = 0; i < c.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    add(p + "norm1.weight", {d}, 1.f, 0.1f);
    add(p + "attn_qkv.weight", {3 * d, d}, 0.f, 2.f * sd_d);  // sharper attention than uniform
    add(p + "attn_out.weight", {d, d}, 0.f, sd_d);
    add(p + "norm2.weight", {d}, 1.f, 0.1f);
    add(p + "mlp.0.weight", {f, d}, 0.f, sd_d);
    add(p + "mlp.0.bias", {f}, 0.f, 0.1f);
    add(p + "mlp.2.weight", {d, f}, 0.f, sd_f);
    add(p + "mlp.2.bias", {d}, 0.f, 0.1f);
    if (c.has_adaln()) {
      add(p + "adaLN_modulation.weight", {6 * d, cd}, 0.f, 0.05f);
      add(p + "adaLN_modulation.bias", {6 * d}, 0.f, 0.1f);
    }
  }
  add("output_layer.norm_final.weight", {d}, 1.f, 0.1f);
  add("output_layer.linear.weight", {V, d}, 0.f, 3.f * sd_d);
  add("output_layer.linear.bias", {V}, 0.f, 0.1f);
  if (c.has_adaln()) {
    add("output_layer.adaLN_modulation.weight", {2 * d, cd}, 0.f, 0.05f);
    add("output_layer.adaLN_modulation.bias", {2 * d}, 0.f, 0.1f);
  }
  return w;
}

// Logit parity: rel error vs the logit scale, and top-1 agreement per row.
void compare_logits(const std::string& name, const std::vector<float>& got, const std::vector<float>& ref, int V) {
  compare(name + " logits", got, ref, kTolModel, "bf16 weights/activations");
  const size_t rows = ref.size() / size_t(V);
  size_t agree = 0;
  for (size_t r = 0; r < rows && got.size() == ref.size(); ++r) {
    auto g = std::max_element(got.begin() + r * V, got.begin() + (r + 1) * V) - (got.begin() + r * V);
    auto f = std::max_element(ref.begin() + r * V, ref.begin() + (r + 1) * V) - (ref.begin() + r * V);
    agree += g == f;
  }
  const double frac = rows ? double(agree) / rows : 0;
  ++g_cases;
  const bool ok = frac >= 0.95;
  std::printf("%s %-58s top1 agreement %.4f (%zu/%zu rows) need 0.95\n", ok ? "ok  " : "FAIL",
              (name + " top1").c_str(), frac, agree, rows);
  if (!ok) ++g_fail;
}

struct Models {
  std::unique_ptr<Model> cu, cpu;
};

void test_model_forward(Models& m, AttnMode mode, int batch, int n) {
  const ModelConfig& cfg = m.cpu->config();
  const int V = cfg.vocab_size;
  std::vector<int32_t> tok(size_t(batch) * n), pos(size_t(batch) * n), x0(size_t(batch) * n);
  for (int b = 0; b < batch; ++b) {
    std::vector<int32_t> perm(static_cast<size_t>(cfg.length));
    for (int i = 0; i < cfg.length; ++i) perm[size_t(i)] = i;
    std::shuffle(perm.begin(), perm.end(), g_rng);
    for (int i = 0; i < n; ++i) {
      const size_t j = size_t(b) * n + i;
      x0[j] = int32_t(g_rng() % (V - 1));
      tok[j] = (g_rng() % 3 == 0) ? cfg.mask_index : x0[j];
      pos[j] = perm[size_t(i)];
    }
  }
  std::vector<float> ref(size_t(batch) * n * V), got(ref.size());
  const int32_t* x0p = mode == AttnMode::sequential ? x0.data() : nullptr;
  char name[96];
  std::snprintf(name, sizeof name, "model forward %s b=%d n=%d", attn_mode_name(mode), batch, n);
  CHECK_OK(m.cpu->forward(tok.data(), pos.data(), batch, n, mode, x0p, ref.data()));
  for (int rep = 0; rep < 2; ++rep) {
    std::fill(got.begin(), got.end(), kNaN);
    CHECK_OK(m.cu->forward(tok.data(), pos.data(), batch, n, mode, x0p, got.data()));
    compare_logits(std::string(name) + (rep ? " #2" : ""), got, ref, V);
  }
}

// Eso-LM (B)-style chain: windows [previous k | k new], commit the previous k. Compared
// CUDA step vs CPU step, and (CUDA) against a causal forward over the slot order.
void test_model_steps(Models& m, int batch, const std::vector<int>& ks) {
  const ModelConfig& cfg = m.cpu->config();
  const int V = cfg.vocab_size, L = cfg.length;
  int total = 0;
  for (int k : ks) total += k;
  std::vector<std::vector<int32_t>> order(static_cast<size_t>(batch)), seq(static_cast<size_t>(batch));
  for (int b = 0; b < batch; ++b) {
    order[size_t(b)].resize(size_t(L));
    for (int i = 0; i < L; ++i) order[size_t(b)][size_t(i)] = i;
    std::shuffle(order[size_t(b)].begin(), order[size_t(b)].end(), g_rng);
    seq[size_t(b)].resize(size_t(total));
    for (auto& t : seq[size_t(b)]) t = int32_t(g_rng() % (V - 1));
  }
  char name[96];
  std::snprintf(name, sizeof name, "model steps b=%d steps=%zu", batch, ks.size());
  for (int rep = 0; rep < 2; ++rep) {
    std::unique_ptr<KVCache> ccu, ccpu;
    CHECK_OK(m.cu->create_cache(batch, L, ccu));
    CHECK_OK(m.cpu->create_cache(batch, L, ccpu));
    std::vector<float> all_got, all_ref;
    int u = 0, prev = 0;
    for (size_t i = 0; i < ks.size(); ++i) {
      const int k = ks[i], n = prev + k;
      std::vector<int32_t> tok(size_t(batch) * n), pos(size_t(batch) * n);
      for (int b = 0; b < batch; ++b)
        for (int r = 0; r < n; ++r) {
          const int slot = u - prev + r;
          tok[size_t(b) * n + r] = r < prev ? seq[size_t(b)][size_t(slot)] : cfg.mask_index;
          pos[size_t(b) * n + r] = order[size_t(b)][size_t(slot)];
        }
      std::vector<float> ref(size_t(batch) * k * V), got(ref.size(), kNaN);
      CHECK_OK(m.cpu->step(*ccpu, tok.data(), pos.data(), n, prev, prev, ref.data()));
      CHECK_OK(m.cu->step(*ccu, tok.data(), pos.data(), n, prev, prev, got.data()));
      all_got.insert(all_got.end(), got.begin(), got.end());
      all_ref.insert(all_ref.end(), ref.begin(), ref.end());
      u += k;
      prev = k;
    }
    m.cu->release_cache(*ccu);
    m.cpu->release_cache(*ccpu);
    compare_logits(std::string(name) + (rep ? " #2" : ""), all_got, all_ref, V);
  }
  // All-commit chain (commit = n, logits for every row) == causal forward, on CUDA.
  {
    const int n_all = std::min(total, L);
    std::vector<int32_t> tok(size_t(batch) * n_all), pos(size_t(batch) * n_all);
    for (int b = 0; b < batch; ++b)
      for (int r = 0; r < n_all; ++r) {
        tok[size_t(b) * n_all + r] = seq[size_t(b)][size_t(r)];
        pos[size_t(b) * n_all + r] = order[size_t(b)][size_t(r)];
      }
    std::vector<float> fwd(size_t(batch) * n_all * V);
    CHECK_OK(m.cu->forward(tok.data(), pos.data(), batch, n_all, AttnMode::causal, nullptr, fwd.data()));
    std::unique_ptr<KVCache> cc;
    CHECK_OK(m.cu->create_cache(batch, L, cc));
    std::vector<float> st(fwd.size(), kNaN);
    int u = 0;
    for (size_t i = 0; i < ks.size() && u < n_all; ++i) {
      const int n = std::min(ks[i], n_all - u);
      std::vector<int32_t> t2(size_t(batch) * n), p2(size_t(batch) * n);
      for (int b = 0; b < batch; ++b)
        for (int r = 0; r < n; ++r) {
          t2[size_t(b) * n + r] = tok[size_t(b) * n_all + u + r];
          p2[size_t(b) * n + r] = pos[size_t(b) * n_all + u + r];
        }
      std::vector<float> lg(size_t(batch) * n * V);
      CHECK_OK(m.cu->step(*cc, t2.data(), p2.data(), n, n, 0, lg.data()));
      for (int b = 0; b < batch; ++b)
        std::memcpy(&st[(size_t(b) * n_all + u) * V], &lg[size_t(b) * n * V], size_t(n) * V * 4);
      u += n;
    }
    m.cu->release_cache(*cc);
    compare_logits(std::string("cuda step chain == cuda causal forward b=") + std::to_string(batch), st, fwd, V);
  }
}

// Whole generations on CUDA: deterministic, valid tokens, the same plan (NFE) as the CPU,
// and the first Eso-LM step's picks (which depend only on logits, not on earlier picks)
// mostly equal to the CPU's: bf16 logits can flip a near-tie, so >= 75% is required.
void test_generate(Models& m) {
  const ModelConfig cfg = tiny_config();
  for (Method method : {Method::esolm, Method::mdlm, Method::ar}) {
    GenerateRequest req;
    req.method = method;
    req.batch = 2;
    req.length = 64;
    req.steps = 8;
    req.alpha0 = 0.5;
    req.bos = 1;
    req.sample.top_p = 0.9;
    req.sample.seed = 3;
    GenerateResult a, b, ref;
    std::vector<int32_t> first_cu, first_cpu;
    auto grab = [](std::vector<int32_t>& dst) {
      return [&dst](const StepEvent& ev) {
        if (ev.step == 0) dst = ev.tokens;
      };
    };
    const char* name = method == Method::esolm ? "esolm" : method == Method::mdlm ? "mdlm" : "ar";
    ++g_cases;
    Status s1 = generate(*m.cu, req, nullptr, grab(first_cu), nullptr, a);
    Status s2 = generate(*m.cu, req, nullptr, nullptr, nullptr, b);
    Status s3 = generate(*m.cpu, req, nullptr, grab(first_cpu), nullptr, ref);
    bool ok = s1 && s2 && s3 && a.tokens == b.tokens && a.nfe == ref.nfe;
    int bad = 0;
    for (int32_t t : a.tokens) bad += (t < 0 || t >= cfg.vocab_size || t == cfg.mask_index);
    ok = ok && bad == 0;
    size_t same = 0, all = 0;
    for (size_t i = 0; i < a.tokens.size() && i < ref.tokens.size(); ++i) same += a.tokens[i] == ref.tokens[i];
    all = ref.tokens.size();
    size_t fsame = 0;
    for (size_t i = 0; i < first_cu.size() && i < first_cpu.size(); ++i) fsame += first_cu[i] == first_cpu[i];
    const double first_agree = first_cpu.empty() ? 1.0 : double(fsame) / double(first_cpu.size());
    if (method == Method::esolm) ok = ok && first_agree >= 0.75;
    std::printf("%s generate %-5s: nfe cuda %d cpu %d, deterministic %s, invalid tokens %d, first-step agreement %.2f, "
                "whole-sequence agreement %.2f (not asserted: one flipped pick changes the context)\n",
                ok ? "ok  " : "FAIL", name, a.nfe, ref.nfe, a.tokens == b.tokens ? "yes" : "no", bad, first_agree,
                all ? double(same) / double(all) : 0.0);
    if (!ok) {
      ++g_fail;
      if (!s1) std::printf("  cuda: %s\n", s1.message.c_str());
      if (!s3) std::printf("  cpu: %s\n", s3.message.c_str());
    }
  }
}


// Model::step_sample on CUDA (fused device sampler) vs esolm::sample_row over the logits
// of the same CUDA step (identical logits: the kernels are deterministic), and vs the CPU
// model's step_sample (different logits: bf16, so only mostly equal, not asserted exactly).
void test_model_step_sample(Models& m, int batch, int prev, int k, double top_p, double temp) {
  const ModelConfig& cfg = m.cpu->config();
  const int V = cfg.vocab_size, n = prev + k;
  std::vector<int32_t> tok(size_t(batch) * n), pos(size_t(batch) * n);
  for (int b = 0; b < batch; ++b) {
    std::vector<int32_t> perm(static_cast<size_t>(cfg.length));
    for (int i = 0; i < cfg.length; ++i) perm[size_t(i)] = i;
    std::shuffle(perm.begin(), perm.end(), g_rng);
    for (int r = 0; r < n; ++r) {
      tok[size_t(b) * n + r] = r < prev ? int32_t(g_rng() % (V - 1)) : cfg.mask_index;
      pos[size_t(b) * n + r] = perm[size_t(r)];
    }
  }
  SampleParams sp;
  sp.top_p = top_p;
  sp.temperature = temp;
  sp.mask_index = cfg.mask_index;
  sp.seed = 42;
  std::vector<DrawKey> keys(size_t(batch) * k);
  for (int b = 0; b < batch; ++b)
    for (int r = 0; r < k; ++r) keys[size_t(b) * k + r] = DrawKey{uint32_t(b), uint32_t(pos[size_t(b) * n + prev + r]), 0};
  char name[128];
  std::snprintf(name, sizeof name, "model step_sample b=%d n=%d k=%d p=%.2f T=%.2f", batch, n, k, top_p, temp);
  std::unique_ptr<KVCache> c1, c2, c3;
  CHECK_OK(m.cu->create_cache(batch, cfg.length, c1));
  CHECK_OK(m.cu->create_cache(batch, cfg.length, c2));
  CHECK_OK(m.cpu->create_cache(batch, cfg.length, c3));
  std::vector<int32_t> got(keys.size(), -5), cpu_picks(keys.size(), -5);
  std::vector<float> lg(keys.size() * size_t(V), kNaN);
  CHECK_OK(m.cu->step_sample(*c1, tok.data(), pos.data(), n, prev, prev, sp, keys.data(), got.data()));
  CHECK_OK(m.cu->step(*c2, tok.data(), pos.data(), n, prev, prev, lg.data()));
  CHECK_OK(m.cpu->step_sample(*c3, tok.data(), pos.data(), n, prev, prev, sp, keys.data(), cpu_picks.data()));
  m.cu->release_cache(*c1);
  m.cu->release_cache(*c2);
  m.cpu->release_cache(*c3);
  int exact = 0, bad = 0, same_cpu = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const float* row = &lg[i * size_t(V)];
    const int32_t ref = sample_row(row, V, sp, keys[i]);
    exact += got[i] == ref;
    bad += !pick_acceptable(row, V, sp, keys[i], got[i], ref);
    same_cpu += got[i] == cpu_picks[i];
  }
  const int rows = int(keys.size());
  const bool ok = bad == 0 && exact >= 0.99 * rows;
  ++g_cases;
  std::printf("%s %-58s exact vs host sampling of the same logits %d/%d, unacceptable %d; "
              "cuda vs cpu model picks %d/%d (not asserted)\n",
              ok ? "ok  " : "FAIL", name, exact, rows, bad, same_cpu, rows);
  if (!ok) ++g_fail;
}

void run_model_tests(Backend* cu, Backend* cpu) {
  const ModelConfig cfg = tiny_config();
  Models m;
  CHECK_OK(Model::create(cfg, random_weights(cfg, 7), cu, m.cu));
  CHECK_OK(Model::create(cfg, random_weights(cfg, 7), cpu, m.cpu));
  const AttnMode modes[] = {AttnMode::causal, AttnMode::bidirectional, AttnMode::mixed2, AttnMode::sequential};
  for (AttnMode mode : modes) {
    test_model_forward(m, mode, 2, 10);
    if (!g_quick) {
      test_model_forward(m, mode, 2, 100);
      test_model_forward(m, mode, 1, 256);
    }
  }
  test_model_steps(m, 2, {3, 1, 17, 2, 40, 5});
  if (!g_quick) test_model_steps(m, 3, {64, 64, 1, 1, 16, 100});
  test_model_step_sample(m, 2, 5, 7, 0.9, 1.0);
  if (!g_quick) {
    test_model_step_sample(m, 3, 40, 100, 0.5, 0.7);   // 300 rows: three head chunks
    test_model_step_sample(m, 1, 0, 16, 1.0, 1.0);
  }
  test_generate(m);
}

void run_op_tests(Ctx& c) {
  // linear: gemv path (rows <= 16), 64x64 tiles, 128x128 tiles, naive (k % 8 != 0)
  const int64_t rows_set[] = {1, 2, 3, 17, 130};
  for (int64_t r : rows_set) {
    test_linear(c, r, 96, 256, Epilogue::store, false, DType::bf16);
    test_linear(c, r, 50, 96, Epilogue::gelu, true, DType::bf16);
    test_linear(c, r, 64, 64, Epilogue::add_to, true, DType::f32);
    if (g_quick && r > 3) break;
  }
  test_linear(c, 5, 1001, 64, Epilogue::store, true, DType::f32);  // logits-like f32 out, odd n
  test_linear(c, 9, 300, 768, Epilogue::store, false, DType::bf16);
  test_linear(c, 16, 70, 3072, Epilogue::add_to, true, DType::f32);
  test_linear(c, 3, 40, 20, Epilogue::store, true, DType::f32);     // naive path (k % 8 != 0)
  test_linear(c, 4, 33, 64, Epilogue::store, false, DType::f32, DType::f32);  // F32 input converted
  test_linear(c, 40, 33, 64, Epilogue::gelu, false, DType::bf16, DType::f32);
  // skinny tensor-core path (rows <= 64, or <= 128 with n <= 4096), with and without
  // split-K (k = 3072 / n = 768 splits; n = 50258 does not), odd n, k % 32 != 0
  {
    const int64_t sk_rows[] = {1, 2, 8, 9, 16, 33, 64, 100, 128};
    for (int64_t r : sk_rows) {
      if (g_quick && r != 9 && r != 33) continue;
      test_linear(c, r, 768, 3072, Epilogue::add_to, true, DType::f32);
      test_linear(c, r, 2304, 768, Epilogue::store, false, DType::bf16);
      test_linear(c, r, 1001, 104, Epilogue::gelu, true, DType::bf16);
    }
    if (!g_quick) {
      test_linear(c, 16, 3072, 768, Epilogue::gelu, true, DType::bf16);
      test_linear(c, 16, 50258, 768, Epilogue::store, true, DType::f32);  // head, 16 rows
      test_linear(c, 129, 768, 3072, Epilogue::add_to, true, DType::f32);  // 64x64 tiles again
    }
  }
  if (!g_quick) {
    test_linear(c, 2100, 2304, 768, Epilogue::store, false, DType::bf16);  // 128x128 tiles
    test_linear(c, 1000, 1003, 256, Epilogue::gelu, true, DType::bf16);
    test_linear(c, 300, 768, 3072, Epilogue::add_to, true, DType::f32);
    test_linear(c, 64, 50258, 64, Epilogue::store, true, DType::f32);  // the head's n
  }
  // layernorm
  test_layernorm(c, 1, 768, true, DType::bf16);
  test_layernorm(c, 3, 100, false, DType::bf16);
  test_layernorm(c, 17, 64, true, DType::f32);
  if (!g_quick) test_layernorm(c, 130, 768, true, DType::bf16);
  // rope + cache
  test_rope(c, 1, 1, 4, 32, 0, 4, DType::bf16);
  test_rope(c, 3, 5, 4, 32, 7, 20, DType::bf16);
  test_rope(c, 2, 17, 12, 64, 3, 40, DType::f32);
  if (!g_quick) test_rope(c, 2, 130, 12, 64, 100, 300, DType::bf16);
  // attention: split-KV path (n_q <= 16 or non-bf16 / hd 128) and tiled (n_q > 16, bf16, hd 32/64)
  struct A { AttnMode m; int b, nq, q0, nkv, h, hd, cap; DType dt; bool quick; };
  const AttnMode C = AttnMode::causal, B = AttnMode::bidirectional, M = AttnMode::mixed2,
                 S = AttnMode::sequential;
  const DType bf = DType::bf16, f32 = DType::f32;
  const A cases[] = {
      {C, 1, 1, 0, 1, 2, 64, 8, bf, true},          // c = 0, single token
      {C, 2, 2, 31, 33, 2, 64, 40, bf, true},       // n_kv crosses a 32-key tile
      {C, 1, 16, 100, 116, 4, 64, 128, bf, true},
      {C, 3, 5, 1000, 1005, 2, 32, 1100, bf, false},  // many splits
      {C, 1, 2, 5000, 5002, 2, 64, 5002, bf, false},
      {B, 2, 3, 0, 77, 2, 64, 80, bf, true},
      {M, 2, 9, 0, 9, 2, 64, 9, bf, true},
      {S, 2, 12, 0, 12, 2, 64, 12, bf, true},        // 2N input, all rows, split path
      {S, 1, 6, 6, 12, 2, 32, 12, bf, true},         // z-half only
      {C, 2, 7, 3, 10, 2, 64, 16, f32, true},        // f32 through the split kernel
      {C, 1, 20, 0, 20, 2, 128, 20, bf, true},       // hd 128 -> split path, many queries
      {C, 1, 17, 0, 17, 2, 64, 17, bf, true},        // tiled, smallest
      {C, 2, 130, 40, 170, 3, 64, 200, bf, true},    // tiled, cache + window
      {B, 2, 130, 0, 130, 2, 32, 130, bf, true},
      {M, 2, 100, 0, 100, 2, 64, 100, bf, true},
      {S, 2, 160, 0, 160, 2, 64, 160, bf, true},
      {S, 1, 80, 80, 160, 2, 64, 160, bf, false},
      {B, 1, 1024, 0, 1024, 2, 64, 1024, bf, false},
      {C, 1, 300, 700, 1000, 2, 64, 1000, bf, false},
      {M, 3, 64, 0, 64, 4, 32, 64, f32, false},
  };
  for (const A& a : cases)
    if (!g_quick || a.quick) test_attention(c, a.m, a.b, a.nq, a.q0, a.nkv, a.h, a.hd, a.cap, a.dt);
  test_embed_gather(c, 1000, 64, 7);
  if (!g_quick) test_embed_gather(c, 5000, 768, 130);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--quick") == 0) g_quick = true;
  const char* req = std::getenv("ESOLM_REQUIRE_CUDA");
  const bool require = req && std::strcmp(req, "1") == 0;
  CudaInfo info;
  Status ps = cuda_probe(info);
  if (!ps) {
    std::printf("CUDA unavailable: %s (driver %d, runtime %d, devices %d)\n", info.reason.c_str(),
                info.driver_version, info.runtime_version, info.device_count);
    std::printf(require ? "ESOLM_REQUIRE_CUDA=1: failing\n" : "skipping CUDA tests\n");
    return require ? 1 : 0;
  }
  std::printf("device: %s (sm_%d%d, %d SMs, %.1f GiB), driver %d, runtime %d%s\n", info.name.c_str(),
              info.cc_major, info.cc_minor, info.sm_count, info.total_memory / 1073741824.0,
              info.driver_version, info.runtime_version, g_quick ? ", quick" : "");
  Status s;
  std::unique_ptr<Backend> cu = create_cuda_backend(0, s);
  if (!cu) {
    std::printf("FAIL create_cuda_backend: %s %s\n", status_code_name(s.code), s.message.c_str());
    return 1;
  }
  std::unique_ptr<Backend> cpu = create_cpu_backend(0);
  Ctx c{cu.get(), cpu.get()};
  run_op_tests(c);
  run_sampler_tests(c);
  run_model_tests(cu.get(), cpu.get());
  Status fin = cu->synchronize();
  if (!fin) {
    std::printf("FAIL final synchronize: %s\n", fin.message.c_str());
    ++g_fail;
  }
  std::printf("%s: %d cases, %d failures\n", g_fail ? "FAILED" : "PASSED", g_cases, g_fail);
  return g_fail ? 1 : 0;
}
