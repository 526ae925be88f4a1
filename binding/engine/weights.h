// weights.h — everything about weights before they reach a backend, owned by the engine:
//  - I/O: where each tensor lies in which file, reading and dtype decoding (F32 / BF16 /
//    F16 -> host F32). The TS loader parses safetensors headers; this reads the bytes,
//    re-checking what memory safety needs (overflow-free sizes, regular files, short reads);
//  - the tensor schema: names and shapes each architecture needs, values finite;
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
  std::vector<float> data;
};
using HostWeights = std::map<std::string, HostTensor>;

struct TensorEntry {
  std::string name, file, dtype;
  std::vector<int64_t> shape;
  int64_t offset = 0, nbytes = 0;
};

// Host bytes the decoded F32 tensors of `entries` take; error if a size overflows.
Status host_bytes(const std::vector<TensorEntry>& entries, int64_t& bytes);

// Reads and decodes every entry into `out` (names must be unique).
Status read_weights(const std::vector<TensorEntry>& entries, HostWeights& out);

// Expected tensor names (official state-dict names without `backbone.`) and shapes;
// -1 = any positive size.
std::map<std::string, std::vector<int64_t>> expected_shapes(const ModelConfig& c);

// Checks names (missing / unexpected), shapes, element counts and finiteness.
Status check_weights(const ModelConfig& c, const HostWeights& w);

// Folds in place (after check_weights): every block's norm1/norm2.weight and
// output_layer.norm_final.weight become the folded LN scales, with the LN biases added as
// `<norm>.bias`; attn_out.weight and mlp.2.weight/bias are scaled by the gates; the adaLN
// and sigma_map tensors are dropped. For arch ar it only adds zero biases.
void fold_adaln(const ModelConfig& c, HostWeights& w);

}  // namespace esolm
