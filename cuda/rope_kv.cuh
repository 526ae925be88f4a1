// rope_kv.cuh — split qkv [batch*n, 3d] into q (rotary), K (rotary) and V, writing q to
// q_out [batch*n, d] and K/V to cache rows b*capacity + slot0 + j (backend.h contract).
// Rotary: half-split over the full head dim, base 10000, angle = pos * 10000^(-2i/hd)
// evaluated in float64 (as the CPU backend does), applied in fp32, stored in out dtype.
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

// loop_state (planned KV loop, may be null): slot0 = loop_state[kLoopSlot0] replaces the
// argument, and only rows j < loop_state[kLoopN] (and slots < capacity) reach the caches;
// every q row is written.
Status launch_rope_qkv_store(const void* qkv, DType qkv_t, const int32_t* positions, int batch,
                             int n, int n_heads, int head_dim, int slot0,
                             const int32_t* loop_state, int capacity, void* q_out, DType q_t,
                             void* k_cache, DType k_t, void* v_cache, DType v_t,
                             cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
