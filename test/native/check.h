// check.h — the assertion macro shared by the plain native test executables: CHECK(cond,
// fmt, ...) counts a pass, or prints the failed condition with a message and counts a
// failure; main() returns non-zero when g_fail > 0.
#pragma once
#include <cstdio>

static int g_pass = 0, g_fail = 0;

#define CHECK(cond, ...)                                               \
  do {                                                                 \
    if (cond) {                                                        \
      ++g_pass;                                                        \
    } else {                                                           \
      ++g_fail;                                                        \
      std::printf("FAIL %s:%d: %s -- ", __FILE__, __LINE__, #cond);    \
      std::printf(__VA_ARGS__);                                        \
      std::printf("\n");                                               \
    }                                                                  \
  } while (0)
