// ops_test.cpp — CUDA backend vs CPU backend, op by op, then whole-model parity.
//
// Inputs are bf16-exact (host data rounded through bf16) and uploaded identically to
// both backends; each case runs twice on CUDA with a NaN-poisoned output (unwritten
// elements and stale state both show up). Errors are reported as max|cuda - cpu| over
// max|cpu| of the tensor, against a tolerance that names its reason.
// The planned KV loop ops are checked against a host oracle of backend.h and against the
// same ops run with static arguments; recordings (CUDA graphs) against eager runs; whole
// generations with the loop (ESOLM_CUDA_KV_LOOP=1, graphs on and off) against loop off and CPU.
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
#include "../tiny_model.h"

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

using test::bf16_round;  // test/native/tiny_model.h

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


// ------------------------------------------------------------------ planned KV loop ops
// loop_begin_step / loop_end_step against a host oracle written from backend.h (exact ints);
// rope_qkv_store_loop and attention(loop_state) against the same ops with the state's
// values passed statically; sample_rows_to against sample_rows; download_i32_async.

// CUDA converts I32 exactly in download_f32 (values below 2^24); the CPU backend downloads
// only F32, so I32 tensors come through download_i32_async there.
std::vector<int32_t> down_i(Backend* b, const Tensor& t) {
  std::vector<int32_t> v(size_t(t.numel()), std::numeric_limits<int32_t>::min());
  std::vector<float> f(v.size());
  if (b->download_f32(t, 0, t.rows, f.data())) {
    for (size_t i = 0; i < f.size(); ++i) v[i] = int32_t(f[i]);
    return v;
  }
  Status s = b->download_i32_async(t, t.numel(), v.data());
  if (s) s = b->synchronize();
  if (!s) std::printf("download failed: %s\n", s.message.c_str());
  return v;
}

bool check_equal_i(const std::string& name, const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  ++g_cases;
  size_t bad = got.size() == want.size() ? 0 : 1, first = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i)
    if (got[i] != want[i] && bad++ == 0) first = i;
  std::printf("%s %-58s %zu values, %zu differ (exact)\n", bad ? "FAIL" : "ok  ", name.c_str(), want.size(), bad);
  if (bad && first < got.size() && first < want.size())
    std::printf("     first at %zu: got %d want %d\n", first, got[first], want[first]);
  if (bad) ++g_fail;
  return !bad;
}

void check_true(const std::string& name, bool ok, const std::string& detail) {
  ++g_cases;
  std::printf("%s %-58s %s\n", ok ? "ok  " : "FAIL", name.c_str(), detail.c_str());
  if (!ok) ++g_fail;
}

void check_error(const std::string& name, const Status& s, Code want) {
  check_true(name, !s && s.code == want,
             std::string("-> ") + status_code_name(s.code) + (s.message.empty() ? "" : " (" + s.message + ")"));
}

// Per-element closeness: |a - b| <= rel * max(|a|, |b|) + abs_frac * max|b| (the tensor scale).
bool compare_elems(const std::string& name, const std::vector<float>& got, const std::vector<float>& ref,
                   double rel, double abs_frac, const char* why) {
  ++g_cases;
  double scale = 0;
  for (float x : ref) scale = std::max(scale, std::fabs(double(x)));
  size_t bad = got.size() == ref.size() ? 0 : 1, first = 0;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    const double a = got[i], b = ref[i];
    const bool ok = std::isfinite(a) && std::isfinite(b) &&
                    std::fabs(a - b) <= rel * std::max(std::fabs(a), std::fabs(b)) + abs_frac * scale;
    if (!ok && bad++ == 0) first = i;
  }
  std::printf("%s %-58s %zu of %zu elements outside %.1e rel + %.0e of scale %.3e (%s)\n", bad ? "FAIL" : "ok  ",
              name.c_str(), bad, ref.size(), rel, abs_frac, scale, why);
  if (bad && first < got.size() && first < ref.size())
    std::printf("     first at %zu: got %.6g want %.6g\n", first, got[first], ref[first]);
  if (bad) ++g_fail;
  return !bad;
}

// Host state of the loop and the backend.h semantics of its two bookkeeping ops.
struct LoopHost {
  int batch = 1, length = 1, n_pad = 1, k_pad = 1;
  std::vector<int32_t> table, state, z, order, fixed, tokens, positions, head_rows, keys, picks;
  int n_steps() const { return int(table.size() / kStepFields); }
  void begin() {
    const int32_t* row = &table[size_t(state[kLoopCursor]) * kStepFields];
    for (int i = 0; i <= kLoopTarget - kLoopSlot0; ++i) state[size_t(kLoopSlot0 + i)] = row[i];
    const int slot0 = row[0], n = row[1], head0 = row[2], k = row[3], target = row[4];
    for (int b = 0; b < batch; ++b) {
      for (int r = 0; r < n_pad; ++r) {
        const size_t i = size_t(b) * n_pad + r, s = size_t(b) * length + slot0 + r;
        tokens[i] = r < n ? z[s] : 0;
        positions[i] = r < n ? order[s] : 0;
      }
      for (int r = 0; r < k_pad; ++r) {
        const int rr = std::min(r, k - 1);
        const size_t i = size_t(b) * k_pad + r;
        head_rows[i] = b * n_pad + head0 + rr;
        keys[3 * i] = b;
        keys[3 * i + 1] = order[size_t(b) * length + target + rr];
        keys[3 * i + 2] = 0;
      }
    }
  }
  void end() {
    const int k = state[kLoopK], target = state[kLoopTarget];
    for (int b = 0; b < batch; ++b)
      for (int r = 0; r < k && r < k_pad; ++r)
        if (!fixed[size_t(target + r)]) z[size_t(b) * length + target + r] = picks[size_t(b) * k_pad + r];
    state[kLoopCursor] += 1;
  }
};

const int32_t kStatePoison = 1234;  // state fields the ops must not touch keep this value

// Eso-LM-like table until every slot is sampled: window [p committed | k new], the k rows
// sampled into the next slots.
std::vector<int32_t> eso_table(int length, int n_pad, int k_pad) {
  std::vector<int32_t> t;
  int u = 0, p = 0;
  while (u < length) {
    const int k_max = std::min({k_pad, n_pad - p, length - u});
    const int k = 1 + int(g_rng() % uint64_t(k_max));
    t.insert(t.end(), {u - p, p + k, p, k, u, p});
    u += k;
    p = k;
  }
  return t;
}

