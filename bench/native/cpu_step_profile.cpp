// cpu_step_profile.cpp — where the time of a CPU generation goes, op by op.
// Runs Eso-LM (B) on the small configuration (hidden 768, 12 heads, 12 blocks, vocab 50258,
// random weights) through engine/generate with every backend call timed by a decorator,
// and prints each op's share of the wall time next to the bytes it must read (weights, K/V)
// and the rate that implies, with the machine's streaming read bandwidth measured first.
// Build: cmake -S . -B build-native -DESOLM_NATIVE_TESTS=ON -DCMAKE_BUILD_TYPE=Release
//        cmake --build build-native --target cpu_step_profile
// Usage: build-native/cpu_step_profile [--weights f32|bf16|q8] [--math f32|bf16|int8 (bf16: with
//        bf16 weights and AVX512_BF16; int8: with q8 and AVX512_VNNI)]
//        [--length 1024] [--steps 1024]
//        [--batch 1] [--threads 0] [--head-std 0.036] [--attn-layers 12]
//        [--micro (last: the ops alone at the step shapes)]
// --head-std: the std of the output layer's random weights. The default is that of the
// bench's model (lib/random-model.ts: 1/sqrt(768)): its logits have std ~1, so top-p 0.9
// keeps most of the vocabulary and each step draws Gumbel noise for ~40k tokens. A trained
// model's rows are far peakier (try 0.1).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
#include <random>
#include <vector>
#include <memory>
#include <string>
#include <thread>

#include "../../test/native/tiny_model.h"
#include "cpu/floors.h"
#include "cpu/host_memory.h"
#include "cpu/kernels.h"
#include "cpu/ops_reference.h"
#include "engine/generate.h"

namespace esolm {
namespace {

using Clock = std::chrono::steady_clock;

struct OpStat {
  double ms = 0;
  int64_t calls = 0;
  double bytes = 0;  // bytes the op must read from memory (weights, K/V), summed over calls
  std::vector<float> us;  // each call's microseconds: the median tells steady cost from outliers
};

// Forwards every call to the CPU backend and adds its wall time to a named bucket.
class TimingBackend final : public Backend {
 public:
  explicit TimingBackend(Backend* inner) : in_(inner) {}
  std::map<std::string, OpStat> stats;

