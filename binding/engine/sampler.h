// sampler.h — per-row token choice from logits, shared by every generation loop.
//
// Semantics (MODEL-REFERENCE.md §2.7): the mask token is never sampled; logits are
// divided by the temperature; nucleus top-p in float64 exactly as the official
// `top_k_top_p_filtering` (keep token i iff the probability mass ranked strictly before
// it is <= p, so the top token and the token that crosses p are kept; all tokens tied
// with the boundary logit are kept); the pick is Gumbel-max over the kept set with
// Philox noise (philox.h). Greedy = argmax (lowest id on ties). No full sort: the
// threshold is found by selection.
#pragma once
#include <cstdint>
#include <vector>

namespace esolm {

// Edge cases (sampler.cpp): NaN logits never win; +inf logits take all the mass (uniform
// among them); an all -inf row is uniform over the non-mask tokens. -1 is returned when no
// token can be chosen (vocab <= 0, or the mask is the only token). temperature <= 0 or
// non-finite means greedy. top_p >= 1 or NaN: no filtering; top_p <= 0 keeps only the
// tokens tied at the max. MDLM: greedy = noise-free argmax of log q; r >= 1 returns the
// mask; a mask_index outside [0, vocab) removes the "stay masked" option.
struct SampleParams {
  double top_p = 1.0;        // (0, 1]; 1 keeps everything
  double temperature = 1.0;  // > 0
  bool greedy = false;
  int mask_index = -1;       // excluded from sampling; -1 = none
  uint64_t seed = 0;
};

struct DrawKey {
  uint32_t sequence = 0, position = 0, round = 0;
};

// Kept set of the nucleus filter over one row (after mask exclusion and temperature).
// Returns the logit threshold: token t is kept iff scaled logit(t) >= threshold.
// If `kept` is non-null it receives the kept ids in ascending order.
double top_p_threshold(const float* logits, int vocab, const SampleParams& p,
                       std::vector<int32_t>* kept = nullptr);

// One token from one row.
int32_t sample_row(const float* logits, int vocab, const SampleParams& p, const DrawKey& key);

// Same choice, with caller-given uniforms u[vocab] in (0,1) instead of Philox
// (exact reproduction of a reference trace): argmax over kept t of logit/T - log(-log u[t]).
int32_t sample_row_with_uniforms(const float* logits, int vocab, const SampleParams& p,
                                 const double* uniforms);

// MDLM ancestral update of one masked position at step key.round (MODEL-REFERENCE.md §4.1):
// it stays masked with probability r = s/t (mdlm_stays_masked), else reveals the token
// sample_row picks with key.round = 0. This has the distribution of the official single
// Gumbel-max over q = probs * (1 - r), q[mask] = r (P(mask) = r, the revealed token ~ the
// top-p filtered probs), but only revealed rows touch the vocabulary, and a position's
// token does not depend on the step it is revealed in. Greedy affects the token only.
// Returns mask_index for "stays masked" (also when no token can be revealed). The MDLM loop
// (generate.cpp) runs the two halves separately so that only revealed rows need logits.
int32_t sample_row_mdlm(const float* logits, int vocab, const SampleParams& p, double r,
                        const DrawKey& key);
bool mdlm_stays_masked(uint64_t seed, const DrawKey& key, double r);

// For tests (test/native/sampler_test.cpp): the row passes run AVX-512 where the CPU has it,
// else AVX2, else SSE2 / scalar code, and must give the same bits on every path.
// sampler_limit_passes(w) makes this process use no wider passes than w (the CPU's widest
// by default); sampler_widest_passes() says which ones it now takes.
enum class SamplerPasses { avx512, avx2, sse2 };
void sampler_limit_passes(SamplerPasses widest);
SamplerPasses sampler_widest_passes();
// e[i] = the nucleus pass's exp(d[i]) for d[i] <= 0, on the passes now taken.
void sampler_exp_for_test(const double* d, double* e, int n);
// u[i] = draw_uniform(seed, key, tokens[i]) as the vector Gumbel passes now taken draw it:
// AVX-512 16 ids at a time, AVX2 from the dense pass's block of 16 consecutive tokens that
// holds each id; false (nothing written) on the SSE2 / scalar passes.
bool sampler_uniforms_for_test(uint64_t seed, const DrawKey& key, const int32_t* tokens, int n, double* u);

}  // namespace esolm
