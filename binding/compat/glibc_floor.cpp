// glibc_floor.cpp — lowers the glibc the prebuilt CPU addon needs (CMakeLists.txt,
// ESOLM_GLIBC_FLOOR; Linux x86_64 and aarch64, GNU toolchain).
//
// With libstdc++ and libgcc linked statically, the only versioned references left are
// glibc's. A toolchain built against glibc 2.36 binds them to the newest versions: pthread_*
// at 2.34 (moved into libc), exp/log/pow at 2.29, __libc_single_threaded 2.32,
// _dl_find_object 2.35 (libgcc's unwinder), getentropy 2.25 and arc4random 2.36
// (std::random_device).
// Here the first two groups are bound to their original versions (the same functions,
// older symbol names; the linker sends the references through --wrap), and the last three
// are defined locally. What is left is read by scripts/pack-all.mjs into the package's
// glibc floor.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ESOLM_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define ESOLM_GLIBC_BASE "GLIBC_2.17"
#else
#error "glibc_floor.cpp: only x86_64 and aarch64"
#endif

#define HIDDEN __attribute__((visibility("hidden")))

// ---- bound to the base versions ------------------------------------------------------
#define ESOLM_OLD(ret, name, params, args)                                              \
  extern "C" ret esolm_old_##name params;                                               \
  __asm__(".symver esolm_old_" #name "," #name "@" ESOLM_GLIBC_BASE);                   \
  extern "C" HIDDEN ret __wrap_##name params { return esolm_old_##name args; }

ESOLM_OLD(int, pthread_create, (pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* p), (t, a, f, p))
ESOLM_OLD(int, pthread_join, (pthread_t t, void** r), (t, r))
ESOLM_OLD(int, pthread_detach, (pthread_t t), (t))
ESOLM_OLD(int, pthread_once, (pthread_once_t* o, void (*f)(void)), (o, f))
ESOLM_OLD(int, pthread_key_create, (pthread_key_t* k, void (*d)(void*)), (k, d))
ESOLM_OLD(int, __pthread_key_create, (pthread_key_t* k, void (*d)(void*)), (k, d))
ESOLM_OLD(int, pthread_key_delete, (pthread_key_t k), (k))
ESOLM_OLD(void*, pthread_getspecific, (pthread_key_t k), (k))
ESOLM_OLD(int, pthread_setspecific, (pthread_key_t k, const void* v), (k, v))
ESOLM_OLD(int, pthread_mutex_trylock, (pthread_mutex_t* m), (m))
ESOLM_OLD(double, exp, (double x), (x))
ESOLM_OLD(double, log, (double x), (x))
ESOLM_OLD(double, pow, (double x, double y), (x, y))

// ---- defined here --------------------------------------------------------------------
// libstdc++ skips atomic reference counting when this is non-zero; 0 is always correct.
extern "C" {
HIDDEN char __libc_single_threaded = 0;
}

// fstat became a real glibc symbol only in 2.33 (before, an inline wrapper around
// __fxstat); on x86_64 and aarch64 glibc's struct stat is the kernel's, so the system call
// answers it directly.
extern "C" HIDDEN int __wrap_fstat(int fd, struct stat* st) { return (int)syscall(SYS_fstat, fd, st); }

// std::random_device's entropy sources.
extern "C" HIDDEN int getentropy(void* buf, size_t n) {
  if (n > 256) return -1;
  return syscall(SYS_getrandom, buf, n, 0) == (long)n ? 0 : -1;
}

extern "C" HIDDEN uint32_t arc4random(void) {
  uint32_t v = 0;
  if (syscall(SYS_getrandom, &v, sizeof v, 0) != (long)sizeof v) v = (uint32_t)(uintptr_t)&v ^ (uint32_t)getpid();
  return v;
}

// libgcc's unwinder asks for the loaded object around a pc and its PT_GNU_EH_FRAME
// (.eh_frame_hdr); dl_iterate_phdr answers the same question on every glibc.
namespace {
struct Find {
  uintptr_t pc;
  dl_find_object* out;
  bool found;
};
int find_cb(dl_phdr_info* info, size_t, void* data) {
  Find* f = static_cast<Find*>(data);
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  bool inside = false;
  void* eh = nullptr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD) {
      uintptr_t start = info->dlpi_addr + ph.p_vaddr, end = start + ph.p_memsz;
      if (f->pc >= start && f->pc < end) inside = true;
      if (start < lo) lo = start;
      if (end > hi) hi = end;
    } else if (ph.p_type == PT_GNU_EH_FRAME) {
      eh = reinterpret_cast<void*>(info->dlpi_addr + ph.p_vaddr);
    }
  }
  if (!inside) return 0;
  memset(f->out, 0, sizeof *f->out);
  f->out->dlfo_map_start = reinterpret_cast<void*>(lo);
  f->out->dlfo_map_end = reinterpret_cast<void*>(hi);
  f->out->dlfo_eh_frame = eh;
  f->found = true;
  return 1;
}
}  // namespace

extern "C" HIDDEN int _dl_find_object(void* pc, dl_find_object* out) noexcept {
  Find f{reinterpret_cast<uintptr_t>(pc), out, false};
  dl_iterate_phdr(find_cb, &f);
  return f.found ? 0 : -1;
}
