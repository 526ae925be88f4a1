// sample.cuh — fused per-row token choice on the device (Backend::sample_rows).
//
// One CTA per row; the same choice as esolm::sample_row (sampler.h): mask excluded,
// logit / T in float64, exact nucleus threshold found by selection (no sort), Gumbel-max
// with Philox noise (philox.h), greedy = argmax with the lowest id on ties.
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

// logits: F32 rows of `ld` floats, `vocab` used per row; keys, out: device memory [rows].
Status launch_sample_rows(const float* logits, int64_t ld, int vocab, int64_t rows,
                          const SampleParams& p, const DrawKey* keys, int32_t* out,
                          cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
