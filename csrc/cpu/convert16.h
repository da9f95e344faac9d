#pragma once
// float16 / bfloat16 values to and from float32 where a kernel loads or stores them, one value or 8
// lanes at a time (AVX2 with F16C, as every AVX2 CPU has), with the rounding of float32_copies.h:
// nearest even, and a NaN keeps its payload, made quiet. Widening is exact. For kernels templated on
// their activation type (float, c10::BFloat16 or c10::Half), so a float instantiation is unchanged.
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/lane_masks.h"
#endif

#include "cpu/isa.h"

namespace cuconv::cpu {

// bfloat16 rounding on the bits: add 0x7FFF plus the kept part's lowest bit, keep the top half; a
// NaN keeps its top half with the quiet bit set.
inline uint16_t bfloat16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if (f != f) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

// f(T()) with T the 16-bit element type of t (bfloat16 or float16).
template <typename F>
void with_16bit_type(at::ScalarType t, const F& f) {
  if (t == at::kBFloat16) f(c10::BFloat16());
  else f(c10::Half());
}

inline float to_float(float v) { return v; }
inline float to_float(c10::BFloat16 v) { return float(v); }
inline float to_float(c10::Half v) { return float(v); }

template <typename T>
inline T from_float(float f) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) return c10::BFloat16(bfloat16_bits(f), c10::BFloat16::from_bits());
  else return T(f);  // float; c10::Half rounds to nearest even and keeps a NaN's payload, as F16C
}

#if defined(__x86_64__) || defined(__i386__)
#define CUCONV_AVX2_F16C __attribute__((target("avx2,fma,f16c")))

// 8 values from p, as float32 lanes.
CUCONV_AVX2_F16C CUCONV_INLINE __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
CUCONV_AVX2_F16C CUCONV_INLINE __m256 load8(const c10::BFloat16* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
CUCONV_AVX2_F16C CUCONV_INLINE __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// One value widened in scalar code on the AVX2 path (F16C's conversion for float16; c10's is
// software).
CUCONV_AVX2_F16C CUCONV_INLINE float scalar_to_float(float v) { return v; }
CUCONV_AVX2_F16C CUCONV_INLINE float scalar_to_float(c10::BFloat16 v) { return float(v); }
CUCONV_AVX2_F16C CUCONV_INLINE float scalar_to_float(c10::Half v) { return _cvtsh_ss(v.x); }

// 4 values from p, as float32 lanes.
CUCONV_AVX2_F16C CUCONV_INLINE __m128 load4(const float* p) { return _mm_loadu_ps(p); }
CUCONV_AVX2_F16C CUCONV_INLINE __m128 load4(const c10::BFloat16* p) {
  const __m128i v = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm_castsi128_ps(_mm_slli_epi32(v, 16));
}
CUCONV_AVX2_F16C CUCONV_INLINE __m128 load4(const c10::Half* p) {
  return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// bfloat16_bits on 8 lanes, each in the low half of its 32-bit lane.
CUCONV_AVX2_F16C CUCONV_INLINE __m256i bfloat16_lanes(__m256 f) {
  const __m256i u = _mm256_castps_si256(f), top = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(top, _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb)), 16);
  return _mm256_blendv_epi8(r, _mm256_or_si256(top, _mm256_set1_epi32(0x40)),
                            _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
}
// 8 float32 lanes rounded to 16-bit values, in order, in the 128-bit result.
CUCONV_AVX2_F16C CUCONV_INLINE __m128i narrow8(c10::BFloat16*, __m256 f) {
  const __m256i r = bfloat16_lanes(f);
  // 32-bit lanes holding 16-bit values: pack both 128-bit halves, then put the halves in order.
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
}
CUCONV_AVX2_F16C CUCONV_INLINE __m128i narrow8(c10::Half*, __m256 f) {
  return _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// a (8 lanes), then b, rounded as narrow8 and stored at p in one 32-byte store (float: as they are).
CUCONV_AVX2_F16C CUCONV_INLINE void store16_rounded(float* p, __m256 a, __m256 b) {
  _mm256_storeu_ps(p, a);
  _mm256_storeu_ps(p + 8, b);
}
CUCONV_AVX2_F16C CUCONV_INLINE void store16_rounded(c10::BFloat16* p, __m256 a, __m256 b) {
  // packus interleaves the 128-bit halves: a0-3 b0-3 a4-7 b4-7; the permute puts them in order
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm256_permute4x64_epi64(_mm256_packus_epi32(bfloat16_lanes(a), bfloat16_lanes(b)), 0xD8));
}
CUCONV_AVX2_F16C CUCONV_INLINE void store16_rounded(c10::Half* p, __m256 a, __m256 b) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_set_m128i(narrow8(p, b), narrow8(p, a)));
}

// 8 lanes that hold 16-bit values exactly (widened ones, zeros, their maxima) stored at p as 16-bit
// values: bfloat16 keeps each lane's top half, no rounding needed.
CUCONV_AVX2_F16C CUCONV_INLINE void store8_exact(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
CUCONV_AVX2_F16C CUCONV_INLINE void store8_exact(c10::BFloat16* p, __m256 v) {
  const __m256i top = _mm256_srli_epi32(_mm256_castps_si256(v), 16);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(top, top), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}
CUCONV_AVX2_F16C CUCONV_INLINE void store8_exact(c10::Half* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), narrow8(p, v));
}

