// generate.cpp — the three generation loops (see generate.h).
//
// Eso-LM (B) (MODEL-REFERENCE.md §2.5): step i feeds the window
// [p tokens revealed last step | k mask tokens] right after the committed slots; only the
// p tokens are committed; logits only for the k mask rows.
// MDLM (§4.1): one bidirectional forward per NFE, reused while nothing changes; each masked
// position is updated as sample_row_mdlm (sampler.h) would, in its two halves: the
// stay-masked draw on the host, then the token from the backend's sampler for the revealed
// rows only, so the head runs for those rows alone and no logits leave the backend
// (test/native/mdlm_test.cpp checks this equals sample_row_mdlm over full logits).
// AR: one token per step through the KV cache.
// Eso-LM and AR sample on the backend: logits stay on the device, and forward_ms includes
// the head and the sampling. On a backend with the planned KV loop (kv_loop.h) the steps
// run from tables in backend memory with no host round trip; otherwise each step is a
// step_sample() call.
// Seed groups (generate.h): draws are keyed by the row's index within its group and sampled
// with the group's seed, one sample_rows call per group, so a row gets what it would get
// in a generation of its group alone.
#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "engine/generate_full.h"
#include "engine/kv_loop.h"
#include "engine/parallel.h"
#include "engine/philox.h"

