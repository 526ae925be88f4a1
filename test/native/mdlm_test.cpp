// mdlm_test.cpp — the MDLM loop of engine/generate against a plain reference loop.
//
// The reference recomputes full logits with Model::forward whenever a token changed and
// updates every masked position with sample_row_mdlm (sampler.h), the function whose
// distribution sampler_test checks. generate() splits that function (stay-masked draw on
// the host, token from the backend sampler for revealed rows only); tokens, NFE and events
// must come out identical.
#include <cstdio>
#include <memory>
#include <vector>

#include "check.h"
#include "engine/generate.h"
#include "tiny_model.h"

using namespace esolm;

namespace {

struct Trace {
  std::vector<int32_t> tokens;
  int nfe = 0;
  std::vector<std::vector<int32_t>> revealed;  // per step: (b, position, token) triples
};

Trace reference_mdlm(Model& model, const GenerateRequest& req) {
  const ModelConfig& cfg = model.config();
  const int B = req.batch, L = req.length, V = cfg.vocab_size, G = int(req.given_positions.size());
  MdlmPlan plan;
  plan_mdlm(req.steps, plan);
  Trace tr;
  std::vector<int32_t> x(size_t(B) * L, cfg.mask_index), pos(size_t(B) * L);
  for (int b = 0; b < B; ++b) {
    for (int j = 0; j < L; ++j) pos[size_t(b) * L + j] = j;
    for (int g = 0; g < G; ++g) x[size_t(b) * L + req.given_positions[g]] = req.given_tokens[size_t(b) * G + g];
  }
  SampleParams sp = req.sample;
  sp.mask_index = cfg.mask_index;
  std::vector<float> logits(size_t(B) * L * V);
  bool fresh = false;
  for (int i = 0; i < req.steps; ++i) {
    bool any = false;
    for (int32_t t : x) any |= t == cfg.mask_index;
    if (!any) break;
    if (!fresh) {
      Status s = model.forward(x.data(), pos.data(), B, L, AttnMode::bidirectional, nullptr, logits.data());
      CHECK(s, "reference forward: %s", s.message.c_str());
      ++tr.nfe;
      fresh = true;
    }
    std::vector<int32_t> step;
    std::vector<int32_t> next = x;
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < L; ++j) {
        if (x[size_t(b) * L + j] != cfg.mask_index) continue;
        const int32_t t = sample_row_mdlm(&logits[(size_t(b) * L + j) * V], V, sp, plan.r[i],
                                          DrawKey{uint32_t(b), uint32_t(j), uint32_t(i + 1)});
        if (t == cfg.mask_index) continue;
        next[size_t(b) * L + j] = t;
        step.insert(step.end(), {b, j, t});
      }
    if (!step.empty()) fresh = false;
    x = next;
    tr.revealed.push_back(step);
  }
  tr.tokens = x;
  return tr;
}

void compare(Model& model, const GenerateRequest& req, const char* name) {
  Trace ref = reference_mdlm(model, req);
  Trace got;
  GenerateResult res;
  Status s = generate(model, req, nullptr,
                      [&](const StepEvent& ev) {
                        std::vector<int32_t> step;
                        const int B = req.batch;
                        for (int b = 0; b < B; ++b)
                          for (int q = 0; q < ev.per_sequence; ++q)
                            if (ev.positions[size_t(b) * ev.per_sequence + q] >= 0)
                              step.insert(step.end(), {b, ev.positions[size_t(b) * ev.per_sequence + q],
                                                       ev.tokens[size_t(b) * ev.per_sequence + q]});
                        // The reference lists reveals in (b, position) order, as the events do.
                        got.revealed.push_back(step);
                      },
                      nullptr, res);
  CHECK(s, "%s: %s", name, s.message.c_str());
  CHECK(res.tokens == ref.tokens, "%s: tokens differ from the sample_row_mdlm reference", name);
  CHECK(res.nfe == ref.nfe, "%s: nfe %d vs reference %d", name, res.nfe, ref.nfe);
  CHECK(got.revealed == ref.revealed, "%s: step events differ from the reference", name);
  std::printf("%-36s nfe %3d steps %3d\n", name, res.nfe, res.steps);
}

}  // namespace

int main() {
  const ModelConfig cfg = test::tiny_config();
  std::unique_ptr<Backend> cpu = create_cpu_backend(0);
  std::unique_ptr<Model> model;
  Status s = Model::create(cfg, test::random_weights(cfg, 7), cpu.get(), model);
  CHECK(s, "Model::create: %s", s.message.c_str());
  if (!s) return 1;
  for (int B : {1, 3})
    for (int T : {4, 64, 300}) {
      GenerateRequest req;
      req.method = Method::mdlm;
      req.batch = B;
      req.length = 48;
      req.steps = T;
      req.sample.top_p = 0.9;
      req.sample.temperature = 0.8;
      req.sample.seed = 17 + T;
      char name[64];
      std::snprintf(name, sizeof name, "mdlm B=%d T=%d", B, T);
      compare(*model, req, name);
    }
  GenerateRequest req;
  req.method = Method::mdlm;
  req.batch = 2;
  req.length = 40;
  req.steps = 20;
  req.sample.greedy = true;
  req.given_positions = {0, 1, 25};
  req.given_tokens = {4, 5, 6, 7, 8, 9};
  compare(*model, req, "mdlm greedy, prompt + infill");
  std::printf("mdlm_test: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
