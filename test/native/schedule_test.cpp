// schedule_test.cpp — engine/schedule: plan_binomial moments and pmf, Eso-LM plans
// (step sizes, slot orders, the binomial law of the diffusion count, NFE, given
// positions, batch independence), block schedules, caller overrides, argument
// validation, and MDLM timesteps.
// Plain executable: prints each failed check and exits non-zero if any failed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "engine/schedule.h"

#include "check.h"

using namespace esolm;


// Upper 1e-4 quantile of chi-square with k degrees of freedom (Wilson–Hilferty).
static double chi2_quantile_1e4(int k) {
  const double z = 3.719016485, a = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - a + z * std::sqrt(a), 3);
}

static double binom_pmf(int n, int k, double p) {
  return std::exp(std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0) +
                  k * std::log(p) + (n - k) * std::log1p(-p));
}

static void test_binomial() {
  // Edge cases.
  CHECK(plan_binomial(1, 0, 0, 0, 0.5) == 0, "n = 0");
  CHECK(plan_binomial(1, 0, 0, -5, 0.5) == 0, "n < 0");
  CHECK(plan_binomial(1, 0, 0, 100, 0.0) == 0, "p = 0");
  CHECK(plan_binomial(1, 0, 0, 100, -0.3) == 0, "p < 0");
  CHECK(plan_binomial(1, 0, 0, 100, 1.0) == 100, "p = 1");
  CHECK(plan_binomial(1, 0, 0, 100, 1.5) == 100, "p > 1");
  CHECK(plan_binomial(1, 0, 0, 100, std::nan("")) == 0, "p = NaN");
  // Deterministic in (seed, stream, index); each of them matters.
  {
    int same = 0, d_seed = 0, d_stream = 0, d_index = 0;
    for (uint32_t i = 0; i < 200; ++i) {
      int64_t a = plan_binomial(5, 3, i, 1000, 0.5);
      same += a == plan_binomial(5, 3, i, 1000, 0.5);
      d_seed += a != plan_binomial(6, 3, i, 1000, 0.5);
      d_stream += a != plan_binomial(5, 4, i, 1000, 0.5);
      d_index += a != plan_binomial(5, 3, i + 1000, 1000, 0.5);
    }
    CHECK(same == 200, "plan_binomial not deterministic (%d/200)", same);
    CHECK(d_seed > 150 && d_stream > 150 && d_index > 150,
          "seed/stream/index ignored? %d %d %d of 200 differ", d_seed, d_stream, d_index);
  }
  // Moments over many draws for several (n, p), including (1-p)^n underflow and p ~ 1.
  struct NP {
    int64_t n;
    double p;
  } cases[] = {{1, 0.3},      {10, 0.3},     {7, 0.5},    {1024, 0.5},  {1024, 1e-3},
               {100000, 0.01}, {50, 0.98},   {1000, 1e-4}, {4096, 0.9},  {1000000, 0.37},
               {20, 0.999999}, {3000, 0.5}};
  const int draws = 20000;
  for (const NP& c : cases) {
    double s = 0, s2 = 0;
    bool range_ok = true;
    for (int i = 0; i < draws; ++i) {
      int64_t k = plan_binomial(2024, 7, uint32_t(i), c.n, c.p);
      range_ok = range_ok && k >= 0 && k <= c.n;
      s += double(k);
      s2 += double(k) * double(k);
    }
    const double mean = s / draws, var = s2 / draws - mean * mean;
    const double mu = c.n * c.p, sig2 = c.n * c.p * (1 - c.p);
    const double mu4 = sig2 * (1 + 3 * (c.n - 2) * c.p * (1 - c.p));  // 4th central moment
    const double se_mean = std::sqrt(sig2 / draws);
    const double se_var = std::sqrt(std::max(mu4 - sig2 * sig2, 1e-300) / draws);
    CHECK(range_ok, "Binomial(%lld, %g) out of range", (long long)c.n, c.p);
    CHECK(std::fabs(mean - mu) < 5 * se_mean + 1e-12, "Binomial(%lld, %g): mean %.4f want %.4f (se %.4f)",
          (long long)c.n, c.p, mean, mu, se_mean);
    CHECK(std::fabs(var - sig2) < 5 * se_var + 1e-12, "Binomial(%lld, %g): var %.4f want %.4f (se %.4f)",
          (long long)c.n, c.p, var, sig2, se_var);
  }
  // Full pmf (chi-square) for small and mid n.
  for (NP c : {NP{10, 0.3}, NP{60, 0.5}, NP{200, 0.05}}) {
    const int n = int(c.n), total = 100000;
    std::vector<long> counts(n + 1, 0);
    for (int i = 0; i < total; ++i) counts[plan_binomial(99, 1, uint32_t(i), n, c.p)]++;
    double chi2 = 0, small_e = 0, small_o = 0;
    int bins = 0;
    for (int k = 0; k <= n; ++k) {
      double e = binom_pmf(n, k, c.p) * total;
      if (e < 5) {
        small_e += e;
        small_o += counts[k];
        continue;
      }
      chi2 += (counts[k] - e) * (counts[k] - e) / e;
      ++bins;
    }
    if (small_e > 0) {
      chi2 += (small_o - small_e) * (small_o - small_e) / small_e;
      ++bins;
    }
    const double lim = chi2_quantile_1e4(bins - 1);
    std::printf("  Binomial(%d, %g) pmf: chi2 = %.2f df = %d (limit %.1f)\n", n, c.p, chi2, bins - 1, lim);
    CHECK(chi2 < lim, "Binomial(%d, %g) pmf chi-square %.2f > %.2f", n, c.p, chi2, lim);
  }
}

