// 3x3 stride-1 convolution (float32) as Winograd F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016): each 2x2 output tile comes from a 4x4 input tile with 16
// multiplies per (input channel, output channel) pair instead of 36, so 2.25x fewer FLOPs than the
// im2col GEMM. The 16 elementwise products of a tile are 16 independent GEMMs over channels:
//   V = B^T d B (input tile), U = G g G^T (filter), M_xi[tile][k] = sum_c V_xi[tile][c] U_xi[c][k],
//   y = A^T M A (output tile).
// B^T and A^T hold only 0 and +-1 and G only 0, +-1/2 and 1, so the transforms add a few roundings
// to a float32 sum of C*9 products (tests bound the error against float64).
// The grad input of a 3x3 stride-1 conv is the same correlation of grad_output with the filter
// turned 180 degrees and its channel axes swapped (padding 2 - pad), expressed here by negative
// weight strides. The grad weight is F(3x3, 2x2): a 4x4 input tile and a 2x2 grad_output tile give
// the 3x3 filter gradient with 16 products per tile, summed over tiles by 16 GEMMs.
//
// Work is split over blocks of tiles; each tile is summed by one thread in a fixed order, and the
// GEMMs sum over channels (over tiles, for grad weight) in increasing order, so results are bitwise
// the same for any thread count. Transforms vectorise over 8 channels at a time (AVX2 when the CPU
// has it, else whatever the compiler's baseline gives), or 16 for NHWC on the AVX-512 path.
#include "cpu/conv2d/winograd.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

// GCC 12's _mm512_max_ps passes a deliberately uninitialised placeholder (_mm512_undefined_ps),
// which -Wmaybe-uninitialized reports once per use (as in gemm/avx512.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu/convert16.h"
#include "cpu/gemm/gemm.h"
#include "cpu/scratch.h"
#include "cpu/transpose.h"

namespace cuconv::cpu {

namespace {

constexpr int64_t kLanes = 8;  // channels per transform step



// ---- transforms, on kLanes channels at once --------------------------------------------------

// v = B^T d B for a 4x4 tile d. B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
CUCONV_INLINE void input_tile(const float (&d)[4][4][kLanes], float (&v)[16][kLanes]) {
  float t[4][4][kLanes];
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < kLanes; ++l) {
      t[0][j][l] = d[0][j][l] - d[2][j][l];
      t[1][j][l] = d[1][j][l] + d[2][j][l];
      t[2][j][l] = d[2][j][l] - d[1][j][l];
      t[3][j][l] = d[1][j][l] - d[3][j][l];
    }
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < kLanes; ++l) {
      v[i * 4 + 0][l] = t[i][0][l] - t[i][2][l];
      v[i * 4 + 1][l] = t[i][1][l] + t[i][2][l];
      v[i * 4 + 2][l] = t[i][2][l] - t[i][1][l];
      v[i * 4 + 3][l] = t[i][1][l] - t[i][3][l];
    }
}

// y = A^T m A for F(2x2, 3x3). A^T = [1 1 1 0; 0 1 -1 -1].
CUCONV_INLINE void output_tile(const float (&m)[16][kLanes], float (&y)[2][2][kLanes]) {
  float s[2][4][kLanes];
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < kLanes; ++l) {
      s[0][j][l] = m[0 + j][l] + m[4 + j][l] + m[8 + j][l];
      s[1][j][l] = m[4 + j][l] - m[8 + j][l] - m[12 + j][l];
    }
  for (int i = 0; i < 2; ++i)
    for (int l = 0; l < kLanes; ++l) {
      y[i][0][l] = s[i][0][l] + s[i][1][l] + s[i][2][l];
      y[i][1][l] = s[i][1][l] - s[i][2][l] - s[i][3][l];
    }
}

// u = G g G^T for kN 3x3 filters g side by side. G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
template <int kN>
CUCONV_INLINE void filter_tile(const float (&g)[3][3][kN], float (&u)[16][kN]) {
  float t[4][3][kN];
  for (int j = 0; j < 3; ++j)
    for (int l = 0; l < kN; ++l) {
      t[0][j][l] = g[0][j][l];
      t[1][j][l] = 0.5f * (g[0][j][l] + g[1][j][l] + g[2][j][l]);
      t[2][j][l] = 0.5f * (g[0][j][l] - g[1][j][l] + g[2][j][l]);
      t[3][j][l] = g[2][j][l];
    }
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < kN; ++l) {
      u[i * 4 + 0][l] = t[i][0][l];
      u[i * 4 + 1][l] = 0.5f * (t[i][0][l] + t[i][1][l] + t[i][2][l]);
      u[i * 4 + 2][l] = 0.5f * (t[i][0][l] - t[i][1][l] + t[i][2][l]);
      u[i * 4 + 3][l] = t[i][2][l];
    }
}

// F(3x3, 2x2), for grad weight: the 2x2 grad_output tile g becomes Gw g Gw^T with
// Gw = [1 0; 1/2 1/2; 1/2 -1/2; 0 1], and the 3x3 result is Aw^T m Aw with
// Aw^T = [1 1 1 0; 0 1 -1 0; 0 1 1 -1]. The input tile uses the same B^T as F(2x2, 3x3).
CUCONV_INLINE void grad_tile(const float (&g)[2][2][kLanes], float (&u)[16][kLanes]) {
  float t[4][2][kLanes];
  for (int j = 0; j < 2; ++j)
    for (int l = 0; l < kLanes; ++l) {
      t[0][j][l] = g[0][j][l];
      t[1][j][l] = 0.5f * (g[0][j][l] + g[1][j][l]);
      t[2][j][l] = 0.5f * (g[0][j][l] - g[1][j][l]);
      t[3][j][l] = g[1][j][l];
    }
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < kLanes; ++l) {
      u[i * 4 + 0][l] = t[i][0][l];
      u[i * 4 + 1][l] = 0.5f * (t[i][0][l] + t[i][1][l]);
      u[i * 4 + 2][l] = 0.5f * (t[i][0][l] - t[i][1][l]);
      u[i * 4 + 3][l] = t[i][1][l];
    }
}

CUCONV_INLINE void weight_grad_tile(const float (&m)[16][kLanes], float (&y)[3][3][kLanes]) {
  float s[3][4][kLanes];
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < kLanes; ++l) {
      s[0][j][l] = m[0 + j][l] + m[4 + j][l] + m[8 + j][l];
      s[1][j][l] = m[4 + j][l] - m[8 + j][l];
      s[2][j][l] = m[4 + j][l] + m[8 + j][l] - m[12 + j][l];
    }
  for (int i = 0; i < 3; ++i)
    for (int l = 0; l < kLanes; ++l) {
      y[i][0][l] = s[i][0][l] + s[i][1][l] + s[i][2][l];
      y[i][1][l] = s[i][1][l] - s[i][2][l];
      y[i][2][l] = s[i][1][l] + s[i][2][l] - s[i][3][l];
    }
}

// ---- tile geometry -----------------------------------------------------------------------------

