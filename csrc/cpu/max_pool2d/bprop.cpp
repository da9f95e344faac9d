// max_pool2d backward on the CPU: grad_input = zeros, then grad_input[indices[o]] += grad_output[o].
//
// 2x2 windows, stride 2, no padding or dilation, every window inside the input (the CNN pooling
// layers), float32 on AVX2: windows do not overlap, so each input element receives from at most one
// output and the result is built by writes alone, with no zero-fill pass and no read-modify-write:
// for each output its window's four elements are written, grad where the index points and 0
// elsewhere; the rows and columns no window covers are then zeroed. NCHW (rows of 8 outputs or
// more) vectorises over the outputs of a row; NHWC (C a multiple of 8) over the channels of a pixel,
// split by (image, output row). An index outside its window (a user's, not the forward's) makes the
// whole call start over on the general path, so such indices behave exactly as before.
//
// General path (any geometry, overlapping windows included): each (n, c) plane (NCHW) or image
// (NHWC) is zeroed and scattered into by one thread in output order, so sums are taken in a fixed
// order whatever the thread count. Indices outside the plane (-1 for a window that misses the input)
// are skipped.
//
// Every path gives grad + 0 for a chosen element, as the zero-fill-and-add does (-0 becomes +0).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/convert16.h"
#include "cpu/float32_copies.h"
#include "cpu/max_pool2d/bf16_2x2.h"
#include "cpu/max_pool2d/plan.h"
#include "cpu/scratch.h"
#include "ops/runner.h"

namespace cuconv::cpu {

namespace {


// ---------------------------------------------------------------------------------- general path

// A 16-bit pool widens each plane's (NCHW) or image's (NHWC) grad_output into a float32 stage and
// sums into another, rounded once into grad_input: overlapping windows' gradients are summed as
// float32's are, with no float32 copy of the whole tensors.
template <typename T>
void backward_scatter(const MaxPool2dParams& p, const T* gy, const int64_t* idx, T* gx) {
  constexpr bool k16 = std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>;
  using S = std::conditional_t<k16, float, T>;  // what the sums are made in
  const int64_t plane = p.H * p.W, PQ = p.P * p.Q;
  if (!p.channels_last) {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, plane));
    at::parallel_for(0, p.N * p.C, grain, [&](int64_t begin, int64_t end) {
      // 16-bit: the planes are adjacent, so a run of them is converted at once (small planes would
      // otherwise cost a call and a scalar tail each).
      const int64_t run = k16 ? std::min(end - begin, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, plane))) : 1;
      S* stage = k16 ? scratch<S>(Scratch::output, run * plane) : nullptr;
      S* wide = k16 ? scratch<S>(Scratch::extra, run * PQ) : nullptr;
      for (int64_t nc0 = begin; nc0 < end; nc0 += run) {
        const int64_t count = std::min(run, end - nc0);
        if constexpr (k16) widen_run(gy + nc0 * PQ, wide, count * PQ);
        for (int64_t nc = nc0; nc < nc0 + count; ++nc) {
          S* g = k16 ? stage + (nc - nc0) * plane : reinterpret_cast<S*>(gx + nc * plane);
          std::fill(g, g + plane, S(0));
          const int64_t* ix = idx + nc * PQ;
          const S* go = k16 ? wide + (nc - nc0) * PQ : reinterpret_cast<const S*>(gy + nc * PQ);
          for (int64_t o = 0; o < PQ; ++o)
            if (ix[o] >= 0 && ix[o] < plane) g[ix[o]] += go[o];
        }
        if constexpr (k16) narrow_run(stage, gx + nc0 * plane, count * plane);
      }
    });
  } else {
    at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
      S* stage = k16 ? scratch<S>(Scratch::output, plane * p.C) : nullptr;
      S* wide = k16 ? scratch<S>(Scratch::extra, PQ * p.C) : nullptr;
      for (int64_t n = begin; n < end; ++n) {
        S* g = k16 ? stage : reinterpret_cast<S*>(gx + n * plane * p.C);
        std::fill(g, g + plane * p.C, S(0));
        const S* gn = reinterpret_cast<const S*>(gy + n * PQ * p.C);
        if constexpr (k16) widen_run(gy + n * PQ * p.C, wide, PQ * p.C), gn = wide;
        for (int64_t o = 0; o < PQ; ++o) {
          const int64_t* ix = idx + (n * PQ + o) * p.C;
          const S* go = gn + o * p.C;
          for (int64_t c = 0; c < p.C; ++c)
            if (ix[c] >= 0 && ix[c] < plane) g[ix[c] * p.C + c] += go[c];
        }
        if constexpr (k16) narrow_run(stage, gx + n * plane * p.C, plane * p.C);
      }
    });
  }
}

