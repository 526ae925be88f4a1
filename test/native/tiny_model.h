// tiny_model.h — a small random Eso-LM for native tests: official tensor names
// (MODEL-REFERENCE.md §1.2), values rounded to bf16 so every backend loads them exactly.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/model.h"

namespace esolm {
namespace test {

inline float bf16_round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

inline ModelConfig tiny_config() {
  ModelConfig cfg;
  cfg.arch = Arch::esolm;
  cfg.hidden_size = 128;
  cfg.n_heads = 4;
  cfg.n_blocks = 2;
  cfg.cond_dim = 32;
  cfg.vocab_size = 1000;
  cfg.mask_index = 999;
  cfg.length = 256;
  return cfg;
}

inline HostWeights random_weights(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostWeights w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float sd) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    std::normal_distribution<float> dist(mean, sd);
    HostTensor t;
    t.shape = shape;
    t.data.resize(size_t(n));
    for (auto& x : t.data) x = bf16_round(dist(rng));
    w[name] = std::move(t);
  };
  const int64_t d = c.hidden_size, V = c.vocab_size, f = c.mlp_hidden(), cd = c.cond_dim;
  const float sd_d = 1.f / std::sqrt(float(d)), sd_f = 1.f / std::sqrt(float(f));
  add("vocab_embed.embedding", {V, d}, 0.f, 1.f);
  if (c.has_adaln()) {
    add("sigma_map.mlp.0.weight", {cd, 256}, 0.f, 0.05f);
    add("sigma_map.mlp.0.bias", {cd}, 0.f, 0.1f);
    add("sigma_map.mlp.2.weight", {cd, cd}, 0.f, 0.1f);
    add("sigma_map.mlp.2.bias", {cd}, 0.f, 0.1f);
  }
  for (int i = 0; i < c.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    add(p + "norm1.weight", {d}, 1.f, 0.1f);
    add(p + "attn_qkv.weight", {3 * d, d}, 0.f, 2.f * sd_d);  // sharper attention than uniform
    add(p + "attn_out.weight", {d, d}, 0.f, sd_d);
    add(p + "norm2.weight", {d}, 1.f, 0.1f);
    add(p + "mlp.0.weight", {f, d}, 0.f, sd_d);
    add(p + "mlp.0.bias", {f}, 0.f, 0.1f);
    add(p + "mlp.2.weight", {d, f}, 0.f, sd_f);
    add(p + "mlp.2.bias", {d}, 0.f, 0.1f);
    if (c.has_adaln()) {
      add(p + "adaLN_modulation.weight", {6 * d, cd}, 0.f, 0.05f);
      add(p + "adaLN_modulation.bias", {6 * d}, 0.f, 0.1f);
    }
  }
  add("output_layer.norm_final.weight", {d}, 1.f, 0.1f);
  add("output_layer.linear.weight", {V, d}, 0.f, 3.f * sd_d);
  add("output_layer.linear.bias", {V}, 0.f, 0.1f);
  if (c.has_adaln()) {
    add("output_layer.adaLN_modulation.weight", {2 * d, cd}, 0.f, 0.05f);
    add("output_layer.adaLN_modulation.bias", {2 * d}, 0.f, 0.1f);
  }
  return w;
}

}  // namespace test
}  // namespace esolm