  const char* name() const override { return in_->name(); }
  Status alloc(Tensor& t, DType dt, int64_t r, int64_t c) override { return in_->alloc(t, dt, r, c); }
  void release(Tensor& t) override { in_->release(t); }
  DType activation_dtype() const override { return in_->activation_dtype(); }
  DType weight_dtype() const override { return in_->weight_dtype(); }
  DType folded_weight_dtype() const override { return in_->folded_weight_dtype(); }
  DType kv_dtype() const override { return in_->kv_dtype(); }
  Status upload_f32(Tensor& t, const float* h, int64_t n) override { return in_->upload_f32(t, h, n); }
  Status upload_i32(Tensor& t, const int32_t* h, int64_t n) override { return timed("upload_i32", 0, [&] { return in_->upload_i32(t, h, n); }); }
  Status download_f32(const Tensor& t, int64_t r0, int64_t n, float* h) override { return in_->download_f32(t, r0, n, h); }
  Status synchronize() override { return in_->synchronize(); }
  Status prepare_weight(Tensor& W) override {
    Status s = in_->prepare_weight(W);
    weight_bytes_[W.data] = double(W.numel()) * weight_elem_bytes_;
    return s;
  }
  Status embed(const Tensor& table, const Tensor& tokens, Tensor& x) override {
    return timed("embed", 0, [&] { return in_->embed(table, tokens, x); });
  }
  Status layernorm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    return timed("layernorm", 0, [&] { return in_->layernorm(x, w, b, y); });
  }
  Status linear(const Tensor& a, const Tensor& W, const Tensor& bias, Tensor& out, Epilogue ep) override {
    const std::string key = "linear " + std::to_string(W.rows) + "x" + std::to_string(W.cols) + " rows " +
                            std::to_string(a.rows);
    auto it = weight_bytes_.find(W.data);
    return timed(key, it == weight_bytes_.end() ? 0 : it->second, [&] { return in_->linear(a, W, bias, out, ep); });
  }
  Status rope_qkv_store(const Tensor& qkv, const Tensor& pos, int batch, int n, int heads, int slot0, int cap,
                        Tensor& q, Tensor& kc, Tensor& vc) override {
    return timed("rope_qkv_store", 0, [&] { return in_->rope_qkv_store(qkv, pos, batch, n, heads, slot0, cap, q, kc, vc); });
  }
  Status attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const AttnParams& p, Tensor& out) override {
    // K and V of the visible slots: read from the loop state when the window lives there.
    int n_kv = p.n_kv;
    if (p.loop_state) {
      const int32_t* st = static_cast<const int32_t*>(p.loop_state->data);
      n_kv = st[kLoopSlot0] + st[kLoopN];
    }
    const double bytes = 2.0 * p.batch * n_kv * p.n_heads * p.head_dim * (kc.dtype == DType::bf16 ? 2 : 4);
    return timed("attention rows " + std::to_string(p.n_q), bytes, [&] { return in_->attention(q, kc, vc, p, out); });
  }
  Status gather_rows(const Tensor& x, const Tensor& index, Tensor& out) override {
    return timed("gather_rows", 0, [&] { return in_->gather_rows(x, index, out); });
  }
  Status sample_rows(const Tensor& logits, int64_t rows, const SampleParams& p, const DrawKey* keys,
                     int32_t* out) override {
    return timed("sample_rows", 0, [&] { return in_->sample_rows(logits, rows, p, keys, out); });
  }
  bool supports_kv_loop() const override { return in_->supports_kv_loop(); }
  Status loop_begin_step(LoopTensors& lt, int batch, int length, int n_pad, int k_pad) override {
    return timed("loop_begin_step", 0, [&] { return in_->loop_begin_step(lt, batch, length, n_pad, k_pad); });
  }
  Status rope_qkv_store_loop(const Tensor& qkv, const Tensor& pos, int batch, int n_pad, int heads, int cap,
                             const Tensor& state, Tensor& q, Tensor& kc, Tensor& vc) override {
    return timed("rope_qkv_store", 0, [&] { return in_->rope_qkv_store_loop(qkv, pos, batch, n_pad, heads, cap, state, q, kc, vc); });
  }
  Status sample_rows_to(const Tensor& logits, int64_t rows, const SampleParams& p, const Tensor& keys,
                        Tensor& out) override {
    return timed("sample_rows", 0, [&] { return in_->sample_rows_to(logits, rows, p, keys, out); });
  }
  Status loop_end_step(LoopTensors& lt, int batch, int length, int k_pad) override {
    return timed("loop_end_step", 0, [&] { return in_->loop_end_step(lt, batch, length, k_pad); });
  }
  Status download_i32_async(const Tensor& t, int64_t count, int32_t* host) override {
    return in_->download_i32_async(t, count, host);
  }

  double weight_elem_bytes_ = 4;

 private:
  template <class F>
  Status timed(const std::string& key, double bytes, F&& f) {
    const auto t0 = Clock::now();
    Status s = f();
    OpStat& st = stats[key];
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    st.ms += ms;
    st.calls += 1;
    st.us.push_back(float(ms * 1e3));
    st.bytes += bytes;
    return s;
  }
  Backend* in_;
  std::map<const void*, double> weight_bytes_;
};

const char* arg(int argc, char** argv, const char* name, const char* dflt) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return dflt;
}

// Best-of-reps milliseconds of fn().
template <class F>
double best_ms(int reps, F&& fn) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return best;
}

// Streaming read of n floats on `threads` threads, each its own contiguous slice.
void parallel_read(const CpuKernels& kn, const float* p, int64_t n, int threads, float* sums) {
  std::vector<std::thread> ts;
  for (int t = 1; t < threads; ++t)
    ts.emplace_back([&, t] { sums[t] = kn.read_sum(p + n * t / threads, n * (t + 1) / threads - n * t / threads); });
  sums[0] = kn.read_sum(p, n / threads);
  for (auto& t : ts) t.join();
}

