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
// Round to nearest even on the bits: add 0x7FFF plus the kept part's lowest bit, keep the top half.
// A NaN keeps its top half, made quiet, so a 16-bit NaN that went through float32 comes back with
// its own bits.
inline uint16_t bfloat16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if (f != f) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
void narrow_portable(const float* src, c10::BFloat16* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::BFloat16(bfloat16_bits(src[i]), c10::BFloat16::from_bits());
}
// c10's conversion: round to nearest even, a NaN's payload kept (as F16C does).
void narrow_portable(const float* src, c10::Half* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::Half(src[i]);
}

#if defined(__x86_64__) || defined(__i386__)
#define CUCONV_F16C __attribute__((target("avx2,fma,f16c")))
#define CUCONV_AVX512_F16 __attribute__((target("avx512f,avx2,fma,f16c")))

// The last n % 16 values of a run go through the same vector code: copied into a zeroed 16-lane
// buffer, converted, and stored under a mask (short runs, one pixel's channels or one image row,
// are what the chunked kernels convert).
template <typename H>
CUCONV_AVX512_F16 inline __m256i load_tail16(const H* src, int64_t rem) {
  alignas(32) uint16_t buf[16] = {};
  std::memcpy(buf, src, size_t(rem) * sizeof(H));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
}
CUCONV_AVX512_F16 inline __m512 widen16(const c10::BFloat16*, __m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}
CUCONV_AVX512_F16 inline __m512 widen16(const c10::Half*, __m256i v) { return _mm512_cvtph_ps(v); }
template <typename H>
CUCONV_AVX512_F16 void widen_avx512(const H* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, widen16(src, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  if (i < n) _mm512_mask_storeu_ps(dst + i, __mmask16((1u << (n - i)) - 1), widen16(src, load_tail16(src + i, n - i)));
}
// bfloat16_bits on 16 lanes.
CUCONV_AVX512_F16 inline __m256i narrow16(c10::BFloat16*, __m512 f) {
  const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
  const __m512i u = _mm512_castps_si512(f), top = _mm512_srli_epi32(u, 16);
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(top, one))), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), _mm512_or_si512(top, quiet));
  return _mm512_cvtepi32_epi16(r);
}
CUCONV_AVX512_F16 inline __m256i narrow16(c10::Half*, __m512 f) {
  return _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
template <typename H>
CUCONV_AVX512_F16 void narrow_avx512(const float* src, H* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), narrow16(dst, _mm512_loadu_ps(src + i)));
  if (i < n) {  // the tail as in widen_avx512
    alignas(32) uint16_t buf[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf),
                       narrow16(dst, _mm512_maskz_loadu_ps(__mmask16((1u << (n - i)) - 1), src + i)));
    std::memcpy(dst + i, buf, size_t(n - i) * sizeof(H));
  }
}

CUCONV_F16C void widen_avx2(const c10::BFloat16* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  }
  widen_portable(src + i, dst + i, n - i);
}
CUCONV_F16C void widen_avx2(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  widen_portable(src + i, dst + i, n - i);
}
CUCONV_F16C void narrow_avx2(const float* src, c10::BFloat16* dst, int64_t n) {
  int64_t i = 0;
  const __m256i bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
  for (; i + 8 <= n; i += 8) {
    const __m256 f = _mm256_loadu_ps(src + i);
    const __m256i u = _mm256_castps_si256(f), top = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(top, one))), 16);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(top, quiet), _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
    // 32-bit lanes holding 16-bit values: pack both 128-bit halves, then put the halves in order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(packed));
  }
  narrow_portable(src + i, dst + i, n - i);
}
CUCONV_F16C void narrow_avx2(const float* src, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
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
