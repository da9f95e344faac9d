// Grouped convs with 16k output channels per group, NHWC, float32 on AVX-512: each output pixel's
// group channels are one or two vectors, summed over the group's taps (r, s) and input channels
// from a zero-padded copy of the input laid out group by group.
//
// Why not the other grouped paths: with 16 channels per group on small maps (ResNeXt's last stages
// at 4x4 and 2x2) the pixel-lane kernels (grouped.cpp) compute a padded grid of which fewer than
// half the positions are outputs, and a per-group GEMM needs an im2col of R x S copies of the input.
// Here a tile is MR output pixels x 16 (or 32) channels of one group, its MR accumulators fed by one
// weight vector load and MR broadcasts of input values per input channel and tap, like the GEMM
// micro-kernel's, with A's rows pointing at each pixel's window in the copy: any stride, dilation
// and padding, and no computed value is thrown away.
//
// Each output is one FMA chain over (r, s, c) in that order whatever the tile or thread, so the
// bits do not depend on the thread count.
#include "cpu/conv2d/grouped_taps.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/conv2d/plan.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"
#include "cpu/sizes.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// GCC 12's _mm512_max_ps passes a deliberately uninitialised placeholder (_mm512_undefined_ps),
// which -Wmaybe-uninitialized reports once per use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cuconv::cpu {

bool grouped_taps_shape(const Conv2dParams& p) {
  return p.groups > 1 && p.C_per_group() > 1 && p.K_per_group() % 16 == 0;
}

#if defined(__x86_64__) || defined(__i386__)

namespace {

// A tile's operands: MR input row pointers (each pixel's window origin, at the group's first
// channel), the tap offsets, the packed group weight [tap][c][Kg] at the tile's first channel.
struct TapsTile {
  const float* const* rows;
  const int64_t* off;
  int64_t taps, Cg, Kg;
  const float* w;
  const float* bias;  // at the tile's first channel, or null
  float* y;           // the first pixel's outputs at the tile's first channel; pixels K apart
  int64_t K;
  int mv;             // valid pixels (rows past it repeat a valid pixel and are not stored)
  bool relu;
};

template <int MR, int NV>
CUCONV_AVX512 __attribute__((noinline)) void taps_tile(const TapsTile& t) {
  __m512 acc[MR][NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    const __m512 init = t.bias ? _mm512_loadu_ps(t.bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][v] = init;
  }
  const int64_t Cg = t.Cg, Kg = t.Kg;
  for (int64_t tap = 0; tap < t.taps; ++tap) {
    const float* a[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) a[i] = t.rows[i] + t.off[tap];
    const float* b = t.w + tap * Cg * Kg;
#pragma GCC unroll 4
    for (int64_t c = 0; c < Cg; ++c, b += Kg) {
      __m512 bv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i][c]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
      }
    }
  }
  // max(0, x) keeps a NaN sum NaN, as torch.relu.
  const __m512 zero = _mm512_setzero_ps();
  for (int i = 0; i < t.mv; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      _mm512_storeu_ps(t.y + i * t.K + 16 * v, t.relu ? _mm512_max_ps(zero, acc[i][v]) : acc[i][v]);
}

// Pixels per tile: 12 accumulator chains per vector of channels (12 x 32 with two: 24 of the 32
// registers), more than the FMA latency needs, with few enough row pointers to stay in registers.
constexpr int kRows = 12;

// Row `row` (image n, padded row h + pad_h) of every group's plane, from the NHWC input x; pixels
// lo..hi of it lie inside the input, the rest is zero.
CUCONV_AVX512 void copy_row(const Conv2dParams& p, const float* x, int64_t n, int64_t h, int64_t lo, int64_t hi,
                            int64_t Wp, int64_t plane, float* row) {
  const int64_t G = p.groups, Cg = p.C_per_group(), C = p.C;
  for (int64_t g = 0; g < G; ++g) {
    float* d = row + g * plane;
    std::fill(d, d + lo * Cg, 0.f);
    const float* sx = x + ((n * p.H + h) * p.W - p.pad_w) * C + g * Cg;
    for (int64_t j = lo; j < hi; ++j)
      for (int64_t c = 0; c < Cg; ++c) d[j * Cg + c] = sx[j * C + c];
    std::fill(d + hi * Cg, d + Wp * Cg, 0.f);
  }
}

