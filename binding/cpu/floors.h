// floors.h — what this machine can do at best: the streaming read bandwidth of `threads`
// cores (the best read loop of any kernel set here) and their peak FMA rate with the
// kernel set in use. bench/ prints
// every model figure as a fraction of the floor these imply (bytes / bandwidth for small
// steps, FLOPs / peak for large forwards).
#pragma once
#include "engine/status.h"

namespace esolm {

struct CpuFloors {
  int threads = 0;
  const char* kernels = "";
  double read_gbps = 0;    // GB/s (1e9 bytes) streaming read of a buffer far larger than cache
  double fma_gflops = 0;   // GFLOP/s of independent FMAs on the kernel set's widest registers
  double bf16_dot_gflops = 0;  // GFLOP/s of independent vdpbf16ps (BF16 math), 0 without AVX512_BF16
  double int8_dot_gops = 0;    // G int ops/s of independent vpdpbusd (int8 math), 0 without AVX512_VNNI
};

// Best of a few repetitions each (a second or two in all). threads = 0: all cores.
// effort in (0, 1] shrinks the buffer and the FMA rounds (tests use a small one; the
// figures are then rough: the buffer may fit in cache).
Status measure_cpu_floors(int threads, CpuFloors& out, double effort = 1.0);

// Seconds `threads` cores (0 = all) take to stream-read `bytes` bytes (passes over a
// 512 MiB buffer, each thread its own slice, the fastest read loop of the kernel sets
// here). A bench runs it right beside a measured run of as many bytes: on a shared host
// whose bandwidth moves by +-30% within seconds, that read, not the best short read of
// measure_cpu_floors, is the floor the same seconds allowed (bench/common.mjs).
Status time_streaming_read(int threads, double bytes, double& seconds);

}  // namespace esolm
