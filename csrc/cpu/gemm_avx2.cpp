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

  template <bool kMasked>
  CUCONV_AVX2 static inline void loop(int64_t kc, const float* const* a, int64_t csA, const float* B, int64_t ldb,
                                      __m256i m0, __m256i m1, __m256 (&c)[6][2]) {
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
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
      av = _mm256_broadcast_ss(a0);
      c[0][0] = _mm256_fmadd_ps(av, b0, c[0][0]);
      c[0][1] = _mm256_fmadd_ps(av, b1, c[0][1]);
      av = _mm256_broadcast_ss(a1);
      c[1][0] = _mm256_fmadd_ps(av, b0, c[1][0]);
      c[1][1] = _mm256_fmadd_ps(av, b1, c[1][1]);
      av = _mm256_broadcast_ss(a2);
      c[2][0] = _mm256_fmadd_ps(av, b0, c[2][0]);
      c[2][1] = _mm256_fmadd_ps(av, b1, c[2][1]);
      av = _mm256_broadcast_ss(a3);
      c[3][0] = _mm256_fmadd_ps(av, b0, c[3][0]);
      c[3][1] = _mm256_fmadd_ps(av, b1, c[3][1]);
      av = _mm256_broadcast_ss(a4);
      c[4][0] = _mm256_fmadd_ps(av, b0, c[4][0]);
      c[4][1] = _mm256_fmadd_ps(av, b1, c[4][1]);
      av = _mm256_broadcast_ss(a5);
      c[5][0] = _mm256_fmadd_ps(av, b0, c[5][0]);
      c[5][1] = _mm256_fmadd_ps(av, b1, c[5][1]);
      a0 += csA; a1 += csA; a2 += csA; a3 += csA; a4 += csA; a5 += csA;
      B += ldb;
    }
  }

  CUCONV_AVX2 static void run(int64_t kc, const float* A, int64_t rsA, int64_t csA, int mv, const float* B,
                              int64_t ldb, int nv, float* C, int64_t ldc, GemmInit init, const float* bias) {
    const bool masked = nv < NR;
    __m256i m0 = _mm256_set1_epi32(-1), m1 = m0;
    if (masked) masks(nv, m0, m1);
    __m256 c[6][2];
    for (int i = 0; i < 6; ++i) {
      __m256 v0 = _mm256_setzero_ps(), v1 = v0;
      if (i < mv) {
        if (init == GemmInit::accumulate) {
          v0 = _mm256_maskload_ps(C + i * ldc, m0);
          v1 = _mm256_maskload_ps(C + i * ldc + 8, m1);
        } else if (init == GemmInit::bias_row) {
          v0 = v1 = _mm256_set1_ps(bias[i]);
        } else if (init == GemmInit::bias_col) {
          v0 = _mm256_maskload_ps(bias, m0);
          v1 = _mm256_maskload_ps(bias + 8, m1);
        }
      }
      c[i][0] = v0;
      c[i][1] = v1;
    }
    // Rows past the edge recompute row 0 (always readable); they are not stored.
    const float* a[6];
    for (int i = 0; i < 6; ++i) a[i] = A + std::min(i, mv - 1) * rsA;
    if (masked) loop<true>(kc, a, csA, B, ldb, m0, m1, c);
    else loop<false>(kc, a, csA, B, ldb, m0, m1, c);
    for (int i = 0; i < mv; ++i) {
      if (masked) {
        _mm256_maskstore_ps(C + i * ldc, m0, c[i][0]);
        _mm256_maskstore_ps(C + i * ldc + 8, m1, c[i][1]);
      } else {
        _mm256_storeu_ps(C + i * ldc, c[i][0]);
        _mm256_storeu_ps(C + i * ldc + 8, c[i][1]);
      }
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
