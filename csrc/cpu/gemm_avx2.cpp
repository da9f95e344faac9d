// AVX2+FMA GEMM micro-kernel for float: a 6x16 tile of C lives in 12 ymm registers; each K step
// loads 2 vectors of B and broadcasts 6 elements of A. Compiled for AVX2 per function (target
// attribute) and called only when the CPU has AVX2 and FMA (cpu_isa.h).
#include <algorithm>

#include "gemm_driver.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace cuconv::cpu {

namespace {

#define CUCONV_AVX2 __attribute__((target("avx2,fma")))

struct Avx2Kernel6x16 {
  static constexpr int MR = 6, NR = 16;

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
};

}  // namespace

void gemm_avx2(const GemmArgs<float>& g) { gemm_blocked<Avx2Kernel6x16>(g); }

}  // namespace cuconv::cpu

#else  // not x86: active_isa() never picks AVX2 here

namespace cuconv::cpu {
void gemm_avx2(const GemmArgs<float>& g) { gemm_portable(g); }
}  // namespace cuconv::cpu

#endif
