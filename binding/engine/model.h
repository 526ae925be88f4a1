// model.h — the Eso-LM / MDLM / AR network, written once against Backend.
//
// Weights arrive as host F32 tensors under their official state-dict names (without the
// `backbone.` prefix). For esolm/mdlm the constant adaLN conditioning (sigma = 0) is
// folded into LayerNorm scales/biases and the gated projections at load time (in
// float64), so the network the backend runs is a plain pre-LN transformer with LN
// biases (MODEL-REFERENCE.md §1.4).
//
// Invariant: a sequence of step() calls over a slot-ordered sequence reproduces the
// full causal forward() over the same sequence (test/model-cache.test.ts).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "config.h"
#include "status.h"
#include "weights.h"

namespace esolm {

// Consecutive sampled rows that draw with their own seed: a seed group of a batched
// generation (generate.h). A list of runs covers the rows in order; an empty list means
// every row uses the SampleParams seed.
struct SeedRun {
  uint64_t seed = 0;
  int64_t rows = 0;
};

// Per-layer and per-sequence KV cache. K/V rows are [batch * capacity, hidden].
struct KVCache {
  int batch = 0, capacity = 0, committed = 0;
  std::vector<Tensor> k, v;  // one per block
  Tensor clean;              // unused by step(); kept for symmetry with forward
};

// Backend-resident folded weights.
struct LayerWeights {
  Tensor ln1_w, ln1_b, qkv_w, out_w, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

class Model {
 public:
  // Folds and uploads the weights. `weights` is consumed (moved from). Returns
  // bad_weights naming the tensor on any missing/extra/mis-shaped/non-finite tensor.
  static Status create(const ModelConfig& cfg, HostWeights&& weights, Backend* backend,
                       std::unique_ptr<Model>& out);
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  Backend* backend() const { return be_; }

  // Full forward of `batch` sequences of n tokens in slot order. positions: original
  // (rotary) positions. mode sequential: tokens are the z-half, x0 the clean sequence
  // (both [batch*n]); logits are for the z-half. logits: [batch * n * vocab] F32.
  // logits_rows (optional, ascending and unique): if non-null, only these per-sequence
  // rows get logits, written contiguously [batch * rows.size() * vocab].
  Status forward(const int32_t* tokens, const int32_t* positions, int batch, int n,
                 AttnMode mode, const int32_t* x0, float* logits,
                 const std::vector<int>* logits_rows = nullptr);

  // forward() that scores instead of returning logits: out[b*n + i] = −log softmax(row)[t]
  // for t = targets[b*n + i] >= 0, with the mask column set to −1e6 first (the official
  // likelihood code), in float64; NaN where the target is −1 (that row's head is skipped).
  Status forward_scores(const int32_t* tokens, const int32_t* positions, int batch, int n,
                        AttnMode mode, const int32_t* x0, const int32_t* targets, double* out);

  // forward_scores() of Eso-LM (A)'s sequential-phase forward (training sequential_attn_mode
  // "mixed", MODEL-REFERENCE.md §2.3): mode sequential, except that x-half slots
  // < prefix[b] also see each other both ways (the clean tokens as a bidirectional prefix).
  // Exact and backend-agnostic: per sequence, prefill() the x prefix, then one step() per
  // z row i >= prefix[b] feeding [x_{i-1} | z_i]. z rows < prefix[b] must not be scored.
  Status forward_scores_prefix(const int32_t* tokens, const int32_t* positions, int batch, int n,
                               const int32_t* x0, const int32_t* prefix, const int32_t* targets,
                               double* out);

  Status create_cache(int batch, int capacity, std::unique_ptr<KVCache>& out);
  void release_cache(KVCache& cache);

  // Feed n tokens per sequence right after cache.committed; window rows attend to all
  // committed slots and causally inside the window. Afterwards committed += commit.
  // Logits of window rows [logits_from, n) per sequence: [batch*(n-logits_from)*V].
  Status step(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n,
              int commit, int logits_from, float* logits);

  // Feed n tokens per sequence right after cache.committed with bidirectional attention
  // over the committed slots and the whole window, and commit all of them. Eso-LM (A)'s
  // sequential phase encodes its clean prefix this way (its clean tokens see each other
  // both ways), then decodes with step().
  Status prefill(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n);

  // step() that samples instead of returning logits: one token per window row
  // [logits_from, n) of each sequence, keys[b * (n - logits_from) + r] (sampler.h). The
  // logits never leave the backend (sample_rows). `runs` (optional) splits the sampled
  // rows into seed runs (one sample_rows call each).
  Status step_sample(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n,
                     int commit, int logits_from, const SampleParams& sp, const DrawKey* keys,
                     int32_t* out_tokens, const std::vector<SeedRun>& runs = {});

