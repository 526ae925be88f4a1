// schedule.h — generation plans, fixed before the first step (pure, seeded, no model).
//
// A plan is the list of step sizes (tokens revealed per step) and, per sequence, the
// slot order: slot j of sequence b reveals original position order[b][j]. Tokens given
// by the caller (prompt prefix, fixed/infill positions) occupy the first slots in
// ascending position order and are not counted in step_sizes.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "status.h"

namespace esolm {

struct Plan {
  int length = 0;                          // L
  int n_given = 0;                         // caller-given tokens (first slots)
  int n_diffusion = 0;                     // D: tokens revealed by the diffusion phase
  std::vector<int> step_sizes;             // sum = length - n_given; zeros never appear
  std::vector<std::vector<int32_t>> order; // [batch][length]: slot -> original position
};

struct EsoPlanOptions {
  int length = 0;              // L
  int batch = 1;
  int steps = 0;               // T (log-linear schedule); ignored if step_sizes given
  double alpha0 = 1.0;         // in [0, 1]
  uint64_t seed = 0;           // slot orders (and the block shuffle)
  // Step sizes of the log-linear schedule. Defaults to `seed`. A separate plan seed lets
  // requests with different seeds share one schedule and so run as one batch.
  std::optional<uint64_t> plan_seed;
  std::vector<int32_t> given;  // sorted, unique original positions given by the caller
  // Block ("subcontext") schedule: block_len S > 0 uses MODEL-REFERENCE.md §2.6.
  int block_len = 0;
  bool block_shuffle = false;
  // Caller overrides: explicit step sizes (sum = length - given) and/or explicit
  // order per sequence (a permutation of the non-given positions, slot order).
  std::vector<int> step_sizes;
  std::vector<std::vector<int32_t>> order;
};

// Validation (Code::invalid_arg, message names the argument): length > 0, batch > 0,
// 0 <= alpha0 <= 1, steps in [1, 2^24] when the log-linear schedule is used, given sorted,
// unique, in range; block_len >= 0, dividing length, and no given positions with blocks.
// Explicit step_sizes: all > 0, summing to length - given; n_diffusion is then
// length - given. Explicit order: 1 entry (broadcast) or batch entries, each a permutation
// of the non-given positions. Block schedule: n_diffusion = (L / S) * floor(S * alpha0)
// (the reference's floor(L * alpha0) disagrees with its own step sizes when S * alpha0 is
// fractional). On error `out` is left untouched.
// Eso-LM (B): binomial step sizes from the alpha0-scaled log-linear schedule
// (alpha(t) = alpha0 (1 - (1-eps) t), eps = 1e-3), empty steps dropped; the remainder
// becomes one last diffusion step only when alpha0 == 1, else one-token sequential steps.
// Order: random permutation over the diffusion part, ascending over the sequential tail.
Status plan_esolm(const EsoPlanOptions& opt, Plan& out);

// MDLM: timesteps t_i = 1 - i/T (i = 0..T-1) and reveal ratios r_i = s_i / t_i with
// s_i = t_i - 1/T (so r_{T-1} = 0). alpha(t) = 1 - (1-eps) t is not needed for r
// because the official code uses r = s/t.
struct MdlmPlan {
  std::vector<double> t, r;
};
Status plan_mdlm(int steps, MdlmPlan& out);

// Binomial(n, p) from the plan stream: deterministic in (seed, stream, draw index).
int64_t plan_binomial(uint64_t seed, uint32_t stream, uint32_t index, int64_t n, double p);

}  // namespace esolm