LoopHost random_loop(int batch, int length, int n_pad, int k_pad, int n_steps, int vocab) {
  LoopHost h;
  h.batch = batch; h.length = length; h.n_pad = n_pad; h.k_pad = k_pad;
  // Random valid rows (head rows inside the window), with the edges: a window ending at the
  // last slot, n = n_pad, k = 1.
  for (int s = 0; s < n_steps; ++s) {
    const int slot0 = s == 1 ? length - std::min(n_pad, length) : int(g_rng() % uint64_t(length));
    const int n_max = std::min(n_pad, length - slot0);
    const int n = s == 1 ? n_max : 1 + int(g_rng() % uint64_t(n_max));
    const int k = s == 2 ? 1 : 1 + int(g_rng() % uint64_t(std::min(k_pad, n)));
    const int head0 = int(g_rng() % uint64_t(n - k + 1));
    const int target = int(g_rng() % uint64_t(length - k + 1));
    h.table.insert(h.table.end(), {slot0, n, head0, k, target, int(g_rng() % uint64_t(n + 1))});
  }
  h.state.assign(kLoopFields, kStatePoison);
  h.state[kLoopCursor] = 0;
  h.z.resize(size_t(batch) * length);
  for (auto& x : h.z) x = int32_t(g_rng() % uint64_t(vocab));
  h.order.resize(size_t(batch) * length);
  for (int b = 0; b < batch; ++b) {
    auto first = h.order.begin() + ptrdiff_t(b) * length;
    for (int i = 0; i < length; ++i) first[i] = i;
    std::shuffle(first, first + length, g_rng);
  }
  h.fixed.resize(size_t(length));
  for (auto& x : h.fixed) x = int32_t(g_rng() % 10 < 3);
  h.tokens.assign(size_t(batch) * n_pad, -7);
  h.positions.assign(size_t(batch) * n_pad, -7);
  h.head_rows.assign(size_t(batch) * k_pad, -7);
  h.keys.assign(size_t(batch) * k_pad * 3, -7);
  h.picks.assign(size_t(batch) * k_pad, 0);
  return h;
}

// The LoopTensors of one backend.
struct LoopDev {
  T table, state, z, order, fixed, tokens, positions, head_rows, keys, picks;
  LoopDev(Backend* b, const LoopHost& h)
      : table(b, DType::i32, h.n_steps(), kStepFields), state(b, DType::i32, 1, kLoopFields),
        z(b, DType::i32, h.batch, h.length), order(b, DType::i32, h.batch, h.length),
        fixed(b, DType::i32, 1, h.length), tokens(b, DType::i32, int64_t(h.batch) * h.n_pad, 1),
        positions(b, DType::i32, int64_t(h.batch) * h.n_pad, 1),
        head_rows(b, DType::i32, int64_t(h.batch) * h.k_pad, 1),
        keys(b, DType::i32, int64_t(h.batch) * h.k_pad, 3), picks(b, DType::i32, int64_t(h.batch) * h.k_pad, 1) {}
  Status upload(Backend* b, const LoopHost& h) {
    ESOLM_TRY(up_i(b, table.t, h.table));
    ESOLM_TRY(up_i(b, state.t, h.state));
    ESOLM_TRY(up_i(b, z.t, h.z));
    ESOLM_TRY(up_i(b, order.t, h.order));
    ESOLM_TRY(up_i(b, fixed.t, h.fixed));
    ESOLM_TRY(up_i(b, tokens.t, h.tokens));
    ESOLM_TRY(up_i(b, positions.t, h.positions));
    ESOLM_TRY(up_i(b, head_rows.t, h.head_rows));
    ESOLM_TRY(up_i(b, keys.t, h.keys));
    return up_i(b, picks.t, h.picks);
  }
  LoopTensors lt() const {
    LoopTensors l;
    l.table = table.t; l.state = state.t; l.z = z.t; l.order = order.t; l.fixed = fixed.t;
    l.tokens = tokens.t; l.positions = positions.t; l.head_rows = head_rows.t; l.keys = keys.t; l.picks = picks.t;
    return l;
  }
};

// Runs every step of the table on `be` (begin, new picks, end) and appends what each op
// wrote: state[0..kLoopTarget] and the window tensors after begin, state and z after end.
Status loop_trace(Backend* be, LoopHost h, const std::vector<std::vector<int32_t>>& picks,
                  std::vector<int32_t>& trace, std::vector<int32_t>& final_state) {
  LoopDev d(be, h);
  ESOLM_TRY(d.upload(be, h));
  LoopTensors lt = d.lt();
  for (int s = 0; s < h.n_steps(); ++s) {
    ESOLM_TRY(be->loop_begin_step(lt, h.batch, h.length, h.n_pad, h.k_pad));
    for (const T* t : {&d.state, &d.tokens, &d.positions, &d.head_rows, &d.keys}) {
      auto v = down_i(be, t->t);
      if (t == &d.state) v.resize(kLoopTarget + 1);
      trace.insert(trace.end(), v.begin(), v.end());
    }
    ESOLM_TRY(up_i(be, d.picks.t, picks[size_t(s)]));
    ESOLM_TRY(be->loop_end_step(lt, h.batch, h.length, h.k_pad));
    auto st = down_i(be, d.state.t);
    trace.insert(trace.end(), st.begin(), st.begin() + kLoopTarget + 1);
    auto z = down_i(be, d.z.t);
    trace.insert(trace.end(), z.begin(), z.end());
  }
  final_state = down_i(be, d.state.t);
  return Status::ok();
}

void test_loop_steps(Ctx& c, int batch, int length, int n_pad, int k_pad, int n_steps) {
  char name[128];
  std::snprintf(name, sizeof name, "loop_begin/end_step b=%d L=%d n_pad=%d k_pad=%d steps=%d", batch, length,
                n_pad, k_pad, n_steps);
  const LoopHost h0 = random_loop(batch, length, n_pad, k_pad, n_steps, 1000);
  std::vector<std::vector<int32_t>> picks(static_cast<size_t>(n_steps));
  for (auto& p : picks) {
    p.resize(size_t(batch) * k_pad);
    for (auto& x : p) x = int32_t(g_rng() % 1000);
  }
  // Oracle trace, in the order loop_trace records it.
  std::vector<int32_t> want;
  LoopHost h = h0;
  for (int s = 0; s < n_steps; ++s) {
    h.begin();
    want.insert(want.end(), h.state.begin(), h.state.begin() + kLoopTarget + 1);
    for (const auto* v : {&h.tokens, &h.positions, &h.head_rows, &h.keys}) want.insert(want.end(), v->begin(), v->end());
    h.picks = picks[size_t(s)];
    h.end();
    want.insert(want.end(), h.state.begin(), h.state.begin() + kLoopTarget + 1);
    want.insert(want.end(), h.z.begin(), h.z.end());
  }
  std::vector<int32_t> got, got_state;
  CHECK_OK(loop_trace(c.cu, h0, picks, got, got_state));
  check_equal_i(std::string(name) + " vs backend.h oracle", got, want);
  check_equal_i(std::string(name) + " untouched state fields",
                std::vector<int32_t>(got_state.begin() + kLoopTarget + 1, got_state.end()),
                std::vector<int32_t>(size_t(kLoopFields - kLoopTarget - 1), kStatePoison));
  if (c.cpu->supports_kv_loop()) {
    std::vector<int32_t> cpu, cpu_state;
    CHECK_OK(loop_trace(c.cpu, h0, picks, cpu, cpu_state));
    check_equal_i(std::string(name) + " cuda == cpu", got, cpu);
  }
}

