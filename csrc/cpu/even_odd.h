#pragma once
// The even and the odd lanes of two 8-float AVX2 vectors, in order: a stride-2 row read by two
// loads (a max-pool's 2-wide windows, a stride-2 conv's plane fill). x86 sources only.
#include <immintrin.h>

#include "cpu/isa.h"

namespace cuconv::cpu {

// a0 a2 a4 a6 b0 b2 b4 b6: a shuffle gives a0 a2 b0 b2 | a4 a6 b4 b6, then its 64-bit lanes in the
// order (0, 2, 1, 3).
CUCONV_AVX2 CUCONV_INLINE __m256 evens(__m256 a, __m256 b) {
  const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
}
// a1 a3 a5 a7 b1 b3 b5 b7, the same way.
CUCONV_AVX2 CUCONV_INLINE __m256 odds(__m256 a, __m256 b) {
  const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

}  // namespace cuconv::cpu
