// host_memory.h — zeroed host blocks for the CPU backend's tensors and packed weights.
// Blocks of 1 MiB and more are mapped on their own, aligned to 2 MiB and marked for
// transparent huge pages (Linux madvise): a step streams every weight matrix once, and
// with 4 KiB pages that stream takes a TLB miss every 4 KiB (measured: a 2-thread read
// of 512 MiB ran ~15% slower than on huge pages). Freed ones are kept for reuse, up to
// 256 MiB (host_memory.cpp). Smaller blocks come from calloc.
#pragma once
#include <cstddef>

namespace esolm {

void* host_alloc_zeroed(size_t bytes);  // null when out of memory
void host_free(void* p);                // any block from host_alloc_zeroed, or null

}  // namespace esolm