void test_loop_errors(Ctx& c) {
  LoopHost h = random_loop(2, 20, 4, 2, 2, 100);
  LoopDev d(c.cu, h);
  CHECK_OK(d.upload(c.cu, h));
  LoopTensors lt = d.lt();
  check_error("loop_begin_step n_pad > tokens rows", c.cu->loop_begin_step(lt, 2, 20, 5, 2), Code::invalid_arg);
  check_error("loop_begin_step length > z cols", c.cu->loop_begin_step(lt, 2, 21, 4, 2), Code::invalid_arg);
  check_error("loop_end_step k_pad > picks rows", c.cu->loop_end_step(lt, 2, 20, 3), Code::invalid_arg);
  LoopTensors small = lt;
  small.state.cols = 4;  // fewer than kLoopFields
  check_error("loop_end_step short state", c.cu->loop_end_step(small, 2, 20, 2), Code::invalid_arg);
  small = lt;
  small.keys.dtype = DType::f32;
  check_error("loop_begin_step F32 keys", c.cu->loop_begin_step(small, 2, 20, 4, 2), Code::invalid_arg);
}

// rope_qkv_store_loop (n_pad rows, slot0 and n from the state) == rope_qkv_store on the
// first n rows with the same slot0: same kernel and inputs, so bit-identical. Cache rows
// outside [slot0, slot0 + n) keep their sentinel; q rows >= n equal a plain rope of them.
void test_rope_loop(Ctx& c, int batch, int n_pad, int heads, int hd, int capacity, DType dt,
                    const std::vector<std::pair<int, int>>& states) {
  char name[160];
  std::snprintf(name, sizeof name, "rope_qkv_store_loop b=%d n_pad=%d h=%d hd=%d cap=%d %s", batch, n_pad, heads,
                hd, capacity, dt == DType::f32 ? "f32" : "bf16");
  const int64_t d = int64_t(heads) * hd, rows = int64_t(batch) * n_pad, kv_rows = int64_t(batch) * capacity;
  auto qkv = randv(size_t(rows * 3 * d));
  std::vector<int32_t> pos(static_cast<size_t>(rows));
  for (auto& p : pos) p = int32_t(g_rng() % 8192);
  const std::vector<float> fill(size_t(kv_rows * d), 7.f), nan_q(size_t(rows * d), kNaN);
  T cq(c.cu, dt, rows, 3 * d), cp(c.cu, DType::i32, rows, 1), co(c.cu, dt, rows, d), ck(c.cu, dt, kv_rows, d),
      cv(c.cu, dt, kv_rows, d), st(c.cu, DType::i32, 1, kLoopFields);
  T full_q(c.cu, dt, rows, d), sk(c.cu, dt, rows, d), sv(c.cu, dt, rows, d);
  CHECK_OK(up(c.cu, cq.t, qkv));
  CHECK_OK(up_i(c.cu, cp.t, pos));
  CHECK_OK(c.cu->rope_qkv_store(cq.t, cp.t, batch, n_pad, heads, 0, n_pad, full_q.t, sk.t, sv.t));
  const auto want_q = down(c.cu, full_q.t);
  for (auto [slot0, n] : states) {
    const std::string sn = std::string(name) + " slot0=" + std::to_string(slot0) + " n=" + std::to_string(n);
    std::vector<int32_t> state(kLoopFields, kStatePoison);
    state[kLoopCursor] = 0;
    state[kLoopSlot0] = slot0;
    state[kLoopN] = n;
    CHECK_OK(up_i(c.cu, st.t, state));
    CHECK_OK(up(c.cu, co.t, nan_q));
    CHECK_OK(up(c.cu, ck.t, fill));
    CHECK_OK(up(c.cu, cv.t, fill));
    CHECK_OK(c.cu->rope_qkv_store_loop(cq.t, cp.t, batch, n_pad, heads, capacity, st.t, co.t, ck.t, cv.t));
    // Eager reference on the first n rows of each sequence.
    const int64_t er = int64_t(batch) * n;
    std::vector<float> eq(size_t(er * 3 * d));
    std::vector<int32_t> ep(static_cast<size_t>(er));
    for (int b = 0; b < batch; ++b)
      for (int j = 0; j < n; ++j) {
        const size_t src = size_t(b) * n_pad + j, dst = size_t(b) * n + j;
        std::copy_n(&qkv[src * 3 * d], 3 * d, &eq[dst * 3 * d]);
        ep[dst] = pos[src];
      }
    T eqkv(c.cu, dt, er, 3 * d), epos(c.cu, DType::i32, er, 1), eo(c.cu, dt, er, d), ek(c.cu, dt, kv_rows, d),
        ev(c.cu, dt, kv_rows, d);
    CHECK_OK(up(c.cu, eqkv.t, eq));
    CHECK_OK(up_i(c.cu, epos.t, ep));
    CHECK_OK(up(c.cu, ek.t, fill));
    CHECK_OK(up(c.cu, ev.t, fill));
    CHECK_OK(c.cu->rope_qkv_store(eqkv.t, epos.t, batch, n, heads, slot0, capacity, eo.t, ek.t, ev.t));
    compare(sn + " K", down(c.cu, ck.t), down(c.cu, ek.t), 0.0, "same kernel, rows >= n unwritten");
    compare(sn + " V", down(c.cu, cv.t), down(c.cu, ev.t), 0.0, "same kernel, rows >= n unwritten");
    compare(sn + " q", down(c.cu, co.t), want_q, 0.0, "every q row written");
    check_equal_i(sn + " state untouched", down_i(c.cu, st.t), state);
  }
  T short_state(c.cu, DType::i32, 1, kLoopFields - 1);
  check_error(std::string(name) + " short state",
              c.cu->rope_qkv_store_loop(cq.t, cp.t, batch, n_pad, heads, capacity, short_state.t, co.t, ck.t, cv.t),
              Code::invalid_arg);
}