// Group g's weight as [tap][c][Kg] for the conv q: q's own weight (OIHW), or, flipped, the weight of
// the conv whose grad input q is ([q.C][q.K / groups][R][S], read turned 180 degrees with its
// channel axes swapped).
CUCONV_AVX512 void pack_weight(const Conv2dParams& q, const float* w, bool flipped, int64_t g, float* wp) {
  const int64_t Cg = q.C_per_group(), Kg = q.K_per_group(), taps = q.R * q.S;
  const float* wg = w + g * Kg * Cg * taps;
  float* d = wp + g * taps * Cg * Kg;
  for (int64_t tap = 0; tap < taps; ++tap)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t k = 0; k < Kg; ++k)
        d[(tap * Cg + c) * Kg + k] = flipped ? wg[(c * Kg + k) * taps + taps - 1 - tap] : wg[(k * Cg + c) * taps + tap];
}

// The forward conv q of x (see grouped_taps_fprop), its weight as pack_weight reads it.
void run(const Conv2dParams& p, const float* x, const float* w, bool flipped, const float* bias, float* y, bool relu);

void run(const Conv2dParams& p, const float* x, const float* w, bool flipped, const float* bias, float* y, bool relu) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), K = p.K;
  const int64_t taps = p.R * p.S, M = p.N * p.P * p.Q;
  if (M == 0) return;
  // The input copied group by group, zero-padded to the extent every window stays in:
  // xp[g][n][h][w][c] of Cg channels. In the NHWC input a pixel's group channels are C apart from
  // the next pixel's, a power of two in most models, so a tile's 12 x R x S window rows would fall
  // into a few L1 sets; here consecutive pixels are consecutive lines.
  const int64_t Hp = (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1;
  const int64_t Wp = (p.Q - 1) * p.stride_w + (p.S - 1) * p.dil_w + 1;
  const int64_t image = Hp * Wp * Cg, plane = p.N * image;
  float* xp = scratch<float>(Scratch::call_input, G * plane);
  at::parallel_for(0, p.N * Hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Hp, h = row % Hp - p.pad_h;
      const int64_t lo = std::min(p.pad_w, Wp), hi = h < 0 || h >= p.H ? lo : std::clamp(p.W + p.pad_w, lo, Wp);
      copy_row(p, x, n, h, lo, hi, Wp, plane, xp + row * Wp * Cg);
    }
  });
  // The weight per group as [tap][c][Kg]: a K step's channels one contiguous vector load.
  float* wp = scratch<float>(Scratch::call, K * Cg * taps);
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) pack_weight(p, w, flipped, g, wp);
  });
  std::vector<int64_t> off(taps);
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) off[r * p.S + s] = (r * p.dil_h * Wp + s * p.dil_w) * Cg;

  // Each output pixel's window origin in a group's plane.
  std::vector<int64_t> origin(M);
  for (int64_t n = 0, m = 0; n < p.N; ++n)
    for (int64_t oh = 0; oh < p.P; ++oh)
      for (int64_t ow = 0; ow < p.Q; ++ow) origin[m++] = n * image + (oh * p.stride_h * Wp + ow * p.stride_w) * Cg;

  const int64_t tiles = ceil_div(M, kRows);
  // Group-major: a group's packed weight stays in L1 over its tiles.
  at::parallel_for(0, G * tiles, 1, [&](int64_t begin, int64_t end) {
    const float* rows[kRows];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / tiles, m0 = item % tiles * kRows;
      const int mv = int(std::min<int64_t>(kRows, M - m0));
      for (int i = 0; i < kRows; ++i) rows[i] = xp + g * plane + origin[m0 + std::min(i, mv - 1)];
      for (int64_t k0 = 0; k0 < Kg; k0 += 32) {
        const TapsTile t{rows, off.data(), taps, Cg, Kg, wp + g * taps * Cg * Kg + k0,
                         bias ? bias + g * Kg + k0 : nullptr, y + m0 * K + g * Kg + k0, K, mv, relu};
        if (Kg - k0 >= 32) taps_tile<kRows, 2>(t);
        else taps_tile<kRows, 1>(t);
      }
    }
  });
}

}  // namespace

void grouped_taps_fprop(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y,
                        bool relu) {
  run(p, x, w, false, bias, y, relu);
}

void grouped_taps_dgrad(const Conv2dParams& p, const float* gy, const float* w, float* gx) {
  run(grad_input_as_forward(p), gy, w, true, nullptr, gx, false);
}

#else  // not x86: the plan never picks grouped_taps here

void grouped_taps_fprop(const Conv2dParams&, const float*, const float*, const float*, float*, bool) {}
void grouped_taps_dgrad(const Conv2dParams&, const float*, const float*, float*) {}

#endif

}  // namespace cuconv::cpu
