// rope_kv.cu — one thread per (row, head, rotary pair i): rotates q[i], q[i+hd/2] and
// k[i], k[i+hd/2] by the token's original position and copies v[i], v[i+hd/2].
// The float64 angle keeps positions up to 8192+ exact to ~1e-12 rad; the residual
// difference to the CPU is the bf16 rounding of the outputs (rel. 2^-9).
#include "rope_kv.cuh"

namespace esolm {
namespace cuda {

__global__ void rope_qkv_kernel(const void* qkv, DType qt, const int32_t* __restrict__ pos,
                                int batch, int n, int n_heads, int hd, int slot0_arg,
                                const int32_t* loop_state, int capacity, void* q_out, DType ot,
                                void* kc, DType kt, void* vc, DType vt) {
  const int half = hd / 2, d = n_heads * hd;
  // Planned loop: slot0 and the count of rows to store come from device memory.
  const int64_t slot0 = loop_state ? loop_state[kLoopSlot0] : slot0_arg;
  const int64_t n_store = loop_state ? loop_state[kLoopN] : n;
  const int64_t total = int64_t(batch) * n * n_heads * half;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(e % half);
    const int h = int((e / half) % n_heads);
    const int64_t r = e / (int64_t(half) * n_heads);
    const int64_t b = r / n, j = r % n;
    const double inv_freq = pow(10000.0, -2.0 * double(i) / double(hd));
    double sd, cd;
    sincos(double(pos[r]) * inv_freq, &sd, &cd);
    const float s = float(sd), c = float(cd);
    const int64_t src = r * 3 * d + int64_t(h) * hd + i;
    const int64_t dq = r * d + int64_t(h) * hd + i;
    const float q1 = ld_any(qkv, qt, src), q2 = ld_any(qkv, qt, src + half);
    st_any(q_out, ot, dq, q1 * c - q2 * s);
    st_any(q_out, ot, dq + half, q2 * c + q1 * s);
    const int64_t slot = slot0 + j;
    if (j >= n_store || slot < 0 || slot >= capacity) continue;
    const int64_t dk = (b * capacity + slot) * d + int64_t(h) * hd + i;
    const float k1 = ld_any(qkv, qt, src + d), k2 = ld_any(qkv, qt, src + d + half);
    st_any(kc, kt, dk, k1 * c - k2 * s);
    st_any(kc, kt, dk + half, k2 * c + k1 * s);
    st_any(vc, vt, dk, ld_any(qkv, qt, src + 2 * d));
    st_any(vc, vt, dk + half, ld_any(qkv, qt, src + 2 * d + half));
  }
}

Status launch_rope_qkv_store(const void* qkv, DType qt, const int32_t* pos, int batch, int n,
                             int n_heads, int hd, int slot0, const int32_t* loop_state,
                             int capacity, void* q_out, DType ot, void* kc, DType kt, void* vc,
                             DType vt, cudaStream_t st) {
  const int64_t total = int64_t(batch) * n * n_heads * (hd / 2);
  if (total <= 0) return Status::ok();
  rope_qkv_kernel<<<grid_1d(total, 256), 256, 0, st>>>(qkv, qt, pos, batch, n, n_heads, hd, slot0,
                                                       loop_state, capacity, q_out, ot, kc, kt,
                                                       vc, vt);
  CUDA_CHECK_LAUNCH("rope_qkv_store");
  return Status::ok();
}

}  // namespace cuda
}  // namespace esolm
