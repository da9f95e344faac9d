#pragma once
// Which instruction set the CPU runner's fast kernels use, picked at run time (no global -march
// flags: the AVX2 code is compiled per function with __attribute__((target("avx2,fma"))).
//
// CUCONV_CPU_ISA=avx512|avx2|portable forces a path; it is read on every call, so tests can switch
// paths within one process. A forced path this CPU cannot run falls back to the best one it can.
// There is no AVX-512 kernel yet: "avx512" selects the AVX2 path where the CPU has AVX2.
// "portable" is plain C++ that the compiler auto-vectorises (every other CPU, aarch64 included).
// float64 always runs the portable kernels.
#include <cstdlib>
#include <cstring>

// CUCONV_AVX2 marks a function compiled for AVX2+FMA (called only when active_isa() says so);
// CUCONV_INLINE forces inlining of small vector helpers into such functions.
#if defined(__x86_64__) || defined(__i386__)
#define CUCONV_AVX2 __attribute__((target("avx2,fma")))
#else
#define CUCONV_AVX2
#endif
#define CUCONV_INLINE inline __attribute__((always_inline))

namespace cuconv::cpu {

enum class Isa { portable, avx2 };

inline bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

inline Isa active_isa() {
  const char* forced = std::getenv("CUCONV_CPU_ISA");
  if (forced && std::strcmp(forced, "portable") == 0) return Isa::portable;
  return cpu_has_avx2() ? Isa::avx2 : Isa::portable;
}

}  // namespace cuconv::cpu