// n floats of 1 in huge pages where the OS gives them (host_memory.h), as the weights and
// the floors' read buffer: a std::vector's 4 KiB pages made the paired reads below ~20%
// slower than the matvecs they were paired with (Zen 5 VM).
struct ReadFloats {
  explicit ReadFloats(int64_t n) : p(static_cast<float*>(host_alloc_zeroed(size_t(n) * sizeof(float)))) {
    std::fill(p, p + n, 1.0f);
  }
  ~ReadFloats() { host_free(p); }
  float* data() const { return p; }
  float* p;
};

// The step's ops alone at the small model's shapes: each linear (weights streamed once per
// call) and the attention of a few rows over 512 cached slots, as GB/s against the floor.
int micro(const std::string& weights, const std::string& math, int threads, const CpuFloors& floors, int attn_layers) {
  const bool q8 = weights == "q8";
  std::unique_ptr<Backend> be = create_cpu_backend(threads, weights == "bf16" ? DType::bf16 : DType::f32, weights != "bf16",
                                                   q8, math == "bf16", math == "int8");
  const double eb = q8 ? 1 : weights == "bf16" ? 2 : 4;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 0.05f);
  auto fill = [&](Tensor& t, DType dt, int64_t r, int64_t c) {
    std::vector<float> h(size_t(r * c));
    for (auto& x : h) x = nd(rng);
    be->alloc(t, dt, r, c);
    be->upload_f32(t, h.data(), r * c);
  };
  // Paired with a streaming read of as many bytes right before it, so that both see the
  // same load on a shared machine: the median ratio says how close the matvec streams.
  {
    Tensor W, x, y, bias;
    fill(W, weights == "bf16" ? DType::bf16 : DType::f32, 50258, 768);
    be->prepare_weight(W);
    fill(x, DType::f32, 4, 768);
    be->alloc(y, DType::f32, 4, 50258);
    const int64_t n = int64_t(double(50258) * 768 * eb / 4);
    ReadFloats buf(n);
    const CpuKernels& kn = cpu_kernels();
    for (int rows : {1, 2, 3, 4}) {
      Tensor xv = x, yv = y;
      xv.rows = yv.rows = rows;
      std::vector<double> ratios;
      for (int rep = 0; rep < 9; ++rep) {
        volatile float sink = 0;
        const double t_read = best_ms(1, [&] {
          std::vector<float> part(size_t(floors.threads), 0.0f);
          parallel_read(kn, buf.data(), n, int(part.size()), part.data());
          sink = part[0];
        });
        (void)sink;
        const double t_lin = best_ms(1, [&] { be->linear(xv, W, bias, yv, Epilogue::store); });
        ratios.push_back(t_lin / t_read);
      }
      std::sort(ratios.begin(), ratios.end());
      std::printf("head %d rows: matvec time / streaming read of its bytes, median of 9 pairs: %.2f\n", rows, ratios[4]);
    }
    for (Tensor* t : {&W, &x, &y}) be->release(*t);
  }
  // The block matrices of a whole step (12 x qkv, out, fc1, fc2: 170 MB in BF16, far past
  // the caches), one linear after another as a step runs them, against a streaming read of
  // as many bytes: what a step's linears lose to starting and finishing 48 calls.
  {
    const int64_t blk[][2] = {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}};
    std::vector<Tensor> Ws;
    double bytes = 0;
    for (int l = 0; l < 12; ++l)
      for (const auto& sh : blk) {
        Tensor W;
        fill(W, weights == "bf16" ? DType::bf16 : DType::f32, sh[0], sh[1]);
        be->prepare_weight(W);
        Ws.push_back(W);
        bytes += double(sh[0] * sh[1]) * eb;
      }
    Tensor x, y, bias;
    fill(x, DType::f32, 8, 3072);
    be->alloc(y, DType::f32, 8, 3072);
    const int64_t n = int64_t(bytes / 4);
    ReadFloats buf(n);
    const CpuKernels& kn = cpu_kernels();
    for (int rows : {1, 3}) {
      std::vector<double> ratios, gbps;
      double shape_ms[4] = {0, 0, 0, 0};  // summed over the 7 rounds
      for (int rep = 0; rep < 7; ++rep) {
        const double t_read = best_ms(1, [&] {
          std::vector<float> part(size_t(floors.threads), 0.0f);
          parallel_read(kn, buf.data(), n, int(part.size()), part.data());
        });
        const double t_lin = best_ms(1, [&] {
          for (size_t i = 0; i < Ws.size(); ++i) {
            Tensor& W = Ws[i];
            Tensor xv = x, yv = y;
            xv.rows = yv.rows = rows;
            xv.cols = W.cols;
            yv.cols = W.rows;
            const auto t0 = Clock::now();
            be->linear(xv, W, bias, yv, Epilogue::store);
            shape_ms[i % 4] += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          }
        });
        ratios.push_back(t_lin / t_read);
        gbps.push_back(bytes / (t_lin * 1e6));
      }
      std::sort(ratios.begin(), ratios.end());
      std::sort(gbps.begin(), gbps.end());
      std::printf("step sweep (48 block linears, %.0f MB), %d rows: %.1f GB/s; time / streaming read of its bytes, median of 7 pairs: %.2f\n",
                  bytes / 1e6, rows, gbps[3], ratios[3]);
      std::printf("  by shape:");
      for (int i = 0; i < 4; ++i)
        std::printf(" %lldx%lld %.1f GB/s;", (long long)blk[i][0], (long long)blk[i][1],
                    7 * 12 * double(blk[i][0] * blk[i][1]) * eb / (shape_ms[i] * 1e6));
      std::printf("\n");
    }
    for (Tensor& W : Ws) be->release(W);
    be->release(x);
    be->release(y);
  }
  const int64_t shapes[][2] = {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}, {50258, 768}};
  std::printf("%-28s %5s %9s %8s %8s\n", "linear", "rows", "ms", "GB/s", "of read");
  for (const auto& sh : shapes) {
    Tensor W, x, y, bias;
    fill(W, weights == "bf16" ? DType::bf16 : DType::f32, sh[0], sh[1]);
    be->prepare_weight(W);
    fill(x, DType::f32, 16, sh[1]);
    be->alloc(y, DType::f32, 16, sh[0]);
    for (int rows : {1, 2, 3, 4, 8, 16}) {
      Tensor xv = x, yv = y;
      xv.rows = yv.rows = rows;
      const double ms = best_ms(15, [&] { be->linear(xv, W, bias, yv, Epilogue::store); });
      const double gbps = double(sh[0] * sh[1]) * eb / (ms * 1e6);
      std::printf("%-28s %5d %9.3f %8.1f %7.0f%%\n", (std::to_string(sh[0]) + "x" + std::to_string(sh[1])).c_str(),
                  rows, ms, gbps, 100.0 * gbps / floors.read_gbps);
    }
    for (Tensor* t : {&W, &x, &y}) be->release(*t);
  }
  // Attention: 12 heads x 64, `n` query rows after 512 committed slots, as in a step, over
  // the K/V of 12 layers in turn (38 MB read: from memory, not from cache, as in a
  // generation). --attn-layers 1 keeps one layer's 3 MB in cache: the kernel's compute alone.
  // K and V in the backend's cache dtype (BF16 under BF16 and int8 math), as a generation.
  const int heads = 12, hd = 64, d = heads * hd, cap = 1024, layers = attn_layers;
  const DType kv = be->kv_dtype();
  const int kv_bytes = kv == DType::bf16 ? 2 : 4;
  std::vector<Tensor> k(static_cast<size_t>(layers)), v(static_cast<size_t>(layers));
  Tensor q, o;
  fill(q, DType::f32, 16, d);
  for (int l = 0; l < layers; ++l) {
    fill(k[l], kv, cap, d);
    fill(v[l], kv, cap, d);
  }
  be->alloc(o, DType::f32, 16, d);
  // Paired with a streaming read of as many bytes right before it (as the step sweep).
  const int64_t n_read = int64_t(2) * 513 * d * layers * kv_bytes / 4;
  ReadFloats rbuf(n_read);
  std::printf("%-28s %5s %9s %8s %8s %s\n", ("attention (c = 512, " + std::to_string(layers) + " layers)").c_str(), "rows",
              "ms/layer", "GB/s", "of read", "time / streaming read, median of 9 pairs");
  for (int n : {1, 2, 3, 4, 8, 16}) {
    AttnParams p;
    p.batch = 1;
    p.n_q = n;
    p.q_slot0 = 512;
    p.n_kv = 512 + n;
    p.n_heads = heads;
    p.head_dim = hd;
    p.capacity = cap;
    p.mode = AttnMode::causal;
    Tensor qv = q, ov = o;
    qv.rows = ov.rows = n;
    auto run = [&] {
      for (int l = 0; l < layers; ++l) {
        const Status st = be->attention(qv, k[l], v[l], p, ov);
        if (!st) {
          std::fprintf(stderr, "attention: %s\n", st.message.c_str());
          std::exit(1);
        }
      }
    };
    const double ms = best_ms(7, run) / layers;
    std::vector<double> ratios;
    for (int rep = 0; rep < 9; ++rep) {
      const double t_read = best_ms(1, [&] {
        std::vector<float> part(size_t(floors.threads), 0.0f);
        parallel_read(cpu_kernels(), rbuf.data(), n_read, int(part.size()), part.data());
      });
      ratios.push_back(best_ms(1, run) / t_read);
    }
    std::sort(ratios.begin(), ratios.end());
    const double gbps = 2.0 * (512 + n) * d * kv_bytes / (ms * 1e6);
    std::printf("%-28s %5d %9.3f %8.1f %7.0f%% %.2f\n", "12 heads x 64", n, ms, gbps, 100.0 * gbps / floors.read_gbps,
                ratios[4]);
  }
  for (Tensor* t : {&q, &o}) be->release(*t);
  for (int l = 0; l < layers; ++l) {
    be->release(k[l]);
    be->release(v[l]);
  }
  return 0;
}

}  // namespace
}  // namespace esolm

