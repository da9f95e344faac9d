// The CPU grad weight of a few-channel NCHW stride-1 conv (a first layer: 3 -> 32/64, 3x3) on AVX-512,
// vectorised along the output rows instead of through a GEMM.
//
// gw(k, c, r, s) = sum_n sum_p sum_q gy(n, k, p, q) x(n, c, p + r, q + s) over a zero-padded x. In NCHW both
// factors are contiguous along q, so each weight is a dot product of row pieces that are read in place: a
// register block of 4 output channels x 6 (c, r, s) taps keeps 24 zmm of per-lane sums, and each 16-wide
// step of q is 4 loads of grad_output, 6 of the input and 24 FMAs. The GEMM path first had to transpose
// grad_output and interleave the input rows (a large share of its time for a first layer) and reduced
// over only K = 27 rows at a time.
//
// Deterministic: each thread owns whole blocks of output channels and walks the images, rows and lanes
// in a fixed order, then sums the 16 lanes in a fixed tree; no partial depends on the thread count.
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/conv2d/rows_avx512.h"
#include "cpu/sizes.h"

namespace cuconv::cpu {

#if defined(__x86_64__) || defined(__i386__)

namespace {

constexpr int kKB = 4;  // output channels per register block
constexpr int kTB = 6;  // (c, r, s) taps per register block

// acc[i][t] (16 lanes each) += sum over the P rows of gy row i and tap t's input rows.
template <int NK, int NT>
CUCONV_AVX512 void rows_block(int64_t P, int64_t Q, int64_t PQ, int64_t Wp, const float* gy, const float* const* taps,
                              float* acc) {
  __m512 a[NK][NT];
#pragma GCC unroll 4
  for (int i = 0; i < NK; ++i)
#pragma GCC unroll 6
    for (int t = 0; t < NT; ++t) a[i][t] = _mm512_loadu_ps(acc + (i * NT + t) * 16);
  // One loop body for whole and partial 16-wide steps (a separate tail loop made GCC keep the sums
  // on the stack): the last step of a row is masked, and masked lanes load as 0 without faulting.
  const int64_t steps = ceil_div(Q, 16);
  const __mmask16 last = __mmask16(0xFFFFu >> (steps * 16 - Q));
  for (int64_t p = 0; p < P; ++p) {
    const float* g = gy + p * Q;
    const int64_t xo = p * Wp;
    for (int64_t j = 0; j < steps; ++j) {
      const __mmask16 m = j + 1 == steps ? last : __mmask16(0xFFFF);
      __m512 gv[NK];
#pragma GCC unroll 4
      for (int i = 0; i < NK; ++i) gv[i] = _mm512_maskz_loadu_ps(m, g + i * PQ + j * 16);
#pragma GCC unroll 6
      for (int t = 0; t < NT; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(m, taps[t] + xo + j * 16);
#pragma GCC unroll 4
        for (int i = 0; i < NK; ++i) a[i][t] = _mm512_fmadd_ps(gv[i], xv, a[i][t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < NK; ++i)
#pragma GCC unroll 6
    for (int t = 0; t < NT; ++t) _mm512_storeu_ps(acc + (i * NT + t) * 16, a[i][t]);
}

using RowsBlockFn = void (*)(int64_t, int64_t, int64_t, int64_t, const float*, const float* const*, float*);

template <int NK, int... NT>
constexpr auto rows_blocks_for(std::integer_sequence<int, NT...>) {
  return std::array<RowsBlockFn, sizeof...(NT)>{&rows_block<NK, NT + 1>...};
}

RowsBlockFn rows_block_fn(int nk, int nt) {
  static const std::array<std::array<RowsBlockFn, kTB>, kKB> table = {
      rows_blocks_for<1>(std::make_integer_sequence<int, kTB>()),
      rows_blocks_for<2>(std::make_integer_sequence<int, kTB>()),
      rows_blocks_for<3>(std::make_integer_sequence<int, kTB>()),
      rows_blocks_for<4>(std::make_integer_sequence<int, kTB>())};
  return table[nk - 1][nt - 1];
}

// The 16 lanes of v summed in a fixed order (pairwise).
float lane_sum(const float* v) {
  float h[8];
  for (int i = 0; i < 8; ++i) h[i] = v[i] + v[i + 8];
  for (int i = 0; i < 4; ++i) h[i] += h[i + 4];
  return (h[0] + h[2]) + (h[1] + h[3]);
}

}  // namespace

template <typename A>
void conv2d_wgrad_rows_avx512(const Conv2dParams& p, const A* gy, const A* x, float* gw) {
  const int64_t CRS = p.C * p.R * p.S, PQ = p.P * p.Q;
  const int64_t kblocks = ceil_div(p.K, kKB), tblocks = ceil_div(CRS, kTB);
  constexpr bool kWiden = !std::is_same_v<A, float>;
  at::parallel_for(0, kblocks, 1, [&](int64_t begin, int64_t end) {
    // Per (k block, tap block): 4 x 6 sums of 16 lanes, kept across the images.
    std::vector<float> acc(size_t((end - begin) * tblocks * kKB * kTB * 16), 0.f);
    RowsInput<A> in(p);
    // A 16-bit gy: this thread's channels of each image widened once (every tap block reads them).
    const int64_t k_begin = begin * kKB, k_end = std::min(end * kKB, p.K);
    std::vector<float> gy_wide(kWiden ? size_t((k_end - k_begin) * PQ) : 0);
    const Blocks16 gy16{const_cast<A*>(gy), std::is_same_v<A, c10::BFloat16>};
    for (int64_t n = 0; n < p.N; ++n) {
      const float* xn = in.image(x, n);
      if constexpr (kWiden) {
        const int64_t values = (k_end - k_begin) * PQ;  // one run
        gy16.widen((n * p.K + k_begin) * PQ, values, 1, values, gy_wide.data(), values);
      }
      for (int64_t kb = begin; kb < end; ++kb) {
        const int64_t k0 = kb * kKB, nk = std::min<int64_t>(kKB, p.K - k0);
        const float* gyk;
        if constexpr (kWiden) gyk = gy_wide.data() + (k0 - k_begin) * PQ;
        else gyk = gy + (n * p.K + k0) * PQ;
        for (int64_t tb = 0; tb < tblocks; ++tb) {
          const int64_t t0 = tb * kTB, nt = std::min<int64_t>(kTB, CRS - t0);
          const float* taps[kTB];
          for (int64_t t = 0; t < nt; ++t) taps[t] = in.tap(xn, t0 + t);
          float* a = acc.data() + ((kb - begin) * tblocks + tb) * kKB * kTB * 16;
          rows_block_fn(int(nk), int(nt))(p.P, p.Q, PQ, in.row_pitch(), gyk, taps, a);
        }
      }
    }
    for (int64_t kb = begin; kb < end; ++kb) {
      const int64_t k0 = kb * kKB, nk = std::min<int64_t>(kKB, p.K - k0);
      for (int64_t tb = 0; tb < tblocks; ++tb) {
        const int64_t t0 = tb * kTB, nt = std::min<int64_t>(kTB, CRS - t0);
        const float* a = acc.data() + ((kb - begin) * tblocks + tb) * kKB * kTB * 16;
        for (int64_t i = 0; i < nk; ++i)
          for (int64_t t = 0; t < nt; ++t) gw[(k0 + i) * CRS + t0 + t] = lane_sum(a + (i * nt + t) * 16);
      }
    }
  });
}

#else

template <typename A>
void conv2d_wgrad_rows_avx512(const Conv2dParams&, const A*, const A*, float*) {
  TORCH_CHECK(false, "conv2d_wgrad_rows_avx512: not an x86 build");
}

#endif

template void conv2d_wgrad_rows_avx512<float>(const Conv2dParams&, const float*, const float*, float*);
template void conv2d_wgrad_rows_avx512<c10::BFloat16>(const Conv2dParams&, const c10::BFloat16*,
                                                      const c10::BFloat16*, float*);
template void conv2d_wgrad_rows_avx512<c10::Half>(const Conv2dParams&, const c10::Half*, const c10::Half*, float*);

}  // namespace cuconv::cpu
