// sampler_test.cpp — engine/sampler: the nucleus kept set against a float64 full-sort
// reference (ties, mask, temperature), greedy, Gumbel-max against hand-computed and
// Philox-reconstructed answers, key purity, and chi-square tests of sample_row and
// sample_row_mdlm against the exact renormalised top-p distribution.
// Plain executable: prints each failed check and exits non-zero if any failed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/philox.h"
#include "engine/sampler.h"

#include "check.h"

using namespace esolm;


static const double kInf = std::numeric_limits<double>::infinity();

// ---- float64 reference: full stable sort + cumsum (utils.top_k_top_p_filtering) -------

struct Reference {
  std::vector<double> x;        // scaled logits (mask: -inf, excluded)
  std::vector<int> sorted;      // non-mask ids, stable sort by x descending
  std::vector<double> before;   // cumulative probability strictly before sorted[i]
  std::vector<double> prob;     // softmax over all non-mask tokens
};

static Reference reference(const std::vector<float>& logits, const SampleParams& p) {
  Reference r;
  const int V = int(logits.size());
  r.x.resize(V);
  double m = -kInf;
  for (int t = 0; t < V; ++t) {
    r.x[t] = double(logits[t]) / p.temperature;
    if (t != p.mask_index) {
      r.sorted.push_back(t);
      m = std::max(m, r.x[t]);
    }
  }
  std::stable_sort(r.sorted.begin(), r.sorted.end(),
                   [&](int a, int b) { return r.x[a] > r.x[b]; });
  r.prob.assign(V, 0.0);
  double z = 0;
  for (int t : r.sorted) z += std::exp(r.x[t] - m);
  for (int t : r.sorted) r.prob[t] = std::exp(r.x[t] - m) / z;
  double cum = 0;
  for (int t : r.sorted) {
    r.before.push_back(cum);
    cum += r.prob[t];
  }
  return r;
}

// Reference kept set with every token tied at the boundary kept (the documented rule).
// A tie group is kept iff the mass strictly before its first member is <= p.
static std::vector<char> reference_kept(const Reference& r, double top_p) {
  std::vector<char> keep(r.x.size(), 0);
  for (size_t i = 0; i < r.sorted.size(); ++i) {
    size_t first = i;
    while (first > 0 && r.x[r.sorted[first - 1]] == r.x[r.sorted[i]]) --first;
    if (top_p >= 1.0 || r.before[first] <= top_p) keep[r.sorted[i]] = 1;
  }
  return keep;
}

struct TopPStats {
  int rows = 0, boundary_ties = 0, ambiguous = 0;
};

// Compare the sampler's kept set with the reference on one row. A group whose mass-before
// is within 1e-12 of p may go either way (summation order differs from the reference).
static bool check_top_p(const std::vector<float>& logits, const SampleParams& p, TopPStats& st,
                        const char* what) {
  std::vector<int32_t> kept;
  const double thr = top_p_threshold(logits.data(), int(logits.size()), p, &kept);
  const Reference r = reference(logits, p);
  const int V = int(logits.size());
  std::vector<char> ours(V, 0);
  bool ok = std::is_sorted(kept.begin(), kept.end()) &&
            std::adjacent_find(kept.begin(), kept.end()) == kept.end();
  for (int32_t t : kept) {
    if (t < 0 || t >= V || t == p.mask_index) ok = false;
    else ours[t] = 1;
  }
  if (!ok) {
    CHECK(false, "%s: kept list not ascending/unique or contains the mask", what);
    return false;
  }
  // The threshold describes the same set.
  for (int t = 0; t < V; ++t) {
    if (t == p.mask_index) continue;
    if ((r.x[t] >= thr) != bool(ours[t])) {
      CHECK(false, "%s: threshold %.17g disagrees with the kept list at token %d", what, thr, t);
      return false;
    }
  }
  ++st.rows;
  bool tie_at_boundary = false;
  for (size_t i = 0; i < r.sorted.size();) {
    size_t j = i;
    while (j < r.sorted.size() && r.x[r.sorted[j]] == r.x[r.sorted[i]]) ++j;
    const double before = r.before[i];
    const bool ambiguous = p.top_p < 1.0 && std::fabs(before - p.top_p) <= 1e-12;
    const bool want = p.top_p >= 1.0 || before <= p.top_p;
    // Tied group straddling p: the strict reference keeps only part of it.
    if (want && j - i > 1 && p.top_p < 1.0 && r.before[j - 1] > p.top_p) tie_at_boundary = true;
    for (size_t k = i; k < j; ++k) {
      const int t = r.sorted[k];
      if (bool(ours[t]) != bool(ours[r.sorted[i]])) {
        CHECK(false, "%s: tie group split at token %d", what, t);
        return false;
      }
      if (!ambiguous && bool(ours[t]) != want) {
        CHECK(false, "%s: token %d (x=%.9g, mass before %.17g, p=%g) kept=%d, reference %d", what,
              t, r.x[t], before, p.top_p, int(ours[t]), int(want));
        return false;
      }
      // The strict reference (no tie rule) is always a subset of ours.
      if (r.before[k] <= p.top_p && !ours[t] && !ambiguous) {
        CHECK(false, "%s: strict-reference token %d dropped", what, t);
        return false;
      }
    }
    if (ambiguous) ++st.ambiguous;
    i = j;
  }
  if (tie_at_boundary) ++st.boundary_ties;
  ++g_pass;
  return true;
}

