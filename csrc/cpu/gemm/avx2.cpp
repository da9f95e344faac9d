// AVX2+FMA GEMM micro-kernel for float: a 6x16 tile of C lives in 12 ymm registers; each K step
// loads 2 vectors of B and broadcasts 6 elements of A. run_packed (packed B, the common case) runs
// its K loop as inline asm (no spills); run (unpacked B: GEMMs of at most 6 rows) is
// intrinsics with lane masks. Compiled for AVX2 per function (target
// attribute) and called only when the CPU has AVX2 and FMA (cpu_isa.h).
#include <algorithm>

#include "cpu/gemm/driver.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/convert16.h"

namespace cuconv::cpu {

namespace {

struct Avx2Kernel6x16 {
  static constexpr int MR = 6, NR = 16;
  static constexpr Isa kIsa = Isa::avx2;

  // Lane masks for the first nv of 16 columns.
  CUCONV_AVX2 static inline void masks(int nv, __m256i& m0, __m256i& m1) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), lane);
    m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - 8), lane);
  }

  // One tile, accumulators in 12 named registers (an array passed by reference would live on the stack).
  template <bool kMasked>
  CUCONV_AVX2 static inline __attribute__((always_inline)) void tile(int64_t kc, const float* A, int64_t rsA,
                                                                      int64_t csA, int mv, const float* B, int64_t ldb,
                                                                      float* C, int64_t ldc, GemmInit init,
                                                                      const float* bias, bool relu, __m256i m0,
                                                                      __m256i m1) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#define CUCONV_INIT_ROW(i, r0, r1)                                       \
    if (i < mv) {                                                        \
      if (init == GemmInit::accumulate) {                                \
        r0 = _mm256_maskload_ps(C + i * ldc, m0);                        \
        r1 = _mm256_maskload_ps(C + i * ldc + 8, m1);                    \
      } else if (init == GemmInit::bias_row) {                           \
        r0 = r1 = _mm256_set1_ps(bias[i]);                               \
      } else if (init == GemmInit::bias_col) {                           \
        r0 = _mm256_maskload_ps(bias, m0);                               \
        r1 = _mm256_maskload_ps(bias + 8, m1);                           \
      }                                                                  \
    }
    CUCONV_INIT_ROW(0, c00, c01)
    CUCONV_INIT_ROW(1, c10, c11)
    CUCONV_INIT_ROW(2, c20, c21)
    CUCONV_INIT_ROW(3, c30, c31)
    CUCONV_INIT_ROW(4, c40, c41)
    CUCONV_INIT_ROW(5, c50, c51)
#undef CUCONV_INIT_ROW
    // Rows past the edge recompute the last valid row (always readable); they are not stored.
    const float* a0 = A;
    const float* a1 = A + std::min(1, mv - 1) * rsA;
    const float* a2 = A + std::min(2, mv - 1) * rsA;
    const float* a3 = A + std::min(3, mv - 1) * rsA;
    const float* a4 = A + std::min(4, mv - 1) * rsA;
    const float* a5 = A + std::min(5, mv - 1) * rsA;
    // One running offset into all six rows keeps the loop's integer work to two adds (the front
    // end, not the FMA units, limits this loop otherwise).
    int64_t off = 0;
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; ++p) {
      __m256 b0, b1;
      if (kMasked) {
        b0 = _mm256_maskload_ps(B, m0);
        b1 = _mm256_maskload_ps(B + 8, m1);
      } else {
        b0 = _mm256_loadu_ps(B);
        b1 = _mm256_loadu_ps(B + 8);
      }
      __m256 av;
      av = _mm256_broadcast_ss(a0 + off);
      c00 = _mm256_fmadd_ps(av, b0, c00);
      c01 = _mm256_fmadd_ps(av, b1, c01);
      av = _mm256_broadcast_ss(a1 + off);
      c10 = _mm256_fmadd_ps(av, b0, c10);
      c11 = _mm256_fmadd_ps(av, b1, c11);
      av = _mm256_broadcast_ss(a2 + off);
      c20 = _mm256_fmadd_ps(av, b0, c20);
      c21 = _mm256_fmadd_ps(av, b1, c21);
      av = _mm256_broadcast_ss(a3 + off);
      c30 = _mm256_fmadd_ps(av, b0, c30);
      c31 = _mm256_fmadd_ps(av, b1, c31);
      av = _mm256_broadcast_ss(a4 + off);
      c40 = _mm256_fmadd_ps(av, b0, c40);
      c41 = _mm256_fmadd_ps(av, b1, c41);
      av = _mm256_broadcast_ss(a5 + off);
      c50 = _mm256_fmadd_ps(av, b0, c50);
      c51 = _mm256_fmadd_ps(av, b1, c51);
      off += csA;
      B += ldb;
    }
    // max(0, x) returns its second operand when either is NaN, so a NaN sum stays NaN (and -0 stays
    // -0), as torch.relu.
    if (relu) {
      const __m256 zero = _mm256_setzero_ps();
      c00 = _mm256_max_ps(zero, c00), c01 = _mm256_max_ps(zero, c01);
      c10 = _mm256_max_ps(zero, c10), c11 = _mm256_max_ps(zero, c11);
      c20 = _mm256_max_ps(zero, c20), c21 = _mm256_max_ps(zero, c21);
      c30 = _mm256_max_ps(zero, c30), c31 = _mm256_max_ps(zero, c31);
      c40 = _mm256_max_ps(zero, c40), c41 = _mm256_max_ps(zero, c41);
      c50 = _mm256_max_ps(zero, c50), c51 = _mm256_max_ps(zero, c51);
    }
