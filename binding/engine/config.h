// config.h — the model configuration (config.json of a model folder, DESIGN.md).
#pragma once
#include <string>

#include "status.h"

namespace esolm {

enum class Arch { esolm, mdlm, ar };

struct ModelConfig {
  Arch arch = Arch::esolm;
  int hidden_size = 768;
  int n_heads = 12;
  int n_blocks = 12;
  int cond_dim = 128;    // adaLN conditioning width (esolm, mdlm)
  int vocab_size = 50258;  // including the mask token
  int mask_index = 50257;  // -1 when the model has no mask token (plain AR)
  int length = 1024;       // context length the model was trained with
  int mlp_ratio = 4;

  int head_dim() const { return hidden_size / n_heads; }
  int mlp_hidden() const { return hidden_size * mlp_ratio; }
  bool has_adaln() const { return arch != Arch::ar; }

  Status validate() const {
    if (hidden_size <= 0 || n_heads <= 0 || hidden_size % n_heads != 0)
      return Status::error(Code::invalid_arg, "hidden_size must be a positive multiple of n_heads");
    if (head_dim() % 2 != 0) return Status::error(Code::invalid_arg, "head_dim must be even (rotary)");
    if (n_blocks <= 0) return Status::error(Code::invalid_arg, "n_blocks must be positive");
    if (has_adaln() && cond_dim <= 0) return Status::error(Code::invalid_arg, "cond_dim must be positive");
    if (vocab_size <= 0) return Status::error(Code::invalid_arg, "vocab_size must be positive");
    if (mask_index >= vocab_size) return Status::error(Code::invalid_arg, "mask_index must be < vocab_size");
    if (length <= 0) return Status::error(Code::invalid_arg, "length must be positive");
    return Status::ok();
  }
};

inline const char* arch_name(Arch a) {
  return a == Arch::esolm ? "esolm" : a == Arch::mdlm ? "mdlm" : "ar";
}

}  // namespace esolm