// ---- row generators -------------------------------------------------------------------

enum class Dist { normal1, normal5, peaky, quantised, bf16 };
static const char* dist_name(Dist d) {
  switch (d) {
    case Dist::normal1: return "normal(1)";
    case Dist::normal5: return "normal(5)";
    case Dist::peaky: return "peaky";
    case Dist::quantised: return "quantised";
    case Dist::bf16: return "bf16";
  }
  return "?";
}

static float to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b = (b + 0x7FFFu + ((b >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&f, &b, 4);
  return f;
}

static std::vector<float> make_row(Dist d, int V, std::mt19937_64& rng) {
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<float> row(V);
  for (int t = 0; t < V; ++t) {
    double z = n01(rng);
    switch (d) {
      case Dist::normal1: row[t] = float(z); break;
      case Dist::normal5: row[t] = float(5 * z); break;
      case Dist::peaky: row[t] = float(z); break;
      case Dist::quantised: row[t] = float(std::round(z * 1.5) / 1.5); break;  // ~7 values
      case Dist::bf16: row[t] = to_bf16(float(3 * z)); break;
    }
  }
  if (d == Dist::peaky) {
    std::uniform_int_distribution<int> pick(0, V - 1);
    int k = 1 + int(rng() % 3);
    for (int i = 0; i < k; ++i) row[pick(rng)] += float(6 + 3 * i);
  }
  return row;
}

// ---- chi-square helpers ---------------------------------------------------------------

// Upper 1e-4 quantile of chi-square with k degrees of freedom (Wilson–Hilferty).
static double chi2_quantile_1e4(int k) {
  const double z = 3.719016485;  // standard normal upper 1e-4 quantile
  const double a = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - a + z * std::sqrt(a), 3);
}

// Chi-square of counts against probabilities, bins expecting < 5 merged into one.
static bool chi_square_ok(const std::vector<long>& counts, const std::vector<double>& prob,
                          long n, const char* what) {
  double chi2 = 0, small_e = 0, small_o = 0;
  int bins = 0;
  for (size_t i = 0; i < prob.size(); ++i) {
    const double e = prob[i] * n;
    if (e < 5) {
      small_e += e;
      small_o += counts[i];
      continue;
    }
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
    ++bins;
  }
  if (small_e > 0) {
    chi2 += (small_o - small_e) * (small_o - small_e) / std::max(small_e, 1e-300);
    ++bins;
  }
  const int df = std::max(1, bins - 1);
  const double q = chi2_quantile_1e4(df);
  std::printf("  %-44s chi2 = %8.2f  df = %3d  (limit %.1f)\n", what, chi2, df, q);
  CHECK(chi2 < q, "%s: chi-square %.2f over limit %.2f (df %d)", what, chi2, q, df);
  return chi2 < q;
}

// ---- tests ----------------------------------------------------------------------------