// ------------------------------------------------------------------- 2x2 stride 2: float, AVX2
#if defined(__x86_64__) || defined(__i386__)
// Indices are compared as int32 (planes under 2^31 elements): 8 of them are loaded as their low
// halves, and high collects the bits from 31 up so that a negative or huge index is still caught.
CUCONV_AVX2 CUCONV_INLINE __m256i load_idx8(const int64_t* src, __m256i& high) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 4));
  high = _mm256_or_si256(high, _mm256_or_si256(a, b));
  const __m256 s = _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0x88);
  return _mm256_castpd_si256(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xd8));
}

// Flags (in bad) the lanes of check whose rel, an index minus its window's top-left position, is
// not one of the window's 0, 1, W, W + 1: rel - (rel >= W ? W : 0) must be 0 or 1.
CUCONV_AVX2 CUCONV_INLINE void check_rel(__m256i rel, __m256i W, __m256i check, __m256i& bad) {
  const __m256i u = _mm256_sub_epi32(rel, _mm256_and_si256(_mm256_cmpgt_epi32(rel, _mm256_sub_epi32(W, _mm256_set1_epi32(1))), W));
  bad = _mm256_or_si256(bad, _mm256_and_si256(_mm256_and_si256(u, _mm256_set1_epi32(~1)), check));
}

CUCONV_AVX2 CUCONV_INLINE bool all_valid(__m256i high, __m256i bad) {
  return _mm256_testz_si256(high, _mm256_set1_epi64x(~int64_t(0x7fffffff))) && _mm256_testz_si256(bad, bad);
}

// v where r == cols, 0 elsewhere.
CUCONV_AVX2 CUCONV_INLINE __m256 pick(__m256 v, __m256i r, __m256i cols) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(r, cols)));
}

// NCHW planes [begin, end), rows of 8 outputs or more (shorter rows run the general path). 8
// outputs of a row at a time, written in input-column order: each output's grad and rel are
// duplicated into the two columns of its window and compared with the column's position in the
// window (0, 1 in the top row, W, W + 1 in the bottom one). A row's last group ends at Q
// (recomputed values, stored twice).
// A is float, or a 16-bit type: each grad_output value lands in one grad_input element (windows do
// not overlap), so the values are widened as loaded and stored back exactly.
template <typename A>
CUCONV_AVX2_F16C bool planes_2x2_avx2(const MaxPool2dParams& p, const A* gy, const int64_t* idx, A* gx,
                                      int64_t begin, int64_t end) {
  const int64_t W = p.W, Q = p.Q, plane = p.H * W, PQ = p.P * Q;
  const __m256i Wv = _mm256_set1_epi32(int32_t(W));
  const __m256i top_cols = _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1);
  const __m256i bottom_cols = _mm256_add_epi32(top_cols, Wv);
  const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), dup_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
  const __m256i step = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), all = _mm256_set1_epi32(-1);
  __m256i high = _mm256_setzero_si256(), bad = _mm256_setzero_si256();
  for (int64_t nc = begin; nc < end; ++nc) {
    A* g = gx + nc * plane;
    for (int64_t oh = 0; oh < p.P; ++oh) {
      A* top = g + 2 * oh * W;
      const A* grow = gy + nc * PQ + oh * Q;
      const int64_t* irow = idx + nc * PQ + oh * Q;
      for (int64_t o = 0; o < Q; o += 8) {
        const int64_t o0 = std::min(o, Q - 8);
        const __m256i rel = _mm256_sub_epi32(load_idx8(irow + o0, high),
                                             _mm256_add_epi32(_mm256_set1_epi32(int32_t(2 * oh * W + 2 * o0)), step));
        check_rel(rel, Wv, all, bad);
        const __m256 v = _mm256_add_ps(load8(grow + o0), _mm256_setzero_ps());
        const __m256 v_lo = _mm256_permutevar8x32_ps(v, dup_lo), v_hi = _mm256_permutevar8x32_ps(v, dup_hi);
        const __m256i r_lo = _mm256_permutevar8x32_epi32(rel, dup_lo), r_hi = _mm256_permutevar8x32_epi32(rel, dup_hi);
        store16_exact(top + 2 * o0, pick(v_lo, r_lo, top_cols), pick(v_hi, r_hi, top_cols));
        store16_exact(top + W + 2 * o0, pick(v_lo, r_lo, bottom_cols), pick(v_hi, r_hi, bottom_cols));
      }
      for (int64_t w = 2 * Q; w < W; ++w) top[w] = top[W + w] = A(0.0f);  // usually 0 or 1 column
    }
    std::fill(g + 2 * p.P * W, g + plane, A(0.0f));
  }
  return all_valid(high, bad);
}