namespace esolm {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

bool cancelled(const std::atomic<bool>* c) { return c && c->load(); }

// The request's seed groups: the given ones, or one group over the whole batch.
std::vector<SeedGroup> groups_of(const GenerateRequest& r) {
  if (!r.seed_groups.empty()) return r.seed_groups;
  return {SeedGroup{r.sample.seed, r.sample.seed, r.batch}};
}

// Per row: its sequence index within its group (the DrawKey sequence) and its group.
struct RowGroups {
  std::vector<uint32_t> seq;
  std::vector<int> group;
  explicit RowGroups(const std::vector<SeedGroup>& groups) {
    for (size_t g = 0; g < groups.size(); ++g)
      for (int r = 0; r < groups[g].rows; ++r) {
        seq.push_back(uint32_t(r));
        group.push_back(int(g));
      }
  }
};

// Seed runs over rows that hold `per_row` sampled rows per sequence; empty for one group
// (then SampleParams::seed is the group's seed).
std::vector<SeedRun> seed_runs(const std::vector<SeedGroup>& groups, int64_t per_row) {
  std::vector<SeedRun> runs;
  if (groups.size() > 1)
    for (const SeedGroup& g : groups) runs.push_back(SeedRun{g.seed, int64_t(g.rows) * per_row});
  return runs;
}

Status check_request(const Model& model, const GenerateRequest& r) {
  const ModelConfig& cfg = model.config();
  if (r.batch < 1) return Status::error(Code::invalid_arg, "batch must be >= 1");
  if (r.length < 1 || r.length > cfg.length)
    return Status::error(Code::invalid_arg, "length must be in [1, " + std::to_string(cfg.length) +
                                                "] (the model context length)");
  if (r.method != Method::ar && cfg.mask_index < 0)
    return Status::error(Code::invalid_arg, "this model has no mask token; only AR sampling works");
  const size_t g = r.given_positions.size();
  if (r.given_tokens.size() != g * size_t(r.batch))
    return Status::error(Code::invalid_arg, "given tokens must hold batch * given positions entries");
  for (size_t i = 0; i < g; ++i) {
    if (r.given_positions[i] < 0 || r.given_positions[i] >= r.length)
      return Status::error(Code::invalid_arg, "a fixed position is outside [0, length)");
    if (i && r.given_positions[i] <= r.given_positions[i - 1])
      return Status::error(Code::invalid_arg, "fixed positions must be sorted and unique");
  }
  for (int32_t t : r.given_tokens)
    if (t < 0 || t >= cfg.vocab_size || t == cfg.mask_index)
      return Status::error(Code::invalid_arg, "a given token id is out of range or the mask token");
  if (!(r.sample.top_p > 0.0 && r.sample.top_p <= 1.0))
    return Status::error(Code::invalid_arg, "topP must be in (0, 1]");
  if (!(r.sample.temperature > 0.0) || !std::isfinite(r.sample.temperature))
    return Status::error(Code::invalid_arg, "temperature must be a positive number");
  if (!r.seed_groups.empty()) {
    int64_t rows = 0;
    for (const SeedGroup& g : r.seed_groups) {
      if (g.rows < 1) return Status::error(Code::invalid_arg, "every seed group must have rows >= 1");
      rows += g.rows;
    }
    if (rows != r.batch)
      return Status::error(Code::invalid_arg, "the seed groups' rows must sum to batch (" + std::to_string(r.batch) +
                                                  "), got " + std::to_string(rows));
    // The full-forward samplers (generate_full.cpp) draw everything from sample.seed: one
    // group of that seed is the same request, anything else they cannot honour.
    const bool full = r.method == Method::esolm_a || (r.method == Method::mdlm && mdlm_is_planned(r));
    if (full && (r.seed_groups.size() > 1 || r.seed_groups[0].seed != r.sample.seed ||
                 r.seed_groups[0].plan_seed != r.sample.seed))
      return Status::error(Code::invalid_arg,
                           "esolm-a and planned-order mdlm take one seed (no seed groups of other seeds)");
  }
  return Status::ok();
}

Status prepare_cache(Model& model, const GenerateRequest& req, KVCache* given,
                     std::unique_ptr<KVCache>& owned, KVCache*& cache) {
  if (given) {
    if (given->k.empty()) return Status::error(Code::disposed, "the cache has been disposed");
    if (given->batch != req.batch || given->capacity < req.length)
      return Status::error(Code::invalid_arg, "the cache must have batch " + std::to_string(req.batch) +
                                                  " and capacity >= " + std::to_string(req.length));
    given->committed = 0;
    cache = given;
    return Status::ok();
  }
  ESOLM_TRY(model.create_cache(req.batch, req.length, owned));
  cache = owned.get();
  return Status::ok();
}

// ---- Eso-LM (B) ----------------------------------------------------------------------
Status run_esolm(Model& model, const GenerateRequest& req, KVCache& cache,
                 const std::function<void(const StepEvent&)>& on_step,
                 const std::atomic<bool>* cancel, GenerateResult& out) {
  const ModelConfig& cfg = model.config();
  const int B = req.batch, L = req.length, G = int(req.given_positions.size());
  auto t_plan = Clock::now();
  // One plan per seed group (its orders from its seed), joined; the step sizes must agree.
  const std::vector<SeedGroup> groups = groups_of(req);
  const RowGroups rg(groups);
  Plan plan;
  for (size_t gi = 0, row0 = 0; gi < groups.size(); row0 += size_t(groups[gi].rows), ++gi) {
    const SeedGroup& g = groups[gi];
    EsoPlanOptions po;
    po.length = L;
    po.batch = g.rows;
    po.steps = req.steps;
    po.alpha0 = req.alpha0;
    po.seed = g.seed;
    po.plan_seed = g.plan_seed;
    po.given = req.given_positions;
    po.block_len = req.block_len;
    po.block_shuffle = req.block_shuffle;
    po.step_sizes = req.step_sizes;
    if (req.order.size() == size_t(B) && B > 1)
      po.order.assign(req.order.begin() + row0, req.order.begin() + row0 + g.rows);
    else
      po.order = req.order;
    Plan gp;
    ESOLM_TRY(plan_esolm(po, gp));
    if (gi == 0) {
      plan = std::move(gp);
    } else if (gp.step_sizes != plan.step_sizes || gp.n_diffusion != plan.n_diffusion) {
      return Status::error(Code::invalid_arg,
                           "seed group " + std::to_string(gi) + " (plan seed " + std::to_string(g.plan_seed) +
                               ") plans other step sizes than group 0 (plan seed " +
                               std::to_string(groups[0].plan_seed) + "); the groups of one batch must share them");
    } else {
      for (auto& o : gp.order) plan.order.push_back(std::move(o));
    }
  }
  out.timings.plan_ms = ms_since(t_plan);
  out.n_diffusion = plan.n_diffusion;

  // z[b][slot]: tokens in slot order; given tokens fill the first G slots.
  std::vector<int32_t> z(size_t(B) * L, cfg.mask_index);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < G; ++j) z[size_t(b) * L + j] = req.given_tokens[size_t(b) * G + j];

