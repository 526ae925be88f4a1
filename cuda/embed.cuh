// embed.cuh — embedding lookup (table rows -> F32 residual) and row gather.
// Out-of-range token ids / indices produce zero rows (the engine validates first;
// the kernels only refuse to read out of bounds).
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

Status launch_embed(const void* table, DType table_t, int64_t vocab, const int32_t* tokens,
                    float* x, int64_t rows, int64_t d, cudaStream_t stream);

// out[i] = x[index[i]]: rows of `row_bytes` bytes (a multiple of 2), x has x_rows rows.
Status launch_gather_rows(const void* x, int64_t x_rows, const int32_t* index, void* out,
                          int64_t m, int64_t row_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
