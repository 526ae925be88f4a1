// philox.h — Philox4x32-10 counter-based RNG (Salmon et al., SC'11), header-only so the
// CPU and CUDA backends produce bit-identical streams (host and device qualifiers).
//
// Draw layout (DESIGN.md): a Gumbel / uniform draw for token id `token` of sequence
// `sequence` at original position `position` in draw round `round` is a pure function of
// (seed, sequence, position, round, token): never of batch layout, step split or backend.
//   key     = (seed low 32, seed high 32)
//   counter = (token >> 1, position, round, sequence)
//   the 4 output words give two float64 uniforms; token & 1 picks which.
// `round` is 0 for every token draw (a position's token is drawn once); MDLM's per-step
// stay-masked decision uses round = step + 1 on token id 0xFFFFFFFF (sampler.h). Plans use
// a separate domain (round 0xFFFFFFFF, schedule.cpp).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ESOLM_HD __host__ __device__ __forceinline__
#else
#define ESOLM_HD inline
#endif

namespace esolm {

struct Philox4 { uint32_t v[4]; };

ESOLM_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

ESOLM_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int i = 0; i < 10; ++i) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(M0, ctr.v[0], hi0, lo0);
    philox_mulhilo(M1, ctr.v[2], hi1, lo1);
    Philox4 n;
    n.v[0] = hi1 ^ ctr.v[1] ^ k0;
    n.v[1] = lo1;
    n.v[2] = hi0 ^ ctr.v[3] ^ k1;
    n.v[3] = lo0;
    ctr = n;
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

// 53-bit uniform in (0, 1): never 0 or 1.
ESOLM_HD double philox_u53(uint32_t hi, uint32_t lo) {
  uint64_t bits = (uint64_t(hi) << 21) ^ (uint64_t(lo) >> 11);  // 53 bits
  bits &= (uint64_t(1) << 53) - 1;
  // Above 2^52 the "+ 0.5" is a rounding tie (to even): bits = 2^53 - 1 would round to
  // 2^53 and return exactly 1.0 (Gumbel noise +inf). Cap it; every other value is unchanged.
  if (bits > (uint64_t(1) << 53) - 2) bits = (uint64_t(1) << 53) - 2;
  return (double(bits) + 0.5) * (1.0 / 9007199254740992.0);
}

ESOLM_HD double draw_uniform(uint64_t seed, uint32_t sequence, uint32_t position, uint32_t round,
                             uint32_t token) {
  Philox4 c{{token >> 1, position, round, sequence}};
  Philox4 r = philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
  return (token & 1u) ? philox_u53(r.v[2], r.v[3]) : philox_u53(r.v[0], r.v[1]);
}

}  // namespace esolm