  SampleParams sp = req.sample;
  sp.mask_index = cfg.mask_index;
  sp.seed = groups[0].seed;
  const int n_steps = int(plan.step_sizes.size());
  // Step i reveals slots [u[i], u[i] + k) and feeds the window [u[i] - p, u[i] + k): the p
  // slots revealed by the step before (committed now) and the k mask slots.
  std::vector<int> u_at(n_steps), p_at(n_steps);
  std::vector<char> diffusion_at(n_steps);
  {
    int u = G, p = G, diffusion_left = plan.n_diffusion;
    for (int i = 0; i < n_steps; ++i) {
      u_at[i] = u;
      p_at[i] = p;
      diffusion_at[i] = diffusion_left > 0;
      if (diffusion_left > 0) diffusion_left -= plan.step_sizes[i];
      u += plan.step_sizes[i];
      p = plan.step_sizes[i];
    }
  }
  // Picks of step i (row b * stride + r) go into z and out to the caller.
  auto finish_step = [&](int i, const int32_t* picks, int stride, double ms) {
    const int k = plan.step_sizes[i], u = u_at[i];
    out.timings.forward_ms += ms;
    (diffusion_at[i] ? out.timings.diffusion_ms : out.timings.sequential_ms) += ms;
    ++out.nfe;
    StepEvent ev;
    ev.step = i;
    ev.n_steps = n_steps;
    ev.per_sequence = k;
    ev.phase = diffusion_at[i] ? "diffusion" : "sequential";
    ev.positions.resize(size_t(B) * k);
    ev.tokens.resize(size_t(B) * k);
    for (int b = 0; b < B; ++b)
      for (int r = 0; r < k; ++r) {
        const int32_t t = picks[size_t(b) * stride + r];
        z[size_t(b) * L + u + r] = t;
        ev.positions[size_t(b) * k + r] = plan.order[b][u + r];
        ev.tokens[size_t(b) * k + r] = t;
      }
    ev.nfe = out.nfe;
    if (on_step) on_step(ev);
  };

  // The planned loop samples every row with one seed on the backend, so several seed
  // groups take the host loop (one sample_rows call per group).
  if (model.backend()->supports_kv_loop() && groups.size() == 1) {
    KvLoopPlan lp;
    lp.batch = B;
    lp.length = L;
    lp.z = z;
    lp.fixed.assign(L, 0);
    std::fill(lp.fixed.begin(), lp.fixed.begin() + G, 1);
    lp.order.resize(size_t(B) * L);
    for (int b = 0; b < B; ++b) std::copy(plan.order[b].begin(), plan.order[b].end(), lp.order.begin() + size_t(b) * L);
    for (int i = 0; i < n_steps; ++i) {
      KvLoopStep st;
      st.slot0 = u_at[i] - p_at[i];
      st.n = p_at[i] + plan.step_sizes[i];
      st.head0 = p_at[i];
      st.k = plan.step_sizes[i];
      st.target = u_at[i];
      st.commit = p_at[i];
      st.phase = diffusion_at[i] ? 0 : 1;
      lp.steps.push_back(st);
    }
    std::vector<int32_t> z_final;
    ESOLM_TRY(run_kv_loop(model, cache, lp, sp, finish_step, cancel, z_final, &out.replayed_steps));
    if (z_final != z) return Status::error(Code::internal, "kv loop: the tokens on the backend differ from the streamed picks");
  } else {
    std::vector<int32_t> win_tok, win_pos, picks;
    std::vector<DrawKey> keys;
    for (int i = 0; i < n_steps; ++i) {
      if (cancelled(cancel)) return Status::error(Code::aborted, "generation aborted");
      const int k = plan.step_sizes[i], u = u_at[i], p = p_at[i], n = p + k;
      win_tok.resize(size_t(B) * n);
      win_pos.resize(size_t(B) * n);
      for (int b = 0; b < B; ++b)
        for (int r = 0; r < n; ++r) {
          const int slot = u - p + r;
          win_tok[size_t(b) * n + r] = z[size_t(b) * L + slot];
          win_pos[size_t(b) * n + r] = plan.order[b][slot];
        }
      keys.resize(size_t(B) * k);
      picks.resize(size_t(B) * k);
      for (int b = 0; b < B; ++b)
        for (int r = 0; r < k; ++r) keys[size_t(b) * k + r] = DrawKey{rg.seq[b], uint32_t(plan.order[b][u + r]), 0};
      // Forward, head for the k mask rows only, and sampling on the backend.
      auto t_fwd = Clock::now();
      ESOLM_TRY(model.step_sample(cache, win_tok.data(), win_pos.data(), n, p, p, sp, keys.data(), picks.data(),
                                  seed_runs(groups, k)));
      finish_step(i, picks.data(), k, ms_since(t_fwd));
    }
  }
  out.steps = n_steps;
  out.tokens.assign(size_t(B) * L, 0);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < L; ++j) out.tokens[size_t(b) * L + plan.order[b][j]] = z[size_t(b) * L + j];
  return Status::ok();
}

