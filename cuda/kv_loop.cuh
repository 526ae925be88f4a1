// kv_loop.cuh — the bookkeeping kernels of the planned KV loop (backend.h, LoopTensors):
// loop_begin_step reads the step row the cursor names and fills the window inputs,
// loop_end_step writes the picks into z and advances the cursor.
//
// Every value that changes between steps is read from device memory, so both kernels can be
// recorded once into a CUDA graph and replayed. Out-of-range table entries are clamped so no
// access leaves the tensors (the result is then unspecified, never a fault).
#pragma once
#include "common.cuh"

namespace esolm {
namespace cuda {

struct LoopArgs {  // device pointers of LoopTensors, and the static shapes
  const int32_t* table = nullptr;  // [n_steps, kStepFields]
  int64_t n_steps = 0;
  int32_t* state = nullptr;        // [kLoopFields]
  int32_t* z = nullptr;            // [batch, length]
  const int32_t* order = nullptr;  // [batch, length]
  const int32_t* fixed = nullptr;  // [length]
  int32_t* tokens = nullptr;       // [batch * n_pad]
  int32_t* positions = nullptr;    // [batch * n_pad]
  int32_t* head_rows = nullptr;    // [batch * k_pad]
  int32_t* keys = nullptr;         // [batch * k_pad, 3]
  const int32_t* picks = nullptr;  // [batch * k_pad]
  int batch = 0, length = 0, n_pad = 0, k_pad = 0;
};

Status launch_loop_begin_step(const LoopArgs& a, cudaStream_t stream);
Status launch_loop_end_step(const LoopArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace esolm