struct TileGrid {
  int64_t th, tw;  // tiles per image: rows, columns
  int64_t count(int64_t n) const { return n * th * tw; }
  void locate(int64_t t, int64_t& n, int64_t& ty, int64_t& tx) const {
    n = t / (th * tw);
    const int64_t r = t % (th * tw);
    ty = r / tw, tx = r % tw;
  }
};

// v as a D: widened to float32, or copied as it is where D is its own type (a vector kernel's
// staging of 16-bit values, widened 8 at a time afterwards).
template <typename D, typename A>
CUCONV_INLINE D patch_value(A v) {
  if constexpr (std::is_same_v<D, A>) return v;
  else return to_float(v);
}

// d[i][j][l] = x(n, c0 + l, h0 + i, w0 + j), zero outside the image or past cn channels.
// kContig: channels adjacent in memory (NHWC), so each (i, j) is one 8-float load.
template <bool kContig, int kRows, typename A, typename D>
CUCONV_INLINE void load_patch(const A* xn, const int64_t (&xs)[4], int64_t H, int64_t W, int64_t h0, int64_t w0,
                              int64_t c0, int64_t cn, D (&d)[kRows][kRows][kLanes]) {
  if (kContig && cn == kLanes && h0 >= 0 && h0 + kRows <= H && w0 >= 0 && w0 + kRows <= W) {
    // Inside the image with 8 whole channels (most tiles): no per-position bounds checks.
    const A* src = xn + c0 + h0 * xs[2] + w0 * xs[3];
    for (int i = 0; i < kRows; ++i)
      for (int j = 0; j < kRows; ++j)
        for (int l = 0; l < kLanes; ++l) d[i][j][l] = patch_value<D>(src[i * xs[2] + j * xs[3] + l]);
    return;
  }
  for (int i = 0; i < kRows; ++i) {
    const int64_t h = h0 + i;
    for (int j = 0; j < kRows; ++j) {
      const int64_t w = w0 + j;
      if (h < 0 || h >= H || w < 0 || w >= W) {
        for (int l = 0; l < kLanes; ++l) d[i][j][l] = D(0.f);
        continue;
      }
      const A* src = xn + c0 * xs[1] + h * xs[2] + w * xs[3];
      if (kContig && cn == kLanes) {
        for (int l = 0; l < kLanes; ++l) d[i][j][l] = patch_value<D>(src[l]);
      } else {
        for (int l = 0; l < kLanes; ++l) d[i][j][l] = l < cn ? patch_value<D>(src[l * xs[1]]) : D(0.f);
      }
    }
  }
}

// ---- forward (and grad input) ------------------------------------------------------------------