// ---- MDLM ----------------------------------------------------------------------------
Status run_mdlm(Model& model, const GenerateRequest& req,
                const std::function<void(const StepEvent&)>& on_step,
                const std::atomic<bool>* cancel, GenerateResult& out) {
  const ModelConfig& cfg = model.config();
  const int B = req.batch, L = req.length, G = int(req.given_positions.size());
  if (req.steps < 1) return Status::error(Code::invalid_arg, "steps must be >= 1");
  MdlmPlan mp;
  ESOLM_TRY(plan_mdlm(req.steps, mp));
  std::vector<int32_t> x(size_t(B) * L, cfg.mask_index), pos(size_t(B) * L);
  for (int b = 0; b < B; ++b) {
    for (int j = 0; j < L; ++j) pos[size_t(b) * L + j] = j;
    for (int g = 0; g < G; ++g) x[size_t(b) * L + req.given_positions[g]] = req.given_tokens[size_t(b) * G + g];
  }
  SampleParams sp = req.sample;
  sp.mask_index = cfg.mask_index;
  const std::vector<SeedGroup> groups = groups_of(req);
  const RowGroups rg(groups);
  sp.seed = groups[0].seed;
  std::vector<SeedRun> runs;  // per step: the revealed rows of each group (several groups only)
  // sample_row_mdlm (sampler.h) split in two: the stay-masked draw here on the host, the
  // token on the backend for the revealed rows only (sample_kept), so no logits leave it.
  bool have_output = false;  // the kept network output matches x
  std::vector<std::pair<int, int>> reveal;  // (b, position) revealed this step
  std::vector<int32_t> rows, picks;
  std::vector<DrawKey> keys;
  int i = 0;
  for (; i < req.steps; ++i) {
    bool any_mask = false;
    for (int32_t t : x) any_mask |= (t == cfg.mask_index);
    if (!any_mask) break;
    if (cancelled(cancel)) return Status::error(Code::aborted, "generation aborted");
    if (!have_output) {
      auto t_fwd = Clock::now();
      ESOLM_TRY(model.forward_keep(x.data(), pos.data(), B, L, AttnMode::bidirectional));
      out.timings.forward_ms += ms_since(t_fwd);
      ++out.nfe;
      have_output = true;
    }
    auto t_s = Clock::now();
    const double r = mp.r[i];
    reveal.clear();
    runs.clear();
    for (int b = 0; b < B; ++b) {
      const SeedGroup& g = groups[rg.group[b]];
      if (groups.size() > 1 && (b == 0 || rg.group[b] != rg.group[b - 1])) runs.push_back(SeedRun{g.seed, 0});
      for (int j = 0; j < L; ++j)
        if (x[size_t(b) * L + j] == cfg.mask_index &&
            !mdlm_stays_masked(g.seed, DrawKey{rg.seq[b], uint32_t(j), uint32_t(i + 1)}, r)) {
          reveal.emplace_back(b, j);  // round: the step (0 = token draws)
          if (!runs.empty()) ++runs.back().rows;
        }
    }
    rows.resize(reveal.size());
    keys.resize(reveal.size());
    picks.assign(reveal.size(), -1);
    for (size_t m = 0; m < reveal.size(); ++m) {
      rows[m] = reveal[m].first * L + reveal[m].second;
      keys[m] = DrawKey{rg.seq[reveal[m].first], uint32_t(reveal[m].second), 0};
    }
    ESOLM_TRY(model.sample_kept(rows, sp, keys.data(), picks.data(), runs));
    StepEvent ev;
    ev.step = i;
    ev.n_steps = req.steps;
    ev.phase = "mdlm";
    bool changed = false;
    std::vector<std::vector<std::pair<int32_t, int32_t>>> per(B);
    for (size_t m = 0; m < reveal.size(); ++m)
      if (picks[m] >= 0) {  // -1: no token can be revealed, so it stays masked
        x[size_t(reveal[m].first) * L + reveal[m].second] = picks[m];
        per[reveal[m].first].emplace_back(reveal[m].second, picks[m]);
        changed = true;
      }
    out.timings.sample_ms += ms_since(t_s);
    if (changed) have_output = false;  // p(x0) cache: reuse the output while nothing changed
    // Event: per_sequence = max revealed in any sequence; shorter lists padded with -1.
    size_t width = 0;
    for (auto& v : per) width = std::max(width, v.size());
    ev.per_sequence = int(width);
    ev.positions.assign(size_t(B) * width, -1);
    ev.tokens.assign(size_t(B) * width, -1);
    for (int b = 0; b < B; ++b)
      for (size_t q = 0; q < per[b].size(); ++q) {
        ev.positions[size_t(b) * width + q] = per[b][q].first;
        ev.tokens[size_t(b) * width + q] = per[b][q].second;
      }
    ev.nfe = out.nfe;
    if (on_step) on_step(ev);
  }
  out.steps = i;
  out.tokens = x;
  return Status::ok();
}

