// kv_loop.cu — loop_begin_step / loop_end_step kernels (see kv_loop.cuh), one launch each.
//
// No thread of a launch reads a state field that the same launch writes: begin reads only
// state[kLoopCursor] and writes the step fields; end reads only the step fields and
// increments the cursor (one thread). Stream order makes the writes visible to the next op.
#include <algorithm>

#include "kv_loop.cuh"

namespace esolm {
namespace cuda {

constexpr int kThreads = 256;

__global__ void loop_begin_kernel(LoopArgs a) {
  const int64_t cursor = a.state[kLoopCursor];
  int32_t f[kStepFields] = {};  // slot0, n, head0, k, target, commit; zeros past the table
  if (cursor >= 0 && cursor < a.n_steps)
    for (int i = 0; i < kStepFields; ++i) f[i] = a.table[cursor * kStepFields + i];
  const int64_t slot0 = f[0], n = f[1], head0 = f[2], k = f[3], target = f[4];
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (tid == 0)
    for (int i = 0; i <= kLoopTarget - kLoopSlot0; ++i) a.state[kLoopSlot0 + i] = f[i];
  const int64_t width = max(a.n_pad, a.k_pad), total = int64_t(a.batch) * width;
  for (int64_t e = tid; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / width, r = e % width;
    const int32_t* z_b = a.z + b * a.length;
    const int32_t* order_b = a.order + b * a.length;
    if (r < a.n_pad) {
      const int64_t slot = slot0 + r;
      const bool fed = r < n && slot >= 0 && slot < a.length;
      a.tokens[b * a.n_pad + r] = fed ? z_b[slot] : 0;
      a.positions[b * a.n_pad + r] = fed ? order_b[slot] : 0;
    }
    if (r < a.k_pad) {
      const int64_t rr = max(int64_t(0), min(r, k - 1));  // padding rows repeat the last real row
      const int64_t row = min(max(head0 + rr, int64_t(0)), int64_t(a.n_pad) - 1);
      a.head_rows[b * a.k_pad + r] = int32_t(b * a.n_pad + row);
      const int64_t t = target + rr;
      int32_t* key = a.keys + (b * a.k_pad + r) * 3;  // DrawKey {sequence, position, round}
      key[0] = int32_t(b);
      key[1] = (t >= 0 && t < a.length) ? order_b[t] : 0;
      key[2] = 0;
    }
  }
}

__global__ void loop_end_kernel(LoopArgs a) {
  const int64_t k = min(a.state[kLoopK], a.k_pad), target = a.state[kLoopTarget];
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t total = int64_t(a.batch) * a.k_pad;
  for (int64_t e = tid; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / a.k_pad, r = e % a.k_pad, t = target + r;
    if (r < k && t >= 0 && t < a.length && a.fixed[t] == 0) a.z[b * a.length + t] = a.picks[e];
  }
  if (tid == 0) a.state[kLoopCursor] += 1;
}

Status launch_loop_begin_step(const LoopArgs& a, cudaStream_t st) {
  const int64_t total = int64_t(a.batch) * std::max(a.n_pad, a.k_pad);
  loop_begin_kernel<<<grid_1d(total, kThreads), kThreads, 0, st>>>(a);
  CUDA_CHECK_LAUNCH("loop_begin_step");
  return Status::ok();
}

Status launch_loop_end_step(const LoopArgs& a, cudaStream_t st) {
  // grid_1d gives at least one block, so the cursor thread exists even for an empty batch.
  loop_end_kernel<<<grid_1d(int64_t(a.batch) * a.k_pad, kThreads), kThreads, 0, st>>>(a);
  CUDA_CHECK_LAUNCH("loop_end_step");
  return Status::ok();
}

}  // namespace cuda
}  // namespace esolm
