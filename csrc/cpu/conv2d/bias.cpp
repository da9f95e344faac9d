// conv2d grad bias on the CPU: each channel's sum over images and positions, in a fixed order (the
// same bits for any thread count).
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "cpu/conv2d/passes.h"
#include "cpu/isa.h"
#include "cpu/sizes.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/lane_masks.h"

// GCC 12's AVX-512 headers start unmasked intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports once inlined here (a false positive: GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cuconv::cpu {
namespace {

// Sums in 16 fixed lanes then folds them in a fixed order: vectorisable and deterministic.
template <typename T>
T sum_fixed_order(const T* v, int64_t n) {
  T lanes[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lanes[j] += v[i + j];
  for (int j = 0; i < n; ++i, ++j) lanes[j] += v[i];
  T acc = 0;
  for (int j = 0; j < 16; ++j) acc += lanes[j];
  return acc;
}

}  // namespace

template <typename T>
void conv2d_bias_grad(const Conv2dParams& p, const T* gy, T* gb) {
  const int64_t PQ = p.P * p.Q;
  if (!p.channels_last) {
    at::parallel_for(0, p.K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        T acc = 0;
        for (int64_t n = 0; n < p.N; ++n) acc += sum_fixed_order(gy + (n * p.K + k) * PQ, PQ);
        gb[k] = acc;
      }
    });
  } else {
    // Channels are contiguous: each thread owns a fixed block of channels and adds rows in order.
    constexpr int64_t kBlock = 64;  // as bias_pixels_16bit's
    at::parallel_for(0, ceil_div(p.K, kBlock), 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t k0 = b * kBlock, kn = std::min(kBlock, p.K - k0);
        T acc[kBlock] = {};
        for (int64_t row = 0; row < p.N * PQ; ++row) {
          const T* v = gy + row * p.K + k0;
          for (int64_t k = 0; k < kn; ++k) acc[k] += v[k];
        }
        for (int64_t k = 0; k < kn; ++k) gb[k0 + k] = acc[k];
      }
    });
  }
}

#if defined(__x86_64__) || defined(__i386__)
namespace {

#define CUCONV_AVX512_16BIT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

// 16-bit values as floats (exact): bfloat16 bits moved to the top half, float16 by F16C.
template <typename H>
float to_float(uint16_t bits) {
  if constexpr (std::is_same_v<H, c10::BFloat16>) return float(c10::BFloat16(bits, c10::BFloat16::from_bits()));
  else return float(c10::Half(bits, c10::Half::from_bits()));
}

template <typename H>
CUCONV_AVX512_16BIT inline __m512 widen(const uint16_t* v, __mmask16 m) {
  const __m256i bits = _mm256_maskz_loadu_epi16(m, v);
  if constexpr (std::is_same_v<H, c10::BFloat16>) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  else return _mm512_cvtph_ps(bits);
}

// conv2d_bias_grad<float> on the float values of 16-bit gy, read in place: the same sums in the
// same order (so the same bits as on a float32 copy), without the copy. NCHW: channels begin .. end.
template <typename H>
CUCONV_AVX512_16BIT void bias_planes_16bit(const Conv2dParams& p, const uint16_t* gy, float* gb, int64_t begin,
                                           int64_t end) {
  const int64_t PQ = p.P * p.Q;
  for (int64_t k = begin; k < end; ++k) {
    float acc = 0;
    for (int64_t n = 0; n < p.N; ++n) {
      const uint16_t* v = gy + (n * p.K + k) * PQ;
      __m512 lanes = _mm512_setzero_ps();
      int64_t i = 0;
      for (; i + 16 <= PQ; i += 16) lanes = _mm512_add_ps(lanes, widen<H>(v + i, 0xFFFF));
      alignas(64) float l[16];
      _mm512_store_ps(l, lanes);
      for (int j = 0; i < PQ; ++i, ++j) l[j] += to_float<H>(v[i]);
      float sum = 0;
      for (int j = 0; j < 16; ++j) sum += l[j];
      acc += sum;
    }
    gb[k] = acc;
  }
}

// NHWC: blocks of 64 channels begin .. end, each summed row by row.
constexpr int64_t kBlock = 64;

template <typename H>
CUCONV_AVX512_16BIT void bias_pixels_16bit(const Conv2dParams& p, const uint16_t* gy, float* gb, int64_t begin,
                                           int64_t end) {
  for (int64_t b = begin; b < end; ++b) {
    const int64_t k0 = b * kBlock, kn = std::min(kBlock, p.K - k0);
    __m512 acc[kBlock / 16];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t row = 0; row < p.N * p.P * p.Q; ++row) {
      const uint16_t* v = gy + row * p.K + k0;
      for (int64_t c = 0; c < kBlock / 16; ++c)
        acc[c] = _mm512_add_ps(acc[c], widen<H>(v + 16 * c, lanes(kn - 16 * c)));
    }
    for (int64_t c = 0; c * 16 < kn; ++c) _mm512_mask_storeu_ps(gb + k0 + 16 * c, lanes(kn - 16 * c), acc[c]);
  }
}

template <typename H>
void bias_grad_16bit(const Conv2dParams& p, const uint16_t* gy, float* gb) {
  if (!p.channels_last)
    at::parallel_for(0, p.K, 1, [&](int64_t begin, int64_t end) { bias_planes_16bit<H>(p, gy, gb, begin, end); });
  else
    at::parallel_for(0, ceil_div(p.K, kBlock), 1,
                     [&](int64_t begin, int64_t end) { bias_pixels_16bit<H>(p, gy, gb, begin, end); });
}

}  // namespace
#endif

bool conv2d_bias_grad_16bit(const Conv2dParams& p, const at::Tensor& gy, const at::Tensor& gb) {
#if defined(__x86_64__) || defined(__i386__)
  if (!is_avx512(active_isa()) || !cpu_has_avx512bw()) return false;
  std::vector<float> sums(p.K);
  const auto* bits = static_cast<const uint16_t*>(gy.const_data_ptr());
  if (gy.scalar_type() == at::kBFloat16) {
    bias_grad_16bit<c10::BFloat16>(p, bits, sums.data());
    for (int64_t k = 0; k < p.K; ++k) gb.data_ptr<c10::BFloat16>()[k] = c10::BFloat16(sums[k]);
  } else {
    bias_grad_16bit<c10::Half>(p, bits, sums.data());
    for (int64_t k = 0; k < p.K; ++k) gb.data_ptr<c10::Half>()[k] = c10::Half(sums[k]);
  }
  return true;
#else
  return false;
#endif
}

template decltype(conv2d_bias_grad<float>) conv2d_bias_grad<float>;
template decltype(conv2d_bias_grad<double>) conv2d_bias_grad<double>;

}  // namespace cuconv::cpu