// ---- AR ------------------------------------------------------------------------------
Status run_ar(Model& model, const GenerateRequest& req, KVCache& cache,
              const std::function<void(const StepEvent&)>& on_step,
              const std::atomic<bool>* cancel, GenerateResult& out, bool host_loop = false) {
  const ModelConfig& cfg = model.config();
  const int B = req.batch, L = req.length, V = cfg.vocab_size, G = int(req.given_positions.size());
  // fixed[j] = index into given (or -1): given tokens are forced when their position comes.
  std::vector<int> fixed(L, -1);
  for (int g = 0; g < G; ++g) fixed[req.given_positions[g]] = g;
  std::vector<int32_t> x(size_t(B) * L, 0);
  // The prefix fed in the first step: the given tokens at 0..P-1, or the BOS token.
  int P = 0;
  while (P < L && fixed[P] >= 0) ++P;
  if (P == 0) {
    if (req.bos < 0 || req.bos >= V)
      return Status::error(Code::invalid_arg, "AR generation needs a prompt (a token at position 0) or a bos token");
    for (int b = 0; b < B; ++b) x[size_t(b) * L] = req.bos;
    P = 1;
  } else {
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < P; ++j) x[size_t(b) * L + j] = req.given_tokens[size_t(b) * G + fixed[j]];
  }
  SampleParams sp = req.sample;
  sp.mask_index = cfg.mask_index;
  const std::vector<SeedGroup> groups = groups_of(req);
  const RowGroups rg(groups);
  sp.seed = groups[0].seed;
  const int n_steps = L - P;
  // Step s predicts position j = P + s from its last window row; the window is what the
  // cache lacks: the prefix [0, P) at step 0, then the token at j - 1.
  auto finish_step = [&](int step, const int32_t* picks, int stride, double ms) {
    const int j = P + step;
    out.timings.forward_ms += ms;
    ++out.nfe;
    StepEvent ev;
    ev.step = step;
    ev.n_steps = n_steps;
    ev.phase = "ar";
    ev.per_sequence = 1;
    ev.positions.assign(B, j);
    ev.tokens.resize(B);
    for (int b = 0; b < B; ++b) {
      const int32_t tok = fixed[j] >= 0 ? req.given_tokens[size_t(b) * G + fixed[j]] : picks[size_t(b) * stride];
      x[size_t(b) * L + j] = tok;
      ev.tokens[b] = tok;
    }
    ev.nfe = out.nfe;
    if (on_step) on_step(ev);
  };

  // Several seed groups take the host loop (see run_esolm).
  if (model.backend()->supports_kv_loop() && n_steps > 0 && !host_loop && groups.size() == 1) {
    KvLoopPlan lp;
    lp.batch = B;
    lp.length = L;
    lp.z = x;
    for (int b = 0; b < B; ++b)
      for (int j = P; j < L; ++j)
        if (fixed[j] >= 0) lp.z[size_t(b) * L + j] = req.given_tokens[size_t(b) * G + fixed[j]];
    lp.fixed.resize(L);
    for (int j = 0; j < L; ++j) lp.fixed[j] = j < P || fixed[j] >= 0;
    lp.order.resize(size_t(B) * L);
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < L; ++j) lp.order[size_t(b) * L + j] = j;
    for (int j = P, fed = 0; j < L; fed = j, ++j) {
      KvLoopStep st;
      st.slot0 = fed;
      st.n = j - fed;
      st.head0 = st.n - 1;
      st.k = 1;
      st.target = j;
      st.commit = st.n;
      lp.steps.push_back(st);
    }
    std::vector<int32_t> z_final;
    ESOLM_TRY(run_kv_loop(model, cache, lp, sp, finish_step, cancel, z_final, &out.replayed_steps));
    if (z_final != x) return Status::error(Code::internal, "kv loop: the tokens on the backend differ from the streamed picks");
  } else {
    std::vector<int32_t> win_tok, win_pos;
    std::vector<int32_t> picks(B);
    std::vector<DrawKey> keys(B);
    for (int j = P, fed = 0; j < L; fed = j, ++j) {
      if (cancelled(cancel)) return Status::error(Code::aborted, "generation aborted");
      const int n = j - fed;  // feed positions [fed, j)
      win_tok.resize(size_t(B) * n);
      win_pos.resize(size_t(B) * n);
      for (int b = 0; b < B; ++b)
        for (int r = 0; r < n; ++r) {
          win_tok[size_t(b) * n + r] = x[size_t(b) * L + fed + r];
          win_pos[size_t(b) * n + r] = fed + r;
        }
      for (int b = 0; b < B; ++b) keys[b] = DrawKey{rg.seq[b], uint32_t(j), 0};
      auto t_fwd = Clock::now();
      ESOLM_TRY(model.step_sample(cache, win_tok.data(), win_pos.data(), n, n, n - 1, sp, keys.data(), picks.data(),
                                  seed_runs(groups, 1)));
      finish_step(j - P, picks.data(), 1, ms_since(t_fwd));
    }
  }
  out.steps = n_steps;
  out.tokens = x;
  return Status::ok();
}

