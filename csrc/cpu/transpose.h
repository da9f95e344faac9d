#pragma once
// dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols (transpose.cpp).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cpu/isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace cuconv::cpu {

#if defined(__x86_64__) || defined(__i386__)
// out[j] lane i = in[i] lane j, for 8 registers in and 8 out (AVX2 code only).
CUCONV_AVX2 CUCONV_INLINE void transpose8x8(const __m256* in, __m256* out) {
  const __m256 a0 = _mm256_unpacklo_ps(in[0], in[1]), a1 = _mm256_unpackhi_ps(in[0], in[1]);
  const __m256 a2 = _mm256_unpacklo_ps(in[2], in[3]), a3 = _mm256_unpackhi_ps(in[2], in[3]);
  const __m256 a4 = _mm256_unpacklo_ps(in[4], in[5]), a5 = _mm256_unpackhi_ps(in[4], in[5]);
  const __m256 a6 = _mm256_unpacklo_ps(in[6], in[7]), a7 = _mm256_unpackhi_ps(in[6], in[7]);
  const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
  const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
  const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
  const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
  out[0] = _mm256_permute2f128_ps(b0, b4, 0x20), out[1] = _mm256_permute2f128_ps(b1, b5, 0x20);
  out[2] = _mm256_permute2f128_ps(b2, b6, 0x20), out[3] = _mm256_permute2f128_ps(b3, b7, 0x20);
  out[4] = _mm256_permute2f128_ps(b0, b4, 0x31), out[5] = _mm256_permute2f128_ps(b1, b5, 0x31);
  out[6] = _mm256_permute2f128_ps(b2, b6, 0x31), out[7] = _mm256_permute2f128_ps(b3, b7, 0x31);
}
#endif

void transpose(Isa isa, const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols);
void transpose(Isa isa, const double* src, int64_t lds, double* dst, int64_t ldd, int64_t rows, int64_t cols);
// Into a 16-bit dst, each value rounded to nearest even (as float32_copies.h rounds) as it is stored.
void transpose(Isa isa, const float* src, int64_t lds, c10::BFloat16* dst, int64_t ldd, int64_t rows, int64_t cols);
void transpose(Isa isa, const float* src, int64_t lds, c10::Half* dst, int64_t ldd, int64_t rows, int64_t cols);
// From a 16-bit src, each value widened (exactly) to float32.
void transpose(Isa isa, const c10::BFloat16* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols);
void transpose(Isa isa, const c10::Half* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols);

}  // namespace cuconv::cpu
