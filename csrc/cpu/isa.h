#pragma once
// Which instruction set the CPU runner's fast kernels use, picked at run time (no global -march
// flags: the AVX2 code is compiled per function with __attribute__((target("avx2,fma"))).
//
// The best path the CPU and OS support runs by default: AVX-512 (the GEMM micro-kernels, the NCHW
// first-layer row kernels and the NHWC 2x2 pool forward; the other vector code is AVX2, which every
// AVX-512 CPU has), else AVX2+FMA, else "portable": plain C++ that the compiler auto-vectorises
// (every other CPU, aarch64 included). float64 always runs the portable kernels.
// Two more paths exist for bfloat16 convolutions only: the AVX-512 kernels, with the GEMMs whose
// operands are the bfloat16 inputs run on AVX512_BF16 dot products (avx512_bf16) or on AMX tiles
// (amx), both in gemm/avx512_bf16.cpp.
// cuconv.config's cpu_isa (CUCONV_CPU_ISA) forces a path; a forced path this CPU cannot run falls
// back to the best one it can.
#include "ops/config.h"

// CUCONV_AVX2 / CUCONV_AVX512 mark a function compiled for AVX2+FMA / AVX-512F with F16C (called
// only when active_isa() says so); CUCONV_INLINE forces inlining of small vector helpers into such functions.
#if defined(__x86_64__) || defined(__i386__)
#define CUCONV_AVX2 __attribute__((target("avx2,fma")))
#define CUCONV_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#else
#define CUCONV_AVX2
#define CUCONV_AVX512
#endif
#define CUCONV_INLINE inline __attribute__((always_inline))

namespace cuconv::cpu {

enum class Isa { portable, avx2, avx512, avx512_bf16, amx };

// Both AVX-512 paths run the same vector code outside the bfloat16 GEMM.
constexpr bool is_avx512(Isa isa) { return isa == Isa::avx512 || isa == Isa::avx512_bf16 || isa == Isa::amx; }
// The float path of an ISA: what a GEMM whose operands are not bfloat16 values runs.
constexpr Isa float_isa(Isa isa) { return is_avx512(isa) ? Isa::avx512 : isa; }

inline bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  // F16C too: the 16-bit conversions (convert16.h) use it; every AVX2 CPU has it.
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
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

// AVX512_BF16's dot product (vdpbf16ps), on top of AVX-512F.
inline bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

// AVX-512's byte and word instructions (16-bit lanes and masks), on top of AVX-512F.
inline bool cpu_has_avx512bw() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = cpu_has_avx512() && __builtin_cpu_supports("avx512bw");
  return has;
#else
  return false;
#endif
}

// AMX tiles with bfloat16 products, and the OS's permission to use them (asked for once).
bool cpu_has_amx_bf16();

// The path the kernels run now: cuconv.config's cpu_isa, or the best this CPU has when that is
// `auto` or a path it cannot run.
inline Isa active_isa() {
  const Isa best = cpu_has_avx2() && cpu_has_avx512() ? Isa::avx512 : cpu_has_avx2() ? Isa::avx2 : Isa::portable;
  switch (config::cpu_isa()) {
    case config::CpuIsa::portable: return Isa::portable;
    case config::CpuIsa::avx2: return best == Isa::portable ? Isa::portable : Isa::avx2;
    default: return best;  // automatic, avx512 and the bfloat16 paths (conv_isa)
  }
}

// The path a convolution runs: active_isa(), and for bfloat16 on an AVX-512 path the bfloat16
// GEMMs the CPU has, AMX before AVX512_BF16 (cpu_isa can name either, or avx512 for neither).
inline Isa conv_isa(bool bfloat16) {
  const Isa isa = active_isa();
  if (!bfloat16 || isa != Isa::avx512) return isa;
  switch (config::cpu_isa()) {
    case config::CpuIsa::automatic:
      return cpu_has_amx_bf16() ? Isa::amx : cpu_has_avx512_bf16() ? Isa::avx512_bf16 : isa;
    case config::CpuIsa::amx: return cpu_has_amx_bf16() ? Isa::amx : isa;
    case config::CpuIsa::avx512_bf16: return cpu_has_avx512_bf16() ? Isa::avx512_bf16 : isa;
    default: return isa;
  }
}

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::amx: return "amx";
    case Isa::avx512_bf16: return "avx512_bf16";
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "portable";
  }
}

// Whether the AVX2 code (transforms, pooling, transposes) runs: on both vector paths.
inline bool uses_avx2(Isa isa) { return isa != Isa::portable; }

}  // namespace cuconv::cpu