// attention(loop_state) over one static n_pad / capacity, several states: rows < n against
// the CPU with the state's q_slot0 / n_kv passed statically, rows >= n exactly zero, two
// runs identical. Against CUDA eager attention on the first n rows: bit-identical when both
// take the tiled kernel (same tiles); within one output rounding when both take the split
// kernel (the loop's split plan covers the whole capacity, so partials combine differently).
void test_attention_loop(Ctx& c, int batch, int n_pad, int heads, int hd, int capacity, DType dt,
                         const std::vector<std::pair<int, int>>& states) {
  char name[160];
  std::snprintf(name, sizeof name, "attention loop_state b=%d n_pad=%d h=%d hd=%d cap=%d %s", batch, n_pad, heads,
                hd, capacity, dt == DType::f32 ? "f32" : "bf16");
  const int64_t d = int64_t(heads) * hd, qr = int64_t(batch) * n_pad, kr = int64_t(batch) * capacity;
  auto q = randv(size_t(qr * d), 1.5f), k = randv(size_t(kr * d), 1.5f), v = randv(size_t(kr * d));
  T cq(c.cu, dt, qr, d), ck(c.cu, dt, kr, d), cv(c.cu, dt, kr, d), co(c.cu, dt, qr, d), st(c.cu, DType::i32, 1, kLoopFields);
  T pk(c.cpu, DType::f32, kr, d), pv(c.cpu, DType::f32, kr, d);
  CHECK_OK(up(c.cu, cq.t, q)); CHECK_OK(up(c.cu, ck.t, k)); CHECK_OK(up(c.cu, cv.t, v));
  CHECK_OK(up(c.cpu, pk.t, k)); CHECK_OK(up(c.cpu, pv.t, v));
  const bool tiled_kernel = dt == DType::bf16 && (hd == 32 || hd == 64);  // attention.cu use_tiled
  AttnParams lp;
  lp.batch = batch; lp.n_q = n_pad; lp.n_heads = heads; lp.head_dim = hd; lp.capacity = capacity;
  lp.mode = AttnMode::causal;
  lp.q_slot0 = capacity + 5;  // ignored with loop_state: out of range on purpose
  lp.n_kv = -3;
  lp.loop_state = &st.t;
  for (auto [slot0, n] : states) {
    const std::string sn = std::string(name) + " slot0=" + std::to_string(slot0) + " n=" + std::to_string(n);
    std::vector<int32_t> state(kLoopFields, kStatePoison);
    state[kLoopCursor] = 0;
    state[kLoopSlot0] = slot0;
    state[kLoopN] = n;
    CHECK_OK(up_i(c.cu, st.t, state));
    std::vector<float> got[2];
    for (int rep = 0; rep < 2; ++rep) {
      CHECK_OK(up(c.cu, co.t, std::vector<float>(size_t(qr * d), kNaN)));
      CHECK_OK(c.cu->attention(cq.t, ck.t, cv.t, lp, co.t));
      got[rep] = down(c.cu, co.t);
    }
    check_true(sn + " deterministic", got[0] == got[1], got[0] == got[1] ? "two runs identical" : "runs differ");
    // Split into window rows (compared) and padding rows (must be 0).
    const int64_t er = int64_t(batch) * n;
    std::vector<float> rows_n(size_t(er * d)), pad;
    std::vector<float> eq(size_t(er * d));
    for (int b = 0; b < batch; ++b)
      for (int r = 0; r < n_pad; ++r) {
        const float* src = &got[0][(size_t(b) * n_pad + r) * d];
        if (r < n) {
          std::copy_n(src, d, &rows_n[(size_t(b) * n + r) * d]);
          std::copy_n(&q[(size_t(b) * n_pad + r) * d], d, &eq[(size_t(b) * n + r) * d]);
        } else {
          pad.insert(pad.end(), src, src + d);
        }
      }
    if (!pad.empty()) compare(sn + " rows >= n", pad, std::vector<float>(pad.size(), 0.f), 0.0, "exact zeros");
    AttnParams ep;
    ep.batch = batch; ep.n_q = n; ep.q_slot0 = slot0; ep.n_kv = slot0 + n; ep.n_heads = heads; ep.head_dim = hd;
    ep.capacity = capacity; ep.mode = AttnMode::causal;
    T pq(c.cpu, DType::f32, er, d), po(c.cpu, DType::f32, er, d), eqt(c.cu, dt, er, d), eo(c.cu, dt, er, d);
    CHECK_OK(up(c.cpu, pq.t, eq));
    CHECK_OK(c.cpu->attention(pq.t, pk.t, pv.t, ep, po.t));
    compare(sn + " vs cpu", rows_n, down(c.cpu, po.t), dt == DType::f32 ? 1e-4 : kTolAttnBf16,
            dt == DType::f32 ? "fp32 softmax, fast exp" : "bf16 out and P");
    CHECK_OK(up(c.cu, eqt.t, eq));
    CHECK_OK(c.cu->attention(eqt.t, ck.t, cv.t, ep, eo.t));
    const auto eager = down(c.cu, eo.t);
    const bool loop_tiled = tiled_kernel && n_pad > 16, eager_tiled = tiled_kernel && n > 16;
    if (loop_tiled && eager_tiled)
      compare(sn + " vs cuda eager", rows_n, eager, 0.0, "both tiled: same tiles");
    else if (!loop_tiled && !eager_tiled)
      compare_elems(sn + " vs cuda eager", rows_n, eager, dt == DType::f32 ? 1e-5 : 1.0 / 128, 1e-5,
                    dt == DType::f32 ? "both split: fp32 combine order" : "both split: one bf16 rounding");
  }
  AttnParams bad_mode = lp;
  bad_mode.mode = AttnMode::bidirectional;
  check_error(std::string(name) + " non-causal", c.cu->attention(cq.t, ck.t, cv.t, bad_mode, co.t), Code::invalid_arg);
}

// sample_rows_to (device keys and picks) == sample_rows (host keys) on the same logits.
void test_sample_rows_to(Ctx& c, int V, int rows, SampleParams p) {
  char name[128];
  std::snprintf(name, sizeof name, "sample_rows_to V=%d rows=%d p=%.2f T=%.2f%s", V, rows, p.top_p, p.temperature,
                p.greedy ? " greedy" : "");
  const int extra = 2;  // logits and keys tensors longer than `rows`
  auto lg = randv(size_t(rows + extra) * V, 3.f);
  std::vector<DrawKey> keys(size_t(rows + extra));
  std::vector<int32_t> flat;
  for (size_t i = 0; i < keys.size(); ++i) {
    keys[i] = DrawKey{uint32_t(i % 3), uint32_t(g_rng() % 8192), uint32_t(i % 2)};
    flat.insert(flat.end(), {int32_t(keys[i].sequence), int32_t(keys[i].position), int32_t(keys[i].round)});
  }
  T lt(c.cu, DType::f32, rows + extra, V), kt(c.cu, DType::i32, rows + extra, 3), ot(c.cu, DType::i32, rows, 1);
  CHECK_OK(up(c.cu, lt.t, lg));
  CHECK_OK(up_i(c.cu, kt.t, flat));
  CHECK_OK(up_i(c.cu, ot.t, std::vector<int32_t>(size_t(rows), -5)));
  std::vector<int32_t> want(static_cast<size_t>(rows));
  CHECK_OK(c.cu->sample_rows(lt.t, rows, p, keys.data(), want.data()));
  CHECK_OK(c.cu->sample_rows_to(lt.t, rows, p, kt.t, ot.t));
  check_equal_i(name, down_i(c.cu, ot.t), want);
}