// NHWC over (n, oh) in [begin, end), C a multiple of 8: 8 channels of a pixel at a time. Each
// (n, oh) writes image rows 2*oh and 2*oh + 1 whole (the columns no window covers are zeroed), and
// the last output row also zeroes the image rows no window covers.
template <typename A>
CUCONV_AVX2_F16C bool pixels_2x2_avx2(const MaxPool2dParams& p, const A* gy, const int64_t* idx, A* gx,
                                      int64_t begin, int64_t end) {
  const int64_t C = p.C, rowC = p.W * C;
  const __m256i Wv = _mm256_set1_epi32(int32_t(p.W)), W1v = _mm256_set1_epi32(int32_t(p.W + 1));
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1), all = _mm256_set1_epi32(-1);
  __m256i high = _mm256_setzero_si256(), bad = _mm256_setzero_si256();
  for (int64_t np = begin; np < end; ++np) {
    const int64_t n = np / p.P, oh = np % p.P;
    A* g = gx + n * p.H * rowC;
    for (int64_t ow = 0; ow < p.Q; ++ow) {
      const int64_t at = 2 * oh * p.W + 2 * ow, o = (np * p.Q + ow) * C;
      const __m256i atv = _mm256_set1_epi32(int32_t(at));
      A* top = g + at * C;
      const A* go = gy + o;
      const int64_t* ix = idx + o;
      for (int64_t c = 0; c < C; c += 8) {
        const __m256i rel = _mm256_sub_epi32(load_idx8(ix + c, high), atv);
        check_rel(rel, Wv, all, bad);
        const __m256 v = _mm256_add_ps(load8(go + c), _mm256_setzero_ps());
        store8_exact(top + c, pick(v, rel, zero));
        store8_exact(top + C + c, pick(v, rel, one));
        store8_exact(top + rowC + c, pick(v, rel, Wv));
        store8_exact(top + rowC + C + c, pick(v, rel, W1v));
      }
    }
    A* top = g + 2 * oh * rowC;
    std::fill(top + 2 * p.Q * C, top + rowC, A(0.0f));
    std::fill(top + rowC + 2 * p.Q * C, top + 2 * rowC, A(0.0f));
    if (oh == p.P - 1) std::fill(g + 2 * p.P * rowC, g + p.H * rowC, A(0.0f));
  }
  return all_valid(high, bad);
}
#endif

#if defined(__x86_64__) || defined(__i386__)
// The 2x2 stride-2 path; false when some index lies outside its window (grad_input is then
// incomplete and must be recomputed).
template <typename A>
bool backward_2x2_avx2(const MaxPool2dParams& p, const A* gy, const int64_t* idx, A* gx) {
  std::atomic<bool> ok{true};
  if (!p.channels_last) {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.H * p.W));
    at::parallel_for(0, p.N * p.C, grain, [&](int64_t begin, int64_t end) {
      if (!planes_2x2_avx2(p, gy, idx, gx, begin, end)) ok.store(false, std::memory_order_relaxed);
    });
  } else {
    // (n, output row) pairs rather than images: each writes two whole image rows.
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, 4 * p.Q * p.C));
    at::parallel_for(0, p.N * p.P, grain, [&](int64_t begin, int64_t end) {
      if (!pixels_2x2_avx2(p, gy, idx, gx, begin, end)) ok.store(false, std::memory_order_relaxed);
    });
  }
  return ok.load();
}
#endif

}  // namespace

void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input) {
  if (plan_max_pool2d(p, active_isa(), grad_output.scalar_type()).backward == PoolBpropStrategy::windows_2x2_bf16 &&
      max_pool2d_backward_bf16_2x2(p, reinterpret_cast<const uint16_t*>(grad_output.const_data_ptr<c10::BFloat16>()),
                                   indices.const_data_ptr<int64_t>(),
                                   reinterpret_cast<uint16_t*>(grad_input.data_ptr<c10::BFloat16>())))
    return;
  // 16-bit: 2x2 windows on AVX2 on the 16-bit values; the scatter (also where an index lies outside
  // its window) through float32 stages.
  if (is_16bit(grad_output.scalar_type()))
    return with_16bit_type(grad_output.scalar_type(), [&](auto type) {
      using A = decltype(type);
      const A* gy = grad_output.const_data_ptr<A>();
      const int64_t* idx = indices.const_data_ptr<int64_t>();
      A* gx = grad_input.data_ptr<A>();
#if defined(__x86_64__) || defined(__i386__)
      if (plan_max_pool2d(p, active_isa(), grad_output.scalar_type()).backward == PoolBpropStrategy::windows_2x2_avx2 &&
          backward_2x2_avx2(p, gy, idx, gx))
        return;
#endif
      backward_scatter(p, gy, idx, gx);
    });
#if defined(__x86_64__) || defined(__i386__)
  if (plan_max_pool2d(p, active_isa(), grad_output.scalar_type()).backward == PoolBpropStrategy::windows_2x2_avx2 &&
      backward_2x2_avx2(p, grad_output.const_data_ptr<float>(), indices.const_data_ptr<int64_t>(),
                        grad_input.data_ptr<float>()))
    return;
#endif
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_max_pool2d_backward_cpu", [&] {
    backward_scatter(p, grad_output.const_data_ptr<scalar_t>(), indices.const_data_ptr<int64_t>(),
                     grad_input.data_ptr<scalar_t>());
  });
}

}  // namespace cuconv::cpu
