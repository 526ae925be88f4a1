// weights.cpp — see weights.h.
#include "weights.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

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

int64_t dtype_size(const std::string& d) { return d == "F32" ? 4 : (d == "BF16" || d == "F16") ? 2 : 0; }

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
  for (const auto& e : entries) {
    if (out.count(e.name)) return Status::error(Code::bad_weights, "tensor '" + e.name + "' appears twice");
    ESOLM_TRY(read_tensor(e, out[e.name]));
  }
  return Status::ok();
}

}  // namespace esolm