// store8_exact of a at p and of b at p + 8, the 16 values joined into one 32-byte store for bfloat16.
CUCONV_AVX2_F16C CUCONV_INLINE void store16_exact(float* p, __m256 a, __m256 b) {
  _mm256_storeu_ps(p, a);
  _mm256_storeu_ps(p + 8, b);
}
CUCONV_AVX2_F16C CUCONV_INLINE void store16_exact(c10::BFloat16* p, __m256 a, __m256 b) {
  const __m256i ta = _mm256_srli_epi32(_mm256_castps_si256(a), 16), tb = _mm256_srli_epi32(_mm256_castps_si256(b), 16);
  // packus interleaves the 128-bit halves: a0-3 b0-3 a4-7 b4-7; the permute puts them in order
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(_mm256_packus_epi32(ta, tb), 0xD8));
}
CUCONV_AVX2_F16C CUCONV_INLINE void store16_exact(c10::Half* p, __m256 a, __m256 b) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm256_set_m128i(narrow8(p, b), narrow8(p, a)));
}

// The first n (<= 8) lanes of v stored at p (valid: lanes < n set, for the float store's mask).
CUCONV_AVX2_F16C CUCONV_INLINE void store8(float* p, __m256 v, int n, __m256i valid) {
  if (n == 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, valid, v);
}
template <typename T>
CUCONV_AVX2_F16C CUCONV_INLINE void store8(T* p, __m256 v, int n, __m256i) {
  const __m128i h = narrow8(p, v);
  if (n == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
  } else {
    alignas(16) uint16_t buf[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(buf), h);
    std::memcpy(p, buf, size_t(n) * sizeof(T));
  }
}
// 16 lanes on AVX-512F (zmm conversions; without AVX512BW, 16-bit partial loads go through a buffer).

// rem (< 16) 16-bit values from src in the low lanes of a zeroed register.
template <typename H>
CUCONV_AVX512 CUCONV_INLINE __m256i load_tail16(const H* src, int64_t rem) {
  alignas(32) uint16_t buf[16] = {};
  std::memcpy(buf, src, size_t(rem) * sizeof(H));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
}
CUCONV_AVX512 CUCONV_INLINE __m512 widen16(const c10::BFloat16*, __m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}
CUCONV_AVX512 CUCONV_INLINE __m512 widen16(const c10::Half*, __m256i v) { return _mm512_cvtph_ps(v); }
// bfloat16_bits on 16 lanes, each in the low half of its 32-bit lane.
CUCONV_AVX512 CUCONV_INLINE __m512i narrow16_lanes(c10::BFloat16*, __m512 f) {
  const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
  const __m512i u = _mm512_castps_si512(f), top = _mm512_srli_epi32(u, 16);
  // u + 0x7FFF and the kept part's lowest bit added separately: the first add does not wait for the bit
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(top, one)), 16);
  return _mm512_mask_or_epi32(r, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), top, quiet);
}
// 16 float32 lanes rounded to 16-bit values, in order, in the 256-bit result.
CUCONV_AVX512 CUCONV_INLINE __m256i narrow16(c10::BFloat16* p, __m512 f) {
  return _mm512_cvtepi32_epi16(narrow16_lanes(p, f));
}
CUCONV_AVX512 CUCONV_INLINE __m256i narrow16(c10::Half*, __m512 f) {
  return _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
CUCONV_AVX512 CUCONV_INLINE __m512i narrow16_lanes(c10::Half* p, __m512 f) {
  return _mm512_cvtepu16_epi32(narrow16(p, f));
}
// The first n (<= 16) values at p as float32 lanes, zero past n; nothing past them is read.
CUCONV_AVX512 CUCONV_INLINE __m512 load16(const float* p, int n) {
  return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes(n), p);
}
template <typename H>
CUCONV_AVX512 CUCONV_INLINE __m512 load16(const H* p, int n) {
  return widen16(p, n >= 16 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : load_tail16(p, n));
}
// The first n (<= 16) lanes of v stored at p, rounded to nearest even for a 16-bit p (as narrow16).
CUCONV_AVX512 CUCONV_INLINE void store16(float* p, __m512 v, int n) {
  if (n >= 16) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, lanes(n), v);
}
// 16 lanes that hold 16-bit values exactly (widened ones, their maxima) stored at p as 16-bit values:
// bfloat16 keeps each lane's top half (a NaN's bits as they are), float16 converts exactly.
CUCONV_AVX512 CUCONV_INLINE void store16_exact(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
CUCONV_AVX512 CUCONV_INLINE void store16_exact(c10::BFloat16* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}
CUCONV_AVX512 CUCONV_INLINE void store16_exact(c10::Half* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow16(p, v));
}
// (A partial row: vpmovdw's masked store, AVX-512F, writes only the first n 16-bit values.)
template <typename H>
CUCONV_AVX512 CUCONV_INLINE void store16(H* p, __m512 v, int n) {
  if (n >= 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow16(p, v));
  else _mm512_mask_cvtepi32_storeu_epi16(p, lanes(n), narrow16_lanes(p, v));
}
#endif

}  // namespace cuconv::cpu