// download_i32_async: values as of the copy's place in the stream, delivered by the next
// synchronize(), download_f32 or sample_rows; a staging buffer that grows keeps pending copies.
void test_download_async(Ctx& c) {
  std::vector<int32_t> a0(15), a1(15), big(300000);
  for (int i = 0; i < 15; ++i) { a0[size_t(i)] = i; a1[size_t(i)] = 100 + i; }
  for (auto& x : big) x = int32_t(g_rng() % 100000);
  T a(c.cu, DType::i32, 5, 3), b(c.cu, DType::i32, 300000, 1), f(c.cu, DType::f32, 2, 2);
  CHECK_OK(up_i(c.cu, a.t, a0));
  CHECK_OK(up_i(c.cu, b.t, big));
  std::vector<int32_t> h1(15, -1), h2(1000, -1);
  CHECK_OK(c.cu->download_i32_async(a.t, 15, h1.data()));
  CHECK_OK(c.cu->download_i32_async(b.t, 700, h2.data()));  // count < numel
  CHECK_OK(up_i(c.cu, a.t, a1));  // after the copy in stream order: must not show
  CHECK_OK(c.cu->synchronize());
  check_equal_i("download_i32_async + synchronize", h1, a0);
  std::vector<int32_t> want2(big.begin(), big.begin() + 700);
  want2.resize(1000, -1);
  check_equal_i("download_i32_async count < numel", h2, want2);
  std::vector<int32_t> h3(15, -1);
  CHECK_OK(c.cu->download_i32_async(a.t, 15, h3.data()));
  down(c.cu, f.t);
  check_equal_i("download_i32_async flushed by download_f32", h3, a1);
  std::vector<int32_t> h4(15, -1), h5(300000, -1);
  CHECK_OK(c.cu->download_i32_async(a.t, 15, h4.data()));
  CHECK_OK(c.cu->download_i32_async(b.t, 300000, h5.data()));  // 1.2 MB: the staging buffer grows
  std::vector<int32_t> pick(1);
  DrawKey key;
  CHECK_OK(c.cu->sample_rows(f.t, 1, SampleParams{}, &key, pick.data()));
  check_equal_i("download_i32_async flushed by sample_rows", h4, a1);
  check_equal_i("download_i32_async across staging growth", h5, big);
  check_error("download_i32_async F32 tensor", c.cu->download_i32_async(f.t, 4, h1.data()), Code::invalid_arg);
  check_error("download_i32_async count > numel", c.cu->download_i32_async(a.t, 16, h1.data()), Code::invalid_arg);
}

// Sets an environment variable for a scope, then restores it (backends read ESOLM_CUDA_*
// at creation).
struct EnvVar {
  std::string name, old;
  bool had;
  EnvVar(const char* n, const char* value) : name(n) {
    const char* o = std::getenv(n);
    had = o != nullptr;
    if (had) old = o;
    if (value) setenv(n, value, 1);
    else unsetenv(n);
  }
  ~EnvVar() {
    if (had) setenv(name.c_str(), old.c_str(), 1);
    else unsetenv(name.c_str());
  }
};

// ------------------------------------------------------------------ recording (CUDA graphs)
// One loop step of a toy network: begin -> embed -> linear (F32 input: scratch) -> rope_loop
// -> attention(loop_state) -> gather head rows -> head linear -> sample_rows_to -> end.
// World A runs it eagerly, world B replays one recording of it; both start equal, so every
// tensor must stay bit-identical step by step (the same kernels on the same values).
struct ToyNet {
  int batch, length, n_pad, k_pad, heads, hd, vocab;
  T emb, wqkv, head_w, head_b;  // shared, read-only
  SampleParams sp;
  ToyNet(Backend* be, int b, int l, int np, int kp, int h, int d, int v)
      : batch(b), length(l), n_pad(np), k_pad(kp), heads(h), hd(d), vocab(v),
        emb(be, DType::bf16, v, int64_t(h) * d), wqkv(be, DType::bf16, 3 * int64_t(h) * d, int64_t(h) * d),
        head_w(be, DType::bf16, v, int64_t(h) * d), head_b(be, DType::f32, 1, v) {
    sp.top_p = 0.9;
    sp.seed = 7;
    sp.mask_index = v - 1;
  }
  int64_t dm() const { return int64_t(heads) * hd; }
};

struct ToyWorld {
  LoopDev loop;
  T x, qkv, q, k, v, att, hsel, logits;
  ToyWorld(Backend* be, const ToyNet& n, const LoopHost& h)
      : loop(be, h), x(be, DType::f32, int64_t(n.batch) * n.n_pad, n.dm()),
        qkv(be, DType::bf16, int64_t(n.batch) * n.n_pad, 3 * n.dm()), q(be, DType::bf16, int64_t(n.batch) * n.n_pad, n.dm()),
        k(be, DType::bf16, int64_t(n.batch) * n.length, n.dm()), v(be, DType::bf16, int64_t(n.batch) * n.length, n.dm()),
        att(be, DType::bf16, int64_t(n.batch) * n.n_pad, n.dm()), hsel(be, DType::bf16, int64_t(n.batch) * n.k_pad, n.dm()),
        logits(be, DType::f32, int64_t(n.batch) * n.k_pad, n.vocab) {}
  // Every tensor a step writes, flattened (I32 values converted exactly).
  std::vector<float> snapshot(Backend* be) {
    std::vector<float> all;
    for (const T* t : {&loop.state, &loop.z, &loop.tokens, &loop.positions, &loop.head_rows, &loop.keys, &loop.picks})
      for (int32_t i : down_i(be, t->t)) all.push_back(float(i));
    for (const T* t : {&x, &qkv, &q, &k, &v, &att, &hsel, &logits}) {
      auto d = down(be, t->t);
      all.insert(all.end(), d.begin(), d.end());
    }
    return all;
  }
};

