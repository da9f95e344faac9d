// The conversions of float32_copies.h, on the active ISA path.
#include "cpu/float32_copies.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

// GCC 12's AVX-512 headers start unmasked intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports once inlined here (a false positive: GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu/convert16.h"
#include "cpu/gemm/gemm.h"
#include "cpu/isa.h"

namespace cuconv::cpu {
namespace {

// bfloat16 -> float32 is exact: the 16 bits become the top half of the float's.
void widen_portable(const c10::BFloat16* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float(src[i]);
}
void widen_portable(const c10::Half* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float(src[i]);
}
// Round to nearest even (convert16.h); a NaN keeps its top half, made quiet, so a 16-bit NaN that
// went through float32 comes back with its own bits.
void narrow_portable(const float* src, c10::BFloat16* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = from_float<c10::BFloat16>(src[i]);
}
// c10's conversion: round to nearest even, a NaN's payload kept (as F16C does).
void narrow_portable(const float* src, c10::Half* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::Half(src[i]);
}

#if defined(__x86_64__) || defined(__i386__)
template <typename H>
CUCONV_AVX512 void widen_avx512(const H* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, widen16(src, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  if (i < n) _mm512_mask_storeu_ps(dst + i, lanes(n - i), load16(src + i, int(n - i)));
}
template <typename H>
CUCONV_AVX512 void narrow_avx512(const float* src, H* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), narrow16(dst, _mm512_loadu_ps(src + i)));
  if (i < n) store16(dst + i, _mm512_maskz_loadu_ps(lanes(n - i), src + i), int(n - i));
}

template <typename H>
CUCONV_AVX2_F16C void widen_avx2(const H* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(src + i));
  widen_portable(src + i, dst + i, n - i);
}
template <typename H>
CUCONV_AVX2_F16C void narrow_avx2(const float* src, H* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), narrow8(dst, _mm256_loadu_ps(src + i)));
  narrow_portable(src + i, dst + i, n - i);
}
#endif

template <typename H>
void widen_on(Isa isa, const H* src, float* dst, int64_t n) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == Isa::avx512) return widen_avx512(src, dst, n);
  if (isa == Isa::avx2) return widen_avx2(src, dst, n);
#endif
  widen_portable(src, dst, n);
}
template <typename H>
void narrow_on(Isa isa, const float* src, H* dst, int64_t n) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == Isa::avx512) return narrow_avx512(src, dst, n);
  if (isa == Isa::avx2) return narrow_avx2(src, dst, n);
#endif
  narrow_portable(src, dst, n);
}

template <typename H>
void widen(const H* src, float* dst, int64_t n) {
  const Isa isa = active_isa();
  at::parallel_for(0, n, int64_t(1) << 16,
                   [&](int64_t begin, int64_t end) { widen_on(isa, src + begin, dst + begin, end - begin); });
}

template <typename H>
void narrow(const float* src, H* dst, int64_t n) {
  const Isa isa = active_isa();
  at::parallel_for(0, n, int64_t(1) << 16,
                   [&](int64_t begin, int64_t end) { narrow_on(isa, src + begin, dst + begin, end - begin); });
}

}  // namespace

void widen_run(const c10::BFloat16* src, float* dst, int64_t n) { widen_on(active_isa(), src, dst, n); }
void widen_run(const c10::Half* src, float* dst, int64_t n) { widen_on(active_isa(), src, dst, n); }
void narrow_run(const float* src, c10::BFloat16* dst, int64_t n) { narrow_on(active_isa(), src, dst, n); }
void narrow_run(const float* src, c10::Half* dst, int64_t n) { narrow_on(active_isa(), src, dst, n); }

void Blocks16::widen(int64_t offset, int64_t ld, int64_t rows, int64_t cols, float* dst, int64_t ld_dst) const {
  const Isa isa = active_isa();
  const bool joined = ld == cols && ld_dst == cols;  // one run
  for (int64_t i = 0; i < (joined ? 1 : rows); ++i) {
    const int64_t at = offset + i * ld, n = joined ? rows * cols : cols;
    if (bf16) widen_on(isa, static_cast<const c10::BFloat16*>(data) + at, dst + i * ld_dst, n);
    else widen_on(isa, static_cast<const c10::Half*>(data) + at, dst + i * ld_dst, n);
  }
}

void Blocks16::narrow(const float* src, int64_t ld_src, int64_t offset, int64_t ld, int64_t rows, int64_t cols) const {
  const Isa isa = active_isa();
  const bool joined = ld == cols && ld_src == cols;
  for (int64_t i = 0; i < (joined ? 1 : rows); ++i) {
    const int64_t at = offset + i * ld, n = joined ? rows * cols : cols;
    if (bf16) narrow_on(isa, src + i * ld_src, static_cast<c10::BFloat16*>(data) + at, n);
    else narrow_on(isa, src + i * ld_src, static_cast<c10::Half*>(data) + at, n);
  }
}

void gemm_store16(Isa isa, const GemmOut16& out, const float* block, int64_t ld_block, int64_t i, int64_t j, int rows,
                  int cols) {
  const Isa vectors = float_isa(isa);
  const bool joined = !out.block_cols && ld_block == cols && out.ld == cols;  // one run
  for (int k = 0; k < (joined ? 1 : rows); ++k)
    for (int64_t c = 0; c < cols;) {  // runs within a column block
      const int64_t col = j + c, at = out.offset(i + k, col);
      const int64_t n = joined ? int64_t(rows) * cols
                        : out.block_cols ? std::min<int64_t>(cols - c, out.block_cols - col % out.block_cols)
                                         : cols;
      if (out.bf16) narrow_on(vectors, block + k * ld_block + c, static_cast<c10::BFloat16*>(out.data) + at, n);
      else narrow_on(vectors, block + k * ld_block + c, static_cast<c10::Half*>(out.data) + at, n);
      c += n;
    }
}

Blocks16 blocks16(const at::Tensor& t) {
  Blocks16 b;
  if (t.defined() && is_16bit(t.scalar_type())) b.data = const_cast<void*>(t.const_data_ptr()), b.bf16 = t.scalar_type() == at::kBFloat16;
  return b;
}

at::Tensor float32_like(const at::Tensor& out, Scratch slot) {
  float* data = scratch<float>(slot, out.numel());
  return at::from_blob(data, out.sizes(), out.strides(), out.options().dtype(at::kFloat));
}

at::Tensor float32_copy(const at::Tensor& t, Scratch slot) {
  if (!t.defined()) return t;
  const at::Tensor copy = float32_like(t, slot);
  if (t.scalar_type() == at::kBFloat16)
    widen(t.const_data_ptr<c10::BFloat16>(), copy.data_ptr<float>(), t.numel());
  else
    widen(t.const_data_ptr<c10::Half>(), copy.data_ptr<float>(), t.numel());
  return copy;
}

void round_into(const at::Tensor& out, const at::Tensor& out32) {
  if (out.scalar_type() == at::kBFloat16)
    narrow(out32.const_data_ptr<float>(), out.data_ptr<c10::BFloat16>(), out.numel());
  else
    narrow(out32.const_data_ptr<float>(), out.data_ptr<c10::Half>(), out.numel());
}

}  // namespace cuconv::cpu
