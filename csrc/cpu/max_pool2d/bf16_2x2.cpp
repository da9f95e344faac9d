// bfloat16 2x2 stride-2 max-pool (every window inside the input) on AVX-512, forward and backward,
// on the bfloat16 values themselves: no float32 copies. The forward compares values widened to
// float32 in registers (exact) with torch's rules (a NaN wins, the first maximum of a tie), in the
// window order (0, 0), (0, 1), (1, 0), (1, 1); the values it stores are the winners' bits. The
// backward writes each window whole: the gradient at the winner's position, zero elsewhere. A
// window's four positions receive one gradient at most, so nothing is summed; -0 becomes +0, as
// torch's backward, which adds the gradient to a zeroed grad_input, gives.
#include "cpu/max_pool2d/bf16_2x2.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/lane_masks.h"
// GCC 12's AVX-512 headers start unmasked intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized reports once inlined here (a false positive: GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cuconv::cpu {

#if defined(__x86_64__) || defined(__i386__)

#define CUCONV_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

namespace {

// 16 bfloat16 values (zero-extended 32-bit lanes) as float32.
CUCONV_AVX512BW inline __m512 widen(__m512i bits) { return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)); }

// A value later in the window replaces the best so far when greater, or when it is a NaN.
CUCONV_AVX512BW inline void update(__m512 v, __m512i at, __m512& best, __m512i& pos) {
  const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  best = _mm512_mask_mov_ps(best, take, v);
  pos = _mm512_mask_mov_epi32(pos, take, at);
}

// n of the 16 results: the winners' bfloat16 bits and their int64 positions.
CUCONV_AVX512BW inline void store16(int64_t n, __m512 best, __m512i pos, uint16_t* y, int64_t* idx) {
  _mm256_mask_storeu_epi16(y, lanes(n), _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(best), 16)));
  _mm512_mask_storeu_epi64(idx, __mmask8(lanes(n)), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(pos)));
  _mm512_mask_storeu_epi64(idx + 8, __mmask8(lanes(n - 8)), _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(pos, 1)));
}

// NCHW planes [begin, end): 16 outputs of a row from 32 columns of each of its two input rows,
// loaded as 16 words of (even, odd) column pairs.
CUCONV_AVX512BW void forward_planes(const MaxPool2dParams& p, const uint16_t* x, uint16_t* y, int64_t* idx,
                                    int64_t begin, int64_t end) {
  const __m512i high_half = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  const __m512i lane2 = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 1);
  const __m512i one = _mm512_set1_epi32(1), W = _mm512_set1_epi32(int32_t(p.W));
  for (int64_t nc = begin; nc < end; ++nc)
    for (int64_t oh = 0; oh < p.P; ++oh) {
      const uint16_t* r0 = x + (nc * p.H + 2 * oh) * p.W;
      for (int64_t o0 = 0; o0 < p.Q; o0 += 16) {
        const int64_t n = std::min<int64_t>(16, p.Q - o0);
        const __m512i a = _mm512_maskz_loadu_epi16(lanes32(2 * n), r0 + 2 * o0);
        const __m512i b = _mm512_maskz_loadu_epi16(lanes32(2 * n), r0 + p.W + 2 * o0);
        const __m512i at = _mm512_add_epi32(_mm512_set1_epi32(int32_t(2 * oh * p.W + 2 * o0)), lane2);
        __m512 best = widen(a);
        __m512i pos = at;
        update(_mm512_castsi512_ps(_mm512_and_si512(a, high_half)), _mm512_add_epi32(at, one), best, pos);
        update(widen(b), _mm512_add_epi32(at, W), best, pos);
        update(_mm512_castsi512_ps(_mm512_and_si512(b, high_half)), _mm512_add_epi32(_mm512_add_epi32(at, W), one),
               best, pos);
        const int64_t o = (nc * p.P + oh) * p.Q + o0;
        store16(n, best, pos, y + o, idx + o);
      }
    }
}

