// ops_reference.cpp — see ops_reference.h. Written for clarity, not speed.
#include "cpu/ops_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/kernels.h"

namespace esolm {

double gelu_tanh(double u) {
  const double s = std::sqrt(2.0 / M_PI);
  return 0.5 * u * (1.0 + std::tanh(s * (u + 0.044715 * u * u * u)));
}

Status layernorm_reference(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  const int64_t d = x.cols;
  const float* xp = static_cast<const float*>(x.data);
  const float* wp = static_cast<const float*>(w.data);
  const float* bp = b.empty() ? nullptr : static_cast<const float*>(b.data);
  float* yp = static_cast<float*>(y.data);
  for (int64_t r = 0; r < x.rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += xp[r * d + i];
    mean /= double(d);
    for (int64_t i = 0; i < d; ++i) var += (xp[r * d + i] - mean) * (xp[r * d + i] - mean);
    var /= double(d);
    const double rstd = 1.0 / std::sqrt(var + 1e-5);
    for (int64_t i = 0; i < d; ++i)
      yp[r * d + i] = float((xp[r * d + i] - mean) * rstd * wp[i] + (bp ? bp[i] : 0.0));
  }
  return Status::ok();
}

Status linear_reference(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out,
                        Epilogue ep) {
  const int64_t n = W.rows, k = W.cols;
  const float* a = static_cast<const float*>(in.data);
  const float* w = static_cast<const float*>(W.data);
  const float* bp = bias.empty() ? nullptr : static_cast<const float*>(bias.data);
  float* c = static_cast<float*>(out.data);
  for (int64_t r = 0; r < in.rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double acc = bp ? bp[j] : 0.0;
      for (int64_t kk = 0; kk < k; ++kk) acc += double(a[r * k + kk]) * w[j * k + kk];
      float& o = c[r * out.cols + j];
      if (ep == Epilogue::gelu) o = float(gelu_tanh(acc));
      else if (ep == Epilogue::add_to) o = float(o + acc);
      else o = float(acc);
    }
  return Status::ok();
}

float round_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;          // NaN: quiet, stays NaN
  else if ((u & 0x7f800000u) == 0) u &= 0x80000000u;               // zero or subnormal: signed zero
  else u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;         // nearest, ties to even
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

float int8_quantize_block(const float* a, int n, int8_t* q, int32_t* corr) {
  uint32_t amax_bits = 0;  // |a| as bits: ordered as the values, NaN above infinity
  for (int i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &a[i], 4);
    amax_bits = std::max(amax_bits, u & 0x7fffffffu);
  }
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  const float s = amax_bits >= 0x7f800000u ? std::numeric_limits<float>::quiet_NaN() : amax / 127.0f;
  int32_t sum = 0;
  for (int i = 0; i < kInt8Block; ++i) {
    float v = 0.0f;
    if (i < n && s > 0.0f) v = std::max(-127.0f, std::min(127.0f, std::nearbyint(a[i] / s)));  // NaN s: 0
    q[i] = int8_t(v);
    sum += q[i];
  }
  *corr = -128 * sum;
  return s;
}

Status linear_int8_math_reference(const Tensor& in, const Tensor& Wq, const Tensor& w_scale, const Tensor& bias,
                                  Tensor& out, Epilogue ep) {
  if (in.dtype != DType::f32 || Wq.dtype != DType::f32 || w_scale.numel() != Wq.rows || in.cols != Wq.cols)
    return Status::error(Code::internal, "linear_int8_math_reference: F32 tensors, one scale per row");
  const int64_t n = Wq.rows, k = Wq.cols, blocks = (k + kInt8Block - 1) / kInt8Block;
  const float* a = static_cast<const float*>(in.data);
  const float* w = static_cast<const float*>(Wq.data);
  const float* ws = static_cast<const float*>(w_scale.data);
  const float* bp = bias.empty() ? nullptr : static_cast<const float*>(bias.data);
  float* c = static_cast<float*>(out.data);
  std::vector<int8_t> q(static_cast<size_t>(blocks * kInt8Block));
  std::vector<float> s(static_cast<size_t>(blocks));
  for (int64_t r = 0; r < in.rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      int32_t corr;
      s[size_t(b)] = int8_quantize_block(a + r * k + b * kInt8Block, int(std::min<int64_t>(kInt8Block, k - b * kInt8Block)),
                                         &q[size_t(b * kInt8Block)], &corr);
    }
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        int64_t dot = 0;
        for (int64_t kk = b * kInt8Block; kk < std::min(k, (b + 1) * kInt8Block); ++kk)
          dot += int64_t(q[size_t(kk)]) * int64_t(w[j * k + kk]);
        acc += double(dot) * s[size_t(b)];
      }
      acc = acc * ws[j] + (bp ? bp[j] : 0.0);
      float& o = c[r * out.cols + j];
      if (ep == Epilogue::gelu) o = float(gelu_tanh(acc));
      else if (ep == Epilogue::add_to) o = float(o + acc);
      else o = float(acc);
    }
  }
  return Status::ok();
}

Status linear_bf16_math_reference(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out,
                                  Epilogue ep) {
  if (in.dtype != DType::f32 || W.dtype != DType::f32)
    return Status::error(Code::internal, "linear_bf16_math_reference: F32 tensors");
  std::vector<float> a(static_cast<const float*>(in.data), static_cast<const float*>(in.data) + in.numel());
  std::vector<float> w(static_cast<const float*>(W.data), static_cast<const float*>(W.data) + W.numel());
  for (float& v : a) v = round_to_bf16(v);
  for (float& v : w) v = round_to_bf16(v);
  Tensor ar = in, wr = W;
  ar.data = a.data();
  wr.data = w.data();
  return linear_reference(ar, wr, bias, out, ep);
}

