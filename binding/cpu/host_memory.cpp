// host_memory.cpp — see host_memory.h.
#include "cpu/host_memory.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
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

// Freed mapped blocks are kept for reuse, up to kPoolBytes in all: a generation's K/V
// cache is allocated anew for each request, and faulting in fresh huge pages cost ~1 ms
// per 2 MiB on the 2-vCPU VMs (~70 ms of a 7 s generation, in its first steps). A reused
// block is zeroed with memset instead, a few ms for such a cache.
constexpr size_t kPoolBytes = size_t(256) << 20;

struct Mapped {
  std::mutex m;
  std::unordered_map<void*, size_t> live;       // handed out: block -> mapped length
  std::unordered_multimap<size_t, void*> free;  // kept for reuse: mapped length -> block
  size_t free_bytes = 0;
};
Mapped& mapped() {
  static auto* state = new Mapped();  // never destroyed: frees may run at exit
  return *state;
}

// An anonymous mapping (zero pages, filled on first touch) of whole huge pages, cut to a
// 2 MiB boundary.
void* map_huge(size_t len) {
  void* raw = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > begin) munmap(raw, aligned - begin);
  const uintptr_t end = begin + len + kHugePage;
  if (end > aligned + len) munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, len, MADV_HUGEPAGE);  // advice only: without THP the block keeps 4 KiB pages
  return p;
}

void* alloc_mapped(size_t bytes) {
  const size_t len = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  Mapped& st = mapped();
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lk(st.m);
    auto it = st.free.find(len);
    if (it != st.free.end()) {
      p = it->second;
      st.free.erase(it);
      st.free_bytes -= len;
      st.live[p] = len;
    }
  }
  if (p) {
    std::memset(p, 0, bytes);  // the rest of the block is never handed out
    return p;
  }
  p = map_huge(len);
  if (!p) return nullptr;
  std::lock_guard<std::mutex> lk(st.m);
  st.live[p] = len;
  return p;
}

// True when p was a mapped block (now kept or unmapped).
bool free_mapped(void* p) {
  Mapped& st = mapped();
  size_t len = 0;
  {
    std::lock_guard<std::mutex> lk(st.m);
    auto it = st.live.find(p);
    if (it == st.live.end()) return false;
    len = it->second;
    st.live.erase(it);
    if (st.free_bytes + len <= kPoolBytes) {
      st.free.emplace(len, p);
      st.free_bytes += len;
      return true;
    }
  }
  munmap(p, len);
  return true;
}
#endif

}  // namespace

void* host_alloc_zeroed(size_t bytes) {
#if defined(__linux__)
  if (bytes >= kMappedFrom) return alloc_mapped(bytes);
#endif
  return std::calloc(bytes == 0 ? 1 : bytes, 1);
}

void host_free(void* p) {
  if (!p) return;
#if defined(__linux__)
  if (free_mapped(p)) return;
#endif
  std::free(p);
}

}  // namespace esolm