// V[xi][b][c] (rows ldv apart, matrices vstride apart) for tiles t0..t0+nb.
template <bool kContig, typename A>
CUCONV_INLINE void input_transform_body(const WinogradConv& s, const A* x, const TileGrid& grid, int64_t t0,
                                        int64_t nb, float* V, int64_t ldv, int64_t vstride) {
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const A* xn = x + n * s.xs[0];
    const int64_t h0 = 2 * ty - s.pad_h, w0 = 2 * tx - s.pad_w;
    for (int64_t c0 = 0; c0 < s.C; c0 += kLanes) {
      float d[4][4][kLanes], v[16][kLanes];
      load_patch<kContig>(xn, s.xs, s.H, s.W, h0, w0, c0, std::min(kLanes, s.C - c0), d);
      input_tile(d, v);
      for (int xi = 0; xi < 16; ++xi) std::memcpy(V + xi * vstride + b * ldv + c0, v[xi], sizeof(v[xi]));
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// d[i][j] = src[l*plane + i*row + j] in lane l, for 8 planes (NCHW channels): each 4-float patch
// row of a plane is one 128-bit load, and 4x4 transposes in each 128-bit half put the planes in
// the lanes. Replaces 128 scalar loads per 8 channels of an interior tile.
template <typename A>
CUCONV_AVX2_F16C CUCONV_INLINE void load_patch_planes(const A* src, int64_t plane, int64_t row, __m256 (&d)[4][4]) {
  for (int i = 0; i < 4; ++i) {
    const A* r = src + i * row;
    __m256 q[4];
    for (int l = 0; l < 4; ++l)  // planes l and l + 4 in the two halves
      q[l] = _mm256_insertf128_ps(_mm256_castps128_ps256(load4(r + l * plane)), load4(r + (l + 4) * plane), 1);
    const __m256 t0 = _mm256_unpacklo_ps(q[0], q[1]), t1 = _mm256_unpackhi_ps(q[0], q[1]);
    const __m256 t2 = _mm256_unpacklo_ps(q[2], q[3]), t3 = _mm256_unpackhi_ps(q[2], q[3]);
    d[i][0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    d[i][1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    d[i][2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    d[i][3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  }
}

// input_transform_body on registers: the patch is loaded straight into ymm registers (NHWC: one
// 8-channel load per position, zero outside the image; NCHW interior tiles: load_patch_planes)
// and V written by 8-float stores. Through the lane arrays, GCC moved each row as 16-byte halves
// that the 32-byte reads after them cannot forward from. Same sums in the same order as
// input_tile. Tiles that are neither (NCHW edges, a last group of fewer than 8 channels) take the
// portable loads.
template <typename A>
CUCONV_AVX2_F16C void input_transform_avx2(const WinogradConv& s, const A* x, const TileGrid& grid, int64_t t0,
                                           int64_t nb, float* V, int64_t ldv, int64_t vstride) {
  const bool contig = s.xs[1] == 1;
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const A* xn = x + n * s.xs[0];
    const int64_t h0 = 2 * ty - s.pad_h, w0 = 2 * tx - s.pad_w;
    const bool inside = h0 >= 0 && h0 + 4 <= s.H && w0 >= 0 && w0 + 4 <= s.W;
    for (int64_t c0 = 0; c0 < s.C; c0 += kLanes) {
      const int64_t cn = std::min(kLanes, s.C - c0);
      __m256 d[4][4];
      if (contig && cn == kLanes) {
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) {
            const int64_t h = h0 + i, w = w0 + j;
            d[i][j] = inside || (h >= 0 && h < s.H && w >= 0 && w < s.W)
                          ? load8(xn + c0 + h * s.xs[2] + w * s.xs[3])
                          : _mm256_setzero_ps();
          }
      } else if (!contig && inside && s.xs[3] == 1 && cn == kLanes) {
        load_patch_planes(xn + c0 * s.xs[1] + h0 * s.xs[2] + w0, s.xs[1], s.xs[2], d);
      } else {
        alignas(32) A dl[4][4][kLanes];  // the values as they are, widened 8 at a time below
        if (contig) load_patch<true>(xn, s.xs, s.H, s.W, h0, w0, c0, cn, dl);
        else load_patch<false>(xn, s.xs, s.H, s.W, h0, w0, c0, cn, dl);
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) d[i][j] = load8(dl[i][j]);
      }
      // B^T d B, as input_tile.
      __m256 t[4][4];
      for (int j = 0; j < 4; ++j) {
        t[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
        t[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
        t[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
        t[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
      }
      float* vb = V + b * ldv + c0;
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(vb + (i * 4 + 0) * vstride, _mm256_sub_ps(t[i][0], t[i][2]));
        _mm256_storeu_ps(vb + (i * 4 + 1) * vstride, _mm256_add_ps(t[i][1], t[i][2]));
        _mm256_storeu_ps(vb + (i * 4 + 2) * vstride, _mm256_sub_ps(t[i][2], t[i][1]));
        _mm256_storeu_ps(vb + (i * 4 + 3) * vstride, _mm256_sub_ps(t[i][1], t[i][3]));
      }
    }
  }
}
#endif

// y(n, k, p, q) = bias[k] + A^T M A, clamped at 0 when relu (NaN stays NaN), for tiles t0..t0+nb.
template <bool kContig, typename A>
CUCONV_INLINE void output_transform_body(const WinogradConv& s, const float* M, int64_t ldm, int64_t mstride,
                                         const TileGrid& grid, int64_t t0, int64_t nb, const float* bias, bool relu,
                                         A* y) {
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const int64_t p0 = 2 * ty, q0 = 2 * tx;
    const int prows = int(std::min<int64_t>(2, s.P - p0)), qcols = int(std::min<int64_t>(2, s.Q - q0));
    for (int64_t k0 = 0; k0 < s.K; k0 += kLanes) {
      const int64_t kn = std::min(kLanes, s.K - k0);
      float m[16][kLanes], out[2][2][kLanes];
      for (int xi = 0; xi < 16; ++xi) std::memcpy(m[xi], M + xi * mstride + b * ldm + k0, sizeof(m[xi]));
      output_tile(m, out);
      float bv[kLanes];
      for (int l = 0; l < kLanes; ++l) bv[l] = bias && l < kn ? bias[k0 + l] : 0.f;
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j)
          for (int l = 0; l < kLanes; ++l) {
            const float v = out[i][j][l] + bv[l];
            out[i][j][l] = relu && v < 0.f ? 0.f : v;
          }
      for (int i = 0; i < prows; ++i)
        for (int j = 0; j < qcols; ++j) {
          A* dst = y + n * s.ys[0] + k0 * s.ys[1] + (p0 + i) * s.ys[2] + (q0 + j) * s.ys[3];
          if (std::is_same_v<A, float> && kContig && kn == kLanes) std::memcpy(dst, out[i][j], sizeof(out[i][j]));
          else
            for (int64_t l = 0; l < kn; ++l) dst[l * s.ys[1]] = from_float<A>(out[i][j][l]);
        }
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// The same sums as output_tile and output_transform_body, in the same order, on registers loaded
// straight from M: through the lane arrays, GCC copies each 8-float row as two 16-byte moves that
// the 32-byte reads after them cannot forward from (a stall per row; 15-21% of a 64-channel layer's
// forward). NCHW outputs leave as 64-bit pairs (a tile row of one channel) instead of 32 scalars.
template <typename A>
CUCONV_AVX2_F16C void output_transform_avx2(const WinogradConv& s, const float* M, int64_t ldm, int64_t mstride,
                                            const TileGrid& grid, int64_t t0, int64_t nb, const float* bias, bool relu,
                                            A* y) {
  const bool nhwc = s.ys[1] == 1, pairs = s.ys[3] == 1;
  const __m256 zero = _mm256_setzero_ps();
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const int64_t p0 = 2 * ty, q0 = 2 * tx;
    const int prows = int(std::min<int64_t>(2, s.P - p0)), qcols = int(std::min<int64_t>(2, s.Q - q0));
    A* yt = y + n * s.ys[0] + p0 * s.ys[2] + q0 * s.ys[3];
    for (int64_t k0 = 0; k0 < s.K; k0 += kLanes) {
      const int kn = int(std::min(kLanes, s.K - k0));
      const float* mp = M + b * ldm + k0;  // rows are padded: 8 floats from k0 < K are readable
      __m256 m[16];
      for (int xi = 0; xi < 16; ++xi) m[xi] = _mm256_loadu_ps(mp + xi * mstride);
      __m256 s0[4], s1[4];
      for (int j = 0; j < 4; ++j) {
        s0[j] = _mm256_add_ps(_mm256_add_ps(m[j], m[4 + j]), m[8 + j]);
        s1[j] = _mm256_sub_ps(_mm256_sub_ps(m[4 + j], m[8 + j]), m[12 + j]);
      }
      __m256 out[2][2] = {{_mm256_add_ps(_mm256_add_ps(s0[0], s0[1]), s0[2]),
                           _mm256_sub_ps(_mm256_sub_ps(s0[1], s0[2]), s0[3])},
                          {_mm256_add_ps(_mm256_add_ps(s1[0], s1[1]), s1[2]),
                           _mm256_sub_ps(_mm256_sub_ps(s1[1], s1[2]), s1[3])}};
      const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(kn), lane);
      const __m256 bv = bias ? _mm256_maskload_ps(bias + k0, valid) : zero;
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          out[i][j] = _mm256_add_ps(out[i][j], bv);
          if (relu) out[i][j] = _mm256_max_ps(zero, out[i][j]);  // max(0, NaN) is NaN; -0 stays -0
        }
      A* dst = yt + k0 * s.ys[1];
      if (nhwc) {
        for (int i = 0; i < prows; ++i)
          for (int j = 0; j < qcols; ++j) store8(dst + i * s.ys[2] + j * s.ys[3], out[i][j], kn, valid);
      } else if (pairs && qcols == 2 && kn == kLanes) {
        if constexpr (std::is_same_v<A, float>) {
          for (int i = 0; i < prows; ++i) {
            const __m256 lo = _mm256_unpacklo_ps(out[i][0], out[i][1]);  // channel pairs 0 1 | 4 5
            const __m256 hi = _mm256_unpackhi_ps(out[i][0], out[i][1]);  // 2 3 | 6 7
            float* row = dst + i * s.ys[2];
            for (int h = 0; h < 2; ++h) {  // 128-bit halves: channels 4h .. 4h + 3
              const __m128 l = h ? _mm256_extractf128_ps(lo, 1) : _mm256_castps256_ps128(lo);
              const __m128 u = h ? _mm256_extractf128_ps(hi, 1) : _mm256_castps256_ps128(hi);
              float* c = row + 4 * h * s.ys[1];
              _mm_storel_pi(reinterpret_cast<__m64*>(c), l);
              _mm_storeh_pi(reinterpret_cast<__m64*>(c + s.ys[1]), l);
              _mm_storel_pi(reinterpret_cast<__m64*>(c + 2 * s.ys[1]), u);
              _mm_storeh_pi(reinterpret_cast<__m64*>(c + 3 * s.ys[1]), u);
            }
          }
        } else {
          // 16-bit NCHW: each channel's two columns of a tile row as one 32-bit store
          alignas(16) uint16_t o[2][2][kLanes];
          for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) _mm_store_si128(reinterpret_cast<__m128i*>(o[i][j]), narrow8(dst, out[i][j]));
          for (int i = 0; i < prows; ++i)
            for (int l = 0; l < kLanes; ++l) {
              const uint32_t pair = uint32_t(o[i][0][l]) | uint32_t(o[i][1][l]) << 16;
              std::memcpy(dst + l * s.ys[1] + i * s.ys[2], &pair, sizeof(pair));
            }
        }
      } else {
        alignas(32) float o[2][2][kLanes];
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) _mm256_store_ps(o[i][j], out[i][j]);
        for (int i = 0; i < prows; ++i)
          for (int j = 0; j < qcols; ++j)
            for (int l = 0; l < kn; ++l) dst[l * s.ys[1] + i * s.ys[2] + j * s.ys[3]] = from_float<A>(o[i][j][l]);
      }
    }
  }
}
#else
template <typename A>
void output_transform_avx2(const WinogradConv& s, const float* M, int64_t ldm, int64_t mstride, const TileGrid& grid,
                           int64_t t0, int64_t nb, const float* bias, bool relu, A* y) {
  if (s.ys[1] == 1) output_transform_body<true>(s, M, ldm, mstride, grid, t0, nb, bias, relu, y);
  else output_transform_body<false>(s, M, ldm, mstride, grid, t0, nb, bias, relu, y);
}
#endif

#if defined(__x86_64__) || defined(__i386__)
// NHWC transforms with AVX-512: 16 channels per step instead of 8, with the same sums in the same
// order per lane, so the bits equal the AVX2 path's. A tile takes half the instructions, and each
// of the 16 V (or M) rows it writes (or reads) per step is one whole 64-byte line instead of half
// of one. Lanes past C (K) load as zeros (V's rows are padded to round_up(C, 8) + 8 >=
// round_up(C, 16) floats, M's to pitch(K)). NCHW outputs keep the AVX2 transform: its 64-bit
// stores cost the same per channel whichever width computes them. NCHW inputs are copied
// channels-last first (channels_last_copy, below). 16-bit activations are widened as they are
// loaded (16-bit NCHW inputs: by that copy) and rounded as they are stored (convert16.h).

template <typename A>
CUCONV_AVX512 void input_transform_avx512(const WinogradConv& s, const A* x, const TileGrid& grid, int64_t t0,
                                          int64_t nb, float* V, int64_t ldv, int64_t vstride) {
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const A* xn = x + n * s.xs[0];
    const int64_t h0 = 2 * ty - s.pad_h, w0 = 2 * tx - s.pad_w;
    bool valid[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) valid[i][j] = h0 + i >= 0 && h0 + i < s.H && w0 + j >= 0 && w0 + j < s.W;
    for (int64_t c0 = 0; c0 < s.C; c0 += 16) {
      const int cn = int(std::min<int64_t>(16, s.C - c0));
      __m512 d[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
          d[i][j] = valid[i][j] ? load16(xn + c0 + (h0 + i) * s.xs[2] + (w0 + j) * s.xs[3], cn) : _mm512_setzero_ps();
      __m512 t[4][4];
      for (int j = 0; j < 4; ++j) {
        t[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
        t[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
        t[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
        t[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
      }
      float* vb = V + b * ldv + c0;
      for (int i = 0; i < 4; ++i) {
        _mm512_storeu_ps(vb + (i * 4 + 0) * vstride, _mm512_sub_ps(t[i][0], t[i][2]));
        _mm512_storeu_ps(vb + (i * 4 + 1) * vstride, _mm512_add_ps(t[i][1], t[i][2]));
        _mm512_storeu_ps(vb + (i * 4 + 2) * vstride, _mm512_sub_ps(t[i][2], t[i][1]));
        _mm512_storeu_ps(vb + (i * 4 + 3) * vstride, _mm512_sub_ps(t[i][1], t[i][3]));
      }
    }
  }
}

template <typename A>
CUCONV_AVX512 void output_transform_avx512(const WinogradConv& s, const float* M, int64_t ldm, int64_t mstride,
                                           const TileGrid& grid, int64_t t0, int64_t nb, const float* bias, bool relu,
                                           A* y) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const int64_t p0 = 2 * ty, q0 = 2 * tx;
    const int prows = int(std::min<int64_t>(2, s.P - p0)), qcols = int(std::min<int64_t>(2, s.Q - q0));
    A* yt = y + n * s.ys[0] + p0 * s.ys[2] + q0 * s.ys[3];
    for (int64_t k0 = 0; k0 < s.K; k0 += 16) {
      const int kn = int(std::min<int64_t>(16, s.K - k0));
      const float* mp = M + b * ldm + k0;
      __m512 m[16];
      for (int xi = 0; xi < 16; ++xi) m[xi] = _mm512_loadu_ps(mp + xi * mstride);
      __m512 s0[4], s1[4];
      for (int j = 0; j < 4; ++j) {
        s0[j] = _mm512_add_ps(_mm512_add_ps(m[j], m[4 + j]), m[8 + j]);
        s1[j] = _mm512_sub_ps(_mm512_sub_ps(m[4 + j], m[8 + j]), m[12 + j]);
      }
      __m512 out[2][2] = {{_mm512_add_ps(_mm512_add_ps(s0[0], s0[1]), s0[2]),
                           _mm512_sub_ps(_mm512_sub_ps(s0[1], s0[2]), s0[3])},
                          {_mm512_add_ps(_mm512_add_ps(s1[0], s1[1]), s1[2]),
                           _mm512_sub_ps(_mm512_sub_ps(s1[1], s1[2]), s1[3])}};
      const __m512 bv = bias ? load16(bias + k0, kn) : zero;
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          out[i][j] = _mm512_add_ps(out[i][j], bv);
          if (relu) out[i][j] = _mm512_max_ps(zero, out[i][j]);  // max(0, NaN) is NaN; -0 stays -0
        }
      A* dst = yt + k0;
      for (int i = 0; i < prows; ++i)
        for (int j = 0; j < qcols; ++j) store16(dst + i * s.ys[2] + j * s.ys[3], out[i][j], kn);
    }
  }
}
#endif

template <typename A>
void input_transform(Isa isa, const WinogradConv& s, const A* x, const TileGrid& grid, int64_t t0, int64_t nb,
                     float* V, int64_t ldv, int64_t vstride) {
#if defined(__x86_64__) || defined(__i386__)
  if (is_avx512(isa) && s.xs[1] == 1) return input_transform_avx512(s, x, grid, t0, nb, V, ldv, vstride);
  if (uses_avx2(isa)) return input_transform_avx2(s, x, grid, t0, nb, V, ldv, vstride);
#endif
  if (s.xs[1] == 1) input_transform_body<true>(s, x, grid, t0, nb, V, ldv, vstride);
  else input_transform_body<false>(s, x, grid, t0, nb, V, ldv, vstride);
}

template <typename A>
void output_transform(Isa isa, const WinogradConv& s, const float* M, int64_t ldm, int64_t mstride,
                      const TileGrid& grid, int64_t t0, int64_t nb, const float* bias, bool relu, A* y) {
#if defined(__x86_64__) || defined(__i386__)
  if (is_avx512(isa) && s.ys[1] == 1) return output_transform_avx512(s, M, ldm, mstride, grid, t0, nb, bias, relu, y);
#endif
  if (uses_avx2(isa)) output_transform_avx2(s, M, ldm, mstride, grid, t0, nb, bias, relu, y);
  else if (s.ys[1] == 1) output_transform_body<true>(s, M, ldm, mstride, grid, t0, nb, bias, relu, y);
  else output_transform_body<false>(s, M, ldm, mstride, grid, t0, nb, bias, relu, y);
}

// U_xi[c][k] (packed for the micro-kernel, matrices ustride apart) for the 16-wide slivers j0..j1
// of k: per (sliver, c) the 16 filters' transforms side by side, each xi's row one 64-byte store.
// (Filter by filter, the 16 values of one filter go to 16 matrices a sliver row apart: 16 partial
// lines per filter, which took 40% of a 512-channel layer's forward.) A 16-bit w (a 16-bit conv's
// weight, W = A) is widened as it is read.
template <typename W>
CUCONV_INLINE void filter_transform_body(const WinogradConv& s, const W* w, int64_t j0, int64_t j1, float* U,
                                         int64_t ustride) {
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t k0 = j * kGemmNR, kn = std::min(kGemmNR, s.K - k0);
    for (int64_t c = 0; c < s.C; ++c) {
      float g[3][3][kGemmNR], u[16][kGemmNR];
      for (int l = 0; l < kGemmNR; ++l)
        for (int r = 0; r < 3; ++r)
          for (int q = 0; q < 3; ++q)
            g[r][q][l] = l < kn ? to_float(w[(k0 + l) * s.ws[0] + c * s.ws[1] + r * s.ws[2] + q * s.ws[3]]) : 0.f;
      filter_tile(g, u);
      const int64_t off = gemm_packed_b_offset(c, k0, s.C, s.K);
      for (int xi = 0; xi < 16; ++xi) std::memcpy(U + xi * ustride + off, u[xi], sizeof(u[xi]));
    }
  }
}
#if defined(__x86_64__) || defined(__i386__)
// The 3x3 transform of 8 filters in the lanes of 9 registers, T[m] = tap m of each filter in memory
// order, stored as 8 lanes of each xi's sliver row at dst (rows ustride apart). flip: the taps run
// backwards in memory (grad input's turned filter), so tap (r, q) is T[8 - 3r - q].
CUCONV_AVX2 CUCONV_INLINE void filter_tile_8(const __m256 (&T)[9], bool flip, float* dst, int64_t ustride) {
  const __m256 half = _mm256_set1_ps(0.5f);
  __m256 t[4][3];
  for (int q = 0; q < 3; ++q) {
    const __m256 g0 = T[flip ? 8 - q : q], g1 = T[flip ? 5 - q : 3 + q], g2 = T[flip ? 2 - q : 6 + q];
    t[0][q] = g0;
    t[1][q] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(g0, g1), g2));
    t[2][q] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(g0, g1), g2));
    t[3][q] = g2;
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_store_ps(dst + (i * 4 + 0) * ustride, t[i][0]);
    _mm256_store_ps(dst + (i * 4 + 1) * ustride,
                    _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(t[i][0], t[i][1]), t[i][2])));
    _mm256_store_ps(dst + (i * 4 + 2) * ustride,
                    _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(t[i][0], t[i][1]), t[i][2])));
    _mm256_store_ps(dst + (i * 4 + 3) * ustride, t[i][2]);
  }
}