// Structural invariants of any plan; returns false (and reports) on the first violation.
static bool check_plan(const Plan& plan, const EsoPlanOptions& opt, const char* what) {
  const int L = opt.length, G = int(opt.given.size());
  if (plan.length != L || plan.n_given != G || int(plan.order.size()) != opt.batch) {
    CHECK(false, "%s: length/n_given/batch mismatch", what);
    return false;
  }
  long sum = 0;
  for (int k : plan.step_sizes) {
    if (k <= 0) {
      CHECK(false, "%s: step size %d", what, k);
      return false;
    }
    sum += k;
  }
  if (sum != L - G) {
    CHECK(false, "%s: sizes sum to %ld, want %d", what, sum, L - G);
    return false;
  }
  if (plan.n_diffusion < 0 || plan.n_diffusion > L - G) {
    CHECK(false, "%s: n_diffusion %d", what, plan.n_diffusion);
    return false;
  }
  for (int b = 0; b < opt.batch; ++b) {
    const auto& o = plan.order[b];
    if (int(o.size()) != L) {
      CHECK(false, "%s: order[%d] has %zu slots", what, b, o.size());
      return false;
    }
    std::vector<int32_t> sorted(o);
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < L; ++i)
      if (sorted[i] != i) {
        CHECK(false, "%s: order[%d] is not a permutation", what, b);
        return false;
      }
    for (int i = 0; i < G; ++i)
      if (o[i] != opt.given[i]) {
        CHECK(false, "%s: given positions must fill the first slots in order", what);
        return false;
      }
    if (opt.order.empty() && !std::is_sorted(o.begin() + G + plan.n_diffusion, o.end())) {
      CHECK(false, "%s: sequential tail of order[%d] not ascending", what, b);
      return false;
    }
  }
  ++g_pass;
  return true;
}

static Plan make(const EsoPlanOptions& opt, const char* what) {
  Plan plan;
  Status s = plan_esolm(opt, plan);
  CHECK(s.is_ok(), "%s: plan_esolm failed: %s", what, s.message.c_str());
  return plan;
}

