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
// cos and sin of the rotary angles pos * 10000^(-2j/hd), j < hd/2, in float64.
void rope_angles(int32_t pos, int hd, double* cs, double* sn);
// angles (optional): fills cs/sn for a position as rope_angles does (a cached table).
using RopeAnglesFn = void (*)(void* ctx, int32_t pos, int hd, double* cs, double* sn);
Status rope_qkv_store_reference(const Tensor& qkv, const Tensor& positions, int batch, int n,
                                int n_heads, int slot0, int capacity, Tensor& q_out,
                                Tensor& k_cache, Tensor& v_cache, RopeAnglesFn angles = nullptr,
                                void* angles_ctx = nullptr);
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
// Kernel set a CPU backend instance uses ("" for other backends).
const char* cpu_backend_kernels(const Backend& be);

}  // namespace esolm