// The same for 16 filters: each filter's 9 taps are contiguous in memory (forwards or backwards),
// so 8 filters are 8 row loads and an 8x8 register transpose, plus the ninth taps. (Gathers are
// slow, and scalar stores followed by a vector load of them stall on store forwarding.)
template <typename W>
CUCONV_AVX2_F16C void filter_transform_avx2(const WinogradConv& s, const W* w, int64_t j0, int64_t j1, float* U,
                                            int64_t ustride) {
  const bool flip = s.ws[3] == -1 && s.ws[2] == -3;
  if (!flip && !(s.ws[3] == 1 && s.ws[2] == 3)) return filter_transform_body(s, w, j0, j1, U, ustride);
  const int64_t first = flip ? -8 : 0;  // the lowest tap's offset from the (0, 0) tap
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t k0 = j * kGemmNR, kn = std::min(kGemmNR, s.K - k0);
    for (int64_t c = 0; c < s.C; ++c) {
      float* dst = U + gemm_packed_b_offset(c, k0, s.C, s.K);
      for (int64_t h = 0; h < kGemmNR; h += 8) {
        const int64_t n = std::min<int64_t>(8, kn - h);  // filters in this half; lanes past K stay zero
        const W* src = w + (k0 + h) * s.ws[0] + c * s.ws[1] + first;
        __m256 r[8];
        float ninth[8];  // the ninth taps, gathered in registers (through memory they would stall the load)
        for (int l = 0; l < 8; ++l) {
          r[l] = l < n ? load8(src + l * s.ws[0]) : _mm256_setzero_ps();
          ninth[l] = l < n ? scalar_to_float(src[l * s.ws[0] + 8]) : 0.f;
        }
        __m256 T[9];
        transpose8x8(r, T);
        T[8] = _mm256_setr_ps(ninth[0], ninth[1], ninth[2], ninth[3], ninth[4], ninth[5], ninth[6], ninth[7]);
        filter_tile_8(T, flip, dst + h, ustride);
      }
    }
  }
}
#else
template <typename W>
void filter_transform_avx2(const WinogradConv& s, const W* w, int64_t j0, int64_t j1, float* U, int64_t ustride) {
  filter_transform_body(s, w, j0, j1, U, ustride);
}
#endif

