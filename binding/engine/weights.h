// weights.h — weight I/O owned by the engine: where each tensor lies in which file, and
// reading + dtype decoding (F32 / BF16 / F16 -> host F32). The TS loader parses and
// validates safetensors headers; this reads the bytes, re-checking only what memory
// safety needs (sizes as overflow-free integers, regular files, short reads).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model.h"
#include "status.h"

namespace esolm {

struct TensorEntry {
  std::string name, file, dtype;
  std::vector<int64_t> shape;
  int64_t offset = 0, nbytes = 0;
};

// Host bytes the decoded F32 tensors of `entries` take; error if a size overflows.
Status host_bytes(const std::vector<TensorEntry>& entries, int64_t& bytes);

// Reads and decodes every entry into `out` (names must be unique).
Status read_weights(const std::vector<TensorEntry>& entries, HostWeights& out);

}  // namespace esolm