static void test_esolm_plans() {
  // Invariants over a grid, plus alpha0 = 1 / 0 special shapes.
  for (int L : {1, 7, 128, 1024})
    for (int T : {1, 16, 128, 1024, 4096})
      for (double a0 : {1.0, 0.5, 0.25, 0.0625, 0.0}) {
        EsoPlanOptions opt;
        opt.length = L;
        opt.steps = T;
        opt.alpha0 = a0;
        opt.batch = 2;
        opt.seed = 1000 + L + T;
        char what[96];
        std::snprintf(what, sizeof what, "plan L=%d T=%d alpha0=%g", L, T, a0);
        Plan plan = make(opt, what);
        if (!check_plan(plan, opt, what)) continue;
        if (a0 == 1.0) CHECK(plan.n_diffusion == L, "%s: alpha0 = 1 needs D = L, got %d", what, plan.n_diffusion);
        if (a0 == 0.0) {
          bool ones = std::all_of(plan.step_sizes.begin(), plan.step_sizes.end(), [](int k) { return k == 1; });
          bool asc = std::is_sorted(plan.order[0].begin(), plan.order[0].end());
          CHECK(plan.n_diffusion == 0 && ones && asc, "%s: alpha0 = 0 must be left to right", what);
        }
        if (a0 == 1.0)
          CHECK(int(plan.step_sizes.size()) <= std::min(L, T + 1), "%s: %zu steps", what,
                plan.step_sizes.size());
      }

  // The diffusion part is a random order (not ascending) and differs per sequence.
  {
    EsoPlanOptions opt;
    opt.length = 256;
    opt.steps = 64;
    opt.batch = 3;
    opt.seed = 5;
    Plan plan = make(opt, "random order");
    CHECK(!std::is_sorted(plan.order[0].begin(), plan.order[0].end()), "diffusion order is ascending");
    CHECK(plan.order[0] != plan.order[1] && plan.order[1] != plan.order[2], "sequences share an order");
    Plan again = make(opt, "random order again");
    CHECK(again.order == plan.order && again.step_sizes == plan.step_sizes, "plan not deterministic");
    opt.seed = 6;
    Plan other = make(opt, "other seed");
    CHECK(other.order[0] != plan.order[0], "seed ignored");
  }

  // Sequence b's order depends only on (seed, b), not on the batch size.
  {
    EsoPlanOptions opt;
    opt.length = 200;
    opt.steps = 32;
    opt.alpha0 = 0.5;
    opt.seed = 77;
    opt.batch = 1;
    Plan p1 = make(opt, "batch 1");
    opt.batch = 8;
    Plan p8 = make(opt, "batch 8");
    opt.batch = 6;
    Plan p6 = make(opt, "batch 6");
    CHECK(p1.order[0] == p8.order[0] && p6.order[5] == p8.order[5] && p1.step_sizes == p8.step_sizes,
          "order depends on the batch size");
  }

  // D ~ Binomial(L, 1 - (1 - alpha0) / (1 - alpha0 eps)) over seeds (the thinning telescopes).
  for (double a0 : {0.25, 0.5}) {
    const int L = 256, seeds = 2000;
    double s = 0, s2 = 0;
    for (int i = 0; i < seeds; ++i) {
      EsoPlanOptions opt;
      opt.length = L;
      opt.steps = 128;
      opt.alpha0 = a0;
      opt.seed = 0xABC00000ull + uint64_t(i);
      Plan plan;
      plan_esolm(opt, plan);
      s += plan.n_diffusion;
      s2 += double(plan.n_diffusion) * plan.n_diffusion;
    }
    const double q = 1.0 - (1.0 - a0) / (1.0 - a0 * 1e-3);
    const double mean = s / seeds, var = s2 / seeds - mean * mean;
    const double mu = L * q, sig2 = L * q * (1 - q);
    const double mu4 = sig2 * (1 + 3 * (L - 2) * q * (1 - q));
    std::printf("  D for alpha0=%g: mean %.2f (want %.2f), var %.2f (want %.2f)\n", a0, mean, mu, var, sig2);
    CHECK(std::fabs(mean - mu) < 5 * std::sqrt(sig2 / seeds), "alpha0=%g: mean D %.3f, want %.3f", a0, mean, mu);
    CHECK(std::fabs(var - sig2) < 5 * std::sqrt((mu4 - sig2 * sig2) / seeds), "alpha0=%g: var D %.3f, want %.3f",
          a0, var, sig2);
  }

  // NFE for alpha0 = 1, L = 1024: T = 1024 gives about T (1 - e^{-L/T}) ~ 647; T = 16 gives 16.
  {
    // Exact expectation: token reveal steps are iid with P(step j) = (1-eps)/T, the last
    // step also taking eps; E[#non-empty] = sum_j 1 - (1 - pi_j)^L.
    const int L = 1024, T = 1024, seeds = 40;
    const double pi = (1 - 1e-3) / T;
    const double expect = (T - 1) * (1 - std::pow(1 - pi, L)) + (1 - std::pow(1 - pi - 1e-3, L));
    double s = 0;
    int lo = 1 << 30, hi = 0;
    for (int i = 0; i < seeds; ++i) {
      EsoPlanOptions opt;
      opt.length = L;
      opt.steps = T;
      opt.seed = 31 + uint64_t(i);
      Plan plan = make(opt, "nfe");
      const int n = int(plan.step_sizes.size());
      s += n;
      lo = std::min(lo, n);
      hi = std::max(hi, n);
    }
    std::printf("  NFE(L=1024, T=1024, alpha0=1): mean %.1f (expect %.1f), range [%d, %d]\n", s / seeds,
                expect, lo, hi);
    CHECK(std::fabs(s / seeds - expect) < 8, "mean NFE %.1f, expect %.1f", s / seeds, expect);
    CHECK(lo > 645 - 60 && hi < 645 + 60, "NFE range [%d, %d]", lo, hi);
    for (int i = 0; i < 5; ++i) {
      EsoPlanOptions opt;
      opt.length = L;
      opt.steps = 16;
      opt.seed = uint64_t(i);
      Plan plan = make(opt, "nfe16");
      CHECK(plan.step_sizes.size() == 16, "T=16: %zu steps", plan.step_sizes.size());
    }
  }

  // Given positions occupy the first slots and are excluded from the sizes.
  {
    EsoPlanOptions opt;
    opt.length = 64;
    opt.steps = 8;
    opt.alpha0 = 0.5;
    opt.batch = 3;
    opt.seed = 8;
    opt.given = {0, 1, 2, 10, 63};
    Plan plan = make(opt, "given");
    if (check_plan(plan, opt, "given")) {
      bool no_given_after = true;
      for (const auto& o : plan.order)
        for (int j = 5; j < 64; ++j)
          no_given_after = no_given_after && !std::binary_search(opt.given.begin(), opt.given.end(), o[j]);
      CHECK(no_given_after, "a given position appears after the first slots");
    }
    opt.given.clear();
    for (int i = 0; i < 64; ++i) opt.given.push_back(i);
    Plan all = make(opt, "all given");
    CHECK(all.step_sizes.empty() && all.n_diffusion == 0 && all.order[0] == opt.given, "all positions given");
  }
}

