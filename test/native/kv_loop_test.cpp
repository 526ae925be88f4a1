// kv_loop_test.cpp — the planned KV loop (engine/kv_loop.h) against the host loop.
//
// Three runs of every generation on the CPU backend must agree token for token and event
// for event: the host loop (one step_sample per step), the KV loop run eagerly, and the KV
// loop with padded shapes recorded once and replayed (RecordingBackend, the CPU stand-in
// for CUDA graphs). The CPU kernels compute each row independently of how many rows a call
// has, so padding must not change a single bit; any difference is a bookkeeping bug.
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/loop_ops.h"
#include "cpu/ops_reference.h"
#include "engine/generate.h"
#include "engine/kv_loop.h"
#include "recording_backend.h"
#include "tiny_model.h"

using namespace esolm;

namespace {

struct Run {
  Status status;
  GenerateResult result;
  std::vector<StepEvent> events;
};

struct Variant {
  const char* name;
  std::unique_ptr<test::RecordingBackend> be;
  std::unique_ptr<Model> model;
};

Run run(Variant& v, const GenerateRequest& req, const std::atomic<bool>* cancel = nullptr,
        std::atomic<bool>* cancel_after_first = nullptr) {
  Run r;
  r.status = generate(*v.model, req, nullptr,
                      [&](const StepEvent& ev) {
                        r.events.push_back(ev);
                        if (cancel_after_first) cancel_after_first->store(true);
                      },
                      cancel, r.result);
  return r;
}

bool same_events(const std::vector<StepEvent>& a, const std::vector<StepEvent>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].step != b[i].step || a[i].n_steps != b[i].n_steps || a[i].nfe != b[i].nfe ||
        std::string(a[i].phase) != b[i].phase || a[i].per_sequence != b[i].per_sequence ||
        a[i].positions != b[i].positions || a[i].tokens != b[i].tokens)
      return false;
  return true;
}

void compare_variants(Variant (&vs)[3], const GenerateRequest& req, const std::string& name) {
  const int before = vs[2].be->recordings_made, replays_before = vs[2].be->replays;
  Run host = run(vs[0], req), eager = run(vs[1], req), rec = run(vs[2], req);
  CHECK(host.status && eager.status && rec.status, "%s: %s | %s | %s", name.c_str(), host.status.message.c_str(),
        eager.status.message.c_str(), rec.status.message.c_str());
  CHECK(!host.result.tokens.empty() && host.result.tokens == eager.result.tokens, "%s: eager KV loop tokens differ", name.c_str());
  CHECK(host.result.tokens == rec.result.tokens, "%s: recorded KV loop tokens differ", name.c_str());
  CHECK(host.result.nfe == eager.result.nfe && host.result.nfe == rec.result.nfe, "%s: nfe %d %d %d", name.c_str(),
        host.result.nfe, eager.result.nfe, rec.result.nfe);
  CHECK(same_events(host.events, eager.events) && same_events(host.events, rec.events), "%s: events differ", name.c_str());
  CHECK(int(host.events.size()) == host.result.steps, "%s: one event per step", name.c_str());
  // A shape that repeats is recorded once, then replayed.
  const int recorded = vs[2].be->recordings_made - before, replayed = vs[2].be->replays - replays_before;
  std::printf("%-44s steps %3d  recorded shapes %d, replays %d\n", name.c_str(), host.result.steps, recorded, replayed);
  if (host.result.steps >= 8) CHECK(recorded > 0 && replayed > recorded, "%s: nothing was replayed", name.c_str());
  CHECK(rec.result.replayed_steps == replayed && host.result.replayed_steps == 0 && eager.result.replayed_steps == 0,
        "%s: replayed_steps %d (backend saw %d)", name.c_str(), rec.result.replayed_steps, replayed);
}