static void test_top_p_against_reference() {
  std::mt19937_64 rng(20240611);
  TopPStats st;
  const int vocabs[] = {7, 111, 50258};
  const double ps[] = {0.1, 0.5, 0.9, 0.999, 1.0};
  const Dist dists[] = {Dist::normal1, Dist::normal5, Dist::peaky, Dist::quantised, Dist::bf16};
  const double temps[] = {1.0, 0.5, 2.0};
  for (int V : vocabs) {
    const int reps = V > 1000 ? 1 : 12;
    for (Dist d : dists)
      for (double tp : ps)
        for (double temp : temps)
          for (int rep = 0; rep < reps; ++rep) {
            std::vector<float> row = make_row(d, V, rng);
            SampleParams p;
            p.top_p = tp;
            p.temperature = temp;
            // Mask: often present and given the largest logit, so excluding it matters.
            p.mask_index = (rep % 3 == 2) ? -1 : int(rng() % V);
            if (p.mask_index >= 0 && rep % 2 == 0) row[p.mask_index] = 1e6f;
            char what[160];
            std::snprintf(what, sizeof what, "top-p V=%d %s p=%g T=%g rep %d", V, dist_name(d),
                          tp, temp, rep);
            check_top_p(row, p, st, what);
          }
  }
  std::printf("  top-p reference: %d rows, %d with a tie group at the boundary, %d ambiguous groups\n",
              st.rows, st.boundary_ties, st.ambiguous);
  CHECK(st.boundary_ties >= 20, "too few rows exercise the boundary tie rule (%d)", st.boundary_ties);

  // Hand-made rows.
  {  // Exact boundary tie: probabilities (0.4, 0.2, 0.2, 0.2); p = 0.5: the strict
     // reference keeps the top and one of the 0.2s; we keep all three tied tokens.
    std::vector<float> row = {float(std::log(0.2)), float(std::log(0.4)), float(std::log(0.2)),
                              float(std::log(0.2))};
    SampleParams p;
    p.top_p = 0.5;
    std::vector<int32_t> kept;
    top_p_threshold(row.data(), 4, p, &kept);
    CHECK(kept == std::vector<int32_t>({0, 1, 2, 3}), "tie rule: kept %zu tokens", kept.size());
    p.top_p = 0.3;  // only the top token's mass comes before the tied group -> 0.4 > 0.3
    top_p_threshold(row.data(), 4, p, &kept);
    CHECK(kept == std::vector<int32_t>({1}), "p below the top mass keeps only the top token");
  }
  {  // The token that crosses p is kept: masses 0.5, 0.3, 0.2, p = 0.6 keeps {0, 1}.
    std::vector<float> row = {float(std::log(0.5)), float(std::log(0.3)), float(std::log(0.2))};
    SampleParams p;
    p.top_p = 0.6;
    std::vector<int32_t> kept;
    top_p_threshold(row.data(), 3, p, &kept);
    CHECK(kept == std::vector<int32_t>({0, 1}), "crossing token kept (%zu tokens)", kept.size());
  }
  {  // Mask never kept even when it is the only finite-mass token besides -inf ones.
    std::vector<float> row = {0.f, 5.f, -std::numeric_limits<float>::infinity()};
    SampleParams p;
    p.mask_index = 1;
    p.top_p = 1.0;
    std::vector<int32_t> kept;
    top_p_threshold(row.data(), 3, p, &kept);
    CHECK(kept == std::vector<int32_t>({0, 2}), "top_p = 1 keeps every non-mask token");
    p.top_p = 0.9;
    top_p_threshold(row.data(), 3, p, &kept);
    CHECK(kept == std::vector<int32_t>({0}), "mask excluded from the nucleus");
  }
}

// Rows that stress the histogram's last bin (boundary more than 32 nats below the max),
// non-finite logits, and degenerate vocabularies.
static void test_edge_cases() {
  TopPStats st;
  {  // Boundary inside the catch-all last bin: 1000 tokens 33..40 nats below the top.
    std::vector<float> row(1001, 0.f);
    for (int i = 1; i <= 1000; ++i) row[i] = -33.f - 7.f * float(i % 97) / 97.f;
    for (double tp : {1.0 - 1e-13, 1.0 - 2e-12, 0.999}) {
      SampleParams p;
      p.top_p = tp;
      char what[64];
      std::snprintf(what, sizeof what, "far tail p=1-%.1e", 1.0 - tp);
      check_top_p(row, p, st, what);
    }
    SampleParams p;
    p.top_p = 1.0 - 1e-13;
    std::vector<int32_t> kept;
    top_p_threshold(row.data(), 1001, p, &kept);
    CHECK(kept.size() > 1, "far tail: tokens beyond 32 nats should be kept at p = 1 - 1e-13");
  }
  DrawKey key;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  {  // +inf logits take all the mass; both +inf tokens get drawn.
    std::vector<float> row = {0.f, 3.f, nan, inf, 1.f, inf};
    SampleParams p;
    p.top_p = 0.9;
    int c3 = 0, c5 = 0, other = 0;
    for (uint32_t i = 0; i < 2000; ++i) {
      int t = sample_row(row.data(), 6, p, DrawKey{0, i, 0});
      (t == 3 ? c3 : t == 5 ? c5 : other)++;
    }
    CHECK(other == 0 && c3 > 800 && c5 > 800, "+inf tokens: %d / %d / other %d", c3, c5, other);
  }
  {  // NaN logits are never drawn; an all -inf row is uniform over non-mask tokens.
    std::vector<float> row = {nan, 0.f, nan, -1.f};
    SampleParams p;
    bool ok = true;
    for (uint32_t i = 0; i < 500; ++i) {
      int t = sample_row(row.data(), 4, p, DrawKey{1, i, 0});
      ok = ok && (t == 1 || t == 3);
    }
    CHECK(ok, "NaN logit drawn");
    std::vector<float> ninf(5, -inf);
    p.mask_index = 2;
    std::vector<int> counts(5, 0);
    for (uint32_t i = 0; i < 4000; ++i) counts[sample_row(ninf.data(), 5, p, DrawKey{2, i, 0})]++;
    CHECK(counts[2] == 0 && counts[0] > 850 && counts[1] > 850 && counts[3] > 850 && counts[4] > 850,
          "all -inf row: counts %d %d %d %d %d", counts[0], counts[1], counts[2], counts[3], counts[4]);
  }
  {  // No candidate at all: vocab 0, or only the mask token.
    float one = 1.f;
    SampleParams p;
    CHECK(sample_row(&one, 0, p, key) == -1, "vocab 0 -> -1");
    p.mask_index = 0;
    CHECK(sample_row(&one, 1, p, key) == -1, "only the mask -> -1");
    CHECK(sample_row_mdlm(&one, 1, p, 0.5, key) == 0, "mdlm, only the mask -> stays masked");
    std::vector<int32_t> kept = {7};
    top_p_threshold(&one, 1, p, &kept);
    CHECK(kept.empty(), "only the mask: empty kept set");
  }
  {  // Huge gaps (> the Gumbel bound): the top token always wins, far tokens never.
    std::vector<float> row = {-100.f, 0.f, -40.f};
    SampleParams p;
    bool ok = true;
    for (uint32_t i = 0; i < 1000; ++i) ok = ok && sample_row(row.data(), 3, p, DrawKey{0, i, 0}) == 1;
    CHECK(ok, "a token 40 nats below the top was drawn");
  }
}