static void test_block_schedule() {
  // The nb contiguous subcontexts [i S, (i + 1) S) are the blocks: every diffusion step
  // reveals exactly one position in each block, all with the same residue mod S.
  for (bool shuffle : {false, true})
    for (double a0 : {1.0, 0.5}) {
      EsoPlanOptions opt;
      opt.length = 64;
      opt.block_len = 8;
      opt.block_shuffle = shuffle;
      opt.alpha0 = a0;
      opt.batch = 3;
      opt.seed = 12;
      char what[80];
      std::snprintf(what, sizeof what, "block S=8 shuffle=%d alpha0=%g", int(shuffle), a0);
      Plan plan = make(opt, what);
      if (!check_plan(plan, opt, what)) continue;
      const int S = 8, nb = 8, k = int(S * a0);
      CHECK(plan.n_diffusion == nb * k, "%s: D = %d", what, plan.n_diffusion);
      CHECK(int(plan.step_sizes.size()) == k + (64 - nb * k), "%s: %zu steps", what, plan.step_sizes.size());
      bool tiling = true;
      std::vector<int> residue_seen(S, 0);
      for (int j = 0; j < k; ++j) {
        CHECK(plan.step_sizes[j] == nb, "%s: step %d has size %d", what, j, plan.step_sizes[j]);
        std::vector<int> blocks;
        const int r0 = plan.order[0][j * nb] % S;
        for (int i = 0; i < nb; ++i) {
          const int pos = plan.order[0][j * nb + i];
          blocks.push_back(pos / S);
          tiling = tiling && pos % S == r0;
        }
        std::sort(blocks.begin(), blocks.end());
        for (int i = 0; i < nb; ++i) tiling = tiling && blocks[i] == i;
        residue_seen[r0]++;
      }
      for (int r = 0; r < S && k == S; ++r) tiling = tiling && residue_seen[r] == 1;
      CHECK(tiling, "%s: a step does not take one position of each block", what);
      CHECK(plan.order[0] == plan.order[1] && plan.order[1] == plan.order[2], "%s: block order must be shared", what);
      if (!shuffle && a0 == 1.0) {
        bool exact = true;  // sigma = flatten(arange(L).view(nb, S).T)
        for (int j = 0; j < S; ++j)
          for (int i = 0; i < nb; ++i) exact = exact && plan.order[0][j * nb + i] == i * S + j;
        CHECK(exact, "%s: unshuffled sigma differs from flatten(arange(L).view(b,S).T)", what);
      }
      if (shuffle && a0 == 1.0) {
        std::vector<int32_t> plain(64);
        for (int j = 0; j < S; ++j)
          for (int i = 0; i < nb; ++i) plain[j * nb + i] = i * S + j;
        CHECK(plan.order[0] != plain, "%s: shuffle changed nothing", what);
      }
    }
  // floor(S alpha0) steps when S alpha0 is fractional: D = nb floor(S alpha0).
  {
    EsoPlanOptions opt;
    opt.length = 64;
    opt.block_len = 8;
    opt.alpha0 = 0.3;
    Plan plan = make(opt, "block alpha0=0.3");
    if (check_plan(plan, opt, "block alpha0=0.3"))
      CHECK(plan.n_diffusion == 16 && plan.step_sizes.size() == 2 + 48, "block alpha0=0.3: D=%d, %zu steps",
            plan.n_diffusion, plan.step_sizes.size());
  }
  // Invalid block requests.
  {
    Plan plan;
    EsoPlanOptions opt;
    opt.length = 60;
    opt.block_len = 8;
    CHECK(plan_esolm(opt, plan).code == Code::invalid_arg, "block_len must divide length");
    opt.length = 64;
    opt.given = {0};
    CHECK(plan_esolm(opt, plan).code == Code::invalid_arg, "block schedule with given positions");
  }
}

