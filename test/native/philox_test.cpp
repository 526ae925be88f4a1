// philox_test.cpp — Philox4x32-10 (engine/philox.h): Random123 known-answer vectors, the
// documented draw layout, the (0, 1) range of the float64 uniform including its edge
// words, and moment / histogram sanity over 1e6 draws.
// Plain executable: prints each failed check and exits non-zero if any failed.
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "engine/philox.h"

#include "check.h"

using namespace esolm;


static void kat(Philox4 ctr, uint32_t k0, uint32_t k1, Philox4 want, const char* name) {
  Philox4 got = philox4x32_10(ctr, k0, k1);
  bool ok = true;
  for (int i = 0; i < 4; ++i) ok = ok && got.v[i] == want.v[i];
  CHECK(ok, "%s: got %08x %08x %08x %08x, want %08x %08x %08x %08x", name, got.v[0], got.v[1],
        got.v[2], got.v[3], want.v[0], want.v[1], want.v[2], want.v[3]);
}

int main() {
  // Known-answer vectors (Random123 kat_vectors, philox4x32_10).
  kat({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}, "zeros");
  kat({{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
      {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}, "ones");
  kat({{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
      {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}, "pi");

  // The float64 uniform never reaches 0 or 1, even at the extreme words.
  const double u_lo = philox_u53(0, 0), u_hi = philox_u53(0xffffffffu, 0xffffffffu);
  CHECK(u_lo > 0.0 && u_lo < 1e-15, "u53(0,0) = %.17g", u_lo);
  CHECK(u_hi < 1.0 && u_hi > 1.0 - 1e-15, "u53(max,max) = %.17g", u_hi);
  CHECK(std::isfinite(-std::log(-std::log(u_hi))), "Gumbel noise at the top uniform is finite");
  CHECK(u_lo == 0.5 / 9007199254740992.0, "u53(0,0) = %.17g, want 2^-54", u_lo);

  // Draw layout (philox.h): counter (token >> 1, position, round, sequence), key = seed;
  // even tokens take words 0-1, odd tokens words 2-3.
  {
    const uint64_t seed = 0x0123456789abcdefull;
    bool ok = true;
    for (uint32_t tok = 0; tok < 64; ++tok) {
      Philox4 r = philox4x32_10({{tok >> 1, 17, 3, 5}}, uint32_t(seed), uint32_t(seed >> 32));
      double want = (tok & 1) ? philox_u53(r.v[2], r.v[3]) : philox_u53(r.v[0], r.v[1]);
      ok = ok && draw_uniform(seed, 5, 17, 3, tok) == want;
    }
    CHECK(ok, "draw_uniform does not follow the documented counter layout");
    // Every key component (and the high half of the seed) changes the draw.
    const double base = draw_uniform(seed, 5, 17, 3, 10);
    CHECK(draw_uniform(seed ^ (1ull << 40), 5, 17, 3, 10) != base, "seed high bits ignored");
    CHECK(draw_uniform(seed, 6, 17, 3, 10) != base, "sequence ignored");
    CHECK(draw_uniform(seed, 5, 18, 3, 10) != base, "position ignored");
    CHECK(draw_uniform(seed, 5, 17, 4, 10) != base, "round ignored");
    CHECK(draw_uniform(seed, 5, 17, 3, 11) != base, "token parity ignored");
    CHECK(draw_uniform(seed, 5, 17, 3, 12) != base, "token ignored");
  }

  // 1e6 draws: strictly inside (0, 1), mean 1/2, variance 1/12, flat 64-bin histogram.
  {
    const int n = 1000000, nb = 64;
    double sum = 0, sum2 = 0;
    long hist[nb] = {0};
    int out_of_range = 0;
    for (int i = 0; i < n; ++i) {
      double u = draw_uniform(42, uint32_t(i % 7), uint32_t(i / 7), 0, uint32_t(i % 50258));
      if (!(u > 0.0 && u < 1.0)) ++out_of_range;
      sum += u;
      sum2 += u * u;
      int b = int(u * nb);
      hist[b < nb ? b : nb - 1]++;
    }
    const double mean = sum / n, var = sum2 / n - mean * mean;
    const double se_mean = std::sqrt(1.0 / 12 / n);
    const double se_var = std::sqrt((1.0 / 80 - 1.0 / 144) / n);
    CHECK(out_of_range == 0, "%d uniforms outside (0, 1)", out_of_range);
    CHECK(std::fabs(mean - 0.5) < 5 * se_mean, "mean %.6f", mean);
    CHECK(std::fabs(var - 1.0 / 12) < 5 * se_var, "variance %.6f", var);
    double chi2 = 0, expect = double(n) / nb;
    for (int b = 0; b < nb; ++b) chi2 += (hist[b] - expect) * (hist[b] - expect) / expect;
    // 63 degrees of freedom: the 1e-4 upper quantile is about 117.
    CHECK(chi2 < 117.0, "histogram chi-square %.1f (df 63)", chi2);
    // Lag-1 correlation between neighbouring tokens (they share one Philox block).
    double sxy = 0, sx = 0, sy = 0, sxx = 0, syy = 0;
    const int m = 200000;
    for (int i = 0; i < m; ++i) {
      double a = draw_uniform(9, 0, uint32_t(i), 0, 0), b = draw_uniform(9, 0, uint32_t(i), 0, 1);
      sx += a; sy += b; sxy += a * b; sxx += a * a; syy += b * b;
    }
    double cov = sxy / m - sx / m * sy / m;
    double corr = cov / std::sqrt((sxx / m - sx / m * sx / m) * (syy / m - sy / m * sy / m));
    CHECK(std::fabs(corr) < 5.0 / std::sqrt(double(m)), "pair correlation %.5f", corr);
  }

  std::printf("philox_test: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