#define CUCONV_STORE_ROW(i, r0, r1)                      \
    if (i < mv) {                                        \
      if (kMasked) {                                     \
        _mm256_maskstore_ps(C + i * ldc, m0, r0);        \
        _mm256_maskstore_ps(C + i * ldc + 8, m1, r1);    \
      } else {                                           \
        _mm256_storeu_ps(C + i * ldc, r0);               \
        _mm256_storeu_ps(C + i * ldc + 8, r1);           \
      }                                                  \
    }
    CUCONV_STORE_ROW(0, c00, c01)
    CUCONV_STORE_ROW(1, c10, c11)
    CUCONV_STORE_ROW(2, c20, c21)
    CUCONV_STORE_ROW(3, c30, c31)
    CUCONV_STORE_ROW(4, c40, c41)
    CUCONV_STORE_ROW(5, c50, c51)
#undef CUCONV_STORE_ROW
  }

  // One tile from packed B (a kc x 16 sliver, columns past nv zero) and either a packed A panel
  // (kc x 6, rows past mv zero) or six A row pointers with unit K stride (rows past mv repeat a
  // valid row). The loop body has no masks and no edge logic: every address is a base register plus
  // a constant, K unrolled by 4. With a 16-bit Out the sums are rounded into out (row pitch ld_out)
  // from the registers, and C is read only to accumulate onto.
  template <bool kFull, bool kPackedA, typename Out = float>
  CUCONV_AVX2_F16C static inline __attribute__((always_inline)) void tile_packed(
      int64_t kc, const float* A, const float* const* rows, int mv, const float* B, int nv, float* C, int64_t ldc,
      GemmInit init, const float* bias, bool relu, Out* out = nullptr, int64_t ld_out = 0) {
    // A partial tile goes through a full 6 x 16 staging copy instead of lane masks: masks held in
    // two ymm registers across the loop would leave too few for 12 accumulators + 3 operands (spills).
    alignas(32) float edge[MR * NR];
    const bool load_c = init == GemmInit::accumulate, load_bias = init == GemmInit::bias_col;
    if (!kFull && (load_c || load_bias)) {
      for (int i = 0; i < mv; ++i)
        for (int j = 0; j < NR; ++j) edge[i * NR + j] = j < nv ? (load_c ? C[i * ldc + j] : bias[j]) : 0.f;
    }
    const float* src = kFull ? (load_c ? C : bias) : edge;
    const int64_t ld_src = kFull ? (load_c ? ldc : 0) : NR;
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#define CUCONV_INIT_ROW(i, r0, r1)                                       \
    if (i < mv) {                                                        \
      if (load_c || load_bias) {                                         \
        r0 = _mm256_loadu_ps(src + (kFull && load_bias ? 0 : i * ld_src));     \
        r1 = _mm256_loadu_ps(src + (kFull && load_bias ? 0 : i * ld_src) + 8); \
      } else if (init == GemmInit::bias_row) {                           \
        r0 = r1 = _mm256_set1_ps(bias[i]);                               \
      }                                                                  \
    }
    CUCONV_INIT_ROW(0, c00, c01)
    CUCONV_INIT_ROW(1, c10, c11)
    CUCONV_INIT_ROW(2, c20, c21)
    CUCONV_INIT_ROW(3, c30, c31)
    CUCONV_INIT_ROW(4, c40, c41)
    CUCONV_INIT_ROW(5, c50, c51)
#undef CUCONV_INIT_ROW
    if (!kPackedA) A = rows[0];
    const float* a1 = kPackedA ? A : rows[1];
    const float* a2 = kPackedA ? A : rows[2];
    const float* a3 = kPackedA ? A : rows[3];
    const float* a4 = kPackedA ? A : rows[4];
    const float* a5 = kPackedA ? A : rows[5];
    // Address of row r's A value at K step u of this group of steps.
#define CUCONV_A(r, ar, u) (kPackedA ? A + (u) * MR + (r) : ar + (u))
#define CUCONV_STEP(u)                                      \
    {                                                       \
      const __m256 b0 = _mm256_load_ps(B + (u) * NR);       \
      const __m256 b1 = _mm256_load_ps(B + (u) * NR + 8);   \
      __m256 av = _mm256_broadcast_ss(CUCONV_A(0, A, u));   \
      c00 = _mm256_fmadd_ps(av, b0, c00);                   \
      c01 = _mm256_fmadd_ps(av, b1, c01);                   \
      av = _mm256_broadcast_ss(CUCONV_A(1, a1, u));         \
      c10 = _mm256_fmadd_ps(av, b0, c10);                   \
      c11 = _mm256_fmadd_ps(av, b1, c11);                   \
      av = _mm256_broadcast_ss(CUCONV_A(2, a2, u));         \
      c20 = _mm256_fmadd_ps(av, b0, c20);                   \
      c21 = _mm256_fmadd_ps(av, b1, c21);                   \
      av = _mm256_broadcast_ss(CUCONV_A(3, a3, u));         \
      c30 = _mm256_fmadd_ps(av, b0, c30);                   \
      c31 = _mm256_fmadd_ps(av, b1, c31);                   \
      av = _mm256_broadcast_ss(CUCONV_A(4, a4, u));         \
      c40 = _mm256_fmadd_ps(av, b0, c40);                   \
      c41 = _mm256_fmadd_ps(av, b1, c41);                   \
      av = _mm256_broadcast_ss(CUCONV_A(5, a5, u));         \
      c50 = _mm256_fmadd_ps(av, b0, c50);                   \
      c51 = _mm256_fmadd_ps(av, b1, c51);                   \
    }
    // Each accumulator still takes its K steps in increasing order (one FMA chain per element).
    // Groups of 4 K steps in inline asm, B in ymm12-13 and the broadcast in ymm14, the accumulators
    // in the 12 other registers: GCC's own schedule of the unrolled intrinsics interleaves the steps,
    // then needs more than 16 ymm registers and spills accumulators inside the loop.
    if (int64_t n4 = kc / 4; n4 > 0) {
      if (kPackedA) {
        asm volatile(
          ".p2align 4\n\t"
          "1:\n\t"
          "vmovaps 0(%[b]), %%ymm12\n\t"
          "vmovaps 32(%[b]), %%ymm13\n\t"
          "vbroadcastss 0(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 4(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 8(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 12(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 16(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 20(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "vmovaps 64(%[b]), %%ymm12\n\t"
          "vmovaps 96(%[b]), %%ymm13\n\t"
          "vbroadcastss 24(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 28(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 32(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 36(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 40(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 44(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "vmovaps 128(%[b]), %%ymm12\n\t"
          "vmovaps 160(%[b]), %%ymm13\n\t"
          "vbroadcastss 48(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 52(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 56(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 60(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 64(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 68(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "vmovaps 192(%[b]), %%ymm12\n\t"
          "vmovaps 224(%[b]), %%ymm13\n\t"
          "vbroadcastss 72(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 76(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 80(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 84(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 88(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 92(%[a]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "add $256, %[b]\n\t"
          "add $96, %[a]\n\t"
          "dec %[n]\n\t"
          "jnz 1b\n\t"
            : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51),
              [a] "+r"(A), [b] "+r"(B), [n] "+r"(n4)
            :
            : "cc", "memory", "xmm12", "xmm13", "xmm14");
      } else {
        // The six rows in r8-r13, addressed from their ends by one offset counting up to zero
        // (operands are limited to 30 and each accumulator counts twice).
        const int64_t steps = 4 * n4;
        const float* ends[MR] = {A + steps, a1 + steps, a2 + steps, a3 + steps, a4 + steps, a5 + steps};
        int64_t off = -steps * int64_t(sizeof(float));
        asm volatile(
          "mov 0(%[ends]), %%r8\n\t"
          "mov 8(%[ends]), %%r9\n\t"
          "mov 16(%[ends]), %%r10\n\t"
          "mov 24(%[ends]), %%r11\n\t"
          "mov 32(%[ends]), %%r12\n\t"
          "mov 40(%[ends]), %%r13\n\t"
          ".p2align 4\n\t"
          "1:\n\t"
          "vmovaps 0(%[b]), %%ymm12\n\t"
          "vmovaps 32(%[b]), %%ymm13\n\t"
          "vbroadcastss 0(%%r8,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 0(%%r9,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 0(%%r10,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 0(%%r11,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 0(%%r12,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 0(%%r13,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "vmovaps 64(%[b]), %%ymm12\n\t"
          "vmovaps 96(%[b]), %%ymm13\n\t"
          "vbroadcastss 4(%%r8,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 4(%%r9,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 4(%%r10,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 4(%%r11,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 4(%%r12,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 4(%%r13,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "vmovaps 128(%[b]), %%ymm12\n\t"
          "vmovaps 160(%[b]), %%ymm13\n\t"
          "vbroadcastss 8(%%r8,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 8(%%r9,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 8(%%r10,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 8(%%r11,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 8(%%r12,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 8(%%r13,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "vmovaps 192(%[b]), %%ymm12\n\t"
          "vmovaps 224(%[b]), %%ymm13\n\t"
          "vbroadcastss 12(%%r8,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c00]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c01]\n\t"
          "vbroadcastss 12(%%r9,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c10]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c11]\n\t"
          "vbroadcastss 12(%%r10,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c20]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c21]\n\t"
          "vbroadcastss 12(%%r11,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c30]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c31]\n\t"
          "vbroadcastss 12(%%r12,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c40]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c41]\n\t"
          "vbroadcastss 12(%%r13,%[off]), %%ymm14\n\t"
          "vfmadd231ps %%ymm12, %%ymm14, %t[c50]\n\t"
          "vfmadd231ps %%ymm13, %%ymm14, %t[c51]\n\t"
          "add $256, %[b]\n\t"
          "add $16, %[off]\n\t"
          "jnz 1b\n\t"
            : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51),
              [b] "+r"(B), [off] "+r"(off)
            : [ends] "r"(ends)
            : "cc", "memory", "r8", "r9", "r10", "r11", "r12", "r13", "xmm12", "xmm13", "xmm14");
        A = ends[0], a1 = ends[1], a2 = ends[2], a3 = ends[3], a4 = ends[4], a5 = ends[5];
      }
    }
    for (int64_t p = kc % 4; p > 0; --p) {
      CUCONV_STEP(0)
      B += NR;
      if (kPackedA) {
        A += MR;
      } else {
        A += 1, a1 += 1, a2 += 1, a3 += 1, a4 += 1, a5 += 1;
      }
    }
