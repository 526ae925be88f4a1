// attention.cuh — softmax(q·kᵀ/sqrt(hd) + mask)·v over the KV cache, all four AttnModes.
//
// Two paths: split-KV ("flash-decoding": (split, head, batch x 16-query group) CTAs,
// fp32 CUDA-core math, partial (m, l, o) combined by a second kernel) for few queries
// or non-bf16 / unusual head dims; and a tiled flash-attention path (64 queries x 64
// keys per iteration, mma.sync bf16, online softmax in fp32) for many queries.
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

struct AttnArgs {
  const void* q = nullptr;  DType q_t = DType::bf16;
  const void* k = nullptr;  const void* v = nullptr;  DType kv_t = DType::bf16;
  void* out = nullptr;      DType out_t = DType::bf16;
  const int32_t* clean = nullptr;  // [batch, capacity] (mixed2)
  // Planned KV loop (causal only): q_slot0 = loop_state[kLoopSlot0], n_valid =
  // loop_state[kLoopN] rows, n_kv = q_slot0 + n_valid, read on the device; rows >= n_valid
  // are zeros. The static q_slot0 / n_kv are then ignored.
  const int32_t* loop_state = nullptr;
  int batch = 1, n_q = 0, q_slot0 = 0, n_kv = 0, n_heads = 1, head_dim = 64, capacity = 0;
  AttnMode mode = AttnMode::causal;
};

// Floats of scratch the launch needs (split-KV partials); 0 for the tiled path.
size_t attention_workspace_floats(const AttnArgs& a, int sm_count);
Status launch_attention(const AttnArgs& a, float* workspace, size_t workspace_floats,
                        int sm_count, cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
