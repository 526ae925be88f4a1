// weights.cpp — see weights.h.
#include "weights.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <regex>

#include "q8.h"

namespace esolm {
namespace {

float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        --exp;
      }
      man &= 0x3ff;
      u = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

constexpr int64_t kMaxBytes = int64_t(1) << 50;  // far above any host; keeps products overflow-free

Status numel_of(const TensorEntry& e, int64_t& numel) {
  numel = 1;
  for (int64_t s : e.shape) {
    if (s < 0 || (s > 0 && numel > kMaxBytes / s))
      return Status::error(Code::bad_weights, "tensor '" + e.name + "' has an invalid or too large shape");
    numel *= s;
  }
  return Status::ok();
}

Status shape_error(const std::string& name, const std::vector<int64_t>& want, const std::vector<int64_t>& got) {
  auto fmt = [](const std::vector<int64_t>& s) {
    std::string o = "[";
    for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
    return o + "]";
  };
  return Status::error(Code::bad_weights, "tensor '" + name + "' has shape " + fmt(got) + ", expected " + fmt(want));
}

int64_t dtype_size(const std::string& d) {
  return d == "F32" ? 4 : (d == "BF16" || d == "F16") ? 2 : d == "I8" ? 1 : 0;
}

Status read_tensor(const TensorEntry& e, HostTensor& out) {
  const int64_t esize = dtype_size(e.dtype);
  if (esize == 0) return Status::error(Code::bad_weights, "tensor '" + e.name + "' has unsupported dtype " + e.dtype);
  int64_t numel = 0;
  ESOLM_TRY(numel_of(e, numel));
  if (numel * esize != e.nbytes || e.offset < 0)
    return Status::error(Code::bad_weights, "tensor '" + e.name + "' byte size does not match its shape");
  // O_NONBLOCK: a FIFO must not block the open; then only regular files are read.
  const int fd = ::open(e.file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Status::error(Code::io, "cannot open " + e.file);
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::error(Code::io, e.file + " is not a regular file");
  }
  if (e.offset > int64_t(st.st_size) || e.nbytes > int64_t(st.st_size) - e.offset) {
    ::close(fd);
    return Status::error(Code::bad_weights, "tensor '" + e.name + "' data is truncated in " + e.file);
  }
  std::vector<uint8_t> raw(size_t(e.nbytes));
  int64_t done = 0;
  while (done < e.nbytes) {
    const ssize_t n = ::pread(fd, raw.data() + done, size_t(e.nbytes - done), off_t(e.offset + done));
    if (n <= 0) break;
    done += n;
  }
  ::close(fd);
  if (done != e.nbytes) return Status::error(Code::bad_weights, "tensor '" + e.name + "' data is truncated in " + e.file);
  out.shape = e.shape;
  if (e.dtype == "I8") {  // an 8-bit matrix: read_weights attaches its scales
    out.q8.resize(size_t(numel));
    std::memcpy(out.q8.data(), raw.data(), raw.size());
    return Status::ok();
  }
  out.data.resize(size_t(numel));
  if (esize == 4) {
    std::memcpy(out.data.data(), raw.data(), raw.size());
  } else {
    const uint8_t* p = raw.data();
    const bool bf16 = e.dtype == "BF16";
    for (int64_t i = 0; i < numel; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out.data[size_t(i)] = bf16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return Status::ok();
}

// Moves each I8 tensor's `<name>_scale` into it (see read_weights).
Status attach_q8_scales(const std::map<std::string, std::string>& dtypes, HostWeights& w) {
  const std::string suffix = kQ8ScaleSuffix;
  for (auto& kv : w) {
    if (!kv.second.is_q8()) continue;
    const std::string& name = kv.first;
    HostTensor& t = kv.second;
    const std::string scale_name = name + suffix;
    if (t.shape.size() != 2)
      return Status::error(Code::bad_weights, "tensor '" + name + "' is I8 but not a matrix (only linear matrices may be 8-bit)");
    auto it = w.find(scale_name);
    if (it == w.end())
      return Status::error(Code::bad_weights, "tensor '" + name + "' is I8 but its scale tensor '" + scale_name + "' is missing");
    if (dtypes.at(scale_name) != "F32" || it->second.shape != std::vector<int64_t>{t.shape[0]})
      return Status::error(Code::bad_weights, "scale tensor '" + scale_name + "' must be F32 of shape [" +
                                                  std::to_string(t.shape[0]) + "] (one scale per row of '" + name + "')");
    for (float s : it->second.data)
      if (!std::isfinite(s) || s < 0.0f)
        return Status::error(Code::bad_weights, "scale tensor '" + scale_name + "' holds a negative, NaN or Inf value");
    for (int8_t q : t.q8)
      if (q < -kQ8Max)
        return Status::error(Code::bad_weights, "tensor '" + name + "' holds the int8 value -128 (8-bit weights are in [-127, 127])");
    t.q8_scale = std::move(it->second.data);
    w.erase(it);
  }
  for (const auto& kv : w) {  // a scale left over has no I8 tensor
    const std::string& n = kv.first;
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        w.count(n.substr(0, n.size() - suffix.size())))
      return Status::error(Code::bad_weights, "tensor '" + n + "' is a scale, but '" + n.substr(0, n.size() - suffix.size()) +
                                                  "' is not stored as I8");
  }
  return Status::ok();
}

}  // namespace

Status host_bytes(const std::vector<TensorEntry>& entries, int64_t& bytes) {
  bytes = 0;
  for (const auto& e : entries) {
    int64_t numel = 0;
    ESOLM_TRY(numel_of(e, numel));
    bytes += numel * 4;
    if (bytes > kMaxBytes) return Status::error(Code::out_of_memory, "the weights are too large");
  }
  return Status::ok();
}

Status read_weights(const std::vector<TensorEntry>& entries, HostWeights& out) {
  std::map<std::string, std::string> dtypes;
  for (const auto& e : entries) {
    if (out.count(e.name)) return Status::error(Code::bad_weights, "tensor '" + e.name + "' appears twice");
    dtypes[e.name] = e.dtype;
    ESOLM_TRY(read_tensor(e, out[e.name]));
  }
  return attach_q8_scales(dtypes, out);
}

bool q8_matrix(const std::string& name) {
  static const std::regex re(R"(blocks\.[0-9]+\.(attn_qkv|attn_out|mlp\.0|mlp\.2)\.weight|output_layer\.linear\.weight)");
  return std::regex_match(name, re);
}

std::map<std::string, std::vector<int64_t>> expected_shapes(const ModelConfig& c) {
  const int64_t d = c.hidden_size, V = c.vocab_size, f = c.mlp_hidden(), cd = c.cond_dim;
  std::map<std::string, std::vector<int64_t>> m;
  m["vocab_embed.embedding"] = {V, d};
  for (int i = 0; i < c.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    m[p + "norm1.weight"] = {d};
    m[p + "attn_qkv.weight"] = {3 * d, d};
    m[p + "attn_out.weight"] = {d, d};
    m[p + "norm2.weight"] = {d};
    m[p + "mlp.0.weight"] = {f, d};
    m[p + "mlp.0.bias"] = {f};
    m[p + "mlp.2.weight"] = {d, f};
    m[p + "mlp.2.bias"] = {d};
    if (c.has_adaln()) {
      m[p + "adaLN_modulation.weight"] = {6 * d, cd};
      m[p + "adaLN_modulation.bias"] = {6 * d};
    }
  }
  m["output_layer.norm_final.weight"] = {d};
  m["output_layer.linear.weight"] = {V, d};
  m["output_layer.linear.bias"] = {V};
  if (c.has_adaln()) {
    m["output_layer.adaLN_modulation.weight"] = {2 * d, cd};
    m["output_layer.adaLN_modulation.bias"] = {2 * d};
    m["sigma_map.mlp.0.weight"] = {cd, -1};  // frequency embedding width (256) from the file
    m["sigma_map.mlp.0.bias"] = {cd};
    m["sigma_map.mlp.2.weight"] = {cd, cd};
    m["sigma_map.mlp.2.bias"] = {cd};
  }
  return m;
}

Status check_weights(const ModelConfig& cfg, const HostWeights& weights) {
  const auto want = expected_shapes(cfg);
  for (const auto& kv : want) {
    auto it = weights.find(kv.first);
    if (it == weights.end()) return Status::error(Code::bad_weights, "missing tensor '" + kv.first + "'");
    const auto& got = it->second.shape;
    bool ok = got.size() == kv.second.size();
    for (size_t i = 0; ok && i < got.size(); ++i) ok = kv.second[i] < 0 ? got[i] > 0 : got[i] == kv.second[i];
    if (!ok) return shape_error(kv.first, kv.second, got);
    int64_t numel = 1;
    for (auto s : got) numel *= s;
    const HostTensor& t = it->second;
    if (t.is_q8() && !q8_matrix(kv.first))
      return Status::error(Code::bad_weights, "tensor '" + kv.first + "' is I8, but only the linear matrices (attn_qkv, attn_out, "
                                              "mlp.0, mlp.2 and output_layer.linear weights) may be 8-bit");
    if (t.is_q8() ? int64_t(t.q8.size()) != numel || int64_t(t.q8_scale.size()) != got[0] || !t.data.empty()
                  : int64_t(t.data.size()) != numel)
      return Status::error(Code::bad_weights, "tensor '" + kv.first + "' has the wrong element count");
    for (float v : t.is_q8() ? t.q8_scale : t.data)
      if (!std::isfinite(v)) return Status::error(Code::bad_weights, "tensor '" + kv.first + "' contains NaN or Inf");
  }
  for (const auto& kv : weights)
    if (!want.count(kv.first) && kv.first != "rotary_emb.inv_freq")
      return Status::error(Code::bad_weights, "unexpected tensor '" + kv.first + "'");
  return Status::ok();
}

void set_q8_storage(HostWeights& w, bool q8) {
  for (auto& kv : w) {
    HostTensor& t = kv.second;
    if (t.shape.size() != 2 || !q8_matrix(kv.first)) continue;
    const int64_t rows = t.shape[0], cols = t.shape[1];
    if (q8 && !t.is_q8()) {
      t.q8.resize(size_t(rows * cols));
      t.q8_scale.resize(size_t(rows));
      for (int64_t r = 0; r < rows; ++r)
        t.q8_scale[size_t(r)] = q8_quantize_row(t.data.data() + r * cols, cols, t.q8.data() + r * cols, 1);
      t.data = {};
    } else if (!q8 && t.is_q8()) {
      t.data.resize(size_t(rows * cols));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          t.data[size_t(r * cols + c)] = float(t.q8[size_t(r * cols + c)]) * t.q8_scale[size_t(r)];
      t.q8 = {};
      t.q8_scale = {};
    }
  }
}

void fold_adaln(const ModelConfig& cfg, HostWeights& w) {
  const int64_t d = cfg.hidden_size, cd = cfg.cond_dim;
  auto take = [&](const std::string& name) -> HostTensor& { return w.at(name); };

  // Constant conditioning c (sigma = 0): e = [cos 0]*half ++ [sin 0]*half.
  std::vector<double> c;
  if (cfg.has_adaln()) {
    const HostTensor& w1 = take("sigma_map.mlp.0.weight");
    const HostTensor& b1 = take("sigma_map.mlp.0.bias");
    const HostTensor& w2 = take("sigma_map.mlp.2.weight");
    const HostTensor& b2 = take("sigma_map.mlp.2.bias");
    const int64_t freq = w1.shape[1], half = freq / 2;
    auto silu = [](double x) { return x / (1.0 + std::exp(-x)); };
    std::vector<double> h(cd);
    for (int64_t i = 0; i < cd; ++i) {
      double a = b1.data[i];
      for (int64_t j = 0; j < half; ++j) a += w1.data[i * freq + j];  // cos(0) = 1 columns
      h[i] = silu(a);
    }
    c.assign(cd, 0.0);
    for (int64_t i = 0; i < cd; ++i) {
      double a = b2.data[i];
      for (int64_t j = 0; j < cd; ++j) a += w2.data[i * cd + j] * h[j];
      c[i] = silu(a);
    }
  }
  // mod = W·c + b for an adaLN linear of `rows` outputs (empty without adaLN).
  auto modulation = [&](const std::string& prefix, int64_t rows) {
    std::vector<double> m;
    if (!cfg.has_adaln()) return m;
    const HostTensor& W = take(prefix + ".weight");
    const HostTensor& B = take(prefix + ".bias");
    m.resize(rows);
    for (int64_t i = 0; i < rows; ++i) {
      double a = B.data[i];
      for (int64_t j = 0; j < cd; ++j) a += W.data[i * cd + j] * c[j];
      m[i] = a;
    }
    return m;
  };
  // LN(x)·(1 + scale) + shift: the norm weight becomes w·(1 + scale), its bias shift.
  auto fold_norm = [&](const std::string& norm, const std::vector<double>& mod, int shift, int scale) {
    HostTensor& nw = take(norm + ".weight");
    HostTensor nb{{d}, std::vector<float>(size_t(d), 0.0f)};
    if (!mod.empty()) {
      for (int64_t j = 0; j < d; ++j) {
        nw.data[j] = float(double(nw.data[j]) * (1.0 + mod[scale * d + j]));
        nb.data[j] = float(mod[shift * d + j]);
      }
    }
    w[norm + ".bias"] = std::move(nb);
  };
  // Row r of a gated projection W [d, cols] times gate mod[gate * d + r]. An 8-bit matrix
  // keeps its int8 values: the row scale takes |gate| and a negative gate negates the row.
  auto scale_rows = [&](HostTensor& W, const std::vector<double>& mod, int gate) {
    const int64_t cols = W.shape[1];
    for (int64_t r = 0; r < d; ++r) {
      const double g = mod[gate * d + r];
      if (W.is_q8()) {
        W.q8_scale[size_t(r)] = float(double(W.q8_scale[size_t(r)]) * std::fabs(g));
        if (g < 0)
          for (int64_t k = 0; k < cols; ++k) W.q8[size_t(r * cols + k)] = int8_t(-W.q8[size_t(r * cols + k)]);
      } else {
        for (int64_t k = 0; k < cols; ++k) W.data[size_t(r * cols + k)] = float(double(W.data[size_t(r * cols + k)]) * g);
      }
    }
  };

  for (int i = 0; i < cfg.n_blocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    // shift_a, scale_a, gate_a, shift_m, scale_m, gate_m
    const std::vector<double> mod = modulation(p + "adaLN_modulation", 6 * d);
    fold_norm(p + "norm1", mod, 0, 1);
    fold_norm(p + "norm2", mod, 3, 4);
    if (mod.empty()) continue;
    scale_rows(take(p + "attn_out.weight"), mod, 2);
    scale_rows(take(p + "mlp.2.weight"), mod, 5);
    HostTensor& b2 = take(p + "mlp.2.bias");
    for (int64_t r = 0; r < d; ++r) b2.data[r] = float(double(b2.data[r]) * mod[5 * d + r]);
    w.erase(p + "adaLN_modulation.weight");
    w.erase(p + "adaLN_modulation.bias");
  }
  // shift_f, scale_f
  fold_norm("output_layer.norm_final", modulation("output_layer.adaLN_modulation", 2 * d), 0, 1);
  for (const char* name : {"output_layer.adaLN_modulation.weight", "output_layer.adaLN_modulation.bias",
                           "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias", "sigma_map.mlp.2.weight",
                           "sigma_map.mlp.2.bias"})
    w.erase(name);
}

}  // namespace esolm
