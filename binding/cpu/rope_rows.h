// rope_rows.h — the CPU backend's rotary embedding of one row: the reference's float64
// arithmetic (ops_reference.cpp rope_qkv_store_reference), eight pairs at a time where the
// CPU has AVX-512F, with the same bits (rope_rows.cpp is built without fused multiply-adds).
#pragma once
#include <cstdint>

namespace esolm {

// One row r of a [q | k | v] projection (3 d floats, d = n_heads * hd): q and k rotated by
// the angles (cs[j], sn[j] for j < hd / 2) into q_out and k_out, v copied to v_out.
void rope_row(const float* r, int64_t d, int n_heads, int hd, const double* cs, const double* sn, float* q_out,
              float* k_out, float* v_out);

// For tests: rope_rows_allow_avx512(false) makes this process use the scalar loop only.
void rope_rows_allow_avx512(bool allow);

}  // namespace esolm