void test_generations(Variant (&vs)[3]) {
  for (int batch : {1, 3})
    for (double alpha0 : {1.0, 0.25})
      for (int steps : {6, 40}) {
        GenerateRequest req;
        req.method = Method::esolm;
        req.batch = batch;
        req.length = 40;
        req.steps = steps;
        req.alpha0 = alpha0;
        req.sample.top_p = 0.9;
        req.sample.temperature = 0.8;
        req.sample.seed = 11 + batch;
        compare_variants(vs, req, "esolm b=" + std::to_string(batch) + " alpha0=" + std::to_string(alpha0).substr(0, 4) +
                                      " T=" + std::to_string(steps));
      }
  {  // a prompt and an infill position, block schedule off; greedy
    GenerateRequest req;
    req.method = Method::esolm;
    req.batch = 2;
    req.length = 33;
    req.steps = 12;
    req.alpha0 = 0.5;
    req.sample.greedy = true;
    req.given_positions = {0, 1, 2, 20};
    req.given_tokens = {5, 6, 7, 8, 9, 10, 11, 12};
    compare_variants(vs, req, "esolm prompt + infill, greedy");
  }
  {  // block schedule
    GenerateRequest req;
    req.method = Method::esolm;
    req.batch = 2;
    req.length = 32;
    req.alpha0 = 0.5;
    req.block_len = 8;
    req.sample.seed = 4;
    compare_variants(vs, req, "esolm blocks S=8");
  }
  {  // every position given: no step at all
    GenerateRequest req;
    req.method = Method::esolm;
    req.batch = 2;
    req.length = 4;
    req.steps = 4;
    req.given_positions = {0, 1, 2, 3};
    req.given_tokens = {1, 2, 3, 4, 5, 6, 7, 8};
    compare_variants(vs, req, "esolm, everything given");
  }
  {  // AR from BOS
    GenerateRequest req;
    req.method = Method::ar;
    req.batch = 3;
    req.length = 30;
    req.bos = 1;
    req.sample.top_p = 0.95;
    req.sample.seed = 5;
    compare_variants(vs, req, "ar bos b=3");
  }
  {  // AR with a prompt and fixed later positions
    GenerateRequest req;
    req.method = Method::ar;
    req.batch = 2;
    req.length = 25;
    req.given_positions = {0, 1, 2, 3, 10, 11, 24};
    req.given_tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    req.sample.seed = 6;
    compare_variants(vs, req, "ar prompt + fixed positions");
  }
}

void test_cancel(Variant& v) {
  GenerateRequest req;
  req.method = Method::esolm;
  req.length = 40;
  req.steps = 40;
  std::atomic<bool> cancel{false};
  Run r = run(v, req, &cancel, &cancel);
  CHECK(!r.status && r.status.code == Code::aborted, "cancel: got %s", r.status.message.c_str());
  CHECK(!r.events.empty() && int(r.events.size()) < 40, "cancel: %zu events", r.events.size());
  Run again = run(v, req);
  CHECK(again.status && again.result.steps > 0, "generate after a cancel: %s", again.status.message.c_str());
}

void test_plan_validation(Variant& v) {
  std::unique_ptr<KVCache> cache;
  CHECK(v.model->create_cache(1, 16, cache), "create_cache");
  KvLoopPlan p;
  p.batch = 1;
  p.length = 16;
  p.z.assign(16, 3);
  p.fixed.assign(16, 0);
  for (int j = 0; j < 16; ++j) p.order.push_back(j);
  KvLoopStep a;
  a.slot0 = 0; a.n = 4; a.head0 = 0; a.k = 4; a.target = 0; a.commit = 2;
  KvLoopStep b = a;
  b.slot0 = 3;  // must start at the committed count, 2
  p.steps = {a, b};
  std::vector<int32_t> z;
  Status s = run_kv_loop(*v.model, *cache, p, SampleParams{}, nullptr, nullptr, z);
  CHECK(!s && s.code == Code::invalid_arg, "inconsistent chain rejected: %s", s.message.c_str());
  p.steps = {a};
  p.steps[0].target = 14;  // target + k > length
  s = run_kv_loop(*v.model, *cache, p, SampleParams{}, nullptr, nullptr, z);
  CHECK(!s && s.code == Code::invalid_arg, "target out of range rejected: %s", s.message.c_str());
  p.steps = {a};
  p.z[5] = 5000;  // outside the vocabulary
  s = run_kv_loop(*v.model, *cache, p, SampleParams{}, nullptr, nullptr, z);
  CHECK(!s && s.code == Code::invalid_arg, "bad token rejected: %s", s.message.c_str());
  v.model->release_cache(*cache);
}

