// generate_full.h — generation loops that run a full forward per step over a fixed plan
// (schedule.h), used by generate() (generate.h):
//
// - Eso-LM (A) (MODEL-REFERENCE.md §2.2, §2.8): the diffusion phase re-encodes the
//   reveal-sorted prefix every step with mixed2 attention (clean slots see each other both
//   ways, mask slots causally), because clean K/V change whenever a token is revealed. The
//   sequential phase is exact with a KV cache: the diffusion tokens are encoded once as a
//   bidirectional prefix (Model::prefill), then one token per step left to right, each
//   seeing the prefix and the earlier tokens (the training "mixed" sequential mask).
// - MDLM with a planned order (the official sampling.use_ar_order / use_block_ar_order):
//   one bidirectional forward over the whole sequence per step, revealing that step's
//   positions with sample_row draws (no stay-masked draw: the plan says what is revealed).
#pragma once
#include "engine/generate.h"

namespace esolm {

Status run_esolm_a(Model& model, const GenerateRequest& req, KVCache& cache,
                   const std::function<void(const StepEvent&)>& on_step,
                   const std::atomic<bool>* cancel, GenerateResult& out);

Status run_mdlm_planned(Model& model, const GenerateRequest& req,
                        const std::function<void(const StepEvent&)>& on_step,
                        const std::atomic<bool>* cancel, GenerateResult& out);

// True when an mdlm request asks for a planned order instead of the ancestral timesteps.
inline bool mdlm_is_planned(const GenerateRequest& r) {
  return !r.step_sizes.empty() || !r.order.empty() || r.block_len > 0;
}

}  // namespace esolm
