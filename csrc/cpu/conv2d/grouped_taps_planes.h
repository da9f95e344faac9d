#pragma once
// What the grouped_taps passes share (grouped_taps.cpp: forward and grad input;
// grouped_taps_wgrad.cpp: grad weight), x86 only: the zero-padded copy of the input per group or per
// pack of groups (GroupPlanes), and the packed groups' lane order.
#if defined(__x86_64__) || defined(__i386__)
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv2d_params.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"
#include "cpu/sizes.h"

// GCC 12's _mm512_permutexvar_ps and _mm512_broadcast_f32x4 pass a deliberately uninitialised
// placeholder (_mm512_undefined_ps), which -Wmaybe-uninitialized reports once per use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cuconv::cpu::grouped_taps_detail {

// Packed groups (AVX-512, groups of 8 or 4 channels in and out: ResNeXt 32x4d's first stages,
// RegNet): P = 16 / Kg groups share a vector, lane k * P + i holding output channel k of the pack's
// group i. The input copy holds a pack's P values of input channel c side by side (one pixel: c * P
// + i), so one 64-bit (P = 2) or 128-bit (P = 4) broadcast gives every lane its group's value, and
// the weights are packed the same way; a sum vector is put back in channel order (lane i * Kg + k)
// by one permute as it is stored. A half-filled vector (two half-used lanes per FMA) ran slower than
// the pixel-lane kernels on these groups.
template <int P>
CUCONV_AVX512 CUCONV_INLINE __m512 broadcast_groups(const float* x) {
  if constexpr (P == 1) {
    return _mm512_set1_ps(*x);
  } else if constexpr (P == 2) {
    double pair;
    std::memcpy(&pair, x, sizeof(pair));
    return _mm512_castpd_ps(_mm512_set1_pd(pair));
  } else {
    return _mm512_broadcast_f32x4(_mm_loadu_ps(x));
  }
}

// Lane j of the packed order takes lane (j % P) * (16 / P) + j / P of the channel order.
template <int P>
CUCONV_AVX512 CUCONV_INLINE __m512i to_packed_order() {
  alignas(64) int idx[16];
  for (int j = 0; j < 16; ++j) idx[j] = (j % P) * (16 / P) + j / P;
  return _mm512_load_si512(idx);
}

// (The copies are compiled for AVX2, which every CPU running either path has.)
// `rows` runs of `width` floats, `pitch` apart in src, packed one after the other in dst: whole
// vectors when the width allows (a group's 8 or 16 channels), where a loop of unknown length per
// run would cost more than the copy.
CUCONV_AVX2 inline void copy_runs(const float* src, int64_t pitch, int64_t rows, int64_t width, float* dst) {
  if (width % 8 == 0) {
    for (int64_t i = 0; i < rows; ++i, src += pitch, dst += width)
      for (int64_t c = 0; c < width; c += 8) _mm256_storeu_ps(dst + c, _mm256_loadu_ps(src + c));
  } else if (width % 4 == 0) {
    for (int64_t i = 0; i < rows; ++i, src += pitch, dst += width)
      for (int64_t c = 0; c < width; c += 4) _mm_storeu_ps(dst + c, _mm_loadu_ps(src + c));
  } else {
    for (int64_t i = 0; i < rows; ++i, src += pitch, dst += width) std::copy(src, src + width, dst);
  }
}

// Row `row` (image n, padded row h + pad_h) of every group's plane, from the NHWC input x; pixels
// lo..hi of it lie inside the input, the rest is zero.
CUCONV_AVX2 inline void copy_row(const Conv2dParams& p, const float* x, int64_t n, int64_t h, int64_t lo, int64_t hi,
                            int64_t Wp, int64_t plane, float* row) {
  const int64_t G = p.groups, Cg = p.C_per_group(), C = p.C;
  for (int64_t g = 0; g < G; ++g) {
    float* d = row + g * plane;
    std::fill(d, d + lo * Cg, 0.f);
    const float* sx = x + ((n * p.H + h) * p.W - p.pad_w) * C + g * Cg;
    copy_runs(sx + lo * C, C, hi - lo, Cg, d + lo * Cg);
    std::fill(d + hi * Cg, d + Wp * Cg, 0.f);
  }
}