  // forward() in two halves, for MDLM's p(x0) cache, which samples rows of one network
  // output at several steps: forward_keep runs the blocks and keeps the final hidden states
  // (no head); sample_kept runs the head and the backend sampler on rows of them (flat
  // indices b * n + r into the forward's rows; keys and out parallel to rows), so logits
  // are computed only for the rows being revealed and never leave the backend. The kept
  // output is valid until the next call that runs the network.
  Status forward_keep(const int32_t* tokens, const int32_t* positions, int batch, int n,
                      AttnMode mode, const int32_t* x0 = nullptr);
  Status sample_kept(const std::vector<int32_t>& rows, const SampleParams& sp, const DrawKey* keys,
                     int32_t* out, const std::vector<SeedRun>& runs = {});

  // Validation shared by forward/step (token range, positions).
  Status check_tokens(const int32_t* tokens, int64_t count) const;

  // ---- planned KV loop (engine/kv_loop.cpp; Backend::supports_kv_loop) --------------
  // Sizes the workspace for windows of up to n_pad_max rows and heads of up to k_pad_max
  // rows per sequence, so that loop_step never allocates.
  Status reserve_loop(int batch, int n_pad_max, int k_pad_max);
  // One step of the plan in lt.table at lt.state's cursor, with static shapes: the window
  // (loop_begin_step), the blocks, the head over lt.head_rows, sampling into lt.picks and
  // loop_end_step. No host wait, no upload and no host value that changes from step to
  // step, so a backend may record it once and replay it.
  // `length` is the generation length L of lt.z / lt.order (<= cache.capacity).
  Status loop_step(KVCache& cache, LoopTensors& lt, int length, int n_pad, int k_pad,
                   const SampleParams& sp);

 private:
  Model() = default;
  Status upload_weights(HostWeights& w);  // folded weights (weights.h fold_adaln)
  // Runs embed + all blocks for rows [batch * n] whose K/V go to slots [slot0, slot0+n)
  // of `cache`, attention by `attn`. Leaves the final residual in x_.
  Status run_blocks(const int32_t* tokens, const int32_t* positions, int batch, int n,
                    int slot0, KVCache& cache, const AttnParams& attn);
  // run_blocks over n tokens per sequence after the cache's committed slots (model.cpp).
  Status run_window(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n, AttnMode mode);
  // The blocks over tokens/positions already in backend memory (I32 [batch*n, 1]).
  // With attn.loop_state the cache slots come from the loop state (slot0 is unused).
  Status run_blocks_on(const Tensor& tok, const Tensor& pos, int batch, int n, int slot0,
                       KVCache& cache, const AttnParams& attn);
  // Final LN + head over selected rows of x_ (index into [batch*n]), in chunks; for each
  // chunk calls sink(logits tensor, first row, row count).
  Status run_head(const std::vector<int32_t>& rows,
                  const std::function<Status(const Tensor&, int64_t, int64_t)>& sink);
  Status run_head(const std::vector<int32_t>& rows, float* logits);  // -> host logits
  // Grows the head buffers (head_idx_, head_x_, head_h_, head_logits_) to m rows.
  Status ensure_head_buffers(int64_t m);
  // Shared body of forward()/forward_scores(): forward_keep, then the head over the
  // rows select(b, r) accepts (r indexes the returned half for sequential), in order.
  Status forward_impl(const int32_t* tokens, const int32_t* positions, int batch, int n,
                      AttnMode mode, const int32_t* x0, const std::function<bool(int, int)>& select,
                      const std::function<Status(const Tensor&, int64_t, int64_t)>& sink);
  Status check_step(const KVCache& cache, const int32_t* tokens, const int32_t* positions, int n,
                    int commit, int logits_from) const;
  Status ensure_workspace(int64_t rows);
  void release_workspace();

  ModelConfig cfg_;
  Backend* be_ = nullptr;
  Tensor embed_, lnf_w_, lnf_b_, head_w_, head_b_;
  std::vector<LayerWeights> layers_;
  // workspace (sized for ws_rows_ rows)
  int64_t ws_rows_ = 0;
  Tensor x_, h_, qkv_, q_, att_, mlp_, tok_, pos_;
  // forward() reuses one scratch cache (grown on demand) and head buffers, so repeated
  // calls do not pay for fresh allocations and page faults.
  std::unique_ptr<KVCache> scratch_;
  Tensor head_idx_, head_x_, head_h_, head_logits_;
  // Which rows of x_ hold the last full forward's output: row b * rows_per + first + r.
  struct KeptOutput {
    bool valid = false;
    int batch = 0, n = 0, rows_per = 0, first = 0;
  } kept_;
};

// Helpers for tests and tools.
const char* attn_mode_name(AttnMode m);
bool parse_attn_mode(const std::string& s, AttnMode& out);
bool parse_arch(const std::string& s, Arch& out);

}  // namespace esolm