Status toy_step(Backend* be, const ToyNet& n, ToyWorld& w) {
  LoopTensors lt = w.loop.lt();
  ESOLM_TRY(be->loop_begin_step(lt, n.batch, n.length, n.n_pad, n.k_pad));
  ESOLM_TRY(be->embed(n.emb.t, lt.tokens, w.x.t));
  ESOLM_TRY(be->linear(w.x.t, n.wqkv.t, Tensor{}, w.qkv.t, Epilogue::store));
  ESOLM_TRY(be->rope_qkv_store_loop(w.qkv.t, lt.positions, n.batch, n.n_pad, n.heads, n.length, lt.state, w.q.t,
                                    w.k.t, w.v.t));
  AttnParams p;
  p.batch = n.batch; p.n_q = n.n_pad; p.n_heads = n.heads; p.head_dim = n.hd; p.capacity = n.length;
  p.mode = AttnMode::causal;
  p.loop_state = &lt.state;
  ESOLM_TRY(be->attention(w.q.t, w.k.t, w.v.t, p, w.att.t));
  ESOLM_TRY(be->gather_rows(w.att.t, lt.head_rows, w.hsel.t));
  ESOLM_TRY(be->linear(w.hsel.t, n.head_w.t, n.head_b.t, w.logits.t, Epilogue::store));
  ESOLM_TRY(be->sample_rows_to(w.logits.t, int64_t(n.batch) * n.k_pad, n.sp, lt.keys, lt.picks));
  return be->loop_end_step(lt, n.batch, n.length, n.k_pad);
}

// A linear whose F32 weight is converted to BF16 in scratch: running it needs more than
// `bytes` of scratch.
struct ScratchGrower {
  Backend* be;
  T in, w, out;
  ScratchGrower(Backend* b, int64_t bytes)
      : be(b), in(b, DType::bf16, 1, 1024), w(b, DType::f32, bytes / 2048 + 1, 1024),
        out(b, DType::f32, 1, bytes / 2048 + 1) {}
  Status run() { return be->linear(in.t, w.t, Tensor{}, out.t, Epilogue::store); }
};

void test_recording(int batch, int length, int n_pad, int k_pad, int heads, int hd, int vocab) {
  char name[128];
  std::snprintf(name, sizeof name, "recording b=%d L=%d n_pad=%d k_pad=%d h=%d hd=%d", batch, length, n_pad, k_pad,
                heads, hd);
  // A fresh backend: its scratch starts at 1 MiB, so the ScratchGrower below really grows it.
  Status s;
  std::unique_ptr<Backend> be = create_cuda_backend(0, s);
  CHECK_OK(s);
  if (!be->can_record()) {
    std::printf("skip %s: recording is off (ESOLM_CUDA_GRAPHS=0)\n", name);
    return;
  }
  ToyNet net(be.get(), batch, length, n_pad, k_pad, heads, hd, vocab);
  CHECK_OK(up(be.get(), net.emb.t, randv(size_t(net.emb.t.numel()))));
  CHECK_OK(up(be.get(), net.wqkv.t, randv(size_t(net.wqkv.t.numel()), 2.f / std::sqrt(float(net.dm())))));
  CHECK_OK(up(be.get(), net.head_w.t, randv(size_t(net.head_w.t.numel()), 3.f / std::sqrt(float(net.dm())))));
  CHECK_OK(up(be.get(), net.head_b.t, randv(size_t(vocab), 0.1f)));
  LoopHost h = random_loop(batch, length, n_pad, k_pad, 1, vocab - 1);
  h.table = eso_table(length, n_pad, k_pad);
  for (int j = 0; j < length; ++j) h.fixed[size_t(j)] = j < 3;  // a given prefix, as generate() lays it out
  for (int b = 0; b < batch; ++b)
    for (int j = 3; j < length; ++j) h.z[size_t(b) * length + j] = vocab - 1;  // the mask
  const int steps = h.n_steps();
  ToyWorld a(be.get(), net, h), b(be.get(), net, h);
  CHECK_OK(a.loop.upload(be.get(), h));
  CHECK_OK(b.loop.upload(be.get(), h));
  // Step 0 of A first: it sizes the scratch, so recording B needs no growth.
  CHECK_OK(toy_step(be.get(), net, a));
  CHECK_OK(be->synchronize());
  int id = -1;
  CHECK_OK(be->begin_record());
  Status rec = toy_step(be.get(), net, b);
  Status end = be->end_record(id);
  CHECK_OK(rec);
  CHECK_OK(end);
  ScratchGrower grow(be.get(), 4 << 20), grow_more(be.get(), 16 << 20);
  int first_bad = -1;
  for (int i = 0; i < steps; ++i) {
    if (i > 0) CHECK_OK(toy_step(be.get(), net, a));
    if (i == steps / 2) CHECK_OK(grow.run());  // the recording keeps using its old scratch
    CHECK_OK(be->replay(id));
    if (a.snapshot(be.get()) != b.snapshot(be.get()) && first_bad < 0) first_bad = i;
  }
  const auto final_state = down_i(be.get(), b.loop.state.t);
  check_true(std::string(name) + " replay == eager",
             first_bad < 0 && final_state[kLoopCursor] == steps,
             std::to_string(steps) + " steps, scratch grown at step " + std::to_string(steps / 2) +
                 (first_bad < 0 ? ": every tensor identical at every step"
                                : ": first difference after step " + std::to_string(first_bad)));
  be->release_recordings();
  check_error(std::string(name) + " replay after release", be->replay(id), Code::invalid_arg);

  // Host work while recording fails the op or the recording; the backend works afterwards.
  T small(be.get(), DType::i32, 4, 1), f(be.get(), DType::f32, 1, 4);
  std::vector<int32_t> host(4);
  std::vector<float> hf(4);
  Tensor tmp;
  DrawKey key;
  int32_t pick = 0;
  const std::vector<std::pair<const char*, std::function<Status()>>> refused = {
      {"upload", [&] { return up_i(be.get(), small.t, {1, 2, 3, 4}); }},
      {"synchronize", [&] { return be->synchronize(); }},
      {"download_f32", [&] { return be->download_f32(f.t, 0, 1, hf.data()); }},
      {"alloc", [&] { return be->alloc(tmp, DType::f32, 2, 2); }},
      {"download_i32_async", [&] { return be->download_i32_async(small.t, 4, host.data()); }},
      {"sample_rows", [&] { return be->sample_rows(f.t, 1, SampleParams{}, &key, &pick); }},
      {"begin_record", [&] { return be->begin_record(); }},
      {"scratch growth", [&] { return grow_more.run(); }},
  };
  for (const auto& r : refused) {
    CHECK_OK(be->begin_record());
    const Status op = r.second();
    int rid = -1;
    const Status e = be->end_record(rid);
    const bool op_refused = !op && op.message.find("cannot run while recording") != std::string::npos;
    check_true(std::string("recording refuses ") + r.first, op_refused && !e,
               std::string("op -> ") + status_code_name(op.code) + ", end_record -> " + status_code_name(e.code) +
                   (e.message.empty() ? "" : " (" + e.message + ")"));
  }
  if (tmp.data) be->release(tmp);
  int rid = -1;
  check_error("end_record without begin_record", be->end_record(rid), Code::internal);
  check_error("replay unknown id", be->replay(7), Code::invalid_arg);
  CHECK_OK(up_i(be.get(), small.t, {5, 6, 7, 8}));
  check_equal_i("backend works after refused recordings", down_i(be.get(), small.t), {5, 6, 7, 8});
}

