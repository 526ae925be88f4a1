// generate_full.cpp — Eso-LM (A) and planned-order MDLM generation (see generate_full.h).
//
// Draw keys are (sequence, original position, 0), as in the Eso-LM (B) loop, so a
// sequence's tokens do not depend on the batch size, and the same plan and seed give the
// same order and step sizes as method esolm.
#include "engine/generate_full.h"

#include <chrono>

namespace esolm {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
bool cancelled(const std::atomic<bool>* c) { return c && c->load(); }

Status make_plan(const GenerateRequest& req, double alpha0, Plan& plan) {
  EsoPlanOptions po;
  po.length = req.length;
  po.batch = req.batch;
  po.steps = req.steps;
  po.alpha0 = alpha0;
  po.seed = req.sample.seed;
  po.given = req.given_positions;
  po.block_len = req.block_len;
  po.block_shuffle = req.block_shuffle;
  po.step_sizes = req.step_sizes;
  po.order = req.order;
  return plan_esolm(po, plan);
}

// One step's event: slots [u, u + k) of each sequence were revealed as picks[b * k + r].
StepEvent make_event(const Plan& plan, int B, int i, int u, int k, const char* phase,
                     const std::vector<int32_t>& picks, int nfe) {
  StepEvent ev;
  ev.step = i;
  ev.n_steps = int(plan.step_sizes.size());
  ev.phase = phase;
  ev.per_sequence = k;
  ev.nfe = nfe;
  ev.positions.resize(size_t(B) * k);
  ev.tokens.assign(picks.begin(), picks.begin() + size_t(B) * k);
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < k; ++r) ev.positions[size_t(b) * k + r] = plan.order[b][u + r];
  return ev;
}

}  // namespace

Status run_esolm_a(Model& model, const GenerateRequest& req, KVCache& cache,
                   const std::function<void(const StepEvent&)>& on_step,
                   const std::atomic<bool>* cancel, GenerateResult& out) {
  const ModelConfig& cfg = model.config();
  const int B = req.batch, L = req.length, G = int(req.given_positions.size());
  auto t_plan = Clock::now();
  Plan plan;
  ESOLM_TRY(make_plan(req, req.alpha0, plan));
  out.timings.plan_ms = ms_since(t_plan);
  out.n_diffusion = plan.n_diffusion;
  const int n_steps = int(plan.step_sizes.size());
  const int seq0 = G + plan.n_diffusion;  // first slot of the sequential phase

  // z[b][slot]: tokens in slot order; given tokens fill the first G slots.
  std::vector<int32_t> z(size_t(B) * L, cfg.mask_index);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < G; ++j) z[size_t(b) * L + j] = req.given_tokens[size_t(b) * G + j];
  SampleParams sp = req.sample;
  sp.mask_index = cfg.mask_index;

  std::vector<int32_t> tok, pos, picks, rows;
  std::vector<DrawKey> keys;
  int u = G, i = 0;
  // Diffusion: step i feeds slots [0, u + k) (slots after them are masks that no fed row
  // can see under mixed2, so leaving them out is exact) and samples rows [u, u + k).
  for (; u < seq0; ++i) {
    if (cancelled(cancel)) return Status::error(Code::aborted, "generation aborted");
    const int k = plan.step_sizes[i], n = u + k;
    tok.resize(size_t(B) * n);
    pos.resize(size_t(B) * n);
    rows.resize(size_t(B) * k);
    keys.resize(size_t(B) * k);
    picks.assign(size_t(B) * k, -1);
    for (int b = 0; b < B; ++b) {
      for (int j = 0; j < n; ++j) {
        tok[size_t(b) * n + j] = z[size_t(b) * L + j];
        pos[size_t(b) * n + j] = plan.order[b][j];
      }
      for (int r = 0; r < k; ++r) {
        rows[size_t(b) * k + r] = b * n + u + r;
        keys[size_t(b) * k + r] = DrawKey{uint32_t(b), uint32_t(plan.order[b][u + r]), 0};
      }
    }
    auto t_fwd = Clock::now();
    ESOLM_TRY(model.forward_keep(tok.data(), pos.data(), B, n, AttnMode::mixed2));
    ESOLM_TRY(model.sample_kept(rows, sp, keys.data(), picks.data()));
    const double ms = ms_since(t_fwd);
    out.timings.forward_ms += ms;
    out.timings.diffusion_ms += ms;
    ++out.nfe;
    for (int b = 0; b < B; ++b)
      for (int r = 0; r < k; ++r) z[size_t(b) * L + u + r] = picks[size_t(b) * k + r];
    if (on_step) on_step(make_event(plan, B, i, u, k, "diffusion", picks, out.nfe));
    u += k;
  }

  // Sequential: encode the clean prefix [0, seq0) once (bidirectional), then feed
  // [previous token | mask] per step, committing the previous token.
  if (u < L) {
    if (cancelled(cancel)) return Status::error(Code::aborted, "generation aborted");
    cache.committed = 0;
    auto t_fwd = Clock::now();
    if (seq0 > 0) {
      tok.resize(size_t(B) * seq0);
      pos.resize(size_t(B) * seq0);
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < seq0; ++j) {
          tok[size_t(b) * seq0 + j] = z[size_t(b) * L + j];
          pos[size_t(b) * seq0 + j] = plan.order[b][j];
        }
      ESOLM_TRY(model.prefill(cache, tok.data(), pos.data(), seq0));
    }
    out.timings.forward_ms += ms_since(t_fwd);
    out.timings.sequential_ms += ms_since(t_fwd);
  }
  for (; u < L; ++u, ++i) {
    if (cancelled(cancel)) return Status::error(Code::aborted, "generation aborted");
    const int p = u > seq0 ? 1 : 0, n = p + 1;
    tok.resize(size_t(B) * n);
    pos.resize(size_t(B) * n);
    keys.resize(B);
    picks.assign(B, -1);
    for (int b = 0; b < B; ++b) {
      for (int r = 0; r < n; ++r) {
        tok[size_t(b) * n + r] = z[size_t(b) * L + u - p + r];
        pos[size_t(b) * n + r] = plan.order[b][u - p + r];
      }
      keys[b] = DrawKey{uint32_t(b), uint32_t(plan.order[b][u]), 0};
    }
    auto t_fwd = Clock::now();
    ESOLM_TRY(model.step_sample(cache, tok.data(), pos.data(), n, p, p, sp, keys.data(), picks.data()));
    const double ms = ms_since(t_fwd);
    out.timings.forward_ms += ms;
    out.timings.sequential_ms += ms;
    ++out.nfe;
    for (int b = 0; b < B; ++b) z[size_t(b) * L + u] = picks[b];
    if (on_step) on_step(make_event(plan, B, i, u, 1, "sequential", picks, out.nfe));
  }
  out.steps = n_steps;
  out.tokens.assign(size_t(B) * L, 0);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < L; ++j) out.tokens[size_t(b) * L + plan.order[b][j]] = z[size_t(b) * L + j];
  return Status::ok();
}

