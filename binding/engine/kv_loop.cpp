// kv_loop.cpp — see kv_loop.h.
#include "engine/kv_loop.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <utility>

namespace esolm {
namespace {

// Steps queued between host waits on an asynchronous backend: enough to keep the device
// busy, few enough that streaming events and cancellation stay prompt.
constexpr int kQueuedSteps = 8;

using Clock = std::chrono::steady_clock;

Status check_plan(const KvLoopPlan& p, const KVCache& cache, int vocab) {
  auto bad = [](const std::string& m) { return Status::error(Code::invalid_arg, "kv loop plan: " + m); };
  const int B = p.batch, L = p.length;
  if (B != cache.batch || L < 1 || L > cache.capacity) return bad("batch or length does not fit the cache");
  if (p.z.size() != size_t(B) * L || p.order.size() != size_t(B) * L || p.fixed.size() != size_t(L))
    return bad("z, order or fixed has the wrong size");
  for (int32_t t : p.z)
    if (t < 0 || t >= vocab) return bad("a token is outside the vocabulary");
  for (int32_t o : p.order)
    if (o < 0 || o >= L) return bad("a position is outside [0, length)");
  int committed = 0;
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const KvLoopStep& s = p.steps[i];
    if (s.slot0 != committed || s.n < 1 || s.slot0 + s.n > L || s.commit < 0 || s.commit > s.n ||
        s.k < 1 || s.head0 < 0 || s.head0 + s.k > s.n || s.target < 0 || s.target + s.k > L)
      return bad("step " + std::to_string(i) + " is inconsistent");
    committed += s.commit;
  }
  return Status::ok();
}

// Backend tensors of one loop; recordings are released before the tensors they use.
struct LoopResources {
  Backend& be;
  LoopTensors lt;
  explicit LoopResources(Backend& b) : be(b) {}
  ~LoopResources() {
    be.release_recordings();
    for (Tensor* t : {&lt.table, &lt.state, &lt.z, &lt.order, &lt.fixed, &lt.tokens, &lt.positions,
                      &lt.head_rows, &lt.keys, &lt.picks})
      be.release(*t);
  }
};

// The padded size of a window or head of n rows on a recording backend.
int pad_pow2(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace

Status run_kv_loop(Model& model, KVCache& cache, const KvLoopPlan& plan, const SampleParams& sp,
                   const KvLoopSink& sink, const std::atomic<bool>* cancel,
                   std::vector<int32_t>& z_out, int* replayed_steps) {
  if (replayed_steps) *replayed_steps = 0;
  ESOLM_TRY(check_plan(plan, cache, model.config().vocab_size));
  Backend& be = *model.backend();
  const int B = plan.batch, L = plan.length, S = int(plan.steps.size());
  const bool record = be.can_record();

  // Static shapes per step.
  std::vector<std::pair<int, int>> shape(S);
  std::map<std::pair<int, int>, int> uses;
  int n_max = 1, k_max = 1;
  for (int i = 0; i < S; ++i) {
    const KvLoopStep& s = plan.steps[i];
    shape[i] = record ? std::make_pair(pad_pow2(s.n), pad_pow2(s.k)) : std::make_pair(s.n, s.k);
    ++uses[shape[i]];
    n_max = std::max(n_max, shape[i].first);
    k_max = std::max(k_max, shape[i].second);
  }
  ESOLM_TRY(model.reserve_loop(B, n_max, k_max));

  LoopResources res(be);
  LoopTensors& lt = res.lt;
  std::vector<int32_t> table(size_t(std::max(S, 1)) * kStepFields, 0);
  for (int i = 0; i < S; ++i) {
    const KvLoopStep& s = plan.steps[i];
    const int32_t row[kStepFields] = {s.slot0, s.n, s.head0, s.k, s.target, s.commit};
    std::copy(row, row + kStepFields, table.begin() + size_t(i) * kStepFields);
  }
  ESOLM_TRY(be.alloc(lt.table, DType::i32, std::max(S, 1), kStepFields));
  ESOLM_TRY(be.alloc(lt.state, DType::i32, 1, kLoopFields));
  ESOLM_TRY(be.alloc(lt.z, DType::i32, int64_t(B) * L, 1));
  ESOLM_TRY(be.alloc(lt.order, DType::i32, int64_t(B) * L, 1));
  ESOLM_TRY(be.alloc(lt.fixed, DType::i32, 1, L));
  ESOLM_TRY(be.alloc(lt.tokens, DType::i32, int64_t(B) * n_max, 1));
  ESOLM_TRY(be.alloc(lt.positions, DType::i32, int64_t(B) * n_max, 1));
  ESOLM_TRY(be.alloc(lt.head_rows, DType::i32, int64_t(B) * k_max, 1));
  ESOLM_TRY(be.alloc(lt.keys, DType::i32, int64_t(B) * k_max, 3));
  ESOLM_TRY(be.alloc(lt.picks, DType::i32, int64_t(B) * k_max, 1));
  ESOLM_TRY(be.upload_i32(lt.table, table.data(), lt.table.numel()));
  ESOLM_TRY(be.upload_i32(lt.z, plan.z.data(), lt.z.numel()));
  ESOLM_TRY(be.upload_i32(lt.order, plan.order.data(), lt.order.numel()));
  ESOLM_TRY(be.upload_i32(lt.fixed, plan.fixed.data(), lt.fixed.numel()));
  ESOLM_TRY(be.synchronize());
  cache.committed = 0;

  // Per shape: the recording's id, or -2 once recording failed (the shape then runs eagerly);
  // and how often it was seen before being recorded.
  std::map<std::pair<int, int>, int> rec_id, seen;
  auto run_step = [&](int i) -> Status {
    const int n_pad = shape[i].first, k_pad = shape[i].second;
    LoopTensors v = lt;
    v.tokens = row_slice(lt.tokens, 0, int64_t(B) * n_pad);
    v.positions = row_slice(lt.positions, 0, int64_t(B) * n_pad);
    v.head_rows = row_slice(lt.head_rows, 0, int64_t(B) * k_pad);
    v.keys = row_slice(lt.keys, 0, int64_t(B) * k_pad);
    v.picks = row_slice(lt.picks, 0, int64_t(B) * k_pad);
    auto eager = [&] { return model.loop_step(cache, v, L, n_pad, k_pad, sp); };
    auto replay = [&](int id) {
      if (replayed_steps) ++*replayed_steps;
      return be.replay(id);
    };
    if (!record || uses[shape[i]] < 2) return eager();
    auto it = rec_id.find(shape[i]);
    if (it != rec_id.end()) return it->second >= 0 ? replay(it->second) : eager();
    // First use runs eagerly: it sizes every scratch buffer the recording will bake in.
    if (seen[shape[i]]++ == 0) return eager();
    int id = -1;
    Status s = be.begin_record();
    if (s) {
      Status sr = model.loop_step(cache, v, L, n_pad, k_pad, sp);
      Status se = be.end_record(id);
      s = sr ? se : sr;
    }
    rec_id[shape[i]] = s ? id : -2;
    return s ? replay(id) : eager();  // a recorded step has not run yet
  };

  const int sync_every = be.is_asynchronous() ? kQueuedSteps : 1;
  std::vector<std::vector<int32_t>> host_picks(sync_every, std::vector<int32_t>(size_t(B) * k_max));
  int chunk0 = 0;
  auto t_chunk = Clock::now();
  for (int i = 0; i < S; ++i) {
    if (i == chunk0 && cancel && cancel->load()) return Status::error(Code::aborted, "generation aborted");
    ESOLM_TRY(run_step(i));
    const int k_pad = shape[i].second;
    ESOLM_TRY(be.download_i32_async(lt.picks, int64_t(B) * k_pad, host_picks[i - chunk0].data()));
    const bool wait = i + 1 == S || i + 1 - chunk0 == sync_every || plan.steps[i + 1].phase != plan.steps[i].phase;
    if (!wait) continue;
    ESOLM_TRY(be.synchronize());
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t_chunk).count();
    const int count = i + 1 - chunk0;
    for (int j = chunk0; j <= i; ++j)
      if (sink) sink(j, host_picks[j - chunk0].data(), shape[j].second, ms / count);
    chunk0 = i + 1;
    t_chunk = Clock::now();
  }
  z_out.assign(size_t(B) * L, 0);
  ESOLM_TRY(be.download_i32_async(lt.z, int64_t(B) * L, z_out.data()));
  ESOLM_TRY(be.synchronize());
  cache.committed = S ? plan.steps[S - 1].slot0 + plan.steps[S - 1].commit : 0;
  return Status::ok();
}

}  // namespace esolm