template <typename W>
void filter_transform(Isa isa, const WinogradConv& s, const W* w, int64_t j0, int64_t j1, float* U,
                      int64_t ustride) {
  if (uses_avx2(isa)) filter_transform_avx2(s, w, j0, j1, U, ustride);
  else filter_transform_body(s, w, j0, j1, U, ustride);
}

// ---- grad weight ------------------------------------------------------------------------------

// U[xi][b][k] = Gw g Gw^T of the 2x2 grad_output tiles (zero past P, Q) of tiles t0..t0+nb.
template <bool kContig, typename A>
CUCONV_INLINE void grad_transform_body(const WinogradConv& s, const A* gy, const TileGrid& grid, int64_t t0,
                                       int64_t nb, float* U, int64_t ldu, int64_t ustride) {
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const A* gn = gy + n * s.ys[0];
    for (int64_t k0 = 0; k0 < s.K; k0 += kLanes) {
      float g[2][2][kLanes], u[16][kLanes];
      load_patch<kContig>(gn, s.ys, s.P, s.Q, 2 * ty, 2 * tx, k0, std::min(kLanes, s.K - k0), g);
      grad_tile(g, u);
      for (int xi = 0; xi < 16; ++xi) std::memcpy(U + xi * ustride + b * ldu + k0, u[xi], sizeof(u[xi]));
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// grad_transform_body on registers (as input_transform_avx2): NHWC positions are 8-channel loads,
// NCHW ones 8 scalar loads inserted into a register; the sums and their order are grad_tile's.
template <typename A>
CUCONV_AVX2_F16C void grad_transform_avx2(const WinogradConv& s, const A* gy, const TileGrid& grid, int64_t t0,
                                          int64_t nb, float* U, int64_t ldu, int64_t ustride) {
  const bool contig = s.ys[1] == 1;
  const __m256 half = _mm256_set1_ps(0.5f);
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const A* gn = gy + n * s.ys[0];
    for (int64_t k0 = 0; k0 < s.K; k0 += kLanes) {
      const int64_t kn = std::min(kLanes, s.K - k0);
      __m256 g[2][2];
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          const int64_t h = 2 * ty + i, w = 2 * tx + j;
          if (h >= s.P || w >= s.Q) {
            g[i][j] = _mm256_setzero_ps();
            continue;
          }
          const A* src = gn + k0 * s.ys[1] + h * s.ys[2] + w * s.ys[3];
          if (contig && kn == kLanes) {
            g[i][j] = load8(src);
          } else {
            float v[kLanes];
            for (int l = 0; l < kLanes; ++l) v[l] = l < kn ? scalar_to_float(src[l * s.ys[1]]) : 0.f;
            g[i][j] = _mm256_setr_ps(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
          }
        }
      __m256 t[4][2];
      for (int j = 0; j < 2; ++j) {
        t[0][j] = g[0][j];
        t[1][j] = _mm256_mul_ps(half, _mm256_add_ps(g[0][j], g[1][j]));
        t[2][j] = _mm256_mul_ps(half, _mm256_sub_ps(g[0][j], g[1][j]));
        t[3][j] = g[1][j];
      }
      float* ub = U + b * ldu + k0;
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(ub + (i * 4 + 0) * ustride, t[i][0]);
        _mm256_storeu_ps(ub + (i * 4 + 1) * ustride, _mm256_mul_ps(half, _mm256_add_ps(t[i][0], t[i][1])));
        _mm256_storeu_ps(ub + (i * 4 + 2) * ustride, _mm256_mul_ps(half, _mm256_sub_ps(t[i][0], t[i][1])));
        _mm256_storeu_ps(ub + (i * 4 + 3) * ustride, t[i][1]);
      }
    }
  }
}
#else
template <typename A>
void grad_transform_avx2(const WinogradConv& s, const A* gy, const TileGrid& grid, int64_t t0, int64_t nb,
                         float* U, int64_t ldu, int64_t ustride) {
  if (s.ys[1] == 1) grad_transform_body<true>(s, gy, grid, t0, nb, U, ldu, ustride);
  else grad_transform_body<false>(s, gy, grid, t0, nb, U, ldu, ustride);
}
#endif
#if defined(__x86_64__) || defined(__i386__)
// grad_transform_avx2 for NHWC with 16 channels per step (as input_transform_avx512; U's rows are
// padded to round_up(K, 8) + 8 >= round_up(K, 16) floats). Same sums in the same order.
template <typename A>
CUCONV_AVX512 void grad_transform_avx512(const WinogradConv& s, const A* gy, const TileGrid& grid, int64_t t0,
                                         int64_t nb, float* U, int64_t ldu, int64_t ustride) {
  const __m512 half = _mm512_set1_ps(0.5f);
  for (int64_t b = 0; b < nb; ++b) {
    int64_t n, ty, tx;
    grid.locate(t0 + b, n, ty, tx);
    const A* gn = gy + n * s.ys[0];
    for (int64_t k0 = 0; k0 < s.K; k0 += 16) {
      const int kn = int(std::min<int64_t>(16, s.K - k0));
      __m512 g[2][2];
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          const int64_t h = 2 * ty + i, w = 2 * tx + j;
          g[i][j] = h < s.P && w < s.Q ? load16(gn + k0 + h * s.ys[2] + w * s.ys[3], kn) : _mm512_setzero_ps();
        }
      __m512 t[4][2];
      for (int j = 0; j < 2; ++j) {
        t[0][j] = g[0][j];
        t[1][j] = _mm512_mul_ps(half, _mm512_add_ps(g[0][j], g[1][j]));
        t[2][j] = _mm512_mul_ps(half, _mm512_sub_ps(g[0][j], g[1][j]));
        t[3][j] = g[1][j];
      }
      float* ub = U + b * ldu + k0;
      for (int i = 0; i < 4; ++i) {
        _mm512_storeu_ps(ub + (i * 4 + 0) * ustride, t[i][0]);
        _mm512_storeu_ps(ub + (i * 4 + 1) * ustride, _mm512_mul_ps(half, _mm512_add_ps(t[i][0], t[i][1])));
        _mm512_storeu_ps(ub + (i * 4 + 2) * ustride, _mm512_mul_ps(half, _mm512_sub_ps(t[i][0], t[i][1])));
        _mm512_storeu_ps(ub + (i * 4 + 3) * ustride, t[i][1]);
      }
    }
  }
}
#endif
template <typename A>
void grad_transform(Isa isa, const WinogradConv& s, const A* gy, const TileGrid& grid, int64_t t0, int64_t nb,
                    float* U, int64_t ldu, int64_t ustride) {
#if defined(__x86_64__) || defined(__i386__)
  if (is_avx512(isa) && s.ys[1] == 1) return grad_transform_avx512(s, gy, grid, t0, nb, U, ldu, ustride);
#endif
  if (uses_avx2(isa)) grad_transform_avx2(s, gy, grid, t0, nb, U, ldu, ustride);
  else if (s.ys[1] == 1) grad_transform_body<true>(s, gy, grid, t0, nb, U, ldu, ustride);
  else grad_transform_body<false>(s, gy, grid, t0, nb, U, ldu, ustride);
}