#undef CUCONV_STEP
#undef CUCONV_A
    if (relu) {  // as in tile(): NaN stays NaN
      const __m256 zero = _mm256_setzero_ps();
      c00 = _mm256_max_ps(zero, c00), c01 = _mm256_max_ps(zero, c01);
      c10 = _mm256_max_ps(zero, c10), c11 = _mm256_max_ps(zero, c11);
      c20 = _mm256_max_ps(zero, c20), c21 = _mm256_max_ps(zero, c21);
      c30 = _mm256_max_ps(zero, c30), c31 = _mm256_max_ps(zero, c31);
      c40 = _mm256_max_ps(zero, c40), c41 = _mm256_max_ps(zero, c41);
      c50 = _mm256_max_ps(zero, c50), c51 = _mm256_max_ps(zero, c51);
    }
    constexpr bool k16 = !std::is_same_v<Out, float>;
    float* dst = kFull ? C : edge;
    const int64_t ld_dst = kFull ? ldc : NR;
#define CUCONV_STORE_ROW(i, r0, r1)                                            \
    if (i < mv) {                                                              \
      if (k16 && kFull) {                                                      \
        store16_rounded(out + i * ld_out, r0, r1);                             \
      } else {                                                                 \
        _mm256_storeu_ps(dst + i * ld_dst, r0);                                \
        _mm256_storeu_ps(dst + i * ld_dst + 8, r1);                            \
      }                                                                        \
    }
    CUCONV_STORE_ROW(0, c00, c01)
    CUCONV_STORE_ROW(1, c10, c11)
    CUCONV_STORE_ROW(2, c20, c21)
    CUCONV_STORE_ROW(3, c30, c31)
    CUCONV_STORE_ROW(4, c40, c41)
    CUCONV_STORE_ROW(5, c50, c51)