// The same row for packed groups (P of them per plane, Cg = 16 / P channels each: 16 values per
// pixel): a pack's 16 NHWC channels (group-major) permuted into the packed order (channel-major),
// the last pack's missing groups zero.
template <int P>
CUCONV_AVX512 void copy_row_packed(const Conv2dParams& p, const float* x, int64_t n, int64_t h, int64_t lo, int64_t hi,
                                   int64_t Wp, int64_t plane, float* row) {
  const int64_t G = p.groups, C = p.C, packs = ceil_div(G, int64_t(P));
  const __m512i order = to_packed_order<P>();
  for (int64_t v = 0; v < packs; ++v) {
    float* d = row + v * plane;
    const int valid = int(std::min<int64_t>(P, G - v * P)) * (16 / P);
    const __mmask16 lanes = __mmask16(valid == 16 ? 0xFFFF : (1u << valid) - 1);
    std::fill(d, d + lo * 16, 0.f);
    const float* sx = x + ((n * p.H + h) * p.W - p.pad_w) * C + v * 16;
    for (int64_t w = lo; w < hi; ++w)
      _mm512_storeu_ps(d + w * 16, _mm512_permutexvar_ps(order, _mm512_maskz_loadu_ps(lanes, sx + w * C)));
    std::fill(d + hi * 16, d + Wp * 16, 0.f);
  }
}

// The input copied group by group, zero-padded to the extent every window stays in:
// xp[g][n][h][w][c] of Cg channels (packed groups: per pack, c x P values per pixel in the packed
// order), then zeros of slack. In the NHWC input a pixel's group channels are C apart from
// the next pixel's, a power of two in most models, so a tile's 12 x R x S window rows would fall
// into a few L1 sets; here consecutive pixels are consecutive lines.
struct GroupPlanes {
  int64_t Hp, Wp, image, plane;
  const float* xp;
  std::vector<int64_t> off;     // per tap (r, s): its offset from a window's origin
  std::vector<int64_t> origin;  // per output pixel: its window's origin in a group's plane

  // P > 1: a plane per pack of P groups (group_pack), its pixels in the packed order.
  GroupPlanes(const Conv2dParams& p, const float* x, int P = 1) {
    const int64_t Cg = p.C_per_group() * P, planes_n = ceil_div(p.groups, int64_t(P));
    Hp = (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1, Wp = (p.Q - 1) * p.stride_w + (p.S - 1) * p.dil_w + 1;
    image = Hp * Wp * Cg, plane = p.N * image;
    // Slack past the last plane: the grad weight's channel blocks read up to 15 values past a
    // group's last channel, a segment tile's last run up to 7 output pixels past its row's end.
    const int64_t slack = 16 + 8 * p.stride_w * Cg;
    float* planes = scratch<float>(Scratch::call_input, planes_n * plane + slack);
    std::fill(planes + planes_n * plane, planes + planes_n * plane + slack, 0.f);
    at::parallel_for(0, p.N * Hp, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / Hp, h = row % Hp - p.pad_h;
        const int64_t lo = std::min(p.pad_w, Wp), hi = h < 0 || h >= p.H ? lo : std::clamp(p.W + p.pad_w, lo, Wp);
        float* dst = planes + row * Wp * Cg;
        if (P == 2) copy_row_packed<2>(p, x, n, h, lo, hi, Wp, plane, dst);
        else if (P == 4) copy_row_packed<4>(p, x, n, h, lo, hi, Wp, plane, dst);
        else copy_row(p, x, n, h, lo, hi, Wp, plane, dst);
      }
    });
    xp = planes;
    windows(p, 0, 0, Cg);
  }

  // The conv q's windows in the planes `shared` holds (copied for another conv of the same input):
  // output (oh, ow)'s window starts at padded position (row0 + oh * stride_h, col0 + ow * stride_w).
  GroupPlanes(const GroupPlanes& shared, const Conv2dParams& q, int64_t row0, int64_t col0, int P)
      : Hp(shared.Hp), Wp(shared.Wp), image(shared.image), plane(shared.plane), xp(shared.xp) {
    windows(q, row0, col0, q.C_per_group() * P);
  }

 private:
  void windows(const Conv2dParams& p, int64_t row0, int64_t col0, int64_t px) {
    off.resize(p.R * p.S);
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) off[r * p.S + s] = (r * p.dil_h * Wp + s * p.dil_w) * px;
    origin.resize(p.N * p.P * p.Q);
    for (int64_t n = 0, m = 0; n < p.N; ++n)
      for (int64_t oh = 0; oh < p.P; ++oh)
        for (int64_t ow = 0; ow < p.Q; ++ow)
          origin[m++] = n * image + ((row0 + oh * p.stride_h) * Wp + col0 + ow * p.stride_w) * px;
  }
};

}  // namespace cuconv::cpu::grouped_taps_detail

#pragma GCC diagnostic pop

#endif