static void test_overrides_and_validation() {
  auto code = [](const EsoPlanOptions& opt) {
    Plan plan;
    return plan_esolm(opt, plan).code;
  };
  EsoPlanOptions base;
  base.length = 16;
  base.steps = 4;
  base.batch = 2;
  base.given = {3, 9};
  {  // Explicit step sizes.
    EsoPlanOptions opt = base;
    opt.step_sizes = {3, 1, 10};
    Plan plan = make(opt, "step_sizes override");
    if (check_plan(plan, opt, "step_sizes override"))
      CHECK(plan.step_sizes == opt.step_sizes && plan.n_diffusion == 14, "override sizes not used");
    opt.steps = 0;  // steps are ignored when sizes are given
    CHECK(code(opt) == Code::ok, "steps must be ignored with explicit step_sizes");
    opt.step_sizes = {3, 1, 9};
    CHECK(code(opt) == Code::invalid_arg, "step sizes not summing to L - given");
    opt.step_sizes = {3, 0, 11};
    CHECK(code(opt) == Code::invalid_arg, "zero step size");
    opt.step_sizes = {15, -1};
    CHECK(code(opt) == Code::invalid_arg, "negative step size");
  }
  {  // Explicit order (broadcast and per sequence).
    EsoPlanOptions opt = base;
    std::vector<int32_t> o = {15, 0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14};
    opt.order = {o};
    Plan plan = make(opt, "order override");
    if (check_plan(plan, opt, "order override")) {
      std::vector<int32_t> want = {3, 9};
      want.insert(want.end(), o.begin(), o.end());
      CHECK(plan.order[0] == want && plan.order[1] == want, "broadcast order not placed after given");
    }
    std::vector<int32_t> o2(o.rbegin(), o.rend());
    opt.order = {o, o2};
    plan = make(opt, "order per sequence");
    CHECK(plan.order.size() == 2 && plan.order[1][2] == o2[0], "per-sequence order not used");
    opt.order = {o, o2, o};
    CHECK(code(opt) == Code::invalid_arg, "order with 3 entries for batch 2");
    std::vector<int32_t> bad = o;
    bad[0] = 3;  // a given position
    opt.order = {bad};
    CHECK(code(opt) == Code::invalid_arg, "order containing a given position");
    bad = o;
    bad[0] = 0;  // duplicate
    opt.order = {bad};
    CHECK(code(opt) == Code::invalid_arg, "order with a duplicate");
    bad = o;
    bad.pop_back();
    opt.order = {bad};
    CHECK(code(opt) == Code::invalid_arg, "order too short");
    bad = o;
    bad[0] = 16;
    opt.order = {bad};
    CHECK(code(opt) == Code::invalid_arg, "order out of range");
  }
  {  // Argument validation, with messages naming the argument.
    EsoPlanOptions opt = base;
    Plan plan;
    opt.length = 0;
    Status s = plan_esolm(opt, plan);
    CHECK(s.code == Code::invalid_arg && s.message.find("length") != std::string::npos, "length 0: %s",
          s.message.c_str());
    opt = base;
    opt.batch = 0;
    s = plan_esolm(opt, plan);
    CHECK(s.code == Code::invalid_arg && s.message.find("batch") != std::string::npos, "batch 0");
    for (double a : {-0.1, 1.1, std::nan("")}) {
      opt = base;
      opt.alpha0 = a;
      s = plan_esolm(opt, plan);
      CHECK(s.code == Code::invalid_arg && s.message.find("alpha0") != std::string::npos, "alpha0 %g", a);
    }
    opt = base;
    opt.steps = 0;
    s = plan_esolm(opt, plan);
    CHECK(s.code == Code::invalid_arg && s.message.find("steps") != std::string::npos, "steps 0");
    opt.steps = -3;
    CHECK(code(opt) == Code::invalid_arg, "steps < 0");
    for (std::vector<int32_t> g : {std::vector<int32_t>{9, 3}, std::vector<int32_t>{3, 3},
                                   std::vector<int32_t>{-1, 3}, std::vector<int32_t>{3, 16}}) {
      opt = base;
      opt.given = g;
      s = plan_esolm(opt, plan);
      CHECK(s.code == Code::invalid_arg && s.message.find("given") != std::string::npos, "given {%d, %d}",
            g[0], g[1]);
    }
    opt = base;
    opt.block_len = -1;
    CHECK(code(opt) == Code::invalid_arg, "block_len < 0");
    // A failed call leaves the output untouched.
    Plan keep;
    keep.length = 99;
    opt.length = -1;
    plan_esolm(opt, keep);
    CHECK(keep.length == 99, "failed plan_esolm modified its output");
  }
}