static void test_greedy() {
  SampleParams p;
  p.greedy = true;
  p.mask_index = 2;
  std::vector<float> row = {1.f, 3.f, 9.f, 3.f, 0.5f};
  DrawKey key;
  CHECK(sample_row(row.data(), 5, p, key) == 1, "greedy: lowest id among tied maxima, mask skipped");
  p.top_p = 0.01;
  p.temperature = 0.3;
  CHECK(sample_row(row.data(), 5, p, key) == 1, "greedy ignores top-p and temperature");
  row[0] = std::numeric_limits<float>::quiet_NaN();
  CHECK(sample_row(row.data(), 5, p, key) == 1, "greedy: NaN never wins");
  std::mt19937_64 rng(7);
  bool ok = true;
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<float> r = make_row(Dist::normal1, 50258, rng);
    int want = int(std::max_element(r.begin(), r.end()) - r.begin());
    SampleParams g;
    g.greedy = true;
    ok = ok && sample_row(r.data(), 50258, g, key) == want;
  }
  CHECK(ok, "greedy equals argmax on random rows");
}

static void test_with_uniforms() {
  // Hand computation: logits (1, 2, 0.5, 1.5), u = (0.9, 0.1, 0.5, 0.6).
  // g = -log(-log u) = (2.2504, -0.8340, 0.3665, 0.6717);
  // scores: (3.2504, 1.1660, 0.8665, 2.1717) -> token 0 when nothing is filtered.
  // Masses (0.167, 0.455, 0.102, 0.276): p = 0.5 keeps {1, 3} -> token 3.
  const std::vector<float> row = {1.f, 2.f, 0.5f, 1.5f};
  const double u[4] = {0.9, 0.1, 0.5, 0.6};
  SampleParams p;
  CHECK(sample_row_with_uniforms(row.data(), 4, p, u) == 0, "hand-computed Gumbel argmax (p=1)");
  p.top_p = 0.5;
  CHECK(sample_row_with_uniforms(row.data(), 4, p, u) == 3, "hand-computed Gumbel argmax (p=0.5)");
  p.top_p = 1.0;
  p.temperature = 0.25;  // scaled logits (4, 8, 2, 6): scores (6.25, 7.17, 2.37, 6.67) -> 1
  CHECK(sample_row_with_uniforms(row.data(), 4, p, u) == 1, "hand-computed Gumbel argmax (T=0.25)");
  p.temperature = 1.0;
  p.mask_index = 0;  // mask excluded: scores (1.17, 0.87, 2.17) -> 3
  CHECK(sample_row_with_uniforms(row.data(), 4, p, u) == 3, "hand-computed Gumbel argmax (mask 0)");
}

// sample_row == sample_row_with_uniforms fed the Philox uniforms (checks the pair cache and
// the exact pruning), plus key purity: the draw depends only on (seed, sequence, position,
// round, token) and the row.
static void test_philox_equivalence_and_purity() {
  std::mt19937_64 rng(99);
  const int V = 50258;
  std::vector<double> u(V);
  int mismatches = 0, cases = 0;
  for (int rep = 0; rep < 40; ++rep) {
    Dist d = Dist(rep % 5);
    std::vector<float> row = make_row(d, V, rng);
    SampleParams p;
    p.seed = rng();
    p.top_p = (rep % 4 == 0) ? 1.0 : (rep % 4 == 1 ? 0.9 : (rep % 4 == 2 ? 0.5 : 0.999));
    p.temperature = (rep % 3 == 0) ? 1.0 : (rep % 3 == 1 ? 0.7 : 1.6);
    p.mask_index = V - 1;
    DrawKey key{uint32_t(rng() % 512), uint32_t(rng() % 1024), uint32_t(rng() % 4)};
    for (int t = 0; t < V; ++t) u[t] = draw_uniform(p.seed, key.sequence, key.position, key.round, t);
    int a = sample_row(row.data(), V, p, key);
    int b = sample_row_with_uniforms(row.data(), V, p, u.data());
    ++cases;
    if (a != b) ++mismatches;
  }
  CHECK(mismatches == 0, "sample_row differs from sample_row_with_uniforms(Philox) in %d of %d rows",
        mismatches, cases);

  // Purity: the same (row, key) gives the same token whatever ran before and on any thread.
  std::vector<float> row = make_row(Dist::normal1, 5000, rng);
  std::vector<float> other = make_row(Dist::normal5, 50258, rng);
  SampleParams p;
  p.seed = 1234;
  p.top_p = 0.9;
  std::vector<int> first(64), second(64), third(64);
  for (int i = 0; i < 64; ++i) first[i] = sample_row(row.data(), 5000, p, DrawKey{3, uint32_t(i), 0});
  for (int i = 63; i >= 0; --i) {
    sample_row(other.data(), 50258, p, DrawKey{9, 9, 9});  // dirty the scratch
    second[i] = sample_row(row.data(), 5000, p, DrawKey{3, uint32_t(i), 0});
  }
  std::thread th([&] {
    for (int i = 0; i < 64; ++i) third[i] = sample_row(row.data(), 5000, p, DrawKey{3, uint32_t(i), 0});
  });
  th.join();
  CHECK(first == second && first == third, "draw depends on call order or thread");
  // Each key component matters (different draws for most keys).
  int diff_seq = 0, diff_round = 0, diff_seed = 0;
  SampleParams q = p;
  q.seed = 1235;
  for (int i = 0; i < 64; ++i) {
    diff_seq += sample_row(row.data(), 5000, p, DrawKey{4, uint32_t(i), 0}) != first[i];
    diff_round += sample_row(row.data(), 5000, p, DrawKey{3, uint32_t(i), 1}) != first[i];
    diff_seed += sample_row(row.data(), 5000, q, DrawKey{3, uint32_t(i), 0}) != first[i];
  }
  CHECK(diff_seq > 40 && diff_round > 40 && diff_seed > 40,
        "key components ignored? differing draws: sequence %d, round %d, seed %d (of 64)",
        diff_seq, diff_round, diff_seed);
}

