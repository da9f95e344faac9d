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

  // One tile from packed B (a kc x 16 sliver, columns past nv zero) and either a packed A panel
  // (kc x 6, rows past mv zero) or six A rows with unit K stride. The loop body has no masks and no
  // edge logic: every address is a base register plus a constant, K unrolled by 4.
  template <bool kFull, bool kPackedA>
  CUCONV_AVX2 static inline __attribute__((always_inline)) void tile_packed(int64_t kc, const float* A, int64_t rsA,
                                                                             int mv, const float* B, float* C,
                                                                             int64_t ldc, GemmInit init,
                                                                             const float* bias, bool relu,
                                                                             __m256i m0, __m256i m1) {
    // The C tile is read (accumulate) or written at the end; start fetching its lines now.
    for (int i = 0; i < mv; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + 15), _MM_HINT_T0);
    }
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#define CUCONV_INIT_ROW(i, r0, r1)                                                   \
    if (i < mv) {                                                                    \
      if (init == GemmInit::accumulate) {                                            \
        r0 = kFull ? _mm256_loadu_ps(C + i * ldc) : _mm256_maskload_ps(C + i * ldc, m0);            \
        r1 = kFull ? _mm256_loadu_ps(C + i * ldc + 8) : _mm256_maskload_ps(C + i * ldc + 8, m1);    \
      } else if (init == GemmInit::bias_row) {                                       \
        r0 = r1 = _mm256_set1_ps(bias[i]);                                           \
      } else if (init == GemmInit::bias_col) {                                       \
        r0 = kFull ? _mm256_loadu_ps(bias) : _mm256_maskload_ps(bias, m0);           \
        r1 = kFull ? _mm256_loadu_ps(bias + 8) : _mm256_maskload_ps(bias + 8, m1);   \
      }                                                                              \
    }
    CUCONV_INIT_ROW(0, c00, c01)
    CUCONV_INIT_ROW(1, c10, c11)
    CUCONV_INIT_ROW(2, c20, c21)
    CUCONV_INIT_ROW(3, c30, c31)
    CUCONV_INIT_ROW(4, c40, c41)
    CUCONV_INIT_ROW(5, c50, c51)
#undef CUCONV_INIT_ROW
    // Unpacked A: rows past the edge recompute the last valid row (always readable), not stored.
    const float* a1 = A + (kPackedA ? 0 : std::min(1, mv - 1) * rsA);
    const float* a2 = A + (kPackedA ? 0 : std::min(2, mv - 1) * rsA);
    const float* a3 = A + (kPackedA ? 0 : std::min(3, mv - 1) * rsA);
    const float* a4 = A + (kPackedA ? 0 : std::min(4, mv - 1) * rsA);
    const float* a5 = A + (kPackedA ? 0 : std::min(5, mv - 1) * rsA);
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
    int64_t p = kc;
    for (; p >= 4; p -= 4) {
      CUCONV_STEP(0) CUCONV_STEP(1) CUCONV_STEP(2) CUCONV_STEP(3)
      B += 4 * NR;
      if (kPackedA) {
        A += 4 * MR;
      } else {
        A += 4, a1 += 4, a2 += 4, a3 += 4, a4 += 4, a5 += 4;
      }
    }
    for (; p > 0; --p) {
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
#define CUCONV_STORE_ROW(i, r0, r1)                      \
    if (i < mv) {                                        \
      if (!kFull) {                                      \
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

  // B packed (64-byte aligned slivers); A packed when a_packed, else rows rsA apart with unit K stride.
  CUCONV_AVX2 static void run_packed(int64_t kc, const float* A, int64_t rsA, bool a_packed, int mv,
                                     const float* B, int nv, float* C, int64_t ldc, GemmInit init,
                                     const float* bias, bool relu) {
    __m256i m0 = _mm256_set1_epi32(-1), m1 = m0;
    if (nv < NR) {
      masks(nv, m0, m1);
      if (a_packed) tile_packed<false, true>(kc, A, rsA, mv, B, C, ldc, init, bias, relu, m0, m1);
      else tile_packed<false, false>(kc, A, rsA, mv, B, C, ldc, init, bias, relu, m0, m1);
    } else {
      if (a_packed) tile_packed<true, true>(kc, A, rsA, mv, B, C, ldc, init, bias, relu, m0, m1);
      else tile_packed<true, false>(kc, A, rsA, mv, B, C, ldc, init, bias, relu, m0, m1);
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