void rope_angles(int32_t pos, int hd, double* cs, double* sn) {
  for (int j = 0; j < hd / 2; ++j) {
    const double inv_freq = std::pow(10000.0, -2.0 * j / hd);
    const double ang = double(pos) * inv_freq;
    cs[j] = std::cos(ang);
    sn[j] = std::sin(ang);
  }
}

Status rope_qkv_store_reference(const Tensor& qkv, const Tensor& positions, int batch, int n,
                                int n_heads, int slot0, int capacity, Tensor& q_out,
                                Tensor& k_cache, Tensor& v_cache) {
  const int64_t d = qkv.cols / 3;
  const int hd = int(d / n_heads), half = hd / 2;
  if (slot0 < 0 || slot0 + n > capacity)
    return Status::error(Code::internal, "rope_qkv_store: slots out of range");
  std::vector<double> cs(half), sn(half);
  const float* src = static_cast<const float*>(qkv.data);
  const int32_t* pos = static_cast<const int32_t*>(positions.data);
  float* qo = static_cast<float*>(q_out.data);
  float* kc = static_cast<float*>(k_cache.data);
  float* vc = static_cast<float*>(v_cache.data);
  for (int b = 0; b < batch; ++b)
    for (int i = 0; i < n; ++i) {
      const int64_t row = int64_t(b) * n + i;
      const int64_t slot = int64_t(b) * capacity + slot0 + i;
      rope_angles(pos[row], hd, cs.data(), sn.data());
      const float* r = src + row * 3 * d;
      for (int h = 0; h < n_heads; ++h) {
        const int o = h * hd;
        for (int j = 0; j < half; ++j) {
          const double q1 = r[o + j], q2 = r[o + j + half];
          qo[row * d + o + j] = float(q1 * cs[j] - q2 * sn[j]);
          qo[row * d + o + j + half] = float(q2 * cs[j] + q1 * sn[j]);
          const double k1 = r[d + o + j], k2 = r[d + o + j + half];
          kc[slot * d + o + j] = float(k1 * cs[j] - k2 * sn[j]);
          kc[slot * d + o + j + half] = float(k2 * cs[j] + k1 * sn[j]);
        }
      }
      for (int64_t c = 0; c < d; ++c) vc[slot * d + c] = r[2 * d + c];
    }
  return Status::ok();
}

bool attention_visible(const AttnParams& p, const int32_t* clean_seq, int qs, int s) {
  if (s >= p.n_kv) return false;
  switch (p.mode) {
    case AttnMode::causal: return s <= qs;
    case AttnMode::bidirectional: return true;
    case AttnMode::mixed2: return s <= qs || (clean_seq[qs] && clean_seq[s]);
    case AttnMode::sequential: {
      const int half = p.n_kv / 2;
      if (qs < half) return s <= qs;
      return s < qs - half || s == qs;
    }
  }
  return false;
}

Status attention_reference(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const AttnParams& p, Tensor& out) {
  const int d = p.n_heads * p.head_dim;
  const double scale = 1.0 / std::sqrt(double(p.head_dim));
  const float* qp = static_cast<const float*>(q.data);
  const float* kp = static_cast<const float*>(k_cache.data);
  const float* vp = static_cast<const float*>(v_cache.data);
  const int32_t* clean = p.clean ? static_cast<const int32_t*>(p.clean->data) : nullptr;
  float* op = static_cast<float*>(out.data);
  std::vector<double> sc(p.n_kv), acc(p.head_dim);
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.n_heads; ++h)
      for (int r = 0; r < p.n_q; ++r) {
        const int qs = p.q_slot0 + r;
        const float* qr = qp + (int64_t(b) * p.n_q + r) * d + h * p.head_dim;
        double mx = -std::numeric_limits<double>::infinity();
        for (int s = 0; s < p.n_kv; ++s) {
          if (!attention_visible(p, clean ? clean + int64_t(b) * p.capacity : nullptr, qs, s)) {
            sc[s] = -std::numeric_limits<double>::infinity();
            continue;
          }
          const float* ks = kp + (int64_t(b) * p.capacity + s) * d + h * p.head_dim;
          double dot = 0;
          for (int i = 0; i < p.head_dim; ++i) dot += double(qr[i]) * ks[i];
          sc[s] = dot * scale;
          if (sc[s] > mx) mx = sc[s];
        }
        double sum = 0;
        for (int s = 0; s < p.n_kv; ++s) {
          sc[s] = std::isinf(sc[s]) ? 0.0 : std::exp(sc[s] - mx);
          sum += sc[s];
        }
        for (int i = 0; i < p.head_dim; ++i) acc[i] = 0;
        for (int s = 0; s < p.n_kv; ++s) {
          if (sc[s] == 0.0) continue;
          const float* vs = vp + (int64_t(b) * p.capacity + s) * d + h * p.head_dim;
          for (int i = 0; i < p.head_dim; ++i) acc[i] += sc[s] * vs[i];
        }
        float* o = op + (int64_t(b) * p.n_q + r) * d + h * p.head_dim;
        for (int i = 0; i < p.head_dim; ++i) o[i] = float(acc[i] / sum);
      }
  return Status::ok();
}

}  // namespace esolm