// Exact renormalised top-p distribution of a row (reference semantics, ties kept).
static std::vector<double> kept_distribution(const std::vector<float>& row, const SampleParams& p,
                                             std::vector<char>& keep) {
  Reference r = reference(row, p);
  keep = reference_kept(r, p.top_p);
  std::vector<double> q(row.size(), 0.0);
  double s = 0;
  for (size_t t = 0; t < row.size(); ++t)
    if (keep[t]) s += r.prob[t];
  for (size_t t = 0; t < row.size(); ++t)
    if (keep[t]) q[t] = r.prob[t] / s;
  return q;
}

static void test_sample_row_statistics() {
  std::mt19937_64 rng(31337);
  const int V = 50;
  std::vector<float> row = make_row(Dist::normal1, V, rng);
  for (auto& v : row) v *= 1.5f;
  const int mask = 17;
  row[mask] = 8.f;  // the mask has the largest logit and must still never be drawn
  struct Case {
    double top_p, temperature;
    int vary;  // 0: position, 1: sequence, 2: round
  } cases[] = {{0.9, 1.0, 0}, {0.9, 0.7, 1}, {0.5, 1.3, 2}, {1.0, 1.0, 0}};
  const long n = 100000;
  for (const Case& c : cases) {
    SampleParams p;
    p.top_p = c.top_p;
    p.temperature = c.temperature;
    p.mask_index = mask;
    p.seed = 0x5eed0000ull + uint64_t(c.vary);
    std::vector<char> keep;
    std::vector<double> q = kept_distribution(row, p, keep);
    std::vector<long> counts(V, 0);
    long outside = 0;
    for (long i = 0; i < n; ++i) {
      DrawKey key;
      if (c.vary == 0) key = DrawKey{0, uint32_t(i), 0};
      if (c.vary == 1) key = DrawKey{uint32_t(i), 5, 0};
      if (c.vary == 2) key = DrawKey{2, 7, uint32_t(i)};
      int t = sample_row(row.data(), V, p, key);
      if (t < 0 || t >= V || !keep[t]) {
        ++outside;
        continue;
      }
      counts[t]++;
    }
    int nkeep = 0;
    for (char k : keep) nkeep += k;
    char what[128];
    std::snprintf(what, sizeof what, "sample_row V=50 p=%g T=%g (%d kept)", c.top_p, c.temperature, nkeep);
    CHECK(outside == 0, "%s: %ld draws outside the kept set or the mask", what, outside);
    chi_square_ok(counts, q, n - outside, what);
  }
}