// gw[k][c][r][s] = Aw^T (sum over chunks, in order, of part[chunk][xi][c][k]) Aw, for channels c0..c1.
CUCONV_INLINE void weight_output_body(const WinogradConv& s, const float* part, int64_t chunks, int64_t ldp,
                                      int64_t c0, int64_t c1, float* gw) {
  const int64_t pstride = s.C * ldp;  // one xi's [C][K] partial
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t k0 = 0; k0 < s.K; k0 += kLanes) {
      const int64_t kn = std::min(kLanes, s.K - k0);
      float m[16][kLanes], out[3][3][kLanes];
      for (int xi = 0; xi < 16; ++xi) {
        std::memcpy(m[xi], part + xi * pstride + c * ldp + k0, sizeof(m[xi]));
        for (int64_t ch = 1; ch < chunks; ++ch) {
          const float* src = part + (ch * 16 + xi) * pstride + c * ldp + k0;
          for (int l = 0; l < kLanes; ++l) m[xi][l] += src[l];
        }
      }
      weight_grad_tile(m, out);
      for (int64_t l = 0; l < kn; ++l)
        for (int r = 0; r < 3; ++r)
          for (int q = 0; q < 3; ++q) gw[(k0 + l) * s.C * 9 + c * 9 + r * 3 + q] = out[r][q][l];
    }
}
#if defined(__x86_64__) || defined(__i386__)
// weight_output_body on registers: the partials are summed in the same order, Aw^T m Aw as in
// weight_grad_tile, and the 9 taps of 8 output channels leave through an 8x8 transpose (8
// contiguous taps per channel) plus the ninth, instead of 72 scalar stores.
CUCONV_AVX2 void weight_output_avx2(const WinogradConv& s, const float* part, int64_t chunks, int64_t ldp, int64_t c0,
                                    int64_t c1, float* gw) {
  const int64_t pstride = s.C * ldp;
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t k0 = 0; k0 < s.K; k0 += kLanes) {
      const int64_t kn = std::min(kLanes, s.K - k0);
      __m256 m[16];
      for (int xi = 0; xi < 16; ++xi) {  // rows are padded: 8 floats from k0 < K are readable
        m[xi] = _mm256_loadu_ps(part + xi * pstride + c * ldp + k0);
        for (int64_t ch = 1; ch < chunks; ++ch)
          m[xi] = _mm256_add_ps(m[xi], _mm256_loadu_ps(part + (ch * 16 + xi) * pstride + c * ldp + k0));
      }
      __m256 sm[3][4];
      for (int j = 0; j < 4; ++j) {
        sm[0][j] = _mm256_add_ps(_mm256_add_ps(m[j], m[4 + j]), m[8 + j]);
        sm[1][j] = _mm256_sub_ps(m[4 + j], m[8 + j]);
        sm[2][j] = _mm256_sub_ps(_mm256_add_ps(m[4 + j], m[8 + j]), m[12 + j]);
      }
      __m256 o[9];  // tap r*3 + q
      for (int i = 0; i < 3; ++i) {
        o[i * 3 + 0] = _mm256_add_ps(_mm256_add_ps(sm[i][0], sm[i][1]), sm[i][2]);
        o[i * 3 + 1] = _mm256_sub_ps(sm[i][1], sm[i][2]);
        o[i * 3 + 2] = _mm256_sub_ps(_mm256_add_ps(sm[i][1], sm[i][2]), sm[i][3]);
      }
      // Transpose taps 0..7 of the 8 channels: row l = channel k0 + l's first 8 taps.
      __m256 rows[8];
      transpose8x8(o, rows);
      alignas(32) float ninth[kLanes];
      _mm256_store_ps(ninth, o[8]);
      for (int64_t l = 0; l < kn; ++l) {
        float* dst = gw + (k0 + l) * s.C * 9 + c * 9;
        _mm256_storeu_ps(dst, rows[l]);
        dst[8] = ninth[l];
      }
    }
}
#else
void weight_output_avx2(const WinogradConv& s, const float* part, int64_t chunks, int64_t ldp, int64_t c0, int64_t c1,
                        float* gw) {
  weight_output_body(s, part, chunks, ldp, c0, c1, gw);
}
#endif
void weight_output(Isa isa, const WinogradConv& s, const float* part, int64_t chunks, int64_t ldp, int64_t c0,
                   int64_t c1, float* gw) {
  if (uses_avx2(isa)) weight_output_avx2(s, part, chunks, ldp, c0, c1, gw);
  else weight_output_body(s, part, chunks, ldp, c0, c1, gw);
}