#undef CUCONV_STORE_ROW
    if constexpr (k16) {
      if (!kFull)  // the first nv rounded values of each row
        for (int i = 0; i < mv; ++i) {
          alignas(32) Out row[NR];
          store16_rounded(row, _mm256_load_ps(edge + i * NR), _mm256_load_ps(edge + i * NR + 8));
          std::copy(row, row + nv, out + i * ld_out);
        }
    } else if (!kFull) {
      for (int i = 0; i < mv; ++i)
        for (int j = 0; j < nv; ++j) C[i * ldc + j] = edge[i * NR + j];
    }
  }

  CUCONV_AVX2 static void run(int64_t kc, const float* A, int64_t rsA, int64_t csA, int mv, const float* B,
                              int64_t ldb, int nv, float* C, int64_t ldc, GemmInit init, const float* bias,
                              bool relu) {
    __m256i m0 = _mm256_set1_epi32(-1), m1 = m0;
    if (nv < NR) {
      masks(nv, m0, m1);
      tile<true>(kc, A, rsA, csA, mv, B, ldb, C, ldc, init, bias, relu, m0, m1);
    } else {
      tile<false>(kc, A, rsA, csA, mv, B, ldb, C, ldc, init, bias, relu, m0, m1);
    }
  }

  // B packed (64-byte aligned slivers); A a packed panel, or else six row pointers (panel null).
  // With a 16-bit out (the last K block of a GEMM with c16), the tile's sums are rounded into
  // out + i * ld_out + j instead of stored in C.
  template <typename Out = float>
  CUCONV_AVX2_F16C static void run_packed(int64_t kc, const float* panel, const float* const* rows, int mv,
                                          const float* B, int nv, float* C, int64_t ldc, GemmInit init,
                                          const float* bias, bool relu, Out* out = nullptr, int64_t ld_out = 0) {
    if (nv < NR) {
      if (panel) tile_packed<false, true>(kc, panel, rows, mv, B, nv, C, ldc, init, bias, relu, out, ld_out);
      else tile_packed<false, false>(kc, panel, rows, mv, B, nv, C, ldc, init, bias, relu, out, ld_out);
    } else {
      if (panel) tile_packed<true, true>(kc, panel, rows, mv, B, nv, C, ldc, init, bias, relu, out, ld_out);
      else tile_packed<true, false>(kc, panel, rows, mv, B, nv, C, ldc, init, bias, relu, out, ld_out);
    }
  }
  // run_packed's tiles round into a 16-bit C themselves (driver.h).
  static constexpr bool kRounds16 = true;
};

}  // namespace

void gemm_avx2(const GemmArgs<float>& g) { gemm_blocked<Avx2Kernel6x16>(g); }

}  // namespace cuconv::cpu

#else  // not x86: active_isa() never picks AVX2 here

namespace cuconv::cpu {
void gemm_avx2(const GemmArgs<float>& g) { gemm_portable(g); }
}  // namespace cuconv::cpu

#endif