static void test_mdlm() {
  std::mt19937_64 rng(4242);
  const int V = 50;
  std::vector<float> row = make_row(Dist::normal1, V, rng);
  for (auto& v : row) v *= 1.5f;
  const int mask = V - 1;
  row[mask] = 3.f;
  const long n = 100000;
  for (double top_p : {0.9, 1.0}) {
    SampleParams p;
    p.top_p = top_p;
    p.mask_index = mask;
    p.seed = 77;
    const double r = 0.3;
    std::vector<char> keep;
    std::vector<double> q = kept_distribution(row, p, keep);
    std::vector<double> want(V + 1, 0.0);  // bin V: stayed masked
    for (int t = 0; t < V; ++t) want[t] = q[t] * (1 - r);
    want[V] = r;
    std::vector<long> counts(V + 1, 0);
    long bad = 0;
    for (long i = 0; i < n; ++i) {
      int t = sample_row_mdlm(row.data(), V, p, r, DrawKey{1, uint32_t(i), 3});
      if (t == mask) counts[V]++;
      else if (t >= 0 && t < V && keep[t]) counts[t]++;
      else ++bad;
    }
    const double frac = double(counts[V]) / n, se = std::sqrt(r * (1 - r) / n);
    CHECK(bad == 0, "mdlm: %ld draws outside kept set", bad);
    CHECK(std::fabs(frac - r) < 4.5 * se, "mdlm: P(stay masked) = %.4f, want %.2f", frac, r);
    char what[96];
    std::snprintf(what, sizeof what, "sample_row_mdlm V=50 p=%g r=0.3", top_p);
    chi_square_ok(counts, want, n, what);
  }
  // r = 0 always reveals; r = 1 always stays; the draw reuses sample_row's noise, so with
  // tiny r the revealed token matches sample_row almost always.
  SampleParams p;
  p.top_p = 0.9;
  p.mask_index = mask;
  p.seed = 5;
  long masked = 0, same = 0;
  for (long i = 0; i < 20000; ++i) {
    DrawKey key{0, uint32_t(i), 0};
    int t = sample_row_mdlm(row.data(), V, p, 0.0, key);
    masked += (t == mask);
    same += (t == sample_row(row.data(), V, p, key));
  }
  CHECK(masked == 0, "mdlm r=0 returned the mask %ld times", masked);
  CHECK(same == 20000, "mdlm r=0 should equal sample_row (same noise, same kept set): %ld/20000", same);
  CHECK(sample_row_mdlm(row.data(), V, p, 1.0, DrawKey{}) == mask, "mdlm r=1 stays masked");
  // Greedy MDLM: noise-free argmax of log q.
  SampleParams g = p;
  g.greedy = true;
  int top = 0;
  for (int t = 1; t < V; ++t)
    if (t != mask && row[t] > row[top]) top = t;
  CHECK(sample_row_mdlm(row.data(), V, g, 0.0, DrawKey{}) == top, "greedy mdlm r=0 -> argmax");
  CHECK(sample_row_mdlm(row.data(), V, g, 1.0, DrawKey{}) == mask, "greedy mdlm r=1 -> mask");
  // Greedy changes the token only: the stay-masked decision is the same draw as sampling.
  long agree = 0;
  for (long i = 0; i < 2000; ++i) {
    const DrawKey k{0, uint32_t(i), 7};
    const bool stays_g = sample_row_mdlm(row.data(), V, g, 0.4, k) == mask;
    const bool stays_s = sample_row_mdlm(row.data(), V, p, 0.4, k) == mask;
    agree += stays_g == stays_s && stays_g == mdlm_stays_masked(p.seed, k, 0.4);
  }
  CHECK(agree == 2000, "greedy and sampled mdlm share the stay decision: %ld/2000", agree);
}

static const char* passes_name(SamplerPasses w) {
  return w == SamplerPasses::avx512 ? "AVX-512" : w == SamplerPasses::avx2 ? "AVX2" : "SSE2/scalar";
}

// The vector pass sets this CPU runs besides SSE2 / scalar (AVX-512, AVX2), each taken by
// limiting the sampler to it; the others are named as not run.
static std::vector<SamplerPasses> wide_passes() {
  std::vector<SamplerPasses> out;
  for (SamplerPasses w : {SamplerPasses::avx512, SamplerPasses::avx2}) {
    sampler_limit_passes(w);
    if (sampler_widest_passes() == w) out.push_back(w);
    else std::printf("  (no %s on this CPU: its sampler passes are not run)\n", passes_name(w));
  }
  sampler_limit_passes(SamplerPasses::avx512);
  return out;
}