// Tiles per block (a multiple of the micro-kernel's rows; small problems still give every thread a
// block). The block size never changes a result.
//  - forward / grad input: a block's V and M (16 x nb x (C + K) floats) kept within about 384 KiB
//    of L2, unless the transformed weight (16*C*K floats) is larger than L3 (512 channels): then
//    each block re-streams it from memory, and larger blocks (32768 / channels tiles) amortise that.
//  - grad weight: each block re-reads and re-writes the 16 C x K partials, so blocks are larger
//    (32768 / channels tiles, at least 24).
int64_t tiles_per_block(Isa isa, int64_t tiles, int64_t C, int64_t K, bool partial_per_block) {
  const bool weight_beyond_l3 = 16 * C * K * int64_t(sizeof(float)) > (int64_t(8) << 20);
  const int64_t budget = partial_per_block || weight_beyond_l3 ? std::max<int64_t>(24, 32768 / std::max(C, K))
                                                               : std::max<int64_t>(24, 6144 / (C + K + 16));
  const int64_t fair = ceil_div(tiles, std::max(1, at::get_num_threads()));
  return round_up(std::max<int64_t>(1, std::min(budget, fair)), gemm_mr(isa));
}

// Distance between the 16 per-xi matrices of a block (rows of ld floats): one cache line more than
// their size. The transforms write the 16 at once; at a multiple of 4 KiB apart (256 tiles of 136
// floats, say) all 16 streams fall into one L1 set, which holds 8 lines, and thrash it.
int64_t matrix_stride(int64_t rows, int64_t ld) { return rows * ld + 16; }

// NCHW activations (element strides n, c, h, w = C*H*W, H*W, W, 1) on the AVX-512 path: a float32
// channels-last copy in the calling thread's `call_input` scratch, so that the 16-channel NHWC input
// transform runs instead of the 8-plane NCHW one. That one builds each tile from 128-bit row loads
// and transposes, and falls back to bounds-checked scalar loads on edge tiles (most tiles of a
// small map with padding 2); the copy costs less than those loads. The values transformed are the
// same, so are the bits. Returns the copy (null when none is made) and sets xs to its strides.
template <typename A>
const float* channels_last_copy(Isa isa, int64_t N, int64_t C, int64_t H, int64_t W, const A* x, int64_t (&xs)[4]) {
  const bool nchw = xs[3] == 1 && xs[2] == W && xs[1] == H * W && xs[0] == C * H * W;
  if (!is_avx512(isa) || !nchw || C == 1) return nullptr;
  float* dst = scratch<float>(Scratch::call_input, N * H * W * C);
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) transpose(isa, x + n * C * H * W, H * W, dst + n * H * W * C, C, C, H * W);
  });
  xs[0] = H * W * C, xs[1] = 1, xs[2] = W * C, xs[3] = C;
  return dst;
}

}  // namespace

template <typename A>
void winograd_conv3x3(Isa isa, const WinogradConv& s_in, const A* x, const A* w, const float* bias, A* y,
                      bool relu) {
  WinogradConv s = s_in;
  const TileGrid grid{ceil_div(s.P, 2), ceil_div(s.Q, 2)};
  const int64_t tiles = grid.count(s.N);
  if (tiles == 0) return;
  const float* x_nhwc = channels_last_copy(isa, s.N, s.C, s.H, s.W, x, s.xs);
  // U_xi[c][k], packed once for the micro-kernel (every block's GEMMs read it), in the calling
  // thread's `call` scratch; the sliver columns k >= K are written as zeros.
  const int64_t ustride = gemm_packed_b_size(s.C, s.K);
  float* U = scratch<float>(Scratch::call, 16 * ustride);
  at::parallel_for(0, ceil_div(s.K, kGemmNR), 1,
                   [&](int64_t begin, int64_t end) { filter_transform(isa, s, w, begin, end, U, ustride); });
  const int64_t nbmax = tiles_per_block(isa, tiles, s.C, s.K, false);
  const int64_t ldv = round_up(s.C, kLanes) + kLanes, ldm = pitch(s.K);
  const int64_t vstride = matrix_stride(nbmax, ldv), mstride = matrix_stride(nbmax, ldm);
  at::parallel_for(0, ceil_div(tiles, nbmax), 1, [&](int64_t begin, int64_t end) {
    float* V = scratch<float>(Scratch::input, 16 * vstride);
    float* M = scratch<float>(Scratch::output, 16 * mstride);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t t0 = blk * nbmax, nb = std::min(nbmax, tiles - t0);
      if (x_nhwc) input_transform(isa, s, x_nhwc, grid, t0, nb, V, ldv, vstride);
      else input_transform(isa, s, x, grid, t0, nb, V, ldv, vstride);
      for (int xi = 0; xi < 16; ++xi) {
        GemmArgs<float> a;
        a.M = nb, a.N = s.K, a.K = s.C;
        a.a = GemmA<float>::strided(V + xi * vstride, ldv, 1);
        a.B = U + xi * ustride, a.ldb = 0, a.b_packed = true;
        a.C = M + xi * mstride, a.ldc = ldm;
        gemm(float_isa(isa), a);
      }
      output_transform(isa, s, M, ldm, mstride, grid, t0, nb, bias, relu, y);
    }
  });
}

