// generate.h — the generation loops (Eso-LM (B) with the KV cache, MDLM with the p(x0)
// cache or a planned order, Eso-LM (A) with full mixed2 forwards, AR with the KV cache),
// each run as one call with the loop in C++.
//
// Conditioning (absent from the official code): `given` positions hold caller tokens that
// are clean from the start, first in slot order, committed in the first step and never
// resampled. A prompt is given positions 0..P-1.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/schedule.h"
#include "engine/status.h"

namespace esolm {

enum class Method { esolm, mdlm, ar, esolm_a };

// A contiguous run of rows of one batch that samples as a generation of its own: row b of a
// group starting at row o draws its tokens, its slot order and its MDLM stay decisions from
// `seed` with sequence index b - o, exactly as in a generation of `rows` sequences with that
// seed. Eso-LM step sizes come from `plan_seed`; every group of a batch must plan the same
// step sizes (else invalid_arg). This lets a server batch requests with their own seeds.
struct SeedGroup {
  uint64_t seed = 0;
  uint64_t plan_seed = 0;
  int rows = 0;
};

struct GenerateRequest {
  Method method = Method::esolm;
  int batch = 1;
  int length = 0;                    // L: tokens per sequence, <= model length
  SampleParams sample;               // top_p, temperature, greedy, seed (mask from the model)
  int steps = 0;                     // T (esolm log-linear schedule, mdlm timesteps)
  double alpha0 = 1.0;               // esolm, esolm_a
  int block_len = 0;                 // esolm(_a), mdlm: block ("subcontext") schedule, 0 = off
  bool block_shuffle = false;
  std::vector<int> step_sizes;       // esolm(_a), mdlm: explicit step sizes (optional)
  std::vector<std::vector<int32_t>> order;  // esolm(_a), mdlm: explicit order(s) of the free positions
  // mdlm: with step_sizes, order or block_len set, MDLM reveals by that plan (one full
  // bidirectional forward per step; the official use_ar_order / use_block_ar_order)
  // instead of the ancestral timesteps.
  std::vector<int32_t> given_positions;     // sorted, unique, shared by the batch
  std::vector<int32_t> given_tokens;        // [batch * given_positions.size()]
  int bos = -1;                      // ar: first token when nothing is given at position 0
  // ar: official prepend_token bos/mask: generate `length` tokens after this token (fed at
  // position 0, the rest shifted by one) and drop it. -1 = none (the official default).
  int prepend = -1;
  // Optional: rows sum to batch. Empty = one group {sample.seed, sample.seed, batch}; when
  // present, sample.seed is not used.
  std::vector<SeedGroup> seed_groups;
};

// One step as seen from outside (streamed to JS).
struct StepEvent {
  int step = 0, n_steps = 0, nfe = 0;
  const char* phase = "";            // "diffusion" | "sequential" | "mdlm" | "ar"
  int per_sequence = 0;              // tokens revealed per sequence in this event
  std::vector<int32_t> positions;    // [batch * per_sequence] original positions
  std::vector<int32_t> tokens;       // [batch * per_sequence]
};

struct GenerateTimings {
  double total_ms = 0, forward_ms = 0, sample_ms = 0, plan_ms = 0;
  double diffusion_ms = 0, sequential_ms = 0;  // esolm phases (forward + sample)
};

struct GenerateResult {
  std::vector<int32_t> tokens;       // [batch * length]
  int nfe = 0;                       // network function evaluations (forward or step calls)
  int steps = 0;                     // sampler steps taken (mdlm: including skipped NFEs)
  int n_diffusion = 0;               // esolm: tokens revealed by the diffusion phase
  int replayed_steps = 0;            // steps run by replaying a recorded step (CUDA graphs)
  GenerateTimings timings;
};

// on_step may be null. `cancel` is checked between steps: when set, returns aborted and
// leaves the model usable. `cache` (optional) must have batch == req.batch and capacity
// >= length; it is reset first. Without it a cache is created and released.
Status generate(Model& model, const GenerateRequest& req, KVCache* cache,
                const std::function<void(const StepEvent&)>& on_step,
                const std::atomic<bool>* cancel, GenerateResult& out);

}  // namespace esolm