// The AVX-512 and AVX2 row passes (where this CPU has them) against the SSE2 / scalar ones:
// the same exp bits over the whole d <= 0 range and its edges, and the same threshold, kept
// set and token on rows of every shape (odd lengths, masks, temperatures, NaN, +-inf, +-0).
static void test_vector_passes_match() {
  std::mt19937_64 rng(11);
  std::vector<double> d;
  std::uniform_real_distribution<double> wide(-800.0, 0.0), narrow(-1.0, 0.0);
  for (int i = 0; i < 20000; ++i) d.push_back(i % 2 ? wide(rng) : narrow(rng));
  for (double v : {0.0, -0.0, -1e-300, -4.9e-324, -0.34657359027997264, -0.6931471805599453, -707.9999999999999,
                   -708.0, -708.0000000000001, -745.2, -1e308, -kInf, std::nextafter(0.0, -1.0)})
    d.push_back(v);
  std::vector<double> e_wide(d.size()), e_narrow(d.size());
  sampler_limit_passes(SamplerPasses::sse2);
  sampler_exp_for_test(d.data(), e_narrow.data(), int(d.size()));
  CHECK(e_narrow[20000] == 1.0 && e_narrow[20011] == 0.0, "exp(0) = %g, exp(-inf) = %g", e_narrow[20000], e_narrow[20011]);
  const std::vector<SamplerPasses> sets = wide_passes();
  for (SamplerPasses w : sets) {
    sampler_limit_passes(w);
    sampler_exp_for_test(d.data(), e_wide.data(), int(d.size()));
    int exp_mismatch = 0;
    for (size_t i = 0; i < d.size(); ++i)
      exp_mismatch += std::memcmp(&e_wide[i], &e_narrow[i], sizeof(double)) != 0;
    CHECK(exp_mismatch == 0, "%s exp differs from SSE2/scalar exp on %d of %zu inputs", passes_name(w), exp_mismatch,
          d.size());
  }

  int row_mismatch = 0, rows = 0;
  const float finf = std::numeric_limits<float>::infinity();
  for (int V : {1, 7, 8, 15, 16, 17, 31, 257, 1001, 50258}) {
    for (Dist dist : {Dist::normal1, Dist::normal5, Dist::peaky, Dist::bf16}) {
      std::vector<float> row = make_row(dist, V, rng);
      if (V > 20 && dist == Dist::bf16) {  // NaN, -inf and signed zeros inside the bulk
        row[3] = std::numeric_limits<float>::quiet_NaN();
        row[5] = -finf;
        row[9] = 0.0f;
        row[10] = -0.0f;
      }
      for (double temp : {1.0, 0.7}) {
        for (int mask : {-1, V - 1, V / 2}) {
          SampleParams p;
          p.top_p = 0.9;
          p.temperature = temp;
          p.mask_index = mask;
          p.seed = 5;
          std::vector<int32_t> kept_wide, kept_narrow;
          sampler_limit_passes(SamplerPasses::sse2);
          const double thr_narrow = top_p_threshold(row.data(), V, p, &kept_narrow);
          const int32_t tok_narrow = sample_row(row.data(), V, p, DrawKey{1, uint32_t(V), 0});
          for (SamplerPasses w : sets) {
            sampler_limit_passes(w);
            const double thr_wide = top_p_threshold(row.data(), V, p, &kept_wide);
            const int32_t tok_wide = sample_row(row.data(), V, p, DrawKey{1, uint32_t(V), 0});
            ++rows;
            const bool same = std::memcmp(&thr_wide, &thr_narrow, sizeof(double)) == 0 && kept_wide == kept_narrow &&
                              tok_wide == tok_narrow;
            if (!same && row_mismatch++ < 3)
              std::printf("  %s row passes differ: V=%d %s temp=%g mask=%d (thr %.17g vs %.17g, kept %zu vs %zu, token %d vs %d)\n",
                          passes_name(w), V, dist_name(dist), temp, mask, thr_wide, thr_narrow, kept_wide.size(),
                          kept_narrow.size(), tok_wide, tok_narrow);
          }
        }
      }
    }
  }
  sampler_limit_passes(SamplerPasses::avx512);
  CHECK(row_mismatch == 0, "vector row passes differ from SSE2/scalar on %d of %d row comparisons", row_mismatch, rows);
}

