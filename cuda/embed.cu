// embed.cu — embed() and gather_rows(): grid-stride element loops (memory-bound,
// n rows per step: negligible next to the weight stream).
#include "embed.cuh"

namespace esolm {
namespace cuda {

__global__ void embed_kernel(const void* table, DType tt, int64_t vocab,
                             const int32_t* __restrict__ tokens, float* x, int64_t rows,
                             int64_t d) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * d;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / d, c = e % d;
    const int64_t tok = tokens[r];
    x[e] = (tok >= 0 && tok < vocab) ? ld_any(table, tt, tok * d + c) : 0.f;
  }
}

__global__ void gather_kernel(const uint16_t* x, int64_t x_rows, const int32_t* __restrict__ idx,
                              uint16_t* out, int64_t m, int64_t row_units) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < m * row_units;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / row_units, c = e % row_units;
    const int64_t src = idx[r];
    out[e] = (src >= 0 && src < x_rows) ? x[src * row_units + c] : uint16_t(0);
  }
}

Status launch_embed(const void* table, DType tt, int64_t vocab, const int32_t* tokens, float* x,
                    int64_t rows, int64_t d, cudaStream_t st) {
  if (rows * d <= 0) return Status::ok();
  embed_kernel<<<grid_1d(rows * d, 256), 256, 0, st>>>(table, tt, vocab, tokens, x, rows, d);
  CUDA_CHECK_LAUNCH("embed");
  return Status::ok();
}

Status launch_gather_rows(const void* x, int64_t x_rows, const int32_t* index, void* out,
                          int64_t m, int64_t row_bytes, cudaStream_t st) {
  const int64_t units = row_bytes / 2;
  if (m * units <= 0) return Status::ok();
  gather_kernel<<<grid_1d(m * units, 256), 256, 0, st>>>(
      static_cast<const uint16_t*>(x), x_rows, index, static_cast<uint16_t*>(out), m, units);
  CUDA_CHECK_LAUNCH("gather_rows");
  return Status::ok();
}

}  // namespace cuda
}  // namespace esolm
