// schedule.cpp — generation plans (schedule.h): Eso-LM (B) binomial step sizes and slot
// orders (log-linear and block/subcontext schedules, caller overrides) and MDLM timesteps.
//
// All randomness is Philox in the plan domain: counter = (index, 0, 0xFFFFFFFF,
// 0xFFFFFFFF - stream), key = seed. Token draws never use round 0xFFFFFFFF (MDLM rounds
// are step indices < 2^24), so the two domains cannot collide. Streams: 0 = step sizes, 1 = block shuffle, 2 + b = the slot
// order of sequence b (so a sequence's order does not depend on the batch size).
#include "schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <new>
#include <string>

#include "philox.h"

namespace esolm {
namespace {

constexpr uint32_t kStreamSteps = 0;
constexpr uint32_t kStreamBlock = 1;
constexpr uint32_t kStreamOrder = 2;  // + sequence index
constexpr int kMaxSteps = 1 << 24;    // loop guard; far beyond any useful step count
constexpr double kEps = 1e-3;         // LogLinear eps (MODEL-REFERENCE.md §2.6)

double plan_uniform(uint64_t seed, uint32_t stream, uint32_t index) {
  Philox4 c{{index, 0u, 0xFFFFFFFFu, 0xFFFFFFFFu - stream}};
  Philox4 r = philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
  return philox_u53(r.v[0], r.v[1]);
}

// Uniform integer in [0, n) from one plan uniform.
uint32_t plan_below(uint64_t seed, uint32_t stream, uint32_t index, uint32_t n) {
  double u = plan_uniform(seed, stream, index);
  uint32_t j = uint32_t(u * double(n));
  return j < n ? j : n - 1;  // u * n may round up to n
}

// Partial Fisher–Yates: a[0, k) becomes a uniformly random k-subset in random order.
template <class T>
void shuffle_prefix(T* a, int n, int k, uint64_t seed, uint32_t stream, uint32_t& index) {
  for (int i = 0; i < k && i < n - 1; ++i) {
    int j = i + int(plan_below(seed, stream, index++, uint32_t(n - i)));
    std::swap(a[i], a[j]);
  }
}

// log(k!) — a table for small k, Stirling's series (error < 1e-16 relative) above.
double log_factorial(int64_t k) {
  static const struct Table {
    double v[64];
    Table() {
      v[0] = 0;
      for (int i = 1; i < 64; ++i) v[i] = v[i - 1] + std::log(double(i));
    }
  } table;
  if (k < 64) return table.v[k];
  const double x = double(k), x2 = x * x;
  const double series =
      1.0 / (12 * x) - 1.0 / (360 * x * x2) + 1.0 / (1260 * x * x2 * x2) -
      1.0 / (1680 * x * x2 * x2 * x2);
  return (x + 0.5) * std::log(x) - x + 0.91893853320467274178 /* log(2π)/2 */ + series;
}

std::string str(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status invalid(const std::string& msg) { return Status::error(Code::invalid_arg, msg); }

// Step sizes of the alpha0-scaled log-linear schedule for R tokens (§2.6). Returns D.
int loglinear_steps(int R, int T, double alpha0, uint64_t seed, std::vector<int>& sizes) {
  auto alpha = [alpha0](double tau) { return alpha0 * (1.0 - (1.0 - kEps) * tau); };
  int64_t left = R;
  for (int j = 0; j < T && left > 0; ++j) {
    // t = 1 - j/T and s = t - 1/T, each formed from integers so s(T-1) is exactly 0.
    const double t = double(T - j) / T, s = double(T - j - 1) / T;
    const double at = alpha(t), as = alpha(s);
    const int64_t n = plan_binomial(seed, kStreamSteps, uint32_t(j), left, (as - at) / (1.0 - at));
    if (n > 0) {
      sizes.push_back(int(n));
      left -= n;
    }
  }
  if (left != 0 && alpha0 == 1.0) {
    sizes.push_back(int(left));
    left = 0;
  }
  return R - int(left);
}

}  // namespace

int64_t plan_binomial(uint64_t seed, uint32_t stream, uint32_t index, int64_t n, double p) {
  if (n <= 0 || !(p > 0)) return 0;  // NaN p -> 0
  if (p >= 1) return n;
  // Inversion that starts at the mode and walks outwards, always taking the more probable
  // neighbour next: a fixed order of outcomes, so it is exact for any u, and it costs
  // O(sqrt(n p (1-p))) pmf steps. The mode pmf comes from log-factorials (no underflow
  // of (1-p)^n for large n).
  double u = plan_uniform(seed, stream, index);
  int64_t mode = int64_t(std::floor(double(n + 1) * p));
  if (mode > n) mode = n;
  const double lp = std::log(p), lq = std::log1p(-p);
  const double f_mode = std::exp(log_factorial(n) - log_factorial(mode) - log_factorial(n - mode) +
                                 double(mode) * lp + double(n - mode) * lq);
  const double odds = p / (1 - p);
  u -= f_mode;
  if (u <= 0) return mode;
  int64_t lo = mode, hi = mode;
  double f_lo = f_mode, f_hi = f_mode;
  for (;;) {
    const bool can_lo = lo > 0, can_hi = hi < n;
    if (!can_lo && !can_hi) return mode;  // rounding left u a hair above the total mass
    const double next_lo = can_lo ? f_lo * double(lo) / (double(n - lo + 1) * odds) : -1.0;
    const double next_hi = can_hi ? f_hi * double(n - hi) / double(hi + 1) * odds : -1.0;
    if (next_lo >= next_hi) {
      f_lo = next_lo;
      --lo;
      u -= f_lo;
      if (u <= 0) return lo;
    } else {
      f_hi = next_hi;
      ++hi;
      u -= f_hi;
      if (u <= 0) return hi;
    }
  }
}

Status plan_mdlm(int steps, MdlmPlan& out) {
  if (steps <= 0 || steps > kMaxSteps)
    return invalid("steps must be in [1, " + std::to_string(kMaxSteps) + "], got " +
                   std::to_string(steps));
  try {
    out.t.assign(steps, 0.0);
    out.r.assign(steps, 0.0);
  } catch (const std::bad_alloc&) {
    return Status::error(Code::out_of_memory, "plan_mdlm: cannot allocate the timesteps");
  }
  for (int i = 0; i < steps; ++i) {
    // t_i = 1 - i/T, s_i = t_i - 1/T, r_i = s_i / t_i (the last r is exactly 0).
    const double t = double(steps - i) / steps, s = double(steps - i - 1) / steps;
    out.t[i] = t;
    out.r[i] = s / t;
  }
  return Status::ok();
}

namespace {

Status plan_esolm_impl(const EsoPlanOptions& opt, Plan& out) {
  const int L = opt.length;
  if (L <= 0) return invalid("length must be > 0, got " + std::to_string(L));
  if (opt.batch <= 0) return invalid("batch must be > 0, got " + std::to_string(opt.batch));
  if (int64_t(opt.batch) * L > (int64_t(1) << 31))
    return invalid("batch * length is too large (" + std::to_string(int64_t(opt.batch) * L) + ")");
  if (!(opt.alpha0 >= 0.0 && opt.alpha0 <= 1.0))
    return invalid("alpha0 must be in [0, 1], got " + str(opt.alpha0));
  if (opt.block_len < 0)
    return invalid("block_len must be >= 0, got " + std::to_string(opt.block_len));
  for (size_t i = 0; i < opt.given.size(); ++i) {
    const int32_t g = opt.given[i];
    if (g < 0 || g >= L)
      return invalid("given[" + std::to_string(i) + "] = " + std::to_string(g) +
                     " is outside [0, length = " + std::to_string(L) + ")");
    if (i > 0 && g <= opt.given[i - 1])
      return invalid("given must be sorted ascending without duplicates (given[" +
                     std::to_string(i) + "] = " + std::to_string(g) + ")");
  }
  const int G = int(opt.given.size());
  const int R = L - G;
  const bool block = opt.block_len > 0;
  if (block) {
    if (G > 0) return invalid("block_len: the block schedule does not support given positions");
    if (L % opt.block_len != 0)
      return invalid("block_len (" + std::to_string(opt.block_len) + ") must divide length (" +
                     std::to_string(L) + ")");
  }
  if (opt.step_sizes.empty() && !block && (opt.steps <= 0 || opt.steps > kMaxSteps))
    return invalid("steps must be in [1, " + std::to_string(kMaxSteps) + "], got " +
                   std::to_string(opt.steps));
  if (!opt.step_sizes.empty()) {
    int64_t sum = 0;
    for (size_t i = 0; i < opt.step_sizes.size(); ++i) {
      if (opt.step_sizes[i] <= 0)
        return invalid("step_sizes[" + std::to_string(i) + "] must be > 0, got " +
                       std::to_string(opt.step_sizes[i]));
      sum += opt.step_sizes[i];
    }
    if (sum != R)
      return invalid("step_sizes must sum to length - given = " + std::to_string(R) + ", got " +
                     std::to_string(sum));
  }
  std::vector<uint8_t> is_given(L, 0);
  for (int32_t g : opt.given) is_given[g] = 1;
  if (!opt.order.empty()) {
    if (opt.order.size() != 1 && opt.order.size() != size_t(opt.batch))
      return invalid("order must have 1 or batch = " + std::to_string(opt.batch) +
                     " entries, got " + std::to_string(opt.order.size()));
    std::vector<uint8_t> seen(L);
    for (size_t b = 0; b < opt.order.size(); ++b) {
      const auto& o = opt.order[b];
      if (o.size() != size_t(R))
        return invalid("order[" + std::to_string(b) + "] must list the " + std::to_string(R) +
                       " non-given positions, got " + std::to_string(o.size()) + " entries");
      std::fill(seen.begin(), seen.end(), 0);
      for (size_t j = 0; j < o.size(); ++j) {
        const int32_t q = o[j];
        if (q < 0 || q >= L || is_given[q] || seen[q])
          return invalid("order[" + std::to_string(b) + "] is not a permutation of the non-given "
                         "positions (entry " + std::to_string(j) + " = " + std::to_string(q) + ")");
        seen[q] = 1;
      }
    }
  }

  Plan plan;
  plan.length = L;
  plan.n_given = G;
  std::vector<int32_t> shared;  // block schedule: one order for the whole batch
  if (block) {
    // σ = flatten(arange(L).view(nb, S).T): step j reveals the positions ≡ j (mod S).
    const int S = opt.block_len, nb = L / S;
    std::vector<int32_t> sigma(L);
    for (int j = 0; j < S; ++j)
      for (int i = 0; i < nb; ++i) sigma[size_t(j) * nb + i] = i * S + j;
    if (opt.block_shuffle) {
      uint32_t index = 0;
      for (int j = 0; j < S; ++j)
        shuffle_prefix(sigma.data() + size_t(j) * nb, nb, nb, opt.seed, kStreamBlock, index);
      std::vector<int> rows(S);
      for (int j = 0; j < S; ++j) rows[j] = j;
      shuffle_prefix(rows.data(), S, S, opt.seed, kStreamBlock, index);
      std::vector<int32_t> permuted(L);
      for (int j = 0; j < S; ++j)
        std::copy_n(sigma.begin() + size_t(rows[j]) * nb, nb, permuted.begin() + size_t(j) * nb);
      sigma.swap(permuted);
    }
    // The reference takes D = floor(L alpha0) but steps [nb] * floor(S alpha0); the two
    // disagree when S alpha0 is not an integer (then its sizes do not sum to L). We use
    // D = nb * floor(S alpha0), which keeps every diffusion step exactly one per block.
    const int k = int(std::floor(double(S) * opt.alpha0));
    const int D = nb * k;
    std::sort(sigma.begin() + D, sigma.end());
    plan.step_sizes.assign(k, nb);
    plan.step_sizes.insert(plan.step_sizes.end(), size_t(L - D), 1);
    plan.n_diffusion = D;
    shared.swap(sigma);
  } else if (opt.step_sizes.empty()) {
    plan.n_diffusion = loglinear_steps(R, opt.steps, opt.alpha0, opt.plan_seed.value_or(opt.seed), plan.step_sizes);
    plan.step_sizes.insert(plan.step_sizes.end(), size_t(R - plan.n_diffusion), 1);
  }
  if (!opt.step_sizes.empty()) {
    // Caller-given sizes are the whole plan: all of them count as diffusion steps.
    plan.step_sizes = opt.step_sizes;
    plan.n_diffusion = R;
  }

  std::vector<int32_t> free_pos;
  free_pos.reserve(R);
  for (int q = 0; q < L; ++q)
    if (!is_given[q]) free_pos.push_back(q);
  plan.order.resize(opt.batch);
  for (int b = 0; b < opt.batch; ++b) {
    std::vector<int32_t>& o = plan.order[b];
    o.reserve(L);
    o.assign(opt.given.begin(), opt.given.end());
    if (!opt.order.empty()) {
      const auto& src = opt.order[opt.order.size() == 1 ? 0 : b];
      o.insert(o.end(), src.begin(), src.end());
    } else if (block) {
      o.insert(o.end(), shared.begin(), shared.end());
    } else {
      // First D slots: a uniform random D-subset in random order; tail left to right.
      o.insert(o.end(), free_pos.begin(), free_pos.end());
      int32_t* a = o.data() + G;
      uint32_t index = 0;
      shuffle_prefix(a, R, plan.n_diffusion, opt.seed, kStreamOrder + uint32_t(b), index);
      std::sort(a + plan.n_diffusion, a + R);
    }
  }
  out = std::move(plan);
  return Status::ok();
}

}  // namespace

Status plan_esolm(const EsoPlanOptions& opt, Plan& out) {
  try {
    return plan_esolm_impl(opt, out);
  } catch (const std::bad_alloc&) {
    return Status::error(Code::out_of_memory, "plan_esolm: cannot allocate the plan");
  }
}

}  // namespace esolm