template <typename A>
void winograd_conv3x3_backward_weight(Isa isa, const WinogradConv& s, const A* gy, const A* x, float* gw) {
  const TileGrid grid{ceil_div(s.P, 2), ceil_div(s.Q, 2)};
  const int64_t tiles = grid.count(s.N);
  const int64_t ldp = pitch(s.K);  // partial rows: K, padded to whole lines (and 8-wide reads)
  // A fixed split of the tiles into 8, 4, 2 or 1 chunks, fewer when the partials would be large or a
  // chunk would sum fewer than 64 tiles (256 positions, as the GEMM strategies' chunks): each
  // partial (16 x C x K) is written, then read by the final sum, which on small maps moved more bytes
  // than the products. It depends on the shapes only, so the sums, and the bits, do not depend on
  // the thread count.
  int64_t chunks = 8;
  while (chunks > 1 && (tiles / chunks < 64 || chunks * 16 * s.C * ldp > (int64_t(1) << 23))) chunks /= 2;
  float* part = scratch<float>(Scratch::call, chunks * 16 * s.C * ldp);
  if (tiles == 0) std::fill(part, part + chunks * 16 * s.C * ldp, 0.f);
  const int64_t nbmax = tiles_per_block(isa, ceil_div(tiles, chunks), s.C, s.K, true);
  const int64_t ldv = round_up(s.C, kLanes) + kLanes, ldu = round_up(s.K, kLanes) + kLanes;
  const int64_t vstride = matrix_stride(nbmax, ldv), ustride = matrix_stride(nbmax, ldu);
  const bool split = chunks < at::get_num_threads();
  at::parallel_for(0, tiles ? chunks : 0, 1, [&](int64_t begin, int64_t end) {
    float* V = scratch<float>(Scratch::input, 16 * vstride);
    float* U = scratch<float>(Scratch::extra, 16 * ustride);
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t c_begin = ch * tiles / chunks, c_end = (ch + 1) * tiles / chunks;
      for (int64_t t0 = c_begin; t0 < c_end; t0 += nbmax) {
        const int64_t nb = std::min(nbmax, c_end - t0);
        input_transform(isa, s, x, grid, t0, nb, V, ldv, vstride);
        grad_transform(isa, s, gy, grid, t0, nb, U, ldu, ustride);
        for (int xi = 0; xi < 16; ++xi) {
          GemmArgs<float> a;  // part_xi[c][k] (+)= sum_b V_xi[b][c] U_xi[b][k]
          a.M = s.C, a.N = s.K, a.K = nb;
          a.a = GemmA<float>::strided(V + xi * vstride, 1, ldv);
          a.B = U + xi * ustride, a.ldb = ldu;
          a.C = part + (ch * 16 + xi) * s.C * ldp, a.ldc = ldp;
          a.init = t0 == c_begin ? GemmInit::zero : GemmInit::accumulate;
          a.parallel = split;
          gemm(float_isa(isa), a);
        }
      }
    }
  });
  at::parallel_for(0, s.C, 1, [&](int64_t begin, int64_t end) { weight_output(isa, s, part, chunks, ldp, begin, end, gw); });
}

// ------------------------------------------------------------------ conv2d passes as correlations

// Element strides (n, c, h, w) of a contiguous activation in the conv's memory format.
static void activation_strides(bool channels_last, int64_t C, int64_t H, int64_t W, int64_t (&st)[4]) {
  if (channels_last) st[0] = H * W * C, st[1] = 1, st[2] = W * C, st[3] = C;
  else st[0] = C * H * W, st[1] = H * W, st[2] = W, st[3] = 1;
}

template <typename A>
void winograd_conv2d_fprop(Isa isa, const Conv2dParams& p, const A* x, const A* w, const float* bias, A* y,
                           bool relu) {
  WinogradConv s{p.N, p.C, p.H, p.W, p.K, p.P, p.Q, p.pad_h, p.pad_w, {}, {}, {p.C * 9, 9, 3, 1}};
  activation_strides(p.channels_last, p.C, p.H, p.W, s.xs);
  activation_strides(p.channels_last, p.K, p.P, p.Q, s.ys);
  winograd_conv3x3(isa, s, x, w, bias, y, relu);
}

// grad_input(n,c,h,w) = sum_{k,r,s} grad_output(n, k, h - (2 - pad_h) + r, ...) w(k, c, 2 - r, 2 - s):
// a correlation with the filter turned 180 degrees and its channel axes swapped.
template <typename A>
void winograd_conv2d_dgrad(Isa isa, const Conv2dParams& p, const A* gy, const A* w, A* gx) {
  WinogradConv s{p.N, p.K, p.P, p.Q, p.C, p.H, p.W, 2 - p.pad_h, 2 - p.pad_w, {}, {}, {9, p.C * 9, -3, -1}};
  activation_strides(p.channels_last, p.K, p.P, p.Q, s.xs);
  activation_strides(p.channels_last, p.C, p.H, p.W, s.ys);
  winograd_conv3x3(isa, s, gy, w + 8, nullptr, gx, false);
}

template <typename A>
void winograd_conv2d_wgrad(Isa isa, const Conv2dParams& p, const A* gy, const A* x, float* gw) {
  WinogradConv s{p.N, p.C, p.H, p.W, p.K, p.P, p.Q, p.pad_h, p.pad_w, {}, {}, {}};
  activation_strides(p.channels_last, p.C, p.H, p.W, s.xs);
  activation_strides(p.channels_last, p.K, p.P, p.Q, s.ys);
  winograd_conv3x3_backward_weight(isa, s, gy, x, gw);
}

#define CUCONV_WINOGRAD_PASSES(A)                                                                                  \
  template void winograd_conv2d_fprop<A>(Isa, const Conv2dParams&, const A*, const A*, const float*, A*, bool);     \
  template void winograd_conv2d_dgrad<A>(Isa, const Conv2dParams&, const A*, const A*, A*);                         \
  template void winograd_conv2d_wgrad<A>(Isa, const Conv2dParams&, const A*, const A*, float*);
CUCONV_WINOGRAD_PASSES(float)
CUCONV_WINOGRAD_PASSES(c10::BFloat16)
CUCONV_WINOGRAD_PASSES(c10::Half)
#undef CUCONV_WINOGRAD_PASSES

}  // namespace cuconv::cpu
