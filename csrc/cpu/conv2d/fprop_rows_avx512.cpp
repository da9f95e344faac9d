// The CPU forward of a few-channel NCHW stride-1 conv (a first layer: 3 -> 32/64, 3x3) on AVX-512,
// vectorised along the output rows instead of through a GEMM.
//
// y(n, k, p, q) = bias(k) + sum_{c,r,s} w(k, c, r, s) x(n, c, p + r, q + s) over a zero-padded x. An output
// row and the input rows under it are contiguous in NCHW, so a register block of 12 output channels x 32
// outputs of a row (24 zmm) walks the C*R*S taps: each tap is 2 loads of the input row, read in place, and
// 24 FMAs with the weight broadcast inside the FMA. The GEMM path first copies the input into im2col
// columns and then sums over only K = 27 per 8x16 tile, so its per-tile overhead keeps it near half
// the FMA peak.
//
// Each output is bias + the taps in (c, r, s) order, one FMA chain: the same operations in the same order
// as the GEMM path (bias-initialised C, K in increasing order), so the bits equal the AVX2 path's.
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// GCC 12's _mm512_max_ps passes a deliberately uninitialised placeholder (_mm512_undefined_ps),
// which -Wmaybe-uninitialized reports once per use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu/conv2d/rows_avx512.h"
#include "cpu/convert16.h"
#include "cpu/sizes.h"

namespace cuconv::cpu {

#if defined(__x86_64__) || defined(__i386__)

namespace {

constexpr int kKB = 12;  // output channels per register block
constexpr int kMaxTaps = 32;  // rows_avx512_eligible: C*R*S <= 32

// Outputs q0 .. q0 + 16*NV of row p for NK output channels; m0/m1 mask the two 16-wide halves. A
// 16-bit y gets the sums rounded from the registers (convert16.h's store16).
template <int NK, int NV, typename Out>
CUCONV_AVX512 void row_chunk(int64_t taps, const float* const* tap, int64_t xo, const float* wk, const float* bias,
                             Out* y, int64_t PQ, __mmask16 m0, __mmask16 m1, bool relu) {
  __m512 acc[NK][NV];
#pragma GCC unroll 12
  for (int i = 0; i < NK; ++i) {
    const __m512 b = bias ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = b;
  }
  for (int64_t t = 0; t < taps; ++t) {
    __m512 xv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_maskz_loadu_ps(v ? m1 : m0, tap[t] + xo + 16 * v);
#pragma GCC unroll 12
    for (int i = 0; i < NK; ++i) {
      const __m512 wv = _mm512_set1_ps(wk[i * taps + t]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(wv, xv[v], acc[i][v]);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 12
  for (int i = 0; i < NK; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {  // max(0, NaN) is NaN, as torch.relu
      const __m512 out = relu ? _mm512_max_ps(zero, acc[i][v]) : acc[i][v];
      if constexpr (std::is_same_v<Out, float>) _mm512_mask_storeu_ps(y + i * PQ + 16 * v, v ? m1 : m0, out);
      else store16(y + i * PQ + 16 * v, out, __builtin_popcount(v ? m1 : m0));
    }
}

template <typename Out>
using RowChunkFn = void (*)(int64_t, const float* const*, int64_t, const float*, const float*, Out*, int64_t,
                            __mmask16, __mmask16, bool);

template <typename Out, int NV, int... NK>
constexpr auto row_chunks_for(std::integer_sequence<int, NK...>) {
  return std::array<RowChunkFn<Out>, sizeof...(NK)>{&row_chunk<NK + 1, NV, Out>...};
}

template <typename Out>
RowChunkFn<Out> row_chunk_fn(int nk, int nv) {
  static const std::array<std::array<RowChunkFn<Out>, kKB>, 2> table = {
      row_chunks_for<Out, 1>(std::make_integer_sequence<int, kKB>()),
      row_chunks_for<Out, 2>(std::make_integer_sequence<int, kKB>())};
  return table[nv - 1][nk - 1];
}

}  // namespace

template <typename A>
void conv2d_fprop_rows_avx512(const Conv2dParams& p, const A* x, const float* w, const float* bias, A* y, bool relu) {
  const int64_t CRS = p.C * p.R * p.S, PQ = p.P * p.Q;
  const int64_t kblocks = ceil_div(p.K, kKB);
  // Items are (image, block of output channels), image-major, so a thread's consecutive items
  // mostly share the image (and its padded copy).
  at::parallel_for(0, p.N * kblocks, 1, [&](int64_t begin, int64_t end) {
    RowsInput<A> in(p);
    const float* tap[kMaxTaps];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / kblocks, k0 = (item % kblocks) * kKB, nk = std::min<int64_t>(kKB, p.K - k0);
      const float* xn = in.image(x, n);
      for (int64_t t = 0; t < CRS; ++t) tap[t] = in.tap(xn, t);
      const float* wk = w + k0 * CRS;
      const float* bk = bias ? bias + k0 : nullptr;
      A* yk = y + (n * p.K + k0) * PQ;
      for (int64_t q0 = 0; q0 < p.Q; q0 += 32) {
        const int64_t left = p.Q - q0;
        const int nv = left > 16 ? 2 : 1;
        const RowChunkFn<A> fn = row_chunk_fn<A>(int(nk), nv);
        const __mmask16 m0 = lanes(left), m1 = lanes(left - 16);
        for (int64_t row = 0; row < p.P; ++row)
          fn(CRS, tap, row * in.row_pitch() + q0, wk, bk, yk + row * p.Q + q0, PQ, m0, m1, relu);
      }
    }
  });
}

#else

template <typename A>
void conv2d_fprop_rows_avx512(const Conv2dParams&, const A*, const float*, const float*, A*, bool) {
  TORCH_CHECK(false, "conv2d_fprop_rows_avx512: not an x86 build");
}

#endif

template void conv2d_fprop_rows_avx512<float>(const Conv2dParams&, const float*, const float*, const float*, float*,
                                              bool);
template void conv2d_fprop_rows_avx512<c10::BFloat16>(const Conv2dParams&, const c10::BFloat16*, const float*,
                                                      const float*, c10::BFloat16*, bool);
template void conv2d_fprop_rows_avx512<c10::Half>(const Conv2dParams&, const c10::Half*, const float*, const float*,
                                                  c10::Half*, bool);

}  // namespace cuconv::cpu