int main(int argc, char** argv) {
  using namespace esolm;
  const std::string weights = arg(argc, argv, "--weights", "bf16");
  const int length = std::atoi(arg(argc, argv, "--length", "1024"));
  const int steps = std::atoi(arg(argc, argv, "--steps", "1024"));
  const int batch = std::atoi(arg(argc, argv, "--batch", "1"));
  const int threads = std::atoi(arg(argc, argv, "--threads", "0"));
  const std::string math = arg(argc, argv, "--math", "f32");
  const double head_std = std::atof(arg(argc, argv, "--head-std", "0.036084"));
  if (math != "f32" && math != "bf16" && math != "int8") {
    std::fprintf(stderr, "--math: f32, bf16 or int8\n");
    return 1;
  }
  if (math == "int8" && (weights != "q8" || cpu_int8_math_error())) {
    std::fprintf(stderr, "--math int8: needs --weights q8 and AVX512_VNNI\n");
    return 1;
  }
  if (math == "bf16" && (weights != "bf16" || cpu_bf16_math_error())) {
    std::fprintf(stderr, "--math bf16: needs --weights bf16 and AVX512_BF16\n");
    return 1;
  }

  CpuFloors floors;
  Status s = measure_cpu_floors(threads, floors);
  if (!s) {
    std::fprintf(stderr, "floors: %s\n", s.message.c_str());
    return 1;
  }
  std::printf("floors (%s, %d threads): streaming read %.1f GB/s, peak FMA %.0f GFLOP/s\n", floors.kernels,
              floors.threads, floors.read_gbps, floors.fma_gflops);

  const int attn_layers = std::max(1, std::atoi(arg(argc, argv, "--attn-layers", "12")));
  if (argc > 1 && std::strcmp(argv[argc - 1], "--micro") == 0) return micro(weights, math, threads, floors, attn_layers);

  ModelConfig cfg = test::tiny_config();
  cfg.hidden_size = 768;
  cfg.n_heads = 12;
  cfg.n_blocks = 12;
  cfg.cond_dim = 128;
  cfg.vocab_size = 50258;
  cfg.mask_index = 50257;
  cfg.length = 1024;
  const bool q8 = weights == "q8";
  std::unique_ptr<Backend> cpu = create_cpu_backend(threads, weights == "bf16" ? DType::bf16 : DType::f32,
                                                    weights != "bf16", q8, math == "bf16", math == "int8");
  TimingBackend be(cpu.get());
  be.weight_elem_bytes_ = q8 ? 1 : weights == "bf16" ? 2 : 4;
  std::unique_ptr<Model> model;
  HostWeights w = test::random_weights(cfg, 7);
  {
    std::mt19937_64 rng(11);
    std::normal_distribution<float> dist(0.f, float(head_std));
    for (float& x : w["output_layer.linear.weight"].data) x = dist(rng);
  }
  s = Model::create(cfg, std::move(w), &be, model);
  if (!s) {
    std::fprintf(stderr, "Model::create: %s\n", s.message.c_str());
    return 1;
  }

  GenerateRequest req;
  req.method = Method::esolm;
  req.batch = batch;
  req.length = length;
  req.steps = steps;
  req.alpha0 = 1.0;
  req.sample.top_p = 0.9;
  req.sample.seed = 1;
  GenerateResult r;
  // A short untimed generation first: the timed one then finds its K/V cache's memory
  // ready (host_memory.cpp keeps freed blocks), as a service's later requests do.
  GenerateRequest warm = req;
  warm.steps = 16;
  s = generate(*model, warm, nullptr, nullptr, nullptr, r);
  be.stats.clear();
  const auto t0 = Clock::now();
  s = s ? generate(*model, req, nullptr, nullptr, nullptr, r) : s;
  const double wall = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!s) {
    std::fprintf(stderr, "generate: %s\n", s.message.c_str());
    return 1;
  }
  double op_ms = 0, bytes = 0;
  for (const auto& kv : be.stats) {
    op_ms += kv.second.ms;
    bytes += kv.second.bytes;
  }
  std::printf("Eso-LM (B), weights %s%s, L = %d, T = %d, batch %d: %.0f ms, NFE %d (%.2f ms per NFE); "
              "bytes %.2f GB -> bandwidth floor %.0f ms (%.0f%% of floor)\n",
              weights.c_str(), math == "f32" ? "" : (" + " + math + " math").c_str(), length, steps, batch, wall, r.nfe, wall / r.nfe, bytes / 1e9,
              bytes / (floors.read_gbps * 1e6), 100.0 * bytes / (floors.read_gbps * 1e6) / wall);
  std::printf("%-34s %9s %8s %7s %9s %7s %9s %9s %9s\n", "op", "ms", "calls", "share", "GB read", "GB/s", "mean us",
              "median us", "p99 us");
  for (auto& kv : be.stats) {
    OpStat& st = kv.second;
    std::sort(st.us.begin(), st.us.end());
    std::printf("%-34s %9.1f %8lld %6.1f%% %9.3f %7.1f %9.1f %9.1f %9.1f\n", kv.first.c_str(), st.ms, (long long)st.calls,
                100.0 * st.ms / wall, st.bytes / 1e9, st.ms > 0 ? st.bytes / (st.ms * 1e6) : 0.0,
                1e3 * st.ms / double(st.calls), double(st.us[st.us.size() / 2]), double(st.us[st.us.size() * 99 / 100]));
  }
  std::printf("%-34s %9.1f %8s %6.1f%%\n", "(between ops)", wall - op_ms, "", 100.0 * (wall - op_ms) / wall);
  return 0;
}