// The host loop ops against the backend.h statement, on a padded step.
void test_loop_ops() {
  const int B = 2, L = 10, n_pad = 8, k_pad = 4;
  std::vector<int32_t> table = {3, 5, 2, 3, 5, 2}, state(kLoopFields, 0), z(B * L), order(B * L), fixed(L, 0);
  for (int i = 0; i < B * L; ++i) {
    z[i] = 100 + i;
    order[i] = (i * 7) % L;
  }
  fixed[6] = 1;
  std::vector<int32_t> tok(B * n_pad, -1), pos(B * n_pad, -1), hr(B * k_pad, -1), keys(B * k_pad * 3, -1),
      picks(B * k_pad);
  auto T = [](std::vector<int32_t>& v, int64_t rows, int64_t cols) {
    Tensor t;
    t.data = v.data();
    t.dtype = DType::i32;
    t.rows = rows;
    t.cols = cols;
    return t;
  };
  LoopTensors lt;
  lt.table = T(table, 1, kStepFields);
  lt.state = T(state, 1, kLoopFields);
  lt.z = T(z, B * L, 1);
  lt.order = T(order, B * L, 1);
  lt.fixed = T(fixed, 1, L);
  lt.tokens = T(tok, B * n_pad, 1);
  lt.positions = T(pos, B * n_pad, 1);
  lt.head_rows = T(hr, B * k_pad, 1);
  lt.keys = T(keys, B * k_pad, 3);
  lt.picks = T(picks, B * k_pad, 1);
  CHECK(loop_begin_step_host(lt, B, L, n_pad, k_pad), "loop_begin_step");
  CHECK(state[kLoopSlot0] == 3 && state[kLoopN] == 5 && state[kLoopHead0] == 2 && state[kLoopK] == 3 &&
            state[kLoopTarget] == 5, "state copied from the table row");
  bool ok = true;
  for (int b = 0; b < B; ++b) {
    for (int r = 0; r < n_pad; ++r) {
      ok &= tok[b * n_pad + r] == (r < 5 ? z[b * L + 3 + r] : 0);
      ok &= pos[b * n_pad + r] == (r < 5 ? order[b * L + 3 + r] : 0);
    }
    for (int r = 0; r < k_pad; ++r) {
      const int rr = r < 3 ? r : 2;
      ok &= hr[b * k_pad + r] == b * n_pad + 2 + rr;
      ok &= keys[3 * (b * k_pad + r)] == b && keys[3 * (b * k_pad + r) + 1] == order[b * L + 5 + rr] &&
            keys[3 * (b * k_pad + r) + 2] == 0;
    }
  }
  CHECK(ok, "window, padding, head rows and keys as backend.h states");
  for (int i = 0; i < B * k_pad; ++i) picks[i] = 900 + i;
  const std::vector<int32_t> z0 = z;
  CHECK(loop_end_step_host(lt, B, L, k_pad), "loop_end_step");
  ok = state[kLoopCursor] == 1;
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < L; ++j) {
      const bool written = j >= 5 && j < 8 && j != 6;  // target 5, k 3, slot 6 fixed
      ok &= z[b * L + j] == (written ? 900 + b * k_pad + (j - 5) : z0[b * L + j]);
    }
  CHECK(ok, "picks written to the target slots except fixed ones; cursor advanced");
  state[kLoopCursor] = 1;  // past the one-row table
  CHECK(!loop_begin_step_host(lt, B, L, n_pad, k_pad), "cursor outside the table is an error");
  state[kLoopCursor] = 0;
  CHECK(!loop_begin_step_host(lt, B, L, 4, k_pad), "a step wider than n_pad is an error");
}

}  // namespace

// The three variants on one CPU backend: host loop, KV loop, KV loop recorded; false if a
// model could not be created.
static bool make_variants(Backend* cpu, const ModelConfig& cfg, Variant (&vs)[3]) {
  vs[0].be.reset(new test::RecordingBackend(cpu, false, false));
  vs[1].be.reset(new test::RecordingBackend(cpu, true, false));
  vs[2].be.reset(new test::RecordingBackend(cpu, true, true));
  for (auto& v : vs) {
    Status s = Model::create(cfg, test::random_weights(cfg, 7), v.be.get(), v.model);
    CHECK(s, "Model::create (%s): %s", v.name, s.message.c_str());
    if (!s) return false;
  }
  return true;
}

int main() {
  const ModelConfig cfg = test::tiny_config();
  std::unique_ptr<Backend> cpu = create_cpu_backend(0);
  Variant vs[3] = {{"host loop", nullptr, nullptr}, {"kv loop", nullptr, nullptr}, {"kv loop recorded", nullptr, nullptr}};
  if (!make_variants(cpu.get(), cfg, vs)) return 1;
  test_loop_ops();
  test_generations(vs);
  test_cancel(vs[2]);
  test_plan_validation(vs[1]);
  // BF16 math where this CPU has it: its BF16 K/V cache through the loop's batched rope and
  // attention, against the host loop on the same backend.
  if (!cpu_bf16_math_error()) {
    std::unique_ptr<Backend> cpu16 = create_cpu_backend(0, DType::f32, true, false, /*bf16_math=*/true);
    CHECK(cpu16->kv_dtype() == DType::bf16, "BF16 math: the K/V cache is BF16");
    Variant ws[3] = {{"host loop, BF16 math", nullptr, nullptr}, {"kv loop, BF16 math", nullptr, nullptr},
                     {"kv loop recorded, BF16 math", nullptr, nullptr}};
    if (!make_variants(cpu16.get(), cfg, ws)) return 1;
    std::printf("-- BF16 math (BF16 K/V cache)\n");
    test_generations(ws);
  } else {
    std::printf("skip BF16 math: %s\n", cpu_bf16_math_error());
  }
  std::printf("kv_loop_test: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
