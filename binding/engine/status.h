// status.h — error codes returned by every engine and backend function.
// Nothing in engine/, cpu/ or cuda/ throws or aborts on input a user can supply:
// functions return a Status, and the N-API glue turns it into a typed JS error
// whose `code` is the string from status_code_name().
#pragma once
#include <string>
#include <utility>

namespace esolm {

enum class Code {
  ok = 0,
  invalid_arg,    // ERR_INVALID_ARG: bad shape, token id out of range, length over context...
  bad_weights,    // ERR_BAD_WEIGHTS: truncated file, NaN weights, shape mismatch
  no_cuda,        // ERR_NO_CUDA: CUDA backend unusable (no driver, no device...)
  out_of_memory,  // ERR_OUT_OF_MEMORY
  disposed,       // ERR_DISPOSED
  aborted,        // ERR_ABORTED: cancelled between steps
  io,             // ERR_IO: a file could not be read
  internal,       // ERR_INTERNAL: a bug in esolm
};

inline const char* status_code_name(Code c) {
  switch (c) {
    case Code::ok: return "OK";
    case Code::invalid_arg: return "ERR_INVALID_ARG";
    case Code::bad_weights: return "ERR_BAD_WEIGHTS";
    case Code::no_cuda: return "ERR_NO_CUDA";
    case Code::out_of_memory: return "ERR_OUT_OF_MEMORY";
    case Code::disposed: return "ERR_DISPOSED";
    case Code::aborted: return "ERR_ABORTED";
    case Code::io: return "ERR_IO";
    case Code::internal: return "ERR_INTERNAL";
  }
  return "ERR_INTERNAL";
}

struct Status {
  Code code = Code::ok;
  std::string message;

  static Status ok() { return Status{}; }
  static Status error(Code c, std::string msg) { return Status{c, std::move(msg)}; }
  bool is_ok() const { return code == Code::ok; }
  explicit operator bool() const { return is_ok(); }
};

}  // namespace esolm

// Propagate a non-ok Status to the caller.
#define ESOLM_TRY(expr)                         \
  do {                                          \
    ::esolm::Status esolm_try_s_ = (expr);      \
    if (!esolm_try_s_.is_ok()) return esolm_try_s_; \
  } while (0)