// NHWC output pixels [begin, end): 16 channels of the window's four pixels at a time.
CUCONV_AVX512BW void forward_pixels(const MaxPool2dParams& p, const uint16_t* x, uint16_t* y, int64_t* idx,
                                    int64_t begin, int64_t end) {
  const int64_t C = p.C, PQ = p.P * p.Q;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / PQ, oh = item % PQ / p.Q, ow = item % p.Q;
    const int64_t at = 2 * oh * p.W + 2 * ow;
    const uint16_t* px[4] = {x + (n * p.H * p.W + at) * C, x + (n * p.H * p.W + at + 1) * C,
                             x + (n * p.H * p.W + at + p.W) * C, x + (n * p.H * p.W + at + p.W + 1) * C};
    const int32_t pos_of[4] = {int32_t(at), int32_t(at + 1), int32_t(at + p.W), int32_t(at + p.W + 1)};
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = lanes(C - c);
      __m512 best = widen(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, px[0] + c)));
      __m512i pos = _mm512_set1_epi32(pos_of[0]);
      for (int k = 1; k < 4; ++k)
        update(widen(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, px[k] + c))), _mm512_set1_epi32(pos_of[k]),
               best, pos);
      store16(C - c, best, pos, y + item * C + c, idx + item * C + c);
    }
  }
}

// Which of its window's four positions (rel 0, 1, W, W + 1 from the top-left `at`) each of 16
// int64 indices is; `bad` set when an index of `active` is none of them.
struct Hits {
  __mmask16 top_left, top_right, bottom_left, bottom_right;
};
CUCONV_AVX512BW inline __mmask16 equal16(__m512i lo, __m512i hi, int64_t v) {
  const __m512i k = _mm512_set1_epi64(v);
  return __mmask16(_mm512_cmpeq_epi64_mask(lo, k) | (__mmask16(_mm512_cmpeq_epi64_mask(hi, k)) << 8));
}
CUCONV_AVX512BW inline Hits hits(const int64_t* idx, __m512i at, int64_t W, __mmask16 active, bool& bad) {
  const __m512i lo = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(__mmask8(active), idx),
                                      _mm512_cvtepi32_epi64(_mm512_castsi512_si256(at)));
  const __m512i hi = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(__mmask8(active >> 8), idx + 8),
                                      _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(at, 1)));
  const Hits h{equal16(lo, hi, 0), equal16(lo, hi, 1), equal16(lo, hi, W), equal16(lo, hi, W + 1)};
  if (__mmask16(active & ~(h.top_left | h.top_right | h.bottom_left | h.bottom_right))) bad = true;
  return h;
}

// 16 gradients (bfloat16 bits in 32-bit lanes), -0 made +0.
CUCONV_AVX512BW inline __m512i gradients(const uint16_t* gy, __mmask16 active) {
  const __m512i g = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(active, gy));
  return _mm512_mask_mov_epi32(g, _mm512_cmpeq_epi32_mask(g, _mm512_set1_epi32(0x8000)), _mm512_setzero_si512());
}

CUCONV_AVX512BW bool backward_planes(const MaxPool2dParams& p, const uint16_t* gy, const int64_t* idx, uint16_t* gx,
                                     int64_t begin, int64_t end) {
  const __m512i lane2 = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 1);
  bool bad = false;
  for (int64_t nc = begin; nc < end; ++nc) {
    uint16_t* plane = gx + nc * p.H * p.W;
    for (int64_t oh = 0; oh < p.P; ++oh) {
      uint16_t* top = plane + 2 * oh * p.W;
      for (int64_t o0 = 0; o0 < p.Q; o0 += 16) {
        const int64_t n = std::min<int64_t>(16, p.Q - o0), o = (nc * p.P + oh) * p.Q + o0;
        const __mmask16 active = lanes(n);
        const __m512i at = _mm512_add_epi32(_mm512_set1_epi32(int32_t(2 * oh * p.W + 2 * o0)), lane2);
        const Hits h = hits(idx + o, at, p.W, active, bad);
        const __m512i g = gradients(gy + o, active);
        const __m512i t = _mm512_or_si512(_mm512_maskz_mov_epi32(h.top_left, g),
                                          _mm512_slli_epi32(_mm512_maskz_mov_epi32(h.top_right, g), 16));
        const __m512i u = _mm512_or_si512(_mm512_maskz_mov_epi32(h.bottom_left, g),
                                          _mm512_slli_epi32(_mm512_maskz_mov_epi32(h.bottom_right, g), 16));
        _mm512_mask_storeu_epi16(top + 2 * o0, lanes32(2 * n), t);
        _mm512_mask_storeu_epi16(top + p.W + 2 * o0, lanes32(2 * n), u);
      }
      std::fill(top + 2 * p.Q, top + p.W, uint16_t(0));  // the columns no window covers
      std::fill(top + p.W + 2 * p.Q, top + 2 * p.W, uint16_t(0));
    }
    std::fill(plane + 2 * p.P * p.W, plane + p.H * p.W, uint16_t(0));
  }
  return !bad;
}

