// loop_ops.h — the planned-KV-loop bookkeeping ops (backend.h, LoopTensors) on host
// memory: the CPU backend's implementation and the plain statement of their semantics.
#pragma once
#include "engine/backend.h"

namespace esolm {

Status loop_begin_step_host(LoopTensors& lt, int batch, int length, int n_pad, int k_pad);
Status loop_end_step_host(LoopTensors& lt, int batch, int length, int k_pad);

}  // namespace esolm
