// Out-of-place matrix transpose for the CPU runner (grad weight's grad_output in NCHW, NCHW <-> NHWC
// copies, widening or rounding 16-bit values on the way): AVX2 8x8 register blocks where the CPU
// has them, a cache-blocked scalar loop otherwise.
#include "cpu/transpose.h"

#include <algorithm>
#include <type_traits>

#include "cpu/convert16.h"

namespace cuconv::cpu {

namespace {

// A 16-bit destination gets each value rounded (convert16.h's from_float, as float32_copies.h rounds);
// a 16-bit source is widened.
template <typename T, typename D>
void transpose_blocked(const T* src, int64_t lds, D* dst, int64_t ldd, int64_t rows, int64_t cols) {
  // 16 x 16 blocks: the 16 destination rows being filled stay in L1 (row by row, each write would
  // land on a new line).
  for (int64_t j0 = 0; j0 < cols; j0 += 16)
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
      for (int64_t i = i0; i < std::min(i0 + 16, rows); ++i)
        for (int64_t j = j0; j < std::min(j0 + 16, cols); ++j) {
          if constexpr (std::is_same_v<T, D>) dst[j * ldd + i] = src[i * lds + j];
          else dst[j * ldd + i] = from_float<D>(to_float(src[i * lds + j]));
        }
}

#if defined(__x86_64__) || defined(__i386__)
CUCONV_AVX2_F16C CUCONV_INLINE void store8_rounded(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
template <typename D>
CUCONV_AVX2_F16C CUCONV_INLINE void store8_rounded(D* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), narrow8(p, v));
}

template <typename S, typename D>
CUCONV_AVX2_F16C void transpose_avx2(const S* src, int64_t lds, D* dst, int64_t ldd, int64_t rows,
                                     int64_t cols) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  // Eight source rows at a time across all columns: source rows are often a power of two apart
  // (a 32x32 feature map: 4 KiB) and then share L1 sets; eight of them fit, while walking down
  // all rows per column block re-reads every line from L2.
  for (int64_t i = 0; i < r8; i += 8)
    for (int64_t j = 0; j < c8; j += 8) {
      __m256 r[8], t[8];
      for (int k = 0; k < 8; ++k) r[k] = load8(src + (i + k) * lds + j);
      transpose8x8(r, t);
      for (int k = 0; k < 8; ++k) store8_rounded(dst + (j + k) * ldd + i, t[k]);
    }
  // The edges: the last rows % 8 rows, then the last cols % 8 columns.
  if (r8 < rows) transpose_blocked(src + r8 * lds, lds, dst + r8, ldd, rows - r8, c8);
  if (c8 < cols) transpose_blocked(src + c8, lds, dst + c8 * ldd, ldd, rows, cols - c8);
}
#endif

template <typename S, typename D>
void transpose_on(Isa isa, const S* src, int64_t lds, D* dst, int64_t ldd, int64_t rows, int64_t cols) {
#if defined(__x86_64__) || defined(__i386__)
  if (uses_avx2(isa)) return transpose_avx2(src, lds, dst, ldd, rows, cols);
#endif
  transpose_blocked(src, lds, dst, ldd, rows, cols);
}

}  // namespace

void transpose(Isa isa, const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  transpose_on(isa, src, lds, dst, ldd, rows, cols);
}
void transpose(Isa isa, const float* src, int64_t lds, c10::BFloat16* dst, int64_t ldd, int64_t rows, int64_t cols) {
  transpose_on(isa, src, lds, dst, ldd, rows, cols);
}
void transpose(Isa isa, const float* src, int64_t lds, c10::Half* dst, int64_t ldd, int64_t rows, int64_t cols) {
  transpose_on(isa, src, lds, dst, ldd, rows, cols);
}

void transpose(Isa isa, const c10::BFloat16* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  transpose_on(isa, src, lds, dst, ldd, rows, cols);
}
void transpose(Isa isa, const c10::Half* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  transpose_on(isa, src, lds, dst, ldd, rows, cols);
}

void transpose(Isa, const double* src, int64_t lds, double* dst, int64_t ldd, int64_t rows, int64_t cols) {
  transpose_blocked(src, lds, dst, ldd, rows, cols);
}

}  // namespace cuconv::cpu