// NHWC over (n, oh) in [begin, end): image rows 2 oh and 2 oh + 1 written whole.
CUCONV_AVX512BW bool backward_pixels(const MaxPool2dParams& p, const uint16_t* gy, const int64_t* idx, uint16_t* gx,
                                     int64_t begin, int64_t end) {
  const int64_t C = p.C, rowC = p.W * C;
  bool bad = false;
  for (int64_t np = begin; np < end; ++np) {
    const int64_t n = np / p.P, oh = np % p.P;
    uint16_t* image = gx + n * p.H * rowC;
    for (int64_t ow = 0; ow < p.Q; ++ow) {
      const int64_t at = 2 * oh * p.W + 2 * ow, o = (np * p.Q + ow) * C;
      uint16_t* top = image + at * C;
      for (int64_t c = 0; c < C; c += 16) {
        const __mmask16 active = lanes(C - c);
        const Hits h = hits(idx + o + c, _mm512_set1_epi32(int32_t(at)), p.W, active, bad);
        const __m256i g = _mm512_cvtepi32_epi16(gradients(gy + o + c, active));
        _mm256_mask_storeu_epi16(top + c, active, _mm256_maskz_mov_epi16(h.top_left, g));
        _mm256_mask_storeu_epi16(top + C + c, active, _mm256_maskz_mov_epi16(h.top_right, g));
        _mm256_mask_storeu_epi16(top + rowC + c, active, _mm256_maskz_mov_epi16(h.bottom_left, g));
        _mm256_mask_storeu_epi16(top + rowC + C + c, active, _mm256_maskz_mov_epi16(h.bottom_right, g));
      }
    }
    uint16_t* row = image + 2 * oh * rowC;
    std::fill(row + 2 * p.Q * C, row + rowC, uint16_t(0));
    std::fill(row + rowC + 2 * p.Q * C, row + 2 * rowC, uint16_t(0));
    if (oh == p.P - 1) std::fill(image + 2 * p.P * rowC, image + p.H * rowC, uint16_t(0));
  }
  return !bad;
}

}  // namespace

void max_pool2d_forward_bf16_2x2(const MaxPool2dParams& p, const uint16_t* x, uint16_t* y, int64_t* idx) {
  if (p.channels_last) {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.C));
    at::parallel_for(0, p.N * p.P * p.Q, grain,
                     [&](int64_t begin, int64_t end) { forward_pixels(p, x, y, idx, begin, end); });
  } else {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.P * p.Q));
    at::parallel_for(0, p.N * p.C, grain,
                     [&](int64_t begin, int64_t end) { forward_planes(p, x, y, idx, begin, end); });
  }
}

bool max_pool2d_backward_bf16_2x2(const MaxPool2dParams& p, const uint16_t* gy, const int64_t* idx, uint16_t* gx) {
  std::atomic<bool> ok{true};
  if (p.channels_last) {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, 4 * p.Q * p.C));
    at::parallel_for(0, p.N * p.P, grain, [&](int64_t begin, int64_t end) {
      if (!backward_pixels(p, gy, idx, gx, begin, end)) ok.store(false, std::memory_order_relaxed);
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.H * p.W));
    at::parallel_for(0, p.N * p.C, grain, [&](int64_t begin, int64_t end) {
      if (!backward_planes(p, gy, idx, gx, begin, end)) ok.store(false, std::memory_order_relaxed);
    });
  }
  return ok.load();
}

#else

void max_pool2d_forward_bf16_2x2(const MaxPool2dParams&, const uint16_t*, uint16_t*, int64_t*) {}
bool max_pool2d_backward_bf16_2x2(const MaxPool2dParams&, const uint16_t*, const int64_t*, uint16_t*) { return false; }

#endif

}  // namespace cuconv::cpu