void run_loop_op_tests(Ctx& c) {
  struct LS { int b, len, n_pad, k_pad, steps; bool quick; };
  const LS ls[] = {{1, 37, 1, 1, 6, true}, {3, 100, 5, 4, 8, true}, {3, 300, 16, 8, 8, false},
                   {1, 77, 64, 4, 5, false}, {3, 45, 64, 8, 6, false}};
  test_download_async(c);
  for (const LS& x : ls)
    if (!g_quick || x.quick) test_loop_steps(c, x.b, x.len, x.n_pad, x.k_pad, x.steps);
  test_loop_errors(c);
  const DType bf = DType::bf16, f32 = DType::f32;
  test_rope_loop(c, 1, 1, 2, 64, 7, bf, {{0, 1}, {6, 1}});
  test_rope_loop(c, 3, 16, 2, 32, 45, bf, {{0, 16}, {40, 5}, {10, 1}, {29, 16}});
  if (!g_quick) {
    test_rope_loop(c, 3, 5, 4, 64, 45, f32, {{0, 5}, {44, 1}, {20, 3}});
    test_rope_loop(c, 1, 64, 2, 64, 300, bf, {{0, 64}, {250, 50}, {299, 1}, {100, 17}});
  }
  // split path (n_pad <= 16, or hd 128, or f32) and tiled path (n_pad > 16, bf16, hd 32/64)
  test_attention_loop(c, 1, 1, 2, 64, 45, bf, {{0, 1}, {20, 1}, {44, 1}});
  test_attention_loop(c, 3, 5, 2, 32, 77, bf, {{0, 5}, {0, 1}, {30, 3}, {72, 5}, {76, 1}});
  test_attention_loop(c, 3, 64, 2, 32, 100, bf, {{0, 64}, {36, 64}, {10, 33}, {90, 10}});
  if (!g_quick) {
    test_attention_loop(c, 3, 16, 2, 64, 300, bf, {{0, 16}, {100, 7}, {284, 16}, {299, 1}});
    test_attention_loop(c, 2, 5, 2, 64, 45, f32, {{0, 5}, {40, 5}, {10, 2}});
    test_attention_loop(c, 1, 64, 2, 64, 300, bf, {{0, 64}, {236, 64}, {100, 17}, {50, 5}, {299, 1}, {0, 20}});
    test_attention_loop(c, 1, 20, 2, 128, 45, bf, {{0, 20}, {25, 20}, {3, 4}});
  }
  SampleParams p;
  p.top_p = 0.9;
  p.mask_index = 999;
  p.seed = 77;
  test_sample_rows_to(c, 1000, 7, p);
  p.greedy = true;
  test_sample_rows_to(c, 1000, 24, p);
  if (!g_quick) {
    p.greedy = false;
    p.top_p = 0.5;
    p.temperature = 0.7;
    p.mask_index = 50257;
    test_sample_rows_to(c, 50258, 3, p);
  }
  test_recording(3, 50, 10, 4, 2, 32, 300);
  if (!g_quick) test_recording(1, 200, 40, 16, 2, 64, 1000);  // tiled attention, 40-row window
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
// The tiny random Eso-LM shared with the CPU native tests (test/native/tiny_model.h).
using test::random_weights;
using test::tiny_config;

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

// Whole generations through the planned KV loop: CUDA backends created with
// ESOLM_CUDA_KV_LOOP=1, with recording (graphs; kv_loop.cpp then pads windows to powers of
// two) and without (ESOLM_CUDA_GRAPHS=0; exact windows). Asserted, sampled (top-p 0.9): each
// variant deterministic, valid tokens, the NFE of the loop-off run, the first Eso-LM step's
// picks >= 75% equal to the CPU's (as test_generate). Greedy, each loop variant vs loop off:
// padded windows take other GEMM kernels, and the loop's attention plans its splits over the
// whole cache, so bf16 rounding can differ; only near-tied logits can then flip a first-step
// pick, so at most max(1, 10%) of them may differ. Later steps are not compared: one flipped
// pick changes the context of every step after it.
std::unique_ptr<Backend> loop_backend(bool graphs, Status& s) {
  EnvVar loop("ESOLM_CUDA_KV_LOOP", "1"), rec("ESOLM_CUDA_GRAPHS", graphs ? nullptr : "0");
  return create_cuda_backend(0, s);
}

// The picks of a step event: (index b * L + position into the result tokens, token).
std::vector<std::pair<size_t, int32_t>> first_step_picks(const StepEvent& ev, int L) {
  std::vector<std::pair<size_t, int32_t>> v;
  const int B = ev.per_sequence ? int(ev.tokens.size()) / ev.per_sequence : 0;
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < ev.per_sequence; ++r) {
      const size_t i = size_t(b) * ev.per_sequence + r;
      v.emplace_back(size_t(b) * L + size_t(ev.positions[i]), ev.tokens[i]);
    }
  return v;
}

size_t agree_at(const std::vector<std::pair<size_t, int32_t>>& picks, const std::vector<int32_t>& tokens) {
  size_t same = 0;
  for (auto& p : picks) same += p.first < tokens.size() && tokens[p.first] == p.second;
  return same;
}

// First-step picks of the loop-off greedy run that a loop run reproduces (rule above).
struct FirstStep {
  size_t same = 0, all = 0;
  bool ok() const { return all > 0 && all - same <= std::max<size_t>(1, all / 10); }
};

