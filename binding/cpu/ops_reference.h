// ops_reference.h — the simplest correct version of each backend op on host F32
// tensors: plain loops, float64 accumulation, one thread. They are the oracles that
// the fast CPU kernels and the CUDA kernels are tested against, and rope_qkv_store is
// also used by the CPU backend (it is cheap), with the angles from a cached table.
#pragma once
#include <string>

#include "engine/backend.h"

namespace esolm {

Status layernorm_reference(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y);
Status linear_reference(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out,
                        Epilogue ep);
// BF16 math's rounding (kernels.h): f to the nearest BF16 value, ties to even, subnormals
// to a zero of the same sign (as vcvtne2ps2bf16 does); NaN stays NaN. Returned as F32.
float round_to_bf16(float f);
// linear_reference with both operands rounded by round_to_bf16 first (the BF16-math oracle):
// W is F32 (its values rounded here) as the reference backend stores it.
Status linear_bf16_math_reference(const Tensor& in, const Tensor& W, const Tensor& bias, Tensor& out,
                                  Epilogue ep);
// int8 math's activation rule (kernels.h): a block of n <= kInt8Block floats -> kInt8Block
// int8 values (zero past n), returning the block scale s = max |a| / 127 (F32 division)
// with q = round_half_even(a / s) (F32 division) clamped to [-127, 127], and *corr =
// -128 * sum(q). An all-zero block (or one whose s underflows to 0) gets s = 0 and q = 0;
// a block holding NaN or an infinity gets s = NaN and q = 0, so its outputs are NaN.
float int8_quantize_block(const float* a, int n, int8_t* q, int32_t* corr);
// The int8-math oracle: each input row quantized by int8_quantize_block, then per output
// column sum_b float64(sum q_a * q_w) * s_b, times w_scale[col], in float64 (the integer
// products are exact). Wq: F32 [n, k] holding the weight's q8 values (integers in
// [-127, 127]); w_scale: F32 [1, n], the weight's row scales (engine/q8.h).
Status linear_int8_math_reference(const Tensor& in, const Tensor& Wq, const Tensor& w_scale, const Tensor& bias,
                                  Tensor& out, Epilogue ep);
// cos and sin of the rotary angles pos * 10000^(-2j/hd), j < hd/2, in float64.
void rope_angles(int32_t pos, int hd, double* cs, double* sn);
Status rope_qkv_store_reference(const Tensor& qkv, const Tensor& positions, int batch, int n,
                                int n_heads, int slot0, int capacity, Tensor& q_out,
                                Tensor& k_cache, Tensor& v_cache);
Status attention_reference(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const AttnParams& p, Tensor& out);
// Is key slot s visible from query slot qs under p (backend.h AttnMode)?
bool attention_visible(const AttnParams& p, const int32_t* clean_seq, int qs, int s);
double gelu_tanh(double u);

const char* cpu_kernels_in_use();
// Why ESOLM_CPU_KERNELS cannot be honoured (unknown or unsupported set), or null.
const char* cpu_kernels_error();
// The kernel sets this CPU and build can run, widest first ("avx512 avx2+fma portable").
std::string cpu_kernels_available();
// Why BF16 math (create_cpu_backend(..., bf16_math)) cannot run here (no AVX512_BF16, or
// ESOLM_CPU_KERNELS forces a set without BF16 pair panels), or null.
const char* cpu_bf16_math_error();
// Why int8 math (create_cpu_backend(..., q8, ..., int8_math)) cannot run here (no
// AVX512_VNNI, or ESOLM_CPU_KERNELS forces a set other than avx512), or null.
const char* cpu_int8_math_error();
// Kernel set a CPU backend instance uses ("" for other backends).
const char* cpu_backend_kernels(const Backend& be);

}  // namespace esolm
