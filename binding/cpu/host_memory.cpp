// host_memory.cpp — see host_memory.h.
#include "cpu/host_memory.h"

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace esolm {
namespace {

#if defined(__linux__)
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kMappedFrom = size_t(1) << 20;

// Mapped blocks and their mapped lengths, for host_free.
std::mutex& mapped_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<void*, size_t>& mapped_blocks() {
  static auto* blocks = new std::unordered_map<void*, size_t>();  // never destroyed: frees may run at exit
  return *blocks;
}

// An anonymous mapping (zero pages, filled on first touch) of whole huge pages, cut to a
// 2 MiB boundary.
void* map_huge(size_t bytes) {
  const size_t len = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* raw = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > begin) munmap(raw, aligned - begin);
  const uintptr_t end = begin + len + kHugePage;
  if (end > aligned + len) munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, len, MADV_HUGEPAGE);  // advice only: without THP the block keeps 4 KiB pages
  std::lock_guard<std::mutex> lk(mapped_mutex());
  mapped_blocks()[p] = len;
  return p;
}
#endif

}  // namespace

void* host_alloc_zeroed(size_t bytes) {
#if defined(__linux__)
  if (bytes >= kMappedFrom) return map_huge(bytes);
#endif
  return std::calloc(bytes == 0 ? 1 : bytes, 1);
}

void host_free(void* p) {
  if (!p) return;
#if defined(__linux__)
  {
    std::lock_guard<std::mutex> lk(mapped_mutex());
    auto it = mapped_blocks().find(p);
    if (it != mapped_blocks().end()) {
      const size_t len = it->second;
      mapped_blocks().erase(it);
      munmap(p, len);
      return;
    }
  }
#endif
  std::free(p);
}

}  // namespace esolm
