// glibc_floor.cpp — lowers the glibc the prebuilt CPU addon needs (CMakeLists.txt,
// ESOLM_GLIBC_FLOOR; Linux x86_64 and aarch64, GNU toolchain).
//
// With libstdc++ and libgcc linked statically, the only versioned references left are
// glibc's. A toolchain built against glibc 2.36 binds them to the newest versions: pthread_*,
// sem_*, shm_* and dl* at 2.34 (moved into libc), exp/log/pow at 2.29,
// __libc_single_threaded 2.32, _dl_find_object 2.35 (libgcc's unwinder), getentropy 2.25
// and arc4random 2.36 (std::random_device), fstat 2.33. The functions of glibc_wrap.def are bound to
// their original versions (the same functions under their older symbol versions, which
// every later glibc keeps), and the other five are defined here. What is left is read by
// scripts/pack-all.mjs into the package's glibc floor.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "glibc_floor.cpp: only x86_64 and aarch64"
#endif

#define HIDDEN __attribute__((visibility("hidden")))

// ---- bound to their original versions (glibc_wrap.def) ------------------------------
// The linker sends every reference to name through __wrap_name (-Wl,--wrap=name); each
// __wrap_name is a jump to name@<original version>, so any signature passes through as is.
// Each sits in its own section, and --gc-sections drops those of functions never called.
#if defined(__x86_64__)
#define ESOLM_JUMP(target) "jmp " target "@PLT\n"
#define ESOLM_VERSION(v) v
#else
#define ESOLM_JUMP(target) "b " target "\n"
#define ESOLM_VERSION(v) "GLIBC_2.17"
#endif
#define W(name, version)                                                                 \
  __asm__(".section .text.__wrap_" #name ",\"ax\",@progbits\n"                           \
          ".globl __wrap_" #name "\n.hidden __wrap_" #name "\n"                                \
          ".type __wrap_" #name ",@function\n__wrap_" #name ":\n"                         \
          ESOLM_JUMP("esolm_old_" #name)                                                  \
          ".size __wrap_" #name ",.-__wrap_" #name "\n"                                    \
          ".symver esolm_old_" #name "," #name "@" ESOLM_VERSION(version) "\n.previous\n");
#include "glibc_wrap.def"
#undef W

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
