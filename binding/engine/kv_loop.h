// kv_loop.h — the planned KV loop: Eso-LM (B) and AR generation run from step tables in
// backend memory (backend.h, LoopTensors), with no host round trip between steps.
//
// The host uploads the plan once, then queues steps; on an asynchronous backend it waits
// only every few steps (and at the end of each phase), then hands the steps' picks to the
// caller and checks for cancellation. On a backend that can record (CUDA graphs), window and head sizes are
// rounded up to powers of two so that few distinct step shapes exist; a shape used more
// than once is recorded on its second use and replayed afterwards. Padding rows never
// reach the cache or the tokens (backend.h semantics), so padding does not change results.
#pragma once
#include <atomic>
#include <functional>
#include <vector>

#include "engine/model.h"

namespace esolm {

struct KvLoopStep {
  int slot0 = 0, n = 0, head0 = 0, k = 0, target = 0, commit = 0;  // backend.h StepTable
  int phase = 0;  // caller's label; the loop waits whenever it changes
};

struct KvLoopPlan {
  int batch = 1, length = 0;
  std::vector<KvLoopStep> steps;
  std::vector<int32_t> z;      // [batch * length] tokens in slot order (masks / given tokens)
  std::vector<int32_t> order;  // [batch * length] slot -> original position
  std::vector<int32_t> fixed;  // [length] 1 = given slot, never overwritten
};

// Called in step order once step i's picks are on the host: picks[b * k_pad + r] for
// r < steps[i].k. ms is the step's share of the wall time of the steps waited for together.
using KvLoopSink = std::function<void(int i, const int32_t* picks, int k_pad, double ms)>;

// Validates the plan (every step must fit [0, length) and the cache), runs it, and
// returns the final z (slot order) in z_out. The cache is used from slot 0.
// replayed_steps (optional) receives how many steps ran as replays of a recording.
Status run_kv_loop(Model& model, KVCache& cache, const KvLoopPlan& plan, const SampleParams& sp,
                   const KvLoopSink& sink, const std::atomic<bool>* cancel,
                   std::vector<int32_t>& z_out, int* replayed_steps = nullptr);

}  // namespace esolm
