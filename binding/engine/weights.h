// weights.h — everything about weights before they reach a backend, owned by the engine:
//  - I/O: where each tensor lies in which file, reading and dtype decoding (F32 / BF16 /
//    F16 -> host F32; an 8-bit matrix, I8 `<name>` with F32 `<name>_scale`, stays 8-bit).
//    The TS loader parses safetensors headers; this reads the bytes, re-checking what memory
//    safety needs (overflow-free sizes, regular files, short reads) and the 8-bit pairing;
//  - the tensor schema: names and shapes each architecture needs, values finite, which
//    matrices may be 8-bit;
//  - 8-bit storage: quantizing F32 matrices for a backend that keeps them 8-bit (q8.h), or
//    dequantizing 8-bit ones for a backend that does not;
//  - adaLN folding: the constant conditioning (sigma = 0) folded, in float64, into the LN
//    scales/biases and the gated projections, so the network is a plain pre-LN transformer
//    with LN biases (MODEL-REFERENCE.md §1.4).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "status.h"

namespace esolm {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;      // F32 values; empty while the tensor is held 8-bit
  std::vector<int8_t> q8;       // 8-bit matrix [rows, cols], row-major: W[r, c] = q8[r, c] * q8_scale[r]
  std::vector<float> q8_scale;  // one finite, non-negative scale per row
  bool is_q8() const { return !q8.empty(); }
};
using HostWeights = std::map<std::string, HostTensor>;

struct TensorEntry {
  std::string name, file, dtype;
  std::vector<int64_t> shape;
  int64_t offset = 0, nbytes = 0;
};

// Host bytes the decoded F32 tensors of `entries` take; error if a size overflows.
Status host_bytes(const std::vector<TensorEntry>& entries, int64_t& bytes);

// Suffix of an 8-bit matrix's scale tensor: `<name>` I8 [rows, cols] + `<name>_scale` F32 [rows].
constexpr const char* kQ8ScaleSuffix = "_scale";

// Reads and decodes every entry into `out` (names must be unique). Each I8 entry becomes an
// 8-bit HostTensor holding its `_scale` entry (which then has no entry of its own); an I8
// tensor without its scale, a scale without its I8 tensor, a scale that is not F32 [rows] or
// has a negative or non-finite value, and an int8 value of -128 are errors.
Status read_weights(const std::vector<TensorEntry>& entries, HostWeights& out);

// Whether `name` is a linear matrix that may be stored 8-bit: blocks.<i>.attn_qkv/attn_out/
// mlp.0/mlp.2.weight and output_layer.linear.weight.
bool q8_matrix(const std::string& name);

// Expected tensor names (official state-dict names without `backbone.`) and shapes;
// -1 = any positive size.
std::map<std::string, std::vector<int64_t>> expected_shapes(const ModelConfig& c);

// Checks names (missing / unexpected), shapes, element counts and finiteness, and that only
// q8_matrix tensors are 8-bit.
Status check_weights(const ModelConfig& c, const HostWeights& w);

// After check_weights, before fold_adaln. q8: every q8_matrix held F32 is quantized (q8.h),
// so that an F32 file and its `esolm convert --dtype q8` copy become the same int8 values
// and scales; 8-bit matrices are kept as they are. Otherwise 8-bit matrices are dequantized
// (F32 q * scale).
void set_q8_storage(HostWeights& w, bool q8);

// Folds in place (after check_weights): every block's norm1/norm2.weight and
// output_layer.norm_final.weight become the folded LN scales, with the LN biases added as
// `<norm>.bias`; attn_out.weight and mlp.2.weight/bias are scaled by the gates, one gate per
// output row (so an 8-bit matrix keeps its int8 values: its row scale takes |gate|, and a
// negative gate negates the row's values); the adaLN and sigma_map tensors are dropped.
// For arch ar it only adds zero biases.
void fold_adaln(const ModelConfig& c, HostWeights& w);

}  // namespace esolm