static void test_mdlm_plan() {
  MdlmPlan plan;
  CHECK(plan_mdlm(0, plan).code == Code::invalid_arg, "plan_mdlm steps 0");
  CHECK(plan_mdlm(-2, plan).code == Code::invalid_arg, "plan_mdlm steps < 0");
  CHECK(plan_mdlm(4, plan).is_ok(), "plan_mdlm(4)");
  const double t[4] = {1.0, 0.75, 0.5, 0.25}, r[4] = {0.75, 2.0 / 3.0, 0.5, 0.0};
  bool ok = plan.t.size() == 4 && plan.r.size() == 4;
  for (int i = 0; ok && i < 4; ++i) ok = std::fabs(plan.t[i] - t[i]) < 1e-15 && std::fabs(plan.r[i] - r[i]) < 1e-15;
  CHECK(ok, "plan_mdlm(4) timesteps / ratios");
  CHECK(plan_mdlm(1000, plan).is_ok() && plan.r.back() == 0.0 && plan.t.front() == 1.0, "last r exactly 0");
  bool in_range = true;
  for (size_t i = 0; i < plan.r.size(); ++i) in_range = in_range && plan.r[i] >= 0 && plan.r[i] < 1;
  CHECK(in_range, "r outside [0, 1)");
}

// plan_seed: the step sizes follow it and the orders follow seed (the batcher's seed groups).
static void test_plan_seed() {
  EsoPlanOptions a;
  a.length = 64;
  a.batch = 2;
  a.steps = 12;
  a.alpha0 = 0.7;
  a.seed = 3;
  Plan base, same, moved, other;
  CHECK(plan_esolm(a, base).is_ok(), "plan without plan_seed");
  a.plan_seed = 3;
  CHECK(plan_esolm(a, same).is_ok() && same.step_sizes == base.step_sizes && same.order == base.order,
        "plan_seed == seed changes nothing");
  a.seed = 4;  // other orders, same step sizes
  CHECK(plan_esolm(a, moved).is_ok() && moved.step_sizes == base.step_sizes && moved.n_diffusion == base.n_diffusion &&
            moved.order != base.order, "the step sizes follow plan_seed, the orders follow seed");
  a.seed = 3;
  a.plan_seed = 5;  // same seed, other plan seed: other step sizes
  CHECK(plan_esolm(a, other).is_ok() && other.step_sizes != base.step_sizes, "another plan_seed, other step sizes");
}

int main() {
  auto t0 = std::chrono::steady_clock::now();
  test_binomial();
  test_esolm_plans();
  test_block_schedule();
  test_overrides_and_validation();
  test_mdlm_plan();
  test_plan_seed();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("schedule_test: %d passed, %d failed (%.2f s)\n", g_pass, g_fail, s);
  return g_fail == 0 ? 0 : 1;
}