// The vector Gumbel passes: Philox words of 16 tokens at once (AVX-512: any ids; AVX2: the
// dense pass's blocks of 16 consecutive tokens), and a whole block of tokens tested for
// pruning against the best it started with, must draw exactly what the scalar pass draws,
// and pick the same token.
static void test_vector_gumbel_passes_match() {
  std::mt19937_64 rng(23);
  std::vector<int32_t> ids;
  for (int32_t t : {0, 1, 2, 3, 15, 16, 17, 50257, 0x7FFFFFFE, 0x7FFFFFFF}) ids.push_back(t);
  while (ids.size() < 1000) ids.push_back(int32_t(rng() & 0x7FFFFFFF));
  const std::vector<SamplerPasses> sets = wide_passes();
  for (SamplerPasses w : sets) {
    sampler_limit_passes(w);
    int word_mismatch = 0, draws = 0;
    std::vector<double> u(ids.size());
    for (int rep = 0; rep < 40; ++rep) {
      const uint64_t seed = rep == 0 ? 0 : rep == 1 ? ~uint64_t(0) : rng();
      const DrawKey key{uint32_t(rng()), uint32_t(rng()), uint32_t(rep % 3 == 0 ? 0 : rng())};
      CHECK(sampler_uniforms_for_test(seed, key, ids.data(), int(ids.size()), u.data()), "%s uniforms not drawn",
            passes_name(w));
      for (size_t i = 0; i < ids.size(); ++i, ++draws) {
        const double want = draw_uniform(seed, key.sequence, key.position, key.round, uint32_t(ids[i]));
        word_mismatch += std::memcmp(&want, &u[i], sizeof(double)) != 0;
      }
    }
    CHECK(word_mismatch == 0, "%s Philox uniforms differ from draw_uniform on %d of %d draws", passes_name(w),
          word_mismatch, draws);
  }
  sampler_limit_passes(SamplerPasses::avx512);

  // Tokens: flat rows (most of the vocabulary kept: the block test matters most), peaky
  // rows, rows of exact ties (the lowest id must win), degenerate rows, top_p = 1 (no list).
  const float finf = std::numeric_limits<float>::infinity();
  int token_mismatch = 0, rows = 0;
  for (int V : {5, 16, 33, 1000, 50258}) {
    for (int kind = 0; kind < 6; ++kind) {
      std::vector<float> row;
      if (kind < 4) row = make_row(kind == 0 ? Dist::normal1 : kind == 1 ? Dist::peaky : kind == 2 ? Dist::bf16 : Dist::quantised, V, rng);
      if (kind == 2 && V > 20) {  // NaN and -inf logits (x = -inf: kept at top_p = 1, never winning)
        row[3] = std::numeric_limits<float>::quiet_NaN();
        row[5] = -finf;
        row[V - 3] = -finf;
      }
      if (kind == 4) row.assign(size_t(V), 0.25f);  // every token tied
      if (kind == 5) {                              // two +inf tokens take all the mass
        row.assign(size_t(V), -finf);
        row[size_t(V) / 3] = finf;
        row[size_t(V) - 2] = finf;
      }
      for (double top_p : {0.9, 1.0, 0.3}) {
        for (int mask : {-1, V - 1, V / 2}) {
          SampleParams p;
          p.top_p = top_p;
          p.temperature = kind == 0 && top_p == 0.3 ? 1.7 : 1.0;
          p.mask_index = mask;
          for (int k = 0; k < (V > 1000 ? 12 : 40); ++k) {
            p.seed = rng();
            const DrawKey key{uint32_t(k), uint32_t(rng() % 4096), 0};
            sampler_limit_passes(SamplerPasses::sse2);
            const int32_t narrow = sample_row(row.data(), V, p, key);
            for (SamplerPasses w : sets) {
              sampler_limit_passes(w);
              const int32_t wide = sample_row(row.data(), V, p, key);
              ++rows;
              if (wide != narrow && token_mismatch++ < 3)
                std::printf("  %s Gumbel pass differs: V=%d kind %d top_p=%g mask=%d key %d: token %d vs %d\n",
                            passes_name(w), V, kind, top_p, mask, k, wide, narrow);
            }
          }
        }
      }
    }
  }
  sampler_limit_passes(SamplerPasses::avx512);
  CHECK(token_mismatch == 0, "vector Gumbel passes pick another token than the scalar pass on %d of %d rows",
        token_mismatch, rows);
}

static void timing() {
  std::mt19937_64 rng(1);
  const int V = 50258, rows = 300;
  std::vector<std::vector<float>> data;
  for (int i = 0; i < 8; ++i) {
    std::vector<float> r = make_row(Dist::normal1, V, rng);
    for (auto& v : r) v = to_bf16(v * 3.f);  // LM-like spread, bf16 ties
    data.push_back(r);
  }
  // Logits of std 1, as the bench's random model gives: top-p 0.9 keeps ~60% of the
  // vocabulary (the dense Gumbel pass).
  std::vector<std::vector<float>> flat;
  for (int i = 0; i < 8; ++i) flat.push_back(make_row(Dist::normal1, V, rng));
  for (SamplerPasses w : {SamplerPasses::avx512, SamplerPasses::avx2, SamplerPasses::sse2}) {
    sampler_limit_passes(w);
    if (sampler_widest_passes() != w) continue;
    for (int spread = 0; spread < 2; ++spread) {
      for (double top_p : {0.9, 1.0}) {
        SampleParams p;
        p.top_p = top_p;
        p.mask_index = V - 1;
        const auto& rows_of = spread ? flat : data;
        auto t0 = std::chrono::steady_clock::now();
        long sink = 0;
        for (int i = 0; i < rows; ++i) sink += sample_row(rows_of[i % 8].data(), V, p, DrawKey{0, uint32_t(i), 0});
        auto t1 = std::chrono::steady_clock::now();
        double us = std::chrono::duration<double, std::micro>(t1 - t0).count() / rows;
        std::printf("  timing (%s passes): sample_row V=%d %s top_p=%g: %.1f us/row (sink %ld)\n", passes_name(w), V,
                    spread ? "std-1 logits" : "LM-like logits", top_p, us, sink);
      }
    }
  }
  sampler_limit_passes(SamplerPasses::avx512);
  // The full-sort reference, for scale.
  SampleParams p;
  p.top_p = 0.9;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) reference(data[i % 8], p);
  auto t1 = std::chrono::steady_clock::now();
  std::printf("  timing: full-sort reference: %.1f us/row\n",
              std::chrono::duration<double, std::micro>(t1 - t0).count() / 20);
}

int main() {
  auto t0 = std::chrono::steady_clock::now();
  test_top_p_against_reference();
  test_edge_cases();
  test_greedy();
  test_with_uniforms();
  test_philox_equivalence_and_purity();
  test_sample_row_statistics();
  test_mdlm();
  test_vector_passes_match();
  test_vector_gumbel_passes_match();
  timing();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("sampler_test: %d passed, %d failed (%.2f s)\n", g_pass, g_fail, s);
  return g_fail == 0 ? 0 : 1;
}