// AR with the official prepend_token bos/mask: the prepended token sits at position 0 and
// the L generated tokens at 1..L, so the internal sequence has L + 1 tokens but only the
// first L are ever fed (positions < L, cache slots < L). The host loop runs it, since the
// planned loop sizes its tables to the cache. Positions in events and the result are
// shifted back, and the prepended token is dropped.
Status run_ar_prepend(Model& model, const GenerateRequest& req, KVCache& cache,
                      const std::function<void(const StepEvent&)>& on_step,
                      const std::atomic<bool>* cancel, GenerateResult& out) {
  const ModelConfig& cfg = model.config();
  if (req.prepend >= cfg.vocab_size) return Status::error(Code::invalid_arg, "the prepend token is outside the vocabulary");
  const int B = req.batch, L = req.length, G = int(req.given_positions.size());
  GenerateRequest r = req;
  r.length = L + 1;
  r.prepend = -1;
  r.given_positions.assign(1, 0);
  for (int32_t q : req.given_positions) r.given_positions.push_back(q + 1);
  r.given_tokens.resize(size_t(B) * (G + 1));
  for (int b = 0; b < B; ++b) {
    r.given_tokens[size_t(b) * (G + 1)] = req.prepend;
    for (int g = 0; g < G; ++g) r.given_tokens[size_t(b) * (G + 1) + 1 + g] = req.given_tokens[size_t(b) * G + g];
  }
  auto shifted = [&](const StepEvent& ev) {
    StepEvent e = ev;
    for (int32_t& q : e.positions) --q;
    on_step(e);
  };
  GenerateResult inner;
  ESOLM_TRY(run_ar(model, r, cache, on_step ? std::function<void(const StepEvent&)>(shifted) : nullptr,
                   cancel, inner, /*host_loop=*/true));
  out = inner;
  out.tokens.resize(size_t(B) * L);
  for (int b = 0; b < B; ++b)
    std::copy_n(inner.tokens.begin() + size_t(b) * (L + 1) + 1, L, out.tokens.begin() + size_t(b) * L);
  return Status::ok();
}

}  // namespace

Status generate(Model& model, const GenerateRequest& req, KVCache* cache,
                const std::function<void(const StepEvent&)>& on_step,
                const std::atomic<bool>* cancel, GenerateResult& out) {
  ESOLM_TRY(check_request(model, req));
  out = GenerateResult{};
  auto t0 = Clock::now();
  Status s;
  if (req.method == Method::mdlm) {
    s = mdlm_is_planned(req) ? run_mdlm_planned(model, req, on_step, cancel, out)
                             : run_mdlm(model, req, on_step, cancel, out);
  } else {
    std::unique_ptr<KVCache> owned;
    KVCache* c = nullptr;
    ESOLM_TRY(prepare_cache(model, req, cache, owned, c));
    if (req.method == Method::esolm) s = run_esolm(model, req, *c, on_step, cancel, out);
    else if (req.method == Method::esolm_a) s = run_esolm_a(model, req, *c, on_step, cancel, out);
    else if (req.prepend >= 0) s = run_ar_prepend(model, req, *c, on_step, cancel, out);
    else s = run_ar(model, req, *c, on_step, cancel, out);
    if (owned) model.release_cache(*owned);
  }
  out.timings.total_ms = ms_since(t0);
  return s;
}

}  // namespace esolm
