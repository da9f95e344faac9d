#pragma once
// Which instruction set the CPU runner's fast kernels use, picked at run time (no global -march
// flags: the AVX2 code is compiled per function with __attribute__((target("avx2,fma"))).
//
// The best path the CPU and OS support runs by default: AVX-512 (the GEMM micro-kernels, the NCHW
// first-layer row kernels and the NHWC 2x2 pool forward; the other vector code is AVX2, which every
// AVX-512 CPU has), else AVX2+FMA, else "portable": plain C++ that the compiler auto-vectorises
// (every other CPU, aarch64 included). float64 always runs the portable kernels.
// cuconv.config's cpu_isa (CUCONV_CPU_ISA) forces a path; a forced path this CPU cannot run falls
// back to the best one it can.
#include "ops/config.h"

// CUCONV_AVX2 / CUCONV_AVX512 mark a function compiled for AVX2+FMA / AVX-512F (called only when
// active_isa() says so); CUCONV_INLINE forces inlining of small vector helpers into such functions.
#if defined(__x86_64__) || defined(__i386__)
#define CUCONV_AVX2 __attribute__((target("avx2,fma")))
#define CUCONV_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define CUCONV_AVX2
#define CUCONV_AVX512
#endif
#define CUCONV_INLINE inline __attribute__((always_inline))

namespace cuconv::cpu {

enum class Isa { portable, avx2, avx512 };

inline bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

// AVX-512 Foundation with the OS saving zmm state (libgcc's check reads XCR0 as well as CPUID).
inline bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

// The path the kernels run now: cuconv.config's cpu_isa, or the best this CPU has when that is
// `auto` or a path it cannot run.
inline Isa active_isa() {
  const Isa best = cpu_has_avx2() && cpu_has_avx512() ? Isa::avx512 : cpu_has_avx2() ? Isa::avx2 : Isa::portable;
  switch (config::cpu_isa()) {
    case config::CpuIsa::portable: return Isa::portable;
    case config::CpuIsa::avx2: return best == Isa::portable ? Isa::portable : Isa::avx2;
    default: return best;
  }
}

inline const char* isa_name(Isa isa) {
  return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "portable";
}

// Whether the AVX2 code (transforms, pooling, transposes) runs: on both vector paths.
inline bool uses_avx2(Isa isa) { return isa != Isa::portable; }

}  // namespace cuconv::cpu