void test_generate_loop(Models& m, Model& with_graphs, Model& eager_loop, Method method, double alpha0, int B, int T) {
  const ModelConfig cfg = tiny_config();
  const int L = 50;
  GenerateRequest req;
  req.method = method;
  req.batch = B;
  req.length = L;
  req.steps = T;
  req.alpha0 = alpha0;
  req.bos = 1;
  req.sample.top_p = 0.9;
  req.sample.seed = 3;
  char name[128];
  std::snprintf(name, sizeof name, "loop generate %s a0=%.2f B=%d T=%d L=%d", method == Method::esolm ? "esolm" : "ar",
                alpha0, B, T, L);
  StepEvent first_cpu, first_off;
  auto grab = [](StepEvent& dst) {
    return [&dst](const StepEvent& ev) {
      if (ev.step == 0) dst = ev;
    };
  };
  GenerateRequest greq = req;
  greq.sample.greedy = true;
  GenerateResult g1, g2, e1, e2, off, cpu, g_greedy, e_greedy, off_greedy;
  const Status s[] = {generate(with_graphs, req, nullptr, nullptr, nullptr, g1),
                      generate(with_graphs, req, nullptr, nullptr, nullptr, g2),
                      generate(eager_loop, req, nullptr, nullptr, nullptr, e1),
                      generate(eager_loop, req, nullptr, nullptr, nullptr, e2),
                      generate(*m.cu, req, nullptr, nullptr, nullptr, off),
                      generate(*m.cpu, req, nullptr, grab(first_cpu), nullptr, cpu),
                      generate(with_graphs, greq, nullptr, nullptr, nullptr, g_greedy),
                      generate(eager_loop, greq, nullptr, nullptr, nullptr, e_greedy),
                      generate(*m.cu, greq, nullptr, grab(first_off), nullptr, off_greedy)};
  bool ok = true;
  for (const Status& x : s) {
    if (!x) std::printf("     %s: %s %s\n", name, status_code_name(x.code), x.message.c_str());
    ok = ok && x;
  }
  int bad = 0;
  for (const auto* r : {&g1, &e1})
    for (int32_t t : r->tokens) bad += (t < 0 || t >= cfg.vocab_size || t == cfg.mask_index);
  const bool det = g1.tokens == g2.tokens && e1.tokens == e2.tokens;
  const auto cpu_first = first_step_picks(first_cpu, L), off_first = first_step_picks(first_off, L);
  auto cpu_agree = [&](const GenerateResult& r) {
    return cpu_first.empty() ? 1.0 : double(agree_at(cpu_first, r.tokens)) / double(cpu_first.size());
  };
  const FirstStep fg{agree_at(off_first, g_greedy.tokens), off_first.size()},
      fe{agree_at(off_first, e_greedy.tokens), off_first.size()};
  auto whole = [&](const GenerateResult& r) {
    size_t same = 0;
    for (size_t i = 0; i < r.tokens.size() && i < off_greedy.tokens.size(); ++i) same += r.tokens[i] == off_greedy.tokens[i];
    return off_greedy.tokens.empty() ? 0.0 : double(same) / double(off_greedy.tokens.size());
  };
  // Recording must really happen: a plan of >= 8 steps repeats a padded shape, and a shape
  // used twice is replayed from its second use on (kv_loop.cpp); the eager loop never replays.
  const bool replays_ok = e1.replayed_steps == 0 && (g1.steps < 8 || g1.replayed_steps > 0);
  ok = ok && det && bad == 0 && g1.nfe == off.nfe && e1.nfe == off.nfe && g1.tokens.size() == size_t(B) * L &&
       fg.ok() && fe.ok() && replays_ok;
  if (method == Method::esolm) ok = ok && cpu_agree(g1) >= 0.75 && cpu_agree(e1) >= 0.75;
  ++g_cases;
  std::printf("%s %-58s nfe graphs %d eager-loop %d off %d cpu %d, replayed %d/%d steps, deterministic %s, invalid %d, "
              "first step vs cpu %.2f / %.2f; greedy first step vs loop off %zu/%zu / %zu/%zu, greedy whole sequence "
              "%.2f / %.2f (not asserted)\n",
              ok ? "ok  " : "FAIL", name, g1.nfe, e1.nfe, off.nfe, cpu.nfe, g1.replayed_steps, g1.steps, det ? "yes" : "no",
              bad, cpu_agree(g1),
              cpu_agree(e1), fg.same, fg.all, fe.same, fe.all, whole(g_greedy), whole(e_greedy));
  if (!ok) ++g_fail;
}

void run_loop_generation_tests(Models& m) {
  const ModelConfig cfg = tiny_config();
  Status s1, s2;
  std::unique_ptr<Backend> bg = loop_backend(true, s1), be = loop_backend(false, s2);
  CHECK_OK(s1);
  CHECK_OK(s2);
  check_true("ESOLM_CUDA_KV_LOOP / ESOLM_CUDA_GRAPHS switches",
             bg->supports_kv_loop() && bg->can_record() && be->supports_kv_loop() && !be->can_record() &&
                 !m.cu->backend()->supports_kv_loop(),
             "loop on with and without recording; the default backend has the loop off");
  std::unique_ptr<Model> mg, me;
  CHECK_OK(Model::create(cfg, random_weights(cfg, 7), bg.get(), mg));
  CHECK_OK(Model::create(cfg, random_weights(cfg, 7), be.get(), me));
  if (g_quick) {
    test_generate_loop(m, *mg, *me, Method::esolm, 1.0, 3, 5);
    return;
  }
  for (double alpha0 : {1.0, 0.25})
    for (int B : {1, 3})
      for (int T : {5, 50})  // T = 50 is T = L
        test_generate_loop(m, *mg, *me, Method::esolm, alpha0, B, T);
  test_generate_loop(m, *mg, *me, Method::ar, 1.0, 1, 0);
  test_generate_loop(m, *mg, *me, Method::ar, 1.0, 3, 0);
}

void run_model_tests(Models& m) {
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
  std::unique_ptr<Backend> cu;
  {
    EnvVar loop_off("ESOLM_CUDA_KV_LOOP", nullptr);  // the baseline; loop backends are made per test
    cu = create_cuda_backend(0, s);
  }
  if (!cu) {
    std::printf("FAIL create_cuda_backend: %s %s\n", status_code_name(s.code), s.message.c_str());
    return 1;
  }
  std::unique_ptr<Backend> cpu = create_cpu_backend(0);
  Ctx c{cu.get(), cpu.get()};
  run_op_tests(c);
  run_sampler_tests(c);
  const ModelConfig cfg = tiny_config();
  Models m;
  Status ms = Model::create(cfg, random_weights(cfg, 7), cu.get(), m.cu);
  if (ms) ms = Model::create(cfg, random_weights(cfg, 7), cpu.get(), m.cpu);
  if (!ms) {
    std::printf("FAIL Model::create: %s\n", ms.message.c_str());
    return 1;
  }
  run_model_tests(m);
  // The planned KV loop and recording last: they are the newest code, and a device fault
  // there (a sticky CUDA error) must not hide the results of everything above.
  run_loop_op_tests(c);
  run_loop_generation_tests(m);
  Status fin = cu->synchronize();
  if (!fin) {
    std::printf("FAIL final synchronize: %s\n", fin.message.c_str());
    ++g_fail;
  }
  std::printf("%s: %d cases, %d failures\n", g_fail ? "FAILED" : "PASSED", g_cases, g_fail);
  return g_fail ? 1 : 0;
}
