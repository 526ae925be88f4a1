// model.cpp — the one forward pass over folded weights (see model.h; folding: weights.cpp).
//
// Per block, on any backend:  h = LN1(x); qkv = h·Wqkvᵀ; rotary + K/V into the cache;
// a = attention(q, cache); x += a·Woutᵀ; h = LN2(x); m = GELU(h·W1ᵀ + b1);
// x += m·W2ᵀ + b2.  The adaLN modulation (constant because sigma = 0) lives in the LN
// scales/biases and in Wout, W2, b2 (gates), folded in float64 by weights.cpp.
#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "engine/parallel.h"

namespace esolm {
namespace {

Tensor view_rows(const Tensor& t, int64_t rows) {
  Tensor v = t;
  v.rows = rows;
  return v;
}

// Head rows per chunk: bounds the F32 logits buffer to kHeadChunk * vocab floats.
constexpr int64_t kHeadChunk = 128;

// −log softmax(row)[target] in float64 with the mask column at −1e6, for m rows;
// flat[i] is the (b * n + r) index of row i into targets/out. Rows over the cores.
void score_rows_host(const float* logits, int64_t m, int V, int mask, const int64_t* flat,
                     const int32_t* targets, double* out) {
  parallel_rows(m, 8, [&](int64_t i) {
    const float* row = logits + i * V;
    auto at = [&](int v) { return v == mask ? -1e6 : double(row[v]); };
    double mx = -INFINITY;
    for (int v = 0; v < V; ++v) mx = std::max(mx, at(v));
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(at(v) - mx);
    out[flat[i]] = -(at(targets[flat[i]]) - mx - std::log(sum));
  });
}

}  // namespace

const char* attn_mode_name(AttnMode m) {
  switch (m) {
    case AttnMode::causal: return "causal";
    case AttnMode::bidirectional: return "bidirectional";
    case AttnMode::mixed2: return "mixed2";
    case AttnMode::sequential: return "sequential";
  }
  return "?";
}

bool parse_attn_mode(const std::string& s, AttnMode& out) {
  if (s == "causal") out = AttnMode::causal;
  else if (s == "bidirectional") out = AttnMode::bidirectional;
  else if (s == "mixed2") out = AttnMode::mixed2;
  else if (s == "sequential") out = AttnMode::sequential;
  else return false;
  return true;
}

bool parse_arch(const std::string& s, Arch& out) {
  if (s == "esolm") out = Arch::esolm;
  else if (s == "mdlm") out = Arch::mdlm;
  else if (s == "ar") out = Arch::ar;
  else return false;
  return true;
}

// Expected tensors (without the `backbone.` prefix) and their shapes.
Status Model::create(const ModelConfig& cfg, HostWeights&& weights, Backend* backend,
                     std::unique_ptr<Model>& out) {
  ESOLM_TRY(cfg.validate());
  if (!backend) return Status::error(Code::internal, "no backend");
  // Validate names, shapes and values before touching the backend, then fold.
  ESOLM_TRY(check_weights(cfg, weights));
  // 8-bit matrices are quantized before folding, so the gates rescale row scales only and
  // a q8 file runs with its own int8 values (weights.h set_q8_storage).
  set_q8_storage(weights, backend->takes_q8());
  fold_adaln(cfg, weights);
  std::unique_ptr<Model> m(new Model());
  m->cfg_ = cfg;
  m->be_ = backend;
  Status s = m->upload_weights(weights);
  if (!s) return s;
  out = std::move(m);
  return Status::ok();
}

Model::~Model() {
  if (!be_) return;
  release_workspace();
  if (scratch_) release_cache(*scratch_);
  be_->release(embed_);
  be_->release(lnf_w_);
  be_->release(lnf_b_);
  be_->release(head_w_);
  be_->release(head_b_);
  for (auto& l : layers_)
    for (Tensor* t : {&l.ln1_w, &l.ln1_b, &l.qkv_w, &l.out_w, &l.ln2_w, &l.ln2_b, &l.fc1_w,
                      &l.fc1_b, &l.fc2_w, &l.fc2_b})
      be_->release(*t);
}

Status Model::upload_weights(HostWeights& w) {
  const int d = cfg_.hidden_size;
  Backend& be = *be_;
  // Uploads and frees each host tensor, so the host copy shrinks as the backend's grows.
  auto upload = [&](Tensor& t, DType dt, int64_t rows, int64_t cols, const std::string& name,
                    bool is_linear) -> Status {
    HostTensor& h = w.at(name);
    if (h.is_q8()) {  // only linear matrices, and only when be.takes_q8() (set_q8_storage)
      ESOLM_TRY(be.upload_q8(t, rows, cols, h.q8.data(), h.q8_scale.data()));
      h.q8 = {};
      h.q8_scale = {};
      return Status::ok();
    }
    ESOLM_TRY(be.alloc(t, dt, rows, cols));
    ESOLM_TRY(be.upload_f32(t, h.data.data(), rows * cols));
    if (is_linear) ESOLM_TRY(be.prepare_weight(t));
    h.data = {};
    return Status::ok();
  };
  const DType wd = be.weight_dtype();
  // With adaLN the gates rescale attn_out and mlp.2 (see backend.h folded_weight_dtype).
  const DType wd_folded = cfg_.has_adaln() ? be.folded_weight_dtype() : wd;
  const int64_t f = cfg_.mlp_hidden();
  ESOLM_TRY(upload(embed_, wd, cfg_.vocab_size, d, "vocab_embed.embedding", false));
  layers_.resize(cfg_.n_blocks);
  for (int i = 0; i < cfg_.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    LayerWeights& L = layers_[i];
    ESOLM_TRY(upload(L.ln1_w, DType::f32, 1, d, p + "norm1.weight", false));
    ESOLM_TRY(upload(L.ln1_b, DType::f32, 1, d, p + "norm1.bias", false));
    ESOLM_TRY(upload(L.qkv_w, wd, 3 * int64_t(d), d, p + "attn_qkv.weight", true));
    ESOLM_TRY(upload(L.out_w, wd_folded, d, d, p + "attn_out.weight", true));
    ESOLM_TRY(upload(L.ln2_w, DType::f32, 1, d, p + "norm2.weight", false));
    ESOLM_TRY(upload(L.ln2_b, DType::f32, 1, d, p + "norm2.bias", false));
    ESOLM_TRY(upload(L.fc1_w, wd, f, d, p + "mlp.0.weight", true));
    ESOLM_TRY(upload(L.fc1_b, DType::f32, 1, f, p + "mlp.0.bias", false));
    ESOLM_TRY(upload(L.fc2_w, wd_folded, d, f, p + "mlp.2.weight", true));
    ESOLM_TRY(upload(L.fc2_b, DType::f32, 1, d, p + "mlp.2.bias", false));
  }
  ESOLM_TRY(upload(lnf_w_, DType::f32, 1, d, "output_layer.norm_final.weight", false));
  ESOLM_TRY(upload(lnf_b_, DType::f32, 1, d, "output_layer.norm_final.bias", false));
  ESOLM_TRY(upload(head_w_, wd, cfg_.vocab_size, d, "output_layer.linear.weight", true));
  ESOLM_TRY(upload(head_b_, DType::f32, 1, cfg_.vocab_size, "output_layer.linear.bias", false));
  return be.synchronize();
}

Status Model::ensure_workspace(int64_t rows) {
  if (rows <= ws_rows_) return Status::ok();
  release_workspace();
  const int64_t d = cfg_.hidden_size;
  const DType act = be_->activation_dtype();
  Status s = Status::ok();
  auto a = [&](Tensor& t, DType dt, int64_t cols) {
    if (s) s = be_->alloc(t, dt, rows, cols);
  };
  a(x_, DType::f32, d);
  a(h_, act, d);
  a(qkv_, act, 3 * d);
  a(q_, act, d);
  a(att_, act, d);
  a(mlp_, act, cfg_.mlp_hidden());
  a(tok_, DType::i32, 1);
  a(pos_, DType::i32, 1);
  if (!s) {
    release_workspace();
    return s;
  }
  ws_rows_ = rows;
  return Status::ok();
}

void Model::release_workspace() {
  for (Tensor* t : {&x_, &h_, &qkv_, &q_, &att_, &mlp_, &tok_, &pos_, &head_idx_, &head_x_, &head_h_,
                    &head_logits_})
    be_->release(*t);
  ws_rows_ = 0;
}

Status Model::check_tokens(const int32_t* tokens, int64_t count) const {
  for (int64_t i = 0; i < count; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
      return Status::error(Code::invalid_arg, "token id " + std::to_string(tokens[i]) + " at index " +
                                                  std::to_string(i) + " is outside [0, " +
                                                  std::to_string(cfg_.vocab_size) + ")");
  return Status::ok();
}

static Status check_positions(const int32_t* pos, int64_t count, int length) {
  for (int64_t i = 0; i < count; ++i)
    if (pos[i] < 0 || pos[i] >= length)
      return Status::error(Code::invalid_arg, "position " + std::to_string(pos[i]) + " at index " +
                                                  std::to_string(i) + " is outside [0, " +
                                                  std::to_string(length) + ")");
  return Status::ok();
}

Status Model::run_blocks(const int32_t* tokens, const int32_t* positions, int batch, int n,
                         int slot0, KVCache& cache, const AttnParams& attn) {
  Backend& be = *be_;
  const int64_t rows = int64_t(batch) * n;
  ESOLM_TRY(ensure_workspace(rows));
  Tensor tok = view_rows(tok_, rows), pos = view_rows(pos_, rows);
  ESOLM_TRY(be.upload_i32(tok, tokens, rows));
  ESOLM_TRY(be.upload_i32(pos, positions, rows));
  return run_blocks_on(tok, pos, batch, n, slot0, cache, attn);
}

Status Model::run_blocks_on(const Tensor& tok, const Tensor& pos, int batch, int n, int slot0,
                            KVCache& cache, const AttnParams& attn) {
  Backend& be = *be_;
  const int64_t rows = int64_t(batch) * n;
  if (rows > ws_rows_) return Status::error(Code::internal, "run_blocks_on: workspace too small");
  kept_.valid = false;  // x_ is about to change
  Tensor x = view_rows(x_, rows), h = view_rows(h_, rows), qkv = view_rows(qkv_, rows),
         q = view_rows(q_, rows), att = view_rows(att_, rows), mlp = view_rows(mlp_, rows);
  ESOLM_TRY(be.embed(embed_, tok, x));
  for (int l = 0; l < cfg_.n_blocks; ++l) {
    const LayerWeights& L = layers_[l];
    ESOLM_TRY(be.layernorm(x, L.ln1_w, L.ln1_b, h));
    ESOLM_TRY(be.linear(h, L.qkv_w, Tensor{}, qkv, Epilogue::store));
    if (attn.loop_state)
      ESOLM_TRY(be.rope_qkv_store_loop(qkv, pos, batch, n, cfg_.n_heads, cache.capacity, *attn.loop_state,
                                       q, cache.k[l], cache.v[l]));
    else
      ESOLM_TRY(be.rope_qkv_store(qkv, pos, batch, n, cfg_.n_heads, slot0, cache.capacity, q,
                                  cache.k[l], cache.v[l]));
    ESOLM_TRY(be.attention(q, cache.k[l], cache.v[l], attn, att));
    ESOLM_TRY(be.linear(att, L.out_w, Tensor{}, x, Epilogue::add_to));
    ESOLM_TRY(be.layernorm(x, L.ln2_w, L.ln2_b, h));
    ESOLM_TRY(be.linear(h, L.fc1_w, L.fc1_b, mlp, Epilogue::gelu));
    ESOLM_TRY(be.linear(mlp, L.fc2_w, L.fc2_b, x, Epilogue::add_to));
  }
  return Status::ok();
}

Status Model::run_head(const std::vector<int32_t>& rows, float* logits) {
  const int64_t V = cfg_.vocab_size;
  return run_head(rows, [&](const Tensor& lv, int64_t r0, int64_t m) {
    return be_->download_f32(lv, 0, m, logits + r0 * V);
  });
}

Status Model::run_head(const std::vector<int32_t>& rows,
                       const std::function<Status(const Tensor&, int64_t, int64_t)>& sink) {
  Backend& be = *be_;
  const int64_t chunk = kHeadChunk;
  const int64_t m_all = int64_t(rows.size());
  if (m_all == 0) return Status::ok();
  Status s = ensure_head_buffers(std::min(chunk, m_all));
  for (int64_t r0 = 0; s && r0 < m_all; r0 += chunk) {
    const int64_t m = std::min(chunk, m_all - r0);
    Tensor iv = view_rows(head_idx_, m), xv = view_rows(head_x_, m), hv = view_rows(head_h_, m),
           lv = view_rows(head_logits_, m);
    s = be.upload_i32(iv, rows.data() + r0, m);
    if (s) s = be.gather_rows(view_rows(x_, ws_rows_), iv, xv);
    if (s) s = be.layernorm(xv, lnf_w_, lnf_b_, hv);
    if (s) s = be.linear(hv, head_w_, head_b_, lv, Epilogue::store);
    if (s) s = sink(lv, r0, m);
  }
  return s;
}

Status Model::reserve_loop(int batch, int n_pad_max, int k_pad_max) {
  if (batch < 1 || n_pad_max < 1 || k_pad_max < 1 || k_pad_max > n_pad_max)
    return Status::error(Code::invalid_arg, "reserve_loop: bad shapes");
  ESOLM_TRY(ensure_workspace(int64_t(batch) * n_pad_max));
  return ensure_head_buffers(std::min<int64_t>(kHeadChunk, int64_t(batch) * k_pad_max));
}

Status Model::ensure_head_buffers(int64_t m) {
  if (head_logits_.rows >= m) return Status::ok();
  for (Tensor* t : {&head_idx_, &head_x_, &head_h_, &head_logits_}) be_->release(*t);
  Status s = be_->alloc(head_idx_, DType::i32, m, 1);
  if (s) s = be_->alloc(head_x_, DType::f32, m, cfg_.hidden_size);
  if (s) s = be_->alloc(head_h_, be_->activation_dtype(), m, cfg_.hidden_size);
  if (s) s = be_->alloc(head_logits_, DType::f32, m, cfg_.vocab_size);
  if (!s)
    for (Tensor* t : {&head_idx_, &head_x_, &head_h_, &head_logits_}) be_->release(*t);
  return s;
}

Status Model::loop_step(KVCache& cache, LoopTensors& lt, int length, int n_pad, int k_pad,
                        const SampleParams& sp) {
  Backend& be = *be_;
  const int B = cache.batch;
  ESOLM_TRY(be.loop_begin_step(lt, B, length, n_pad, k_pad));
  AttnParams attn;
  attn.batch = B;
  attn.n_q = n_pad;
  attn.n_kv = cache.capacity;  // static bound; the real window comes from the state
  attn.n_heads = cfg_.n_heads;
  attn.head_dim = cfg_.head_dim();
  attn.capacity = cache.capacity;
  attn.mode = AttnMode::causal;
  attn.loop_state = &lt.state;
  ESOLM_TRY(run_blocks_on(lt.tokens, lt.positions, B, n_pad, 0, cache, attn));
  // Head and sampling over the k_pad rows of each sequence, in chunks of static size.
  const int64_t m_all = int64_t(B) * k_pad;
  const Tensor x = view_rows(x_, int64_t(B) * n_pad);
  for (int64_t r0 = 0; r0 < m_all; r0 += kHeadChunk) {
    const int64_t m = std::min<int64_t>(kHeadChunk, m_all - r0);
    if (head_logits_.rows < m) return Status::error(Code::internal, "loop_step: head buffers not reserved");
    Tensor xv = view_rows(head_x_, m), hv = view_rows(head_h_, m), lv = view_rows(head_logits_, m);
    Tensor keys = row_slice(lt.keys, r0, m), picks = row_slice(lt.picks, r0, m);
    ESOLM_TRY(be.gather_rows(x, row_slice(lt.head_rows, r0, m), xv));
    ESOLM_TRY(be.layernorm(xv, lnf_w_, lnf_b_, hv));
    ESOLM_TRY(be.linear(hv, head_w_, head_b_, lv, Epilogue::store));
    ESOLM_TRY(be.sample_rows_to(lv, m, sp, keys, picks));
  }
  return be.loop_end_step(lt, B, length, k_pad);
}

Status Model::create_cache(int batch, int capacity, std::unique_ptr<KVCache>& out) {
  if (batch <= 0 || capacity <= 0)
    return Status::error(Code::invalid_arg, "cache batch and capacity must be positive");
  // Overflow-safe size: batch * capacity rows of hidden_size, per K and V, per block.
  if (int64_t(batch) * capacity > (int64_t(1) << 40) / (int64_t(cfg_.hidden_size) * cfg_.n_blocks))
    return Status::error(Code::out_of_memory, "a cache of batch " + std::to_string(batch) + " and capacity " +
                                                  std::to_string(capacity) + " is too large");
  std::unique_ptr<KVCache> c(new KVCache());
  c->batch = batch;
  c->capacity = capacity;
  c->k.resize(cfg_.n_blocks);
  c->v.resize(cfg_.n_blocks);
  const DType kv_dtype = be_->kv_dtype();
  for (int l = 0; l < cfg_.n_blocks; ++l) {
    Status s = be_->alloc(c->k[l], kv_dtype, int64_t(batch) * capacity, cfg_.hidden_size);
    if (s) s = be_->alloc(c->v[l], kv_dtype, int64_t(batch) * capacity, cfg_.hidden_size);
    if (!s) {
      release_cache(*c);
      return s;
    }
  }
  out = std::move(c);
  return Status::ok();
}

void Model::release_cache(KVCache& cache) {
  for (auto& t : cache.k) be_->release(t);
  for (auto& t : cache.v) be_->release(t);
  be_->release(cache.clean);
  cache.k.clear();
  cache.v.clear();
  cache.committed = 0;
}

Status Model::forward(const int32_t* tokens, const int32_t* positions, int batch, int n,
                      AttnMode mode, const int32_t* x0, float* logits,
                      const std::vector<int>* logits_rows) {
  std::vector<char> wanted(size_t(std::max(n, 0)), logits_rows ? 0 : 1);
  if (logits_rows)
    for (size_t i = 0; i < logits_rows->size(); ++i) {
      const int r = (*logits_rows)[i];
      if (r < 0 || r >= n || (i && r <= (*logits_rows)[i - 1]))
        return Status::error(Code::invalid_arg, "logits rows must be ascending, unique and in [0, n)");
      wanted[size_t(r)] = 1;
    }
  const int64_t V = cfg_.vocab_size;
  return forward_impl(tokens, positions, batch, n, mode, x0,
                      [&](int, int r) { return wanted[size_t(r)] != 0; },
                      [&](const Tensor& lv, int64_t r0, int64_t m) {
                        return be_->download_f32(lv, 0, m, logits + r0 * V);
                      });
}

Status Model::forward_scores(const int32_t* tokens, const int32_t* positions, int batch, int n,
                             AttnMode mode, const int32_t* x0, const int32_t* targets, double* out) {
  const int64_t V = cfg_.vocab_size, count = int64_t(batch) * n;
  for (int64_t i = 0; i < count; ++i) {
    if (targets[i] >= V || targets[i] < -1)
      return Status::error(Code::invalid_arg, "target " + std::to_string(targets[i]) + " at index " +
                                                  std::to_string(i) + " is outside [-1, vocab)");
    out[i] = std::nan("");
  }
  std::vector<int64_t> flat;  // (b * n + r) of each head row, in order
  std::vector<float> host;
  return forward_impl(tokens, positions, batch, n, mode, x0,
                      [&](int b, int r) {
                        if (targets[int64_t(b) * n + r] < 0) return false;
                        flat.push_back(int64_t(b) * n + r);
                        return true;
                      },
                      [&](const Tensor& lv, int64_t r0, int64_t m) -> Status {
                        host.resize(size_t(m * V));
                        ESOLM_TRY(be_->download_f32(lv, 0, m, host.data()));
                        score_rows_host(host.data(), m, int(V), cfg_.mask_index, flat.data() + r0, targets, out);
                        return Status::ok();
                      });
}

Status Model::forward_scores_prefix(const int32_t* tokens, const int32_t* positions, int batch, int n,
                                    const int32_t* x0, const int32_t* prefix, const int32_t* targets,
                                    double* out) {
  const int64_t V = cfg_.vocab_size, count = int64_t(batch) * n;
  if (batch <= 0 || n <= 0) return Status::error(Code::invalid_arg, "batch and n must be positive");
  if (n > cfg_.length)
    return Status::error(Code::invalid_arg, "sequence length " + std::to_string(n) +
                                                " exceeds the model context length " + std::to_string(cfg_.length));
  ESOLM_TRY(check_tokens(tokens, count));
  ESOLM_TRY(check_tokens(x0, count));
  ESOLM_TRY(check_positions(positions, count, cfg_.length));
  for (int b = 0; b < batch; ++b) {
    if (prefix[b] < 0 || prefix[b] > n)
      return Status::error(Code::invalid_arg, "prefix[" + std::to_string(b) + "] is outside [0, n]");
    for (int i = 0; i < n; ++i) {
      const int32_t t = targets[int64_t(b) * n + i];
      if (t >= V || t < -1 || (t >= 0 && i < prefix[b]))
        return Status::error(Code::invalid_arg, "target at index " + std::to_string(int64_t(b) * n + i) +
                                                    " is outside [-1, vocab) or inside the prefix");
    }
  }
  for (int64_t i = 0; i < count; ++i) out[i] = std::nan("");
  std::unique_ptr<KVCache> cache;
  ESOLM_TRY(create_cache(1, n, cache));
  Status s = Status::ok();
  std::vector<float> logits(static_cast<size_t>(V));
  for (int b = 0; s && b < batch; ++b) {
    const int64_t o = int64_t(b) * n;
    const int c = prefix[b];
    cache->committed = 0;
    if (c > 0) s = prefill(*cache, x0 + o, positions + o, c);
    for (int i = c; s && i < n; ++i) {
      // window [x_{i-1} | z_i]: x_{i-1} is committed, z_i sees x_{<i} and itself
      const int p = i > c ? 1 : 0;
      const int32_t tok[2] = {p ? x0[o + i - 1] : tokens[o + i], tokens[o + i]};
      const int32_t pos[2] = {p ? positions[o + i - 1] : positions[o + i], positions[o + i]};
      const bool scored = targets[o + i] >= 0;
      s = step(*cache, tok + 1 - p, pos + 1 - p, p + 1, p, scored ? p : p + 1, scored ? logits.data() : nullptr);
      const int64_t flat = o + i;
      if (s && scored) score_rows_host(logits.data(), 1, int(V), cfg_.mask_index, &flat, targets, out);
    }
  }
  release_cache(*cache);
  return s;
}

Status Model::forward_impl(const int32_t* tokens, const int32_t* positions, int batch, int n,
                           AttnMode mode, const int32_t* x0, const std::function<bool(int, int)>& select,
                           const std::function<Status(const Tensor&, int64_t, int64_t)>& sink) {
  ESOLM_TRY(forward_keep(tokens, positions, batch, n, mode, x0));
  std::vector<int32_t> rows;
  for (int b = 0; b < batch; ++b)
    for (int r = 0; r < n; ++r)
      if (select(b, r)) rows.push_back(b * kept_.rows_per + kept_.first + r);
  return run_head(rows, sink);
}

namespace {
// sample_rows over the head rows [r0, r0 + m) held in lv, each row with the seed of the run
// it falls in (runs count rows from 0; empty = all rows use sp.seed).
Status sample_seed_runs(Backend& be, const Tensor& lv, int64_t r0, int64_t m, const SampleParams& sp,
                        const std::vector<SeedRun>& runs, const DrawKey* keys, int32_t* out) {
  if (runs.empty()) return be.sample_rows(lv, m, sp, keys + r0, out + r0);
  int64_t start = 0;
  for (const SeedRun& run : runs) {
    const int64_t a = std::max(start, r0), e = std::min(start + run.rows, r0 + m);
    if (a < e) {
      SampleParams p = sp;
      p.seed = run.seed;
      ESOLM_TRY(be.sample_rows(row_slice(lv, a - r0, e - a), e - a, p, keys + a, out + a));
    }
    start += run.rows;
  }
  if (start < r0 + m) return Status::error(Code::internal, "sample_seed_runs: the runs cover fewer rows than sampled");
  return Status::ok();
}
}  // namespace

Status Model::sample_kept(const std::vector<int32_t>& rows, const SampleParams& sp, const DrawKey* keys,
                          int32_t* out, const std::vector<SeedRun>& runs) {
  if (!kept_.valid) return Status::error(Code::internal, "sample_kept: no kept forward output");
  std::vector<int32_t> head_rows(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const int32_t f = rows[i];
    if (f < 0 || f >= kept_.batch * kept_.n) return Status::error(Code::invalid_arg, "sample_kept: row out of range");
    head_rows[i] = (f / kept_.n) * kept_.rows_per + kept_.first + f % kept_.n;
  }
  return run_head(head_rows, [&](const Tensor& lv, int64_t r0, int64_t m) {
    return sample_seed_runs(*be_, lv, r0, m, sp, runs, keys, out);
  });
}

Status Model::forward_keep(const int32_t* tokens, const int32_t* positions, int batch, int n, AttnMode mode,
                           const int32_t* x0) {
  kept_.valid = false;
  if (batch <= 0 || n <= 0) return Status::error(Code::invalid_arg, "batch and n must be positive");
  if (n > cfg_.length)
    return Status::error(Code::invalid_arg, "sequence length " + std::to_string(n) +
                                                " exceeds the model context length " +
                                                std::to_string(cfg_.length));
  const int64_t count = int64_t(batch) * n;
  ESOLM_TRY(check_tokens(tokens, count));
  ESOLM_TRY(check_positions(positions, count, cfg_.length));
  if (mode == AttnMode::sequential) {
    if (!x0) return Status::error(Code::invalid_arg, "attention 'sequential' needs x0");
    ESOLM_TRY(check_tokens(x0, count));
  }

  // The sequential mode runs 2n rows per sequence: [x0 | tokens].
  const bool seq = mode == AttnMode::sequential;
  const int rows_per = seq ? 2 * n : n;
  std::vector<int32_t> tok_in, pos_in;
  const int32_t* tp = tokens;
  const int32_t* pp = positions;
  if (seq) {
    tok_in.resize(size_t(batch) * rows_per);
    pos_in.resize(size_t(batch) * rows_per);
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < n; ++i) {
        tok_in[size_t(b) * rows_per + i] = x0[size_t(b) * n + i];
        tok_in[size_t(b) * rows_per + n + i] = tokens[size_t(b) * n + i];
        pos_in[size_t(b) * rows_per + i] = positions[size_t(b) * n + i];
        pos_in[size_t(b) * rows_per + n + i] = positions[size_t(b) * n + i];
      }
    tp = tok_in.data();
    pp = pos_in.data();
  }

  if (!scratch_ || scratch_->batch * scratch_->capacity < batch * rows_per) {
    if (scratch_) release_cache(*scratch_);
    scratch_.reset();
    ESOLM_TRY(create_cache(batch, rows_per, scratch_));
  }
  KVCache* scratch = scratch_.get();
  scratch->batch = batch;  // reuse the storage with this call's (batch, capacity) view
  scratch->capacity = rows_per;
  scratch->committed = 0;
  AttnParams attn;
  attn.batch = batch;
  attn.n_q = rows_per;
  attn.q_slot0 = 0;
  attn.n_kv = rows_per;
  attn.n_heads = cfg_.n_heads;
  attn.head_dim = cfg_.head_dim();
  attn.capacity = rows_per;
  attn.mode = mode;
  Status s = Status::ok();
  if (mode == AttnMode::mixed2) {
    std::vector<int32_t> clean(size_t(batch) * rows_per);
    for (size_t i = 0; i < clean.size(); ++i) clean[i] = tp[i] != cfg_.mask_index ? 1 : 0;
    s = be_->alloc(scratch->clean, DType::i32, int64_t(batch) * rows_per, 1);
    if (s) s = be_->upload_i32(scratch->clean, clean.data(), int64_t(clean.size()));
    attn.clean = &scratch->clean;
  }
  if (s) s = run_blocks(tp, pp, batch, rows_per, 0, *scratch, attn);
  be_->release(scratch->clean);
  // Keep the scratch cache for the next call unless it is large.
  const int64_t kept_bytes = int64_t(scratch_->k.size()) * 2 * scratch_->k[0].bytes();
  if (kept_bytes > (int64_t(256) << 20)) {
    release_cache(*scratch_);
    scratch_.reset();
  }
  if (s) kept_ = KeptOutput{true, batch, n, rows_per, seq ? n : 0};
  return s;
}

Status Model::check_step(const KVCache& cache, const int32_t* tokens, const int32_t* positions, int n,
                         int commit, int logits_from) const {
  if (n <= 0) return Status::error(Code::invalid_arg, "a step needs at least one token");
  if (commit < 0 || commit > n) return Status::error(Code::invalid_arg, "commit must be in [0, n]");
  if (logits_from < 0 || logits_from > n)
    return Status::error(Code::invalid_arg, "logitsFrom must be in [0, n]");
  if (cache.k.empty()) return Status::error(Code::disposed, "the cache has been disposed");
  if (cache.committed + n > cache.capacity)
    return Status::error(Code::invalid_arg,
                         "step of " + std::to_string(n) + " tokens after " + std::to_string(cache.committed) +
                             " committed exceeds the cache capacity " + std::to_string(cache.capacity));
  const int64_t count = int64_t(cache.batch) * n;
  ESOLM_TRY(check_tokens(tokens, count));
  return check_positions(positions, count, cfg_.length);
}

// The blocks over a window of n tokens per sequence written after the cache's committed
// slots: window rows attend to every committed slot and, inside the window, as `mode` says
// (causal for a step, bidirectional for a prefill).
Status Model::run_window(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n,
                         AttnMode mode) {
  AttnParams attn;
  attn.batch = cache.batch;
  attn.n_q = n;
  attn.q_slot0 = cache.committed;
  attn.n_kv = cache.committed + n;
  attn.n_heads = cfg_.n_heads;
  attn.head_dim = cfg_.head_dim();
  attn.capacity = cache.capacity;
  attn.mode = mode;
  return run_blocks(tokens, positions, cache.batch, n, cache.committed, cache, attn);
}

Status Model::step(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n,
                   int commit, int logits_from, float* logits) {
  ESOLM_TRY(check_step(cache, tokens, positions, n, commit, logits_from));
  ESOLM_TRY(run_window(cache, tokens, positions, n, AttnMode::causal));
  cache.committed += commit;
  if (logits_from < n && logits) {
    std::vector<int32_t> rows;
    for (int b = 0; b < cache.batch; ++b)
      for (int r = logits_from; r < n; ++r) rows.push_back(b * n + r);
    ESOLM_TRY(run_head(rows, logits));
  }
  return Status::ok();
}

Status Model::prefill(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n) {
  ESOLM_TRY(check_step(cache, tokens, positions, n, n, n));
  ESOLM_TRY(run_window(cache, tokens, positions, n, AttnMode::bidirectional));
  cache.committed += n;
  return Status::ok();
}

Status Model::step_sample(KVCache& cache, const int32_t* tokens, const int32_t* positions, int n,
                          int commit, int logits_from, const SampleParams& sp, const DrawKey* keys,
                          int32_t* out_tokens, const std::vector<SeedRun>& runs) {
  ESOLM_TRY(step(cache, tokens, positions, n, commit, n, nullptr));
  if (logits_from >= n) return Status::ok();
  std::vector<int32_t> rows;
  for (int b = 0; b < cache.batch; ++b)
    for (int r = logits_from; r < n; ++r) rows.push_back(b * n + r);
  return run_head(rows, [&](const Tensor& lv, int64_t r0, int64_t m) {
    return sample_seed_runs(*be_, lv, r0, m, sp, runs, keys, out_tokens);
  });
}

}  // namespace esolm
