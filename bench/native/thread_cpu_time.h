// thread_cpu_time.h — the calling thread's CPU time in seconds, for the one-thread kernel
// benches (cpu_gemm_tile, cpu_bf16_gemm): on a shared machine other processes then count less.
#pragma once
#include <time.h>

inline double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}