Status run_mdlm_planned(Model& model, const GenerateRequest& req,
                        const std::function<void(const StepEvent&)>& on_step,
                        const std::atomic<bool>* cancel, GenerateResult& out) {
  const ModelConfig& cfg = model.config();
  const int B = req.batch, L = req.length, G = int(req.given_positions.size());
  auto t_plan = Clock::now();
  Plan plan;
  ESOLM_TRY(make_plan(req, 1.0, plan));  // MDLM reveals everything by diffusion
  out.timings.plan_ms = ms_since(t_plan);
  const int n_steps = int(plan.step_sizes.size());

  std::vector<int32_t> x(size_t(B) * L, cfg.mask_index), pos(size_t(B) * L);
  for (int b = 0; b < B; ++b) {
    for (int j = 0; j < L; ++j) pos[size_t(b) * L + j] = j;
    for (int g = 0; g < G; ++g) x[size_t(b) * L + req.given_positions[g]] = req.given_tokens[size_t(b) * G + g];
  }
  SampleParams sp = req.sample;
  sp.mask_index = cfg.mask_index;
  std::vector<int32_t> rows, picks;
  std::vector<DrawKey> keys;
  int u = G;
  for (int i = 0; i < n_steps; ++i) {
    if (cancelled(cancel)) return Status::error(Code::aborted, "generation aborted");
    const int k = plan.step_sizes[i];
    rows.resize(size_t(B) * k);
    keys.resize(size_t(B) * k);
    picks.assign(size_t(B) * k, -1);
    for (int b = 0; b < B; ++b)
      for (int r = 0; r < k; ++r) {
        const int32_t q = plan.order[b][u + r];
        rows[size_t(b) * k + r] = b * L + q;
        keys[size_t(b) * k + r] = DrawKey{uint32_t(b), uint32_t(q), 0};
      }
    auto t_fwd = Clock::now();
    ESOLM_TRY(model.forward_keep(x.data(), pos.data(), B, L, AttnMode::bidirectional));
    ESOLM_TRY(model.sample_kept(rows, sp, keys.data(), picks.data()));
    out.timings.forward_ms += ms_since(t_fwd);
    ++out.nfe;
    for (int b = 0; b < B; ++b)
      for (int r = 0; r < k; ++r) x[size_t(b) * L + plan.order[b][u + r]] = picks[size_t(b) * k + r];
    if (on_step) on_step(make_event(plan, B, i, u, k, "mdlm", picks, out.nfe));
    u += k;
  }
  out.steps = n_steps;
  out.tokens = x;
  return Status::ok();
}

}  // namespace esolm
