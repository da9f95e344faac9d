// ReLU's backward inside the fused conv+ReLU+pool backward on the CPU: the gradient, zeroed where
// the output is <= 0 (threshold_backward(grad, output, 0): a NaN output passes it). bfloat16
// on AVX-512 in one vector pass over the 16-bit values (ATen's goes through float32 chunks and cost
// as much as the pool's backward); other dtypes and CPUs: ATen's.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

#include "cpu/isa.h"
#include "ops/runner.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/lane_masks.h"

// GCC 12's AVX-512 headers start unmasked intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports once inlined here (a false positive: GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cuconv::cpu {
namespace {

#if defined(__x86_64__) || defined(__i386__)
#define CUCONV_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

// Elements begin .. end: 32 at a time, each output's float value compared with 0 (not <= 0: NaN passes).
CUCONV_AVX512BW void relu_backward_bf16(const uint16_t* grad, const uint16_t* output, uint16_t* out, int64_t begin,
                                        int64_t end) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = begin; i < end; i += 32) {
    const __mmask32 m = lanes32(end - i);
    const __m512i y = _mm512_maskz_loadu_epi16(m, output + i);
    const __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(y)), 16));
    const __m512 hi =
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(y, 1)), 16));
    const __mmask32 pass = __mmask32(_mm512_cmp_ps_mask(lo, zero, _CMP_NLE_UQ)) |
                           (__mmask32(_mm512_cmp_ps_mask(hi, zero, _CMP_NLE_UQ)) << 16);
    _mm512_mask_storeu_epi16(out + i, m, _mm512_maskz_loadu_epi16(m & pass, grad + i));
  }
}
#endif

}  // namespace

at::Tensor relu_backward(const at::Tensor& grad, const at::Tensor& output) {
#if defined(__x86_64__) || defined(__i386__)
  const auto format = grad.suggest_memory_format();
  if (grad.scalar_type() == at::kBFloat16 && output.scalar_type() == at::kBFloat16 && is_avx512(active_isa()) &&
      cpu_has_avx512bw() && grad.sizes() == output.sizes() && grad.is_contiguous(format) &&
      output.is_contiguous(format) && grad.strides() == output.strides()) {
    at::Tensor out = at::empty_like(grad, format);
    const auto* g = static_cast<const uint16_t*>(grad.const_data_ptr());
    const auto* y = static_cast<const uint16_t*>(output.const_data_ptr());
    auto* o = static_cast<uint16_t*>(out.data_ptr());
    at::parallel_for(0, grad.numel(), int64_t(1) << 14,
                     [&](int64_t begin, int64_t end) { relu_backward_bf16(g, y, o, begin, end); });
    return out;
  }
#endif
  return at::threshold_backward(grad, output, 0);
}

}  // namespace cuconv::cpu
