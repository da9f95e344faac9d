#pragma once
// Warp-level tensor-core MMA: D = A * B + C for one 16x8 output tile, all 32 lanes together.
//   tf32: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32   (A 16x8, B 8x8)
//   f16 / bf16: mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32   (A 16x16, B 16x8)
// Under nvcc these are the PTX instructions (sm_80+). Under the simulator the warp exchanges its
// fragments (a warp-collective exchange), rebuilds A and B through the PTX ISA fragment layouts ("Matrix
// Fragments for mma.m16n8k8 / m16n8k16"), multiplies, and hands each lane the D elements the same
// layout gives it; a kernel that places an element in the wrong register therefore gets a wrong
// answer in the simulator, as it would on the GPU.
#include <type_traits>

#include "portable.cuh"

namespace cuconv::kern::mma {

enum class Kind { tf32, f16, bf16 };

// One lane's fragments: A has 4 32-bit registers (4 tf32, or 8 16-bit values packed low-first),
// B has 2, the float accumulator C/D has 4.
struct FragA {
  uint32_t x[4];
};
struct FragB {
  uint32_t x[2];
};
struct FragC {
  float x[4];
};

// ------------------------------------------------------------------ PTX ISA fragment layouts
// groupID = lane >> 2, threadID_in_group = lane % 4; element i of the lane's fragment sits at (row, col).
struct RowCol {
  int row, col;
};
// A, tf32 (m16n8k8): a0..a3 (one per register).
CUCONV_HD RowCol a_coord_tf32(int lane, int i) {
  const int g = lane >> 2, t = lane & 3;
  return {g + ((i & 1) ? 8 : 0), t + ((i & 2) ? 4 : 0)};
}
// B, tf32 (m16n8k8): b0, b1 (row = k, col = n).
CUCONV_HD RowCol b_coord_tf32(int lane, int i) { return {(lane & 3) + (i ? 4 : 0), lane >> 2}; }
// A, f16/bf16 (m16n8k16): a0..a7, two per register, low half first.
CUCONV_HD RowCol a_coord_16(int lane, int i) {
  const int g = lane >> 2, t = lane & 3;
  return {g + ((i & 2) ? 8 : 0), t * 2 + (i & 1) + ((i & 4) ? 8 : 0)};
}
// B, f16/bf16 (m16n8k16): b0..b3.
CUCONV_HD RowCol b_coord_16(int lane, int i) { return {(lane & 3) * 2 + (i & 1) + ((i & 2) ? 8 : 0), lane >> 2}; }
// C / D (both shapes, f32): c0..c3.
CUCONV_HD RowCol c_coord(int lane, int i) { return {(lane >> 2) + ((i & 2) ? 8 : 0), (lane & 3) * 2 + (i & 1)}; }

// ------------------------------------------------------------------ conversions
// float -> tf32, rounded to nearest, to 10 mantissa bits; returned as the 32-bit pattern with the 13
// low bits clear. sm_90 rounds ties to even in one instruction (cvt.rn.tf32.f32: F2FP.TF32), where
// cvt.rna (ties away from zero) costs a compare and a predicated add per element. sm_80 has only
// cvt.rna, and rounding to even there by integer arithmetic costs several instructions more, so the
// two differ where a value lies exactly halfway between two tf32s. The simulator rounds as sm_90.
// Infinities stay; a NaN stays a NaN; past the largest tf32 rounds to infinity.
#if defined(__CUDACC__)
CUCONV_DEVICE uint32_t to_tf32(float v) {
  uint32_t r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm("cvt.rn.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
#else
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
#endif
  return r;
}
CUCONV_DEVICE uint16_t bits16(half_t v) { return __half_as_ushort(v); }
CUCONV_DEVICE uint16_t bits16(bfloat16_t v) { return __bfloat16_as_ushort(v); }
#else
inline uint32_t to_tf32(float v) {
  uint32_t u = std::bit_cast<uint32_t>(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffe000u;  // NaN: every tf32 mantissa bit set
  if ((u & 0x7f800000u) != 0x7f800000u) u += 0xfffu + ((u >> 13) & 1u);  // finite: to nearest even
  return u & 0xffffe000u;
}
inline uint16_t bits16(half_t v) { return v.bits; }
inline uint16_t bits16(bfloat16_t v) { return v.bits; }
#endif
CUCONV_HD uint32_t pack16(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// ------------------------------------------------------------------ the MMA
#if defined(__CUDACC__)
template <Kind K>
CUCONV_DEVICE void mma_sync(FragC& d, const FragA& a, const FragB& b, const FragC& c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // the launchers never select this path below sm_80
#else
  if constexpr (K == Kind::tf32) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "f"(c.x[0]), "f"(c.x[1]),
          "f"(c.x[2]), "f"(c.x[3]));
  } else if constexpr (K == Kind::f16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "f"(c.x[0]), "f"(c.x[1]),
          "f"(c.x[2]), "f"(c.x[3]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "f"(c.x[0]), "f"(c.x[1]),
          "f"(c.x[2]), "f"(c.x[3]));
  }
#endif
}
#else
namespace detail {
// The value of a 32-bit register half / whole as the tensor core reads it.
template <Kind K> inline float operand(uint32_t reg, int half) {
  if constexpr (K == Kind::tf32) return std::bit_cast<float>(reg & 0xffffe000u);  // only the tf32 bits are read
  const uint16_t bits = uint16_t(half ? reg >> 16 : reg & 0xffffu);
  if constexpr (K == Kind::f16) return to_float(half_t{bits});
  else return to_float(bfloat16_t{bits});
}
}  // namespace detail

// Warp-collective emulation: every lane of the (full, converged) warp must call it, as on the GPU.
template <Kind K>
inline void mma_sync(FragC& d, const FragA& a, const FragB& b, const FragC& c) {
  constexpr int kK = K == Kind::tf32 ? 8 : 16;
  float A[16][kK], B[kK][8];
  const unsigned lane = (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32;
  uint32_t mine[6] = {a.x[0], a.x[1], a.x[2], a.x[3], b.x[0], b.x[1]}, all[32][6];
  ::cuconv_sim::warp_exchange(mine, sizeof(mine), all);  // every lane's registers, as the tensor core gathers them
  ::cuconv_sim::count_mma(16, 8, kK);
  for (int src = 0; src < 32; ++src) {
    const uint32_t* ar = all[src];
    const uint32_t* br = all[src] + 4;
    if constexpr (K == Kind::tf32) {
      for (int i = 0; i < 4; ++i) {
        const RowCol rc = a_coord_tf32(src, i);
        A[rc.row][rc.col] = detail::operand<K>(ar[i], 0);
      }
      for (int i = 0; i < 2; ++i) {
        const RowCol rc = b_coord_tf32(src, i);
        B[rc.row][rc.col] = detail::operand<K>(br[i], 0);
      }
    } else {
      for (int i = 0; i < 8; ++i) {
        const RowCol rc = a_coord_16(src, i);
        A[rc.row][rc.col] = detail::operand<K>(ar[i / 2], i & 1);
      }
      for (int i = 0; i < 4; ++i) {
        const RowCol rc = b_coord_16(src, i);
        B[rc.row][rc.col] = detail::operand<K>(br[i / 2], i & 1);
      }
    }
  }
  // Products of tf32/f16/bf16 values are exact in float; the sum is accumulated in float.
  FragC out;
  for (int i = 0; i < 4; ++i) {
    const RowCol rc = c_coord(int(lane), i);
    float sum = c.x[i];
    for (int k = 0; k < kK; ++k) sum += A[rc.row][k] * B[k][rc.col];
    out.x[i] = sum;
  }
  d = out;
}
#endif

}  // namespace cuconv::kern::mma
