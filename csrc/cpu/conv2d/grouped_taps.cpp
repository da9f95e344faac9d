// Grouped convs whose groups' output channels fill whole vectors, NHWC, float32: on AVX-512 16k
// channels per group (8k onto maps of at most 4 pixels, the vector half used), on AVX2 8k. Each
// output pixel's group channels are one to four vectors, summed over the group's taps (r, s) and
// input channels from a zero-padded copy of the input laid out group by group (AVX2's strided
// forward reads the input in place, its taps outside the input from zeros).
//
// Here a tile is MR output pixels x 16 (or 32) channels of one group, its MR accumulators fed by one
// weight vector load and MR broadcasts of input values per input channel and tap, like the GEMM
// micro-kernel's, with A's rows pointing at each pixel's window: any stride, dilation and padding,
// and no computed value is thrown away. AVX2 runs the same tile in 8-lane vectors, and groups of 8
// channels all in one call. The AVX2 grad weight reads the input in place with the channels the
// other way round (wgrad_in_place_avx2).
//
// Why not the other grouped paths: with 16 channels per group on small maps (ResNeXt's last stages
// at 4x4 and 2x2) the pixel-lane kernels (grouped.cpp) compute a padded grid of which fewer than
// half the positions are outputs, and a per-group GEMM needs an im2col of R x S copies of the input.
// With 8 channels per group half of every vector is idle, which pays only where the grid is mostly
// padding (2x2 maps: a quarter of a 4x4 grid); on 4x4 to 16x16 maps the pixel-lane kernels ran
// faster (docs/experiments.md).
//
// Each output is one FMA chain over (r, s, c) in that order whatever the tile, thread or ISA path,
// so the bits do not depend on the thread count, and AVX2 gives AVX-512's.
#include "cpu/conv2d/grouped_taps.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "cpu/conv2d/plan.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"
#include "cpu/sizes.h"
#include "cpu/transpose.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// GCC 12's _mm512_max_ps passes a deliberately uninitialised placeholder (_mm512_undefined_ps),
// which -Wmaybe-uninitialized reports once per use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cuconv::cpu {

int group_pack(const Conv2dParams& p, Isa isa) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  return is_avx512(isa) && p.groups > 1 && Cg == Kg && (Kg == 8 || Kg == 4) ? int(16 / Kg) : 1;
}

bool grouped_taps_shape(const Conv2dParams& p, Isa isa) {
  const int64_t Kg = p.K_per_group();
  if (p.groups == 1 || p.C_per_group() == 1) return false;
  if (isa == Isa::avx2) return Kg % 8 == 0;
  return is_avx512(isa) && (Kg % 16 == 0 || (Kg % 8 == 0 && p.P * p.Q <= 4) || group_pack(p, isa) > 1);
}

#if defined(__x86_64__) || defined(__i386__)

namespace {

// Pixels per tile: 12 accumulator chains per vector of channels (12 x 32 with two: 24 of the 32
// registers), more than the FMA latency needs, with few enough row pointers to stay in registers.
// AVX2 runs a tile of 16 channels as two halves of 6 pixels.
constexpr int kRows = 12;

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
// Lane l of the channel order takes lane (l % Kg) * P + l / Kg of the packed order.
template <int P>
CUCONV_AVX512 CUCONV_INLINE __m512i to_channel_order() {
  alignas(64) int idx[16];
  for (int l = 0; l < 16; ++l) idx[l] = (l % (16 / P)) * P + l / (16 / P);
  return _mm512_load_si512(idx);
}

// A tile's operands: MR input row pointers (each pixel's window origin, at the group's first
// channel), the tap offsets, the packed group weight [r][c][s][Kg] at the tile's first channel.
// Pixel i under tap t is read at rows[i] + off[t]: window origins in a zero-padded copy (AVX-512),
// or in the input itself (AVX2, tiles whose windows lie inside). AVX2's other tiles give each pixel
// and tap its own pointer, rows as [tap][kRows] (a tap outside the input pointing at zeros), and no
// off.
struct TapsTile {
  const float* const* rows;
  const int64_t* off;
  int64_t R, S, Cg, Kg;
  const float* w;
  const float* bias;  // at the tile's first channel, or null
  float* y;           // the output at the tile's first channel: pixel i's at y + yoff[i]
  const int64_t* yoff;
  int kv;             // valid channels of the tile's last vector (a multiple of 4, at most 16)
  int mv;             // valid pixels (rows past it repeat a valid pixel and are not stored)
  bool relu;
  // AVX2, groups of 8 channels, rows + off: this many groups in one call, group g's rows row_step x g
  // further, its weight, bias and output channels a group further (the per-group call and setup
  // cost as much as a grad input phase's one or two taps).
  int64_t groups = 1, row_step = 0;
};

// Lanes of a tile's vector v of NV: all but the last's invalid channels.
CUCONV_INLINE __mmask16 tile_lanes(int v, int NV, int kv) {
  return v + 1 < NV || kv == 16 ? __mmask16(0xFFFF) : __mmask16((1u << kv) - 1);
}

// A tile's starting sums: its bias (in the packed order for packed groups) or zero.
template <int P>
CUCONV_AVX512 CUCONV_INLINE __m512 tile_init(const float* bias, __mmask16 lanes) {
  if (!bias) return _mm512_setzero_ps();
  const __m512 b = _mm512_maskz_loadu_ps(lanes, bias);
  return P == 1 ? b : _mm512_permutexvar_ps(to_packed_order<P>(), b);
}

// A sum vector stored (in channel order, ReLU'd if asked) to its valid lanes.
template <int P>
CUCONV_AVX512 CUCONV_INLINE void tile_store(float* y, __mmask16 lanes, __m512 acc, bool relu) {
  // max(0, x) keeps a NaN sum NaN, as torch.relu.
  if (P > 1) acc = _mm512_permutexvar_ps(to_channel_order<P>(), acc);
  _mm512_mask_storeu_ps(y, lanes, relu ? _mm512_max_ps(_mm512_setzero_ps(), acc) : acc);
}

template <int MR, int NV, int P>
CUCONV_AVX512 __attribute__((noinline)) void taps_tile(const TapsTile& t) {
  __m512 acc[MR][NV];
  __mmask16 lanes[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) lanes[v] = tile_lanes(v, NV, t.kv);
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    const __m512 init = tile_init<P>(t.bias ? t.bias + 16 * v : nullptr, lanes[v]);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][v] = init;
  }
  const int64_t Cg = t.Cg, Kg = t.Kg, S = t.S;
  const float* b = t.w;
  for (int64_t r = 0; r < t.R; ++r)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t s = 0; s < S; ++s, b += Kg) {
        const int64_t at = t.off[r * S + s] + c * P;
        __m512 bv[NV];  // (a packed weight's missing groups are zeros)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) bv[v] = P > 1 ? _mm512_loadu_ps(b + 16 * v) : _mm512_maskz_loadu_ps(lanes[v], b + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const __m512 ai = broadcast_groups<P>(t.rows[i] + at);
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
      }
  // Constant indices only (the loop unrolled, the valid rows tested), so the accumulators stay in
  // registers through the main loop instead of living in memory.
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      if (i < t.mv) tile_store<P>(t.y + t.yoff[i] + 16 * v, lanes[v], acc[i][v], t.relu);
}

// A tile of NR runs of L consecutive output pixels, each run in one row of a map whose stride along
// the row is ST times its dilation (1 or 2): pixel i of a run reads input pixel ST x i + s (in
// dilation steps) under tap s of a kernel row, so one broadcast of an input pixel's channel feeds
// every tap that reaches it: S of them at ST = 1, one or two at ST = 2 (3 taps). The
// pixel tile above loads one broadcast per FMA (13 loads per 12 FMAs), which the two load ports,
// not the FMAs, limit. The sums keep taps_tile's order, (r, c, s), and so its bits.
struct SegmentTile {
  const float* const* seg;  // NR window origins of the runs' first pixels, at the group's first channel
  const int64_t* row_off;   // per kernel row r: its offset from a window origin
  int64_t R, Cg, Kg, step;  // step: one dilation step along a row (dil_w x Cg)
  const float* w;           // [r][c][s][Kg] at the tile's first channel
  const float* bias;        // at the tile's first channel, or null
  float* y;
  const int64_t* yoff;  // run j's pixel i at y + yoff[j * L + i]
  const int* mv;        // per run: its valid pixels (the others are computed from any input and not stored)
  int kv;               // valid channels of the tile's last vector (a multiple of 4, at most 16)
  bool relu;
};

template <int L, int NR, int S, int ST, int NV, int P>
CUCONV_AVX512 __attribute__((noinline)) void segment_tile(const SegmentTile& t) {
  __m512 acc[NR][L][NV];
  __mmask16 lanes[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) lanes[v] = tile_lanes(v, NV, t.kv);
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    const __m512 init = tile_init<P>(t.bias ? t.bias + 16 * v : nullptr, lanes[v]);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j)
#pragma GCC unroll 8
      for (int i = 0; i < L; ++i) acc[j][i][v] = init;
  }
  const int64_t Cg = t.Cg, Kg = t.Kg, step = t.step;
  const float* b = t.w;
  for (int64_t r = 0; r < t.R; ++r) {
    const float* a[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) a[j] = t.seg[j] + t.row_off[r];
    for (int64_t c = 0; c < Cg; ++c, b += S * Kg) {
      __m512 bv[S][NV];
#pragma GCC unroll 3
      for (int s = 0; s < S; ++s)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
          bv[s][v] = P > 1 ? _mm512_loadu_ps(b + s * Kg + 16 * v) : _mm512_maskz_loadu_ps(lanes[v], b + s * Kg + 16 * v);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) {
        // Opaque to the compiler, so it addresses the run's pixels from x and multiples of step (a
        // few registers) instead of keeping all NR x (L + S - 1) pointers, which spill.
        const float* x = a[j] + c * P;
        asm("" : "+r"(x));
#pragma GCC unroll 20
        for (int u = 0; u < ST * (L - 1) + S; ++u) {
          const __m512 xv = broadcast_groups<P>(x + u * step);
#pragma GCC unroll 3
          for (int s = 0; s < S; ++s) {
            const int i = (u - s) / ST;
            if (u - s >= 0 && (u - s) % ST == 0 && i < L)
#pragma GCC unroll 2
              for (int v = 0; v < NV; ++v) acc[j][i][v] = _mm512_fmadd_ps(xv, bv[s][v], acc[j][i][v]);
          }
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 8
    for (int i = 0; i < L; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
        if (i < t.mv[j]) tile_store<P>(t.y + t.yoff[j * L + i] + 16 * v, lanes[v], acc[j][i][v], t.relu);
}

// Run lengths the segment tiles take (their accumulators: 16 vectors, the runs 16 / L, or 8 pixels
// of two vectors each), and the one for a map Q pixels wide: the fewest computed pixels, then the
// longest runs (fewer broadcasts per FMA).
constexpr int kRunLengths[] = {8, 4, 2};
int run_length(int64_t Q) {
  int best = kRunLengths[0];
  for (int L : kRunLengths)
    if (ceil_div(Q, L) * L < ceil_div(Q, best) * best) best = L;
  return best;
}

// The runs per tile for run length L, with one or two vectors of channels (wide: the group has more
// than 16 output channels, so the tiles are sized for two).
int runs_per_tile(int L, bool wide) { return (wide ? 8 : 16) / L; }

template <int S, int ST, int NV, int P>
void segment_tile_s(int L, int NR, const SegmentTile& t) {
  if constexpr (NV == 2) {  // NR x L x 2 accumulators: only the wide sizes
    if (L == 8) return segment_tile<8, 1, S, ST, NV, P>(t);
    if (L == 4) return segment_tile<4, 2, S, ST, NV, P>(t);
    return segment_tile<2, 4, S, ST, NV, P>(t);
  } else if constexpr (P > 1) {  // one vector per pack: the 16-sum sizes
    if (L == 8) return segment_tile<8, 2, S, ST, NV, P>(t);
    if (L == 4) return segment_tile<4, 4, S, ST, NV, P>(t);
    return segment_tile<2, 8, S, ST, NV, P>(t);
  } else {
    switch (L * 16 + NR) {
      case 8 * 16 + 2: return segment_tile<8, 2, S, ST, NV, P>(t);
      case 8 * 16 + 1: return segment_tile<8, 1, S, ST, NV, P>(t);
      case 4 * 16 + 4: return segment_tile<4, 4, S, ST, NV, P>(t);
      case 4 * 16 + 2: return segment_tile<4, 2, S, ST, NV, P>(t);
      case 2 * 16 + 8: return segment_tile<2, 8, S, ST, NV, P>(t);
      default: return segment_tile<2, 4, S, ST, NV, P>(t);
    }
  }
}

template <int S, int ST>
void segment_tile_st(int L, int NR, int64_t kn, int P, const SegmentTile& t) {
  if (P == 2) return segment_tile_s<S, ST, 1, 2>(L, NR, t);
  if (P == 4) return segment_tile_s<S, ST, 1, 4>(L, NR, t);
  return kn > 16 ? segment_tile_s<S, ST, 2, 1>(L, NR, t) : segment_tile_s<S, ST, 1, 1>(L, NR, t);
}

// One segment tile of kn channels (at most 32; P groups packed per vector): S taps per kernel row
// (2 or 3) at ST = 1, 3 at ST = 2.
void segment_tile_on(int S, int ST, int L, int NR, int64_t kn, int P, const SegmentTile& t) {
  if (ST == 2) return segment_tile_st<3, 2>(L, NR, kn, P, t);
  if (S == 3) return segment_tile_st<3, 1>(L, NR, kn, P, t);
  return segment_tile_st<2, 1>(L, NR, kn, P, t);
}

// The same tile on AVX2, whose 8-lane vectors a group of 8k channels fills: MR x NV accumulators,
// NV weight vectors and a broadcast in the 16 registers (12 x 1 or 6 x 2: 14 or 15 of them).
template <int MR, int NV>
CUCONV_AVX2 __attribute__((noinline)) void taps_tile_avx2(const TapsTile& t) {
  const int64_t Cg = t.Cg, Kg = t.Kg;
  for (int64_t g = 0; g < t.groups; ++g) {
    const int64_t row_at = g * t.row_step;
    const float* b = t.w + g * t.R * t.S * Cg * Kg;
    const float* const bias = t.bias ? t.bias + g * Kg : nullptr;
    float* const y = t.y + g * Kg;
    __m256 acc[MR][NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __m256 init = bias ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) acc[i][v] = init;
    }
    for (int64_t r = 0; r < t.R; ++r)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t s = 0; s < t.S; ++s, b += Kg) {
          const int64_t tap = r * t.S + s;
          const float* a[MR];
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) a[i] = (t.off ? t.rows[i] + row_at + t.off[tap] : t.rows[tap * kRows + i]) + c;
          __m256 bv[NV];
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) {
            const __m256 ai = _mm256_broadcast_ss(a[i]);
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
          }
        }
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
        if (i < t.mv) _mm256_storeu_ps(y + t.yoff[i] + 8 * v, t.relu ? _mm256_max_ps(zero, acc[i][v]) : acc[i][v]);
  }
}

// One tile of kRows pixels x kn channels (8, 16, 24 or 32; AVX2: 8 or 16; P groups packed per
// vector on AVX-512) on the ISA's kernels.
void taps_tile_on(Isa isa, const TapsTile& t, int64_t kn, int P = 1) {
  if (isa != Isa::avx2) {
    if (P == 2) taps_tile<kRows, 1, 2>(t);
    else if (P == 4) taps_tile<kRows, 1, 4>(t);
    else if (kn > 16) taps_tile<kRows, 2, 1>(t);
    else taps_tile<kRows, 1, 1>(t);
  } else if (kn == 8) {
    taps_tile_avx2<kRows, 1>(t);
  } else {
    constexpr int half = kRows / 2;
    taps_tile_avx2<half, 2>(t);
    if (t.mv <= half) return;
    TapsTile rest = t;
    rest.rows += half, rest.yoff += half, rest.mv -= half;
    taps_tile_avx2<half, 2>(rest);
  }
}

// (The copies and packs are compiled for AVX2, which every CPU running either path has.)
// `rows` runs of `width` floats, `pitch` apart in src, packed one after the other in dst: whole
// vectors when the width allows (a group's 8 or 16 channels), where a loop of unknown length per
// run would cost more than the copy.
CUCONV_AVX2 void copy_runs(const float* src, int64_t pitch, int64_t rows, int64_t width, float* dst) {
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
CUCONV_AVX2 void copy_row(const Conv2dParams& p, const float* x, int64_t n, int64_t h, int64_t lo, int64_t hi,
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

// One phase of a strided grad input along one axis (dilation 1): the grad-input rows h with
// (h + pad) % stride == a, h = h0 + stride * t for t < count, are reached by the kernel rows
// r = a, a + stride, ... (taps of them, the last r_last), and row t reads grad_output row
// t - pad_t + j through r = r_last - j * stride: a stride-1 correlation padded by pad_t.
struct PhaseAxis {
  int64_t h0, count, taps, r_last, pad_t;
  PhaseAxis(int64_t a, int64_t stride, int64_t pad, int64_t R, int64_t H) {
    h0 = ((a - pad) % stride + stride) % stride;
    count = h0 < H ? (H - 1 - h0) / stride + 1 : 0;
    taps = a < R ? (R - 1 - a) / stride + 1 : 0;
    r_last = a + (taps - 1) * stride;
    pad_t = taps > 0 ? (r_last - h0 - pad) / stride : 0;  // exact: h0 + pad and r_last are both a mod stride
  }
};

void pack_groups(const float* src, int64_t G, int64_t rows, int64_t Kg, int P, float* dst);

// Every group's weight as [r][c][s][Kg] for the forward conv q (the kernels' summation order): its
// own weight (OIHW), transposed per group into [c][r][s][Kg] (in registers: a scalar loop taking a
// 512 x 16 x 3 x 3 weight value by value cost a tenth of the conv), whose rows then move in order.
void pack_weight(Isa isa, const Conv2dParams& q, const float* w, float* wp) {
  const int64_t Cg = q.C_per_group(), Kg = q.K_per_group(), R = q.R, S = q.S, CRS = Cg * R * S;
  at::parallel_for(0, q.groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> t(CRS * Kg);
    for (int64_t g = g0; g < g1; ++g) {
      transpose(isa, w + g * Kg * CRS, CRS, t.data(), Kg, Kg, CRS);
      float* d = wp + g * CRS * Kg;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t s = 0; s < S; ++s, d += Kg) std::memcpy(d, t.data() + ((c * R + r) * S + s) * Kg, Kg * sizeof(float));
    }
  });
}

// Every group's weight for (one phase of) the grad input of the conv p as a forward conv of
// grad_output: tap (j, i) is kernel position (rows.r_last - j * stride_h, cols.r_last - i * stride_w),
// the channel axes swapped, [j][k][i][c] (k a grad_output channel, c a grad-input channel). At
// stride 1 the one phase takes every tap: the kernel turned 180 degrees. Per output channel k of p,
// its [c][r][s] block transposed into [r][s][c] rows, as pack_weight.
void pack_weight_flipped(Isa isa, const Conv2dParams& q, const Conv2dParams& p, const float* w, const PhaseAxis& rows,
                         const PhaseAxis& cols, float* wp) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), R = p.R, S = p.S;
  // Packed groups (the forward conv q's group_pack): per group first, then into packs.
  const int P = group_pack(q, isa);
  std::vector<float> per_group(P > 1 ? p.groups * rows.taps * cols.taps * Kg * Cg : 0);
  float* const packed = wp;
  if (P > 1) wp = per_group.data();
  at::parallel_for(0, p.groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> t(R * S * Cg);
    for (int64_t g = g0; g < g1; ++g) {
      float* d = wp + g * rows.taps * cols.taps * Kg * Cg;
      for (int64_t k = 0; k < Kg; ++k) {
        transpose(isa, w + (g * Kg + k) * Cg * R * S, R * S, t.data(), Cg, Cg, R * S);
        for (int64_t j = 0; j < rows.taps; ++j)
          for (int64_t i = 0; i < cols.taps; ++i)
            std::memcpy(d + ((j * Kg + k) * cols.taps + i) * Cg,
                        t.data() + ((rows.r_last - j * p.stride_h) * S + cols.r_last - i * p.stride_w) * Cg,
                        Cg * sizeof(float));
      }
    }
  });
  if (P > 1) pack_groups(per_group.data(), p.groups, rows.taps * cols.taps * Kg, Cg, P, packed);
}

// The input copied group by group, zero-padded to the extent every window stays in:
// xp[g][n][h][w][c] of Cg channels, then zeros of slack. In the NHWC input a pixel's group channels are C apart from
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

// Whether run_packed takes segment tiles: AVX-512, stride along the rows equal to the dilation with
// 2 or 3 taps per kernel row, or twice it with 3.
bool segments_fit(Isa isa, const Conv2dParams& p) {
  return isa != Isa::avx2 && ((p.stride_w == p.dil_w && (p.S == 2 || p.S == 3)) ||
                              (p.stride_w == 2 * p.dil_w && p.S == 3));
}

// run_packed on segment tiles: each output row in runs of L pixels (run_length), NR runs per tile
// in order over the batch's rows; tile-major as run_packed.
template <class OutOffset>
void run_segments(const Conv2dParams& p, const GroupPlanes& in, const float* wp, const float* bias, float* y,
                  OutOffset yoff, bool relu, bool tile_major, int P) {
  // G planes of groups (or packs of P groups) of Kg channels (16 when packed; valid: Kvalid(g))
  const int64_t G = ceil_div(p.groups, int64_t(P)), Cg = p.C_per_group(), Kg = p.K_per_group() * P, taps = p.R * p.S;
  const auto Kvalid = [&](int64_t g) { return P == 1 ? Kg : std::min<int64_t>(P, p.groups - g * P) * p.K_per_group(); };
  const int L = run_length(p.Q), NR = runs_per_tile(L, Kg > 16);
  const int64_t per_row = ceil_div(p.Q, int64_t(L)), runs = p.N * p.P * per_row, tiles = ceil_div(runs, int64_t(NR));
  std::vector<int64_t> row_off(p.R);
  for (int64_t r = 0; r < p.R; ++r) row_off[r] = in.off[r * p.S];
  // Each run's window origin, valid pixels and output offsets, found once for every group (the
  // last tile's missing runs repeat the last run, none of their pixels stored).
  std::vector<int64_t> run_origin(tiles * NR), run_out(tiles * NR * L);
  std::vector<int> run_valid(tiles * NR);
  for (int64_t k = 0; k < tiles * NR; ++k) {
    const int64_t kr = std::min(k, runs - 1), ow0 = kr % per_row * L, m0 = kr / per_row * p.Q + ow0;
    const int valid = int(std::min<int64_t>(L, p.Q - ow0));
    run_valid[k] = k < runs ? valid : 0;
    run_origin[k] = in.origin[m0];
    for (int i = 0; i < L; ++i) run_out[k * L + i] = yoff(m0 + std::min(i, valid - 1));
  }
  at::parallel_for(0, tile_major ? tiles : G * tiles, 1, [&](int64_t begin, int64_t end) {
    const float* seg[8];
    int64_t tile = 0;
    const auto run_tile = [&](int64_t g) {
      for (int j = 0; j < NR; ++j) seg[j] = in.xp + g * in.plane + run_origin[tile * NR + j];
      const int64_t Kv = Kvalid(g);
      for (int64_t k0 = 0; k0 < Kv; k0 += 32) {
        const int64_t kn = std::min<int64_t>(32, Kv - k0);
        const SegmentTile t{seg, row_off.data(), p.R, Cg, Kg, p.dil_w * Cg * P, wp + g * taps * Cg * Kg + k0,
                            bias ? bias + g * Kg + k0 : nullptr, y + g * Kg + k0, run_out.data() + tile * NR * L,
                            run_valid.data() + tile * NR, int(kn > 16 ? kn - 16 : kn), relu};
        segment_tile_on(int(p.S), int(p.stride_w / p.dil_w), L, NR, kn, P, t);
      }
    };
    for (int64_t item = begin; item < end; ++item) {
      tile = tile_major ? item : item % tiles;
      if (!tile_major) {
        run_tile(item / tiles);
        continue;
      }
      for (int64_t g = 0; g < G; ++g) run_tile(g);
    }
  });
}

// The forward conv p of x (see grouped_taps_fprop), its weight packed per group as [tap][c][Kg]
// (wp), output pixel m's channels at y + yoff(m). AVX-512 reads a zero-padded copy of x group by
// group (GroupPlanes); AVX2 reads a strided conv's x in place (below): tiles of the pixels whose
// windows lie inside the input by window origin and tap offset, then tiles of the others with a
// pointer per pixel and tap (a tap outside the input reads zeros: the same sums).
template <class OutOffset>
void run_packed(Isa isa, const Conv2dParams& p, const float* x, const float* wp, const float* bias, float* y,
                OutOffset yoff, bool relu, const GroupPlanes* shared = nullptr) {
  // G planes of groups, or of packs of P groups (group_pack) of Kg = 16 channels (Kvalid(g) valid)
  const int P = group_pack(p, isa);
  const int64_t G = ceil_div(p.groups, int64_t(P)), Cg = p.C_per_group(), Kg = p.K_per_group() * P;
  const auto Kvalid = [&](int64_t g) { return P == 1 ? Kg : std::min<int64_t>(P, p.groups - g * P) * p.K_per_group(); };
  const int64_t taps = p.R * p.S, M = p.N * p.P * p.Q;
  if (M == 0) return;
  // In place for strided convs on AVX2: their copy moves stride_h x stride_w input pixels per output
  // pixel (ResNeXt's 256 in 32 groups from 16x16, stride 2: 0.93x native copied, 1.44x in place);
  // at stride 1 the copy cost less than the per-pixel pointers of the edge tiles (4x4 and 8x8 maps,
  // where a quarter to a half of the pixels have a tap outside).
  const bool in_place = isa == Isa::avx2 && (p.stride_h > 1 || p.stride_w > 1);
  // Tile-major while every group's packed weight fits in L2 together: a tile's pixels then get all
  // their channels at once, where group-major order streams the output once per group in partial
  // lines (ResNeXt's 256 in 32 groups, grad input by phases from 16x16: 1.30x; 4x4 and 8x8 maps the
  // same). Group-major otherwise: a group's packed weight stays in L1 over its tiles (1024 in 32
  // groups at 2x2, 1152 KiB of weights, ran 0.94-0.95x tile-major).
  const bool tile_major = G * taps * Cg * Kg * int64_t(sizeof(float)) <= (int64_t(128) << 10);
  std::optional<GroupPlanes> in;
  if (shared) in.emplace(*shared);
  else if (!in_place) in.emplace(p, x, P);
  if (!in_place && segments_fit(isa, p)) return run_segments(p, *in, wp, bias, y, yoff, relu, tile_major, P);
  // In place: the output pixels in tile order (those with every tap inside first), tap (r, s)'s
  // offset in a window, a zero run for the taps outside.
  std::vector<int64_t> order, window_off;
  int64_t inside_pixels = 0, inside_tiles = 0;
  const std::vector<float> zeros(in_place ? Cg : 0, 0.f);
  if (in_place) {
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    inside_range(0, p.R, p.dil_h, p.pad_h, p.stride_h, p.H, p.P, oh_lo, oh_hi);
    inside_range(0, p.S, p.dil_w, p.pad_w, p.stride_w, p.W, p.Q, ow_lo, ow_hi);
    order.reserve(M);
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t m = 0; m < M; ++m) {
        const int64_t ow = m % p.Q, oh = m / p.Q % p.P;
        const bool inside = oh >= oh_lo && oh < oh_hi && ow >= ow_lo && ow < ow_hi;
        if (inside == (pass == 0)) order.push_back(m);
      }
      if (pass == 0) inside_pixels = int64_t(order.size()), inside_tiles = ceil_div(inside_pixels, kRows);
    }
    window_off.resize(taps);
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) window_off[r * p.S + s] = (r * p.dil_h * p.W + s * p.dil_w) * p.C;
  }
  // Tiles of the inside pixels end where those pixels do; the others follow.
  const int64_t tiles = in_place ? inside_tiles + ceil_div(M - inside_pixels, kRows) : ceil_div(M, kRows);
  const int64_t kstep = isa == Isa::avx2 ? 16 : 32;
  at::parallel_for(0, tile_major ? tiles : G * tiles, 1, [&](int64_t begin, int64_t end) {
    // A tile's pixels are found once for all groups: output offsets (out), window origins (origin
    // in the copy, origin_off in place) or each tap's input offset (tap_off, -1 outside); a
    // group's pointers (rows) differ by a plane or by its first channel.
    const float* origin[kRows];
    int64_t out[kRows], origin_off[kRows];
    std::vector<int64_t> tap_off(in_place ? taps * kRows : 0);
    std::vector<const float*> rows(in_place ? taps * kRows : kRows);
    bool inside_tile = true;
    const auto tile_pixels = [&](int64_t tile) {
      // pixels [i0, i1) of the order (in place) or of the map
      const bool second = in_place && tile >= inside_tiles;
      const int64_t i0 = second ? inside_pixels + (tile - inside_tiles) * kRows : tile * kRows;
      const int64_t i1 = std::min(i0 + kRows, in_place && !second ? inside_pixels : M);
      const int mv = int(i1 - i0);
      inside_tile = !second;
      for (int i = 0; i < kRows; ++i) {
        const int64_t j = i0 + std::min(i, mv - 1), m = in_place ? order[j] : j;
        out[i] = yoff(m);
        if (!in_place) {
          origin[i] = in->xp + in->origin[m];
          continue;
        }
        const int64_t ow = m % p.Q, oh = m / p.Q % p.P, n = m / (p.P * p.Q);
        const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        origin_off[i] = ((n * p.H + h0) * p.W + w0) * p.C;
        if (!second) continue;
        for (int64_t r = 0; r < p.R; ++r)
          for (int64_t s = 0; s < p.S; ++s) {
            const int64_t ih = h0 + r * p.dil_h, iw = w0 + s * p.dil_w;
            const bool inside = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
            tap_off[(r * p.S + s) * kRows + i] = inside ? ((n * p.H + ih) * p.W + iw) * p.C : -1;
          }
      }
      return mv;
    };
    const auto run_tile = [&](int64_t g, int mv) {
      const int64_t* off = in_place ? window_off.data() : in->off.data();
      if (!in_place) {
        for (int i = 0; i < kRows; ++i) rows[i] = origin[i] + g * in->plane;
      } else if (inside_tile) {
        for (int i = 0; i < kRows; ++i) rows[i] = x + g * Cg + origin_off[i];
      } else {
        const float* xg = x + g * Cg;
        for (int64_t j = 0; j < taps * kRows; ++j) rows[j] = tap_off[j] < 0 ? zeros.data() : xg + tap_off[j];
        off = nullptr;
      }
      const int64_t Kv = Kvalid(g);
      for (int64_t k0 = 0; k0 < Kv; k0 += kstep) {
        const int64_t kn = std::min(kstep, Kv - k0);
        const TapsTile t{rows.data(), off, p.R, p.S, Cg, Kg, wp + g * taps * Cg * Kg + k0,
                         bias ? bias + g * Kg + k0 : nullptr, y + g * Kg + k0, out, int(kn > 16 ? kn - 16 : kn), mv, relu};
        taps_tile_on(isa, t, kn, P);
      }
    };
    for (int64_t item = begin; item < end; ++item) {
      if (tile_major) {
        const int mv = tile_pixels(item);
        if (isa == Isa::avx2 && Kg == 8 && !(in_place && !inside_tile)) {  // all groups in one call
          for (int i = 0; i < kRows; ++i) rows[i] = in_place ? x + origin_off[i] : origin[i];
          TapsTile t{rows.data(), in_place ? window_off.data() : in->off.data(), p.R, p.S, Cg, Kg, wp, bias, y, out, 8,
                     mv, relu};
          t.groups = G, t.row_step = in_place ? Cg : in->plane;
          taps_tile_on(isa, t, 8);
          continue;
        }
        for (int64_t g = 0; g < G; ++g) run_tile(g, mv);
      } else {
        run_tile(item / tiles, tile_pixels(item % tiles));
      }
    }
  });
}

// The packed weight's buffer for the conv p (the calling thread's; GroupPlanes takes call_input).
float* packed_weight_buffer(const Conv2dParams& p, int P = 1) {
  return scratch<float>(Scratch::call, ceil_div(p.groups, int64_t(P)) * P * p.K_per_group() * p.C_per_group() * p.R * p.S);
}

// A weight packed per group (rows of Kg values, `rows` per group) into packs of P groups: rows of
// 16, lane k * P + i from group i of the pack (zero past the last group).
void pack_groups(const float* src, int64_t G, int64_t rows, int64_t Kg, int P, float* dst) {
  at::parallel_for(0, ceil_div(G, int64_t(P)), 1, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v)
      for (int64_t row = 0; row < rows; ++row)
        for (int64_t k = 0; k < Kg; ++k)
          for (int64_t i = 0; i < P; ++i) {
            const int64_t g = v * P + i;
            dst[(v * rows + row) * Kg * P + k * P + i] = g < G ? src[(g * rows + row) * Kg + k] : 0.f;
          }
  });
}

// Every phase's correlation needs no negative padding (its first grad_output row at or after 0).
bool phases_fit(int64_t stride, int64_t pad, int64_t R, int64_t H) {
  for (int64_t a = 0; a < stride; ++a) {
    const PhaseAxis ph(a, stride, pad, R, H);
    if (ph.count > 0 && ph.taps > 0 && ph.r_last < ph.h0 + pad) return false;
  }
  return true;
}

// Rows m0..m1 of the NHWC matrix src (M x G * Kg) as G matrices M x Kg, one after the other.
CUCONV_AVX2 void split_groups(const float* src, int64_t m0, int64_t m1, int64_t G, int64_t Kg, int64_t M, float* dst) {
  for (int64_t g = 0; g < G; ++g) copy_runs(src + (m0 * G + g) * Kg, G * Kg, m1 - m0, Kg, dst + (g * M + m0) * Kg);
}

// Rows m0..m1 of the NHWC matrix src (M x G * Kg, Kg = 16 / P) as packs of P groups, one M x 16
// matrix per pack after the other, each row in the packed order (the last pack's missing groups zero).
template <int P>
CUCONV_AVX512 void split_packs(const float* src, int64_t m0, int64_t m1, int64_t G, int64_t M, float* dst) {
  const int64_t K = G * (16 / P), packs = ceil_div(G, int64_t(P));
  const __m512i order = to_packed_order<P>();
  for (int64_t v = 0; v < packs; ++v) {
    const int valid = int(std::min<int64_t>(P, G - v * P)) * (16 / P);
    const __mmask16 lanes = __mmask16(valid == 16 ? 0xFFFF : (1u << valid) - 1);
    for (int64_t m = m0; m < m1; ++m)
      _mm512_storeu_ps(dst + (v * M + m) * 16,
                       _mm512_permutexvar_ps(order, _mm512_maskz_loadu_ps(lanes, src + m * K + v * 16)));
  }
}

// The grad weight's block of 16 input channels (c0.., of tap `tap`) x 16 output channels: per pixel
// m, one vector of grad_output times 16 broadcasts of the input channels under the tap, summed over
// m in order. x points at the group's plane plus the tap's offset plus c0; gy at the pixel-0 value
// of the block's first output channel, pixels ld apart. out: [c][16 output channels].
CUCONV_AVX512 __attribute__((noinline)) void wgrad_block(const float* x, const int64_t* origin, int64_t M,
                                                          const float* gy, int64_t ld, __mmask16 lanes, float* out) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t m = 0; m < M; ++m) {
    const float* a = x + origin[m];
    const __m512 b = _mm512_maskz_loadu_ps(lanes, gy + m * ld);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), b, acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(out + 16 * i, acc[i]);
}

// The grad weight's block of 8 input channels x 16 output channels for the three taps of one kernel
// row at once, where the stride along the rows is the dilation: input pixel u of an output row is
// under tap s for output pixel u - s, so its 8 broadcasts feed 24 FMAs against the last three
// grad_output vectors (24 sums, 3 vectors and a broadcast in the 32 registers), where wgrad_block
// loads 17 values per 16 FMAs. Every weight is still one FMA chain over the output pixels in order,
// so the bits are wgrad_block's. MASK: the taps that have an output pixel for this u.
// Packed groups (P > 1, NC = Cg channels): lanes k * P + i, grad_output in the packed order, the
// input broadcast P values at a time.
template <int MASK, int P, int NC>
CUCONV_AVX512 CUCONV_INLINE void wgrad_row_pixel(const float* x, __m512 g0, __m512 g1, __m512 g2,
                                                 __m512 (&acc)[3][NC]) {
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    const __m512 b = broadcast_groups<P>(x + c * P);
    if (MASK & 1) acc[0][c] = _mm512_fmadd_ps(b, g0, acc[0][c]);
    if (MASK & 2) acc[1][c] = _mm512_fmadd_ps(b, g1, acc[1][c]);
    if (MASK & 4) acc[2][c] = _mm512_fmadd_ps(b, g2, acc[2][c]);
  }
}

// rows: per output row (n, oh) in order, its pixel 0's window origin, from x (the group's plane plus
// the kernel row's offset and the block's first channel), Q >= 2 pixels each; an input pixel is step
// further along;
// gy at the block's first output channel of pixel 0, pixels ld apart. out: [s][c][16].
// ST: the stride along the rows in dilation steps (1 or 2). At ST = 2 output pixel t reads input
// pixels 2t, 2t + 1 and 2t + 2: pixel 2t is under tap 0 for t and tap 2 for t - 1, pixel 2t + 1
// under tap 1 for t, so two input pixels' 16 broadcasts feed 24 FMAs.
template <int P, int NC, int ST>
CUCONV_AVX512 __attribute__((noinline)) void wgrad_row_taps(const float* x, const int64_t* rows, int64_t nrows,
                                                             int64_t Q, int64_t step, const float* gy, int64_t ld,
                                                             __mmask16 lanes, float* out) {
  __m512 acc[3][NC];
#pragma GCC unroll 3
  for (int s = 0; s < 3; ++s)
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) acc[s][c] = _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t row = 0; row < nrows; ++row) {
    const float* xr = x + rows[row];
    const float* gr = gy + row * Q * ld;
    if constexpr (ST == 2) {
      __m512 cur = _mm512_maskz_loadu_ps(lanes, gr), prev;
      wgrad_row_pixel<1, P, NC>(xr, cur, zero, zero, acc);
      wgrad_row_pixel<2, P, NC>(xr + step, zero, cur, zero, acc);
      for (int64_t t = 1; t < Q; ++t) {
        prev = cur, cur = _mm512_maskz_loadu_ps(lanes, gr + t * ld);
        wgrad_row_pixel<5, P, NC>(xr + 2 * t * step, cur, zero, prev, acc);
        wgrad_row_pixel<2, P, NC>(xr + (2 * t + 1) * step, zero, cur, zero, acc);
      }
      wgrad_row_pixel<4, P, NC>(xr + 2 * Q * step, zero, zero, cur, acc);
      continue;
    }
    // The row's ends in straight-line code (a switch on the taps present ran a third of the time in
    // its jumps): u = 0 and 1, then every tap, then u = Q and Q + 1.
    __m512 g0 = _mm512_maskz_loadu_ps(lanes, gr), g1 = zero, g2 = zero;
    wgrad_row_pixel<1, P, NC>(xr, g0, g1, g2, acc);
    g1 = g0;
    g0 = _mm512_maskz_loadu_ps(lanes, gr + ld);
    wgrad_row_pixel<3, P, NC>(xr + step, g0, g1, g2, acc);
    for (int64_t u = 2; u < Q; ++u) {
      g2 = g1, g1 = g0, g0 = _mm512_maskz_loadu_ps(lanes, gr + u * ld);
      wgrad_row_pixel<7, P, NC>(xr + u * step, g0, g1, g2, acc);
    }
    g2 = g1, g1 = g0;
    wgrad_row_pixel<6, P, NC>(xr + Q * step, g0, g1, g2, acc);
    wgrad_row_pixel<4, P, NC>(xr + (Q + 1) * step, g0, g1, g1, acc);
  }
#pragma GCC unroll 3
  for (int s = 0; s < 3; ++s)
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) _mm512_storeu_ps(out + (s * NC + c) * 16, acc[s][c]);
}

// AVX2 grad weight, read in place: the vector lanes are 8 input channels of a group (one pixel's
// run in the NHWC input, at most 8 valid: masked loads for a partial block), times broadcasts of 4
// output channels of grad_output, for up to 3 taps of one kernel row at once: 12 accumulators fed
// by 3 vector loads and 4 broadcasts per pixel, where an 8 x 8 block of the kind above took 9 loads
// per 8 FMAs over a zero-padded copy of the whole input that cost as much as its products.
// A run is `count` consecutive output pixels of one row: tap t's input pixel at offset x[t] from the
// item's input base, step[t] apart (x[t] < 0: the tap lies outside the input for every pixel of the
// run, which reads the zero vector), grad_output's at offset gy from its base, K apart. Offsets, so
// that one list serves every group and channel block.
struct TapRun {
  int64_t x[3], step[3], gy, count;
};

alignas(32) const float kZeros[8] = {};

// The lanes of an item: 8 input channels of one group, fewer (masked), or the 4 input channels of
// each of two adjacent groups of 4 -> 4 channels (ResNeXt 32x4d), whose 8 output channels of
// grad_output are one load, spread per output channel j to lanes by group (j, j, j, j, 4 + j, ...).
enum class WgradLanes { full, masked, pair };

template <int NT, WgradLanes kLanes>
CUCONV_AVX2 __attribute__((noinline)) void wgrad_runs_avx2(const TapRun* runs, int64_t nruns, const float* xb,
                                                             const float* gyb, int64_t ld, int cn, float* acc,
                                                             int64_t tap_ld) {
  constexpr bool kMasked = kLanes == WgradLanes::masked, kPair = kLanes == WgradLanes::pair;
  const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(cn), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i spread[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) spread[j] = _mm256_setr_epi32(j, j, j, j, 4 + j, 4 + j, 4 + j, 4 + j);
  __m256 a[NT][4];
#pragma GCC unroll 3
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) a[t][j] = _mm256_loadu_ps(acc + t * tap_ld + 8 * j);
  for (const TapRun* run = runs; run < runs + nruns; ++run) {
    const float* x[NT];
    int64_t step[NT];
#pragma GCC unroll 3
    for (int t = 0; t < NT; ++t) {
      x[t] = run->x[t] < 0 ? kZeros : xb + run->x[t];
      step[t] = run->x[t] < 0 ? 0 : run->step[t];
    }
    const float* gy = gyb + run->gy;
    for (int64_t i = 0; i < run->count; ++i, gy += ld) {
      __m256 xv[NT];
#pragma GCC unroll 3
      for (int t = 0; t < NT; ++t) {
        xv[t] = kMasked ? _mm256_maskload_ps(x[t], lanes) : _mm256_loadu_ps(x[t]);
        x[t] += step[t];
      }
      const __m256 gy8 = kPair ? _mm256_loadu_ps(gy) : _mm256_setzero_ps();
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256 b = kPair ? _mm256_permutevar8x32_ps(gy8, spread[j]) : _mm256_broadcast_ss(gy + j);
#pragma GCC unroll 3
        for (int t = 0; t < NT; ++t) a[t][j] = _mm256_fmadd_ps(xv[t], b, a[t][j]);
      }
    }
  }
#pragma GCC unroll 3
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(acc + t * tap_ld + 8 * j, a[t][j]);
}

template <WgradLanes kLanes>
void wgrad_runs_avx2_nt(int nt, const TapRun* runs, int64_t nruns, const float* xb, const float* gyb, int64_t ld,
                        int cn, float* acc, int64_t tap_ld) {
  if (nt == 3) wgrad_runs_avx2<3, kLanes>(runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else if (nt == 2) wgrad_runs_avx2<2, kLanes>(runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else wgrad_runs_avx2<1, kLanes>(runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
}

void wgrad_runs_avx2_on(WgradLanes mode, int nt, const TapRun* runs, int64_t nruns, const float* xb,
                        const float* gyb, int64_t ld, int cn, float* acc, int64_t tap_ld) {
  if (mode == WgradLanes::full) wgrad_runs_avx2_nt<WgradLanes::full>(nt, runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else if (mode == WgradLanes::pair) wgrad_runs_avx2_nt<WgradLanes::pair>(nt, runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else wgrad_runs_avx2_nt<WgradLanes::masked>(nt, runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
}

// The runs of output rows row0..row1 for kernel row r and taps s0..s0+nt-1: per row whose input row
// lies inside, the pixels whose taps all lie inside as one run, each edge pixel as its own.
void tap_runs(const Conv2dParams& p, int64_t row0, int64_t row1, int64_t r, int64_t s0, int nt,
              std::vector<TapRun>& runs) {
  const int64_t Q = p.Q, C = p.C, K = p.K;
  int64_t lo = 0, hi = 0;
  inside_range(s0, nt, p.dil_w, p.pad_w, p.stride_w, p.W, Q, lo, hi);
  runs.clear();
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t n = row / p.P, oh = row % p.P, ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
    if (ih < 0 || ih >= p.H) continue;  // every product of this row is with padding
    const auto add_run = [&](int64_t ow, int64_t count) {
      TapRun run{};
      run.gy = (row * Q + ow) * K, run.count = count;
      for (int t = 0; t < nt; ++t) {
        const int64_t iw = ow * p.stride_w - p.pad_w + (s0 + t) * p.dil_w;
        run.x[t] = iw >= 0 && iw < p.W ? ((n * p.H + ih) * p.W + iw) * C : -1;
        run.step[t] = p.stride_w * C;
      }
      runs.push_back(run);
    };
    for (int64_t ow = 0; ow < lo; ++ow) add_run(ow, 1);
    if (lo < hi) add_run(lo, hi - lo);
    for (int64_t ow = hi; ow < Q; ++ow) add_run(ow, 1);
  }
}

// The AVX2 grad weight (grouped_taps_wgrad): items of one group and 8 input channels (or of two
// groups of 4 -> 4 channels, WgradLanes::pair), each thread's items in one range whose accumulators ([tap][Kg][8] per item) stay in memory between chunks of
// output rows; per chunk, kernel row and up to 3 taps of it, the runs of each output row (tap_runs)
// in pixel order for every item of the range, so a chunk's input pixels are read for all of the
// thread's groups while they are in cache. Every weight is one FMA chain over the output pixels in
// order, as on AVX-512 (the zero products it skips on padding add +0 to a sum that starts at +0 and
// so is never -0: the same bits for finite inputs).
void wgrad_in_place_avx2(const Conv2dParams& p, const float* gy, const float* x, float* gw) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), K = p.K;
  const int64_t R = p.R, S = p.S, taps = R * S, item_acc = taps * Kg * 8, rows = p.N * p.P;
  // Items: (group, 8 input channels), or pairs of groups of 4 -> 4 (the last one alone for odd G).
  const bool pairs = Cg == 4 && Kg == 4;
  const int64_t cblocks = ceil_div(Cg, 8), items = pairs ? ceil_div(G, 2) : G * cblocks;
  struct Item {
    int64_t g, c0, groups;
    int cn;
    WgradLanes lanes;
  };
  const auto item_of = [&](int64_t item) {
    if (pairs) {
      const int64_t g = 2 * item, groups = std::min<int64_t>(2, G - g);
      return Item{g, 0, groups, int(4 * groups), groups == 2 ? WgradLanes::pair : WgradLanes::masked};
    }
    const int64_t c0 = item % cblocks * 8, cn = std::min<int64_t>(8, Cg - c0);
    return Item{item / cblocks, c0, 1, int(cn), cn == 8 ? WgradLanes::full : WgradLanes::masked};
  };
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    // Output rows per chunk: the input rows under them, across this range's channels, in 128 KiB.
    const int64_t chunk_bytes = p.stride_h * p.W * (end - begin) * 8 * int64_t(sizeof(float));
    const int64_t chunk_rows = std::clamp<int64_t>((int64_t(128) << 10) / std::max<int64_t>(1, chunk_bytes), 1, p.P);
    std::vector<float> acc((end - begin) * item_acc, 0.f);
    std::vector<TapRun> runs;
    for (int64_t row0 = 0; row0 < rows; row0 += chunk_rows) {
      const int64_t row1 = std::min(rows, row0 + chunk_rows);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s0 = 0; s0 < S; s0 += 3) {
          const int nt = int(std::min<int64_t>(3, S - s0));
          tap_runs(p, row0, row1, r, s0, nt, runs);
          if (runs.empty()) continue;
          for (int64_t item = begin; item < end; ++item) {
            const Item it = item_of(item);
            const float* xb = x + it.g * Cg + it.c0;
            for (int64_t k0 = 0; k0 < Kg; k0 += 4) {
              float* a = acc.data() + (item - begin) * item_acc + ((r * S + s0) * Kg + k0) * 8;
              wgrad_runs_avx2_on(it.lanes, nt, runs.data(), int64_t(runs.size()), xb, gy + it.g * Kg + k0, K, it.cn, a,
                                 Kg * 8);
            }
          }
        }
    }
    for (int64_t item = begin; item < end; ++item) {
      const Item it = item_of(item);
      const float* a = acc.data() + (item - begin) * item_acc;
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t l = 0; l < it.cn; ++l) {
          // lane l: input channel c0 + l of group g, or (pairs) channel l % 4 of group g + l / 4
          const int64_t g = pairs ? it.g + l / 4 : it.g, c = pairs ? l % 4 : it.c0 + l;
          for (int64_t tap = 0; tap < taps; ++tap) gw[((g * Kg + k) * Cg + c) * taps + tap] = a[(tap * Kg + k) * 8 + l];
        }
    }
  });
}

}  // namespace

void grouped_taps_fprop(Isa isa, const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y,
                        bool relu) {
  if (p.N * p.P * p.Q == 0) return;
  const int P = group_pack(p, isa);
  float* wp = packed_weight_buffer(p, P);
  if (P == 1) {
    pack_weight(isa, p, w, wp);
  } else {
    std::vector<float> per_group(p.K * p.C_per_group() * p.R * p.S);
    pack_weight(isa, p, w, per_group.data());
    pack_groups(per_group.data(), p.groups, p.R * p.S * p.C_per_group(), p.K_per_group(), P, wp);
  }
  const int64_t K = p.K;
  run_packed(isa, p, x, wp, bias, y, [K](int64_t m) { return m * K; }, relu);
}

void grouped_taps_dgrad(Isa isa, const Conv2dParams& p, const float* gy, const float* w, float* gx) {
  const int64_t C = p.C, N = p.N, H = p.H, W = p.W, sh = p.stride_h, sw = p.stride_w;
  if (sh == 1 && sw == 1) {
    const Conv2dParams q = grad_input_as_forward(p);
    if (N * H * W == 0) return;
    float* wp = packed_weight_buffer(q, group_pack(q, isa));
    pack_weight_flipped(isa, q, p, w, PhaseAxis(0, 1, p.pad_h, p.R, H), PhaseAxis(0, 1, p.pad_w, p.S, W), wp);
    return run_packed(isa, q, gy, wp, nullptr, gx, [C](int64_t m) { return m * C; }, false);
  }
  // Strided: one stride-1 correlation of grad_output per phase (a, b) of the grad input, with the
  // kernel taps of that phase, written to its pixels in place. No product of an inserted zero.
  // The phases read one copy of grad_output (GroupPlanes), padded by the most any phase needs above
  // and left and out to the farthest any reads (a copy per phase took as long as their products).
  if (N * H * W == 0) return;
  const auto phase_conv = [&](const PhaseAxis& ph, const PhaseAxis& pw) {
    Conv2dParams q = p;
    q.C = p.K, q.H = p.P, q.W = p.Q, q.K = p.C, q.P = ph.count, q.Q = pw.count;
    q.R = ph.taps, q.S = pw.taps, q.stride_h = q.stride_w = 1, q.dil_h = q.dil_w = 1;
    q.pad_h = ph.pad_t, q.pad_w = pw.pad_t, q.channels_last = true;
    return q;
  };
  int64_t top = 0, left = 0, rows = 0, cols = 0;
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t a = 0; a < sh; ++a)
      for (int64_t b = 0; b < sw; ++b) {
        const PhaseAxis ph(a, sh, p.pad_h, p.R, H), pw(b, sw, p.pad_w, p.S, W);
        if (ph.count == 0 || pw.count == 0 || ph.taps == 0 || pw.taps == 0) continue;
        if (pass == 0) top = std::max(top, ph.pad_t), left = std::max(left, pw.pad_t);
        else rows = std::max(rows, top - ph.pad_t + ph.count + ph.taps - 1),
             cols = std::max(cols, left - pw.pad_t + pw.count + pw.taps - 1);
      }
  Conv2dParams whole = phase_conv(PhaseAxis(0, 1, 0, 1, p.P), PhaseAxis(0, 1, 0, 1, p.Q));
  whole.R = whole.S = 1, whole.pad_h = top, whole.pad_w = left, whole.P = rows, whole.Q = cols;
  const int pack = group_pack(whole, isa);
  std::optional<GroupPlanes> planes;
  if (rows > 0 && cols > 0) planes.emplace(whole, gy, pack);
  for (int64_t a = 0; a < sh; ++a)
    for (int64_t b = 0; b < sw; ++b) {
      const PhaseAxis ph(a, sh, p.pad_h, p.R, H), pw(b, sw, p.pad_w, p.S, W);
      if (ph.count == 0 || pw.count == 0) continue;
      const auto pixel = [=](int64_t m) {  // phase pixel m = (n, t, u) -> its grad-input pixel
        const int64_t u = m % pw.count, t = m / pw.count % ph.count, n = m / (pw.count * ph.count);
        return ((n * H + ph.h0 + sh * t) * W + pw.h0 + sw * u) * C;
      };
      if (ph.taps == 0 || pw.taps == 0) {  // no kernel tap reaches these pixels
        at::parallel_for(0, N * ph.count * pw.count, 1024, [&](int64_t m0, int64_t m1) {
          for (int64_t m = m0; m < m1; ++m) std::fill_n(gx + pixel(m), C, 0.f);
        });
        continue;
      }
      const Conv2dParams q = phase_conv(ph, pw);
      float* wp = packed_weight_buffer(q, group_pack(q, isa));
      pack_weight_flipped(isa, q, p, w, ph, pw, wp);
      const GroupPlanes view(*planes, q, top - ph.pad_t, left - pw.pad_t, pack);
      run_packed(isa, q, gy, wp, nullptr, gx, pixel, false, &view);
    }
}

bool grouped_taps_dgrad_phases_fit(const Conv2dParams& p) {
  return p.dil_h == 1 && p.dil_w == 1 && phases_fit(p.stride_h, p.pad_h, p.R, p.H) &&
         phases_fit(p.stride_w, p.pad_w, p.S, p.W);
}

namespace {
// wgrad_row_taps' shapes: 3 taps per kernel row, the stride along the rows the dilation or twice
// it, rows of at least 4 pixels (on 2-pixel rows, 1024 in 32 groups at 2x2, the 16 x 16 blocks ran
// faster).
bool wgrad_rows_fit(const Conv2dParams& p) {
  return p.S == 3 && (p.stride_w == p.dil_w || p.stride_w == 2 * p.dil_w) && p.Q >= 4;
}
}  // namespace

bool grouped_taps_wgrad_fits(const Conv2dParams& p, Isa isa) {
  const int64_t Kg = p.K_per_group();
  return group_pack(p, isa) == 1 || wgrad_rows_fit(p) || Kg % 16 == 0 || (Kg % 8 == 0 && p.P * p.Q <= 4);
}

void grouped_taps_wgrad(Isa isa, const Conv2dParams& p, const float* gy, const float* x, float* gw) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), K = p.K;
  const int64_t taps = p.R * p.S, M = p.N * p.P * p.Q;
  if (M == 0) {
    std::fill(gw, gw + K * Cg * taps, 0.f);
    return;
  }
  if (isa == Isa::avx2) return wgrad_in_place_avx2(p, gy, x, gw);
  // AVX-512: a block is 16 input x 16 output channels.
  const int64_t blk = 16, cblocks = ceil_div(Cg, blk), kblocks = ceil_div(Kg, blk);
  if (wgrad_rows_fit(p)) {
    // One item per (group or pack of groups, kernel row, 8 input channels, 16 output channels), its
    // three taps at once (wgrad_row_taps); each weight summed by one thread over every pixel in
    // order. Packed groups (group_pack): all of a pack's channels in one item.
    const int P = group_pack(p, isa);
    const int64_t packs = ceil_div(G, int64_t(P)), NC = P > 1 ? Cg : 8, cb_n = P > 1 ? 1 : ceil_div(Cg, NC);
    const int64_t kb_n = P > 1 ? 1 : kblocks, ld = P > 1 ? 16 : Kg, rows = p.N * p.P;
    const GroupPlanes in(p, x, P);
    // grad_output split per group (or pack, in the packed order), as below
    float* gyp = scratch<float>(Scratch::call, packs * M * ld);
    at::parallel_for(0, M, 256, [&](int64_t m0, int64_t m1) {
      if (P == 2) split_packs<2>(gy, m0, m1, G, M, gyp);
      else if (P == 4) split_packs<4>(gy, m0, m1, G, M, gyp);
      else split_groups(gy, m0, m1, G, Kg, M, gyp);
    });
    std::vector<int64_t> row_origin(rows);
    for (int64_t row = 0; row < rows; ++row) row_origin[row] = in.origin[row * p.Q];
    at::parallel_for(0, packs * p.R * cb_n * kb_n, 1, [&](int64_t begin, int64_t end) {
      alignas(64) float block[3 * 8 * 16];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t kb = item % kb_n, cb = item / kb_n % cb_n, r = item / (kb_n * cb_n) % p.R;
        const int64_t v = item / (kb_n * cb_n * p.R), c0 = cb * NC;
        const int64_t kn = P > 1 ? 16 : std::min(blk, Kg - kb * blk);
        const float* xv = in.xp + v * in.plane + in.off[r * p.S] + c0;
        const float* gyv = gyp + v * M * ld + kb * blk;
        const __mmask16 lanes = __mmask16(kn == 16 ? 0xFFFF : (1u << kn) - 1);
        const int64_t step = p.dil_w * Cg * P;
        const auto run = [&](auto st) {
          constexpr int ST = decltype(st)::value;
          if (P == 2) wgrad_row_taps<2, 8, ST>(xv, row_origin.data(), rows, p.Q, step, gyv, ld, lanes, block);
          else if (P == 4) wgrad_row_taps<4, 4, ST>(xv, row_origin.data(), rows, p.Q, step, gyv, ld, lanes, block);
          else wgrad_row_taps<1, 8, ST>(xv, row_origin.data(), rows, p.Q, step, gyv, ld, lanes, block);
        };
        if (p.stride_w == p.dil_w) run(std::integral_constant<int, 1>{});
        else run(std::integral_constant<int, 2>{});
        // block[(s * NC + c) * 16 + lane]: lane k * P + i is group v * P + i's output channel k
        // (P = 1: kb * 16 + lane)
        for (int64_t lane = 0; lane < kn; ++lane) {
          const int64_t g = v * P + lane % P, k = P > 1 ? lane / P : kb * blk + lane;
          if (g >= G) continue;
          for (int64_t s = 0; s < 3; ++s)
            for (int64_t c = c0; c < std::min(c0 + NC, Cg); ++c)
              gw[((g * Kg + k) * Cg + c) * taps + r * 3 + s] = block[(s * NC + c - c0) * 16 + lane];
        }
      }
    });
    return;
  }
  const GroupPlanes in(p, x);
  // grad_output group by group, [g][m][Kg]: NHWC rows are K apart (a page for 1024 channels), and
  // each block walks all of them once per tap and channel block.
  float* gyp = scratch<float>(Scratch::call, G * M * Kg);
  at::parallel_for(0, M, 256, [&](int64_t m0, int64_t m1) { split_groups(gy, m0, m1, G, Kg, M, gyp); });
  // One item per (group, tap, 16 input channels, 16 output channels): each weight is summed by one
  // thread over every pixel in order, whatever the thread count.
  at::parallel_for(0, G * taps * cblocks * kblocks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float block[16 * 16];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kb = item % kblocks, cb = item / kblocks % cblocks, tap = item / (kblocks * cblocks) % taps;
      const int64_t g = item / (kblocks * cblocks * taps), c0 = cb * blk, k0 = g * Kg + kb * blk;
      const int64_t kn = std::min(blk, Kg - kb * blk);
      const float* xg = in.xp + g * in.plane + in.off[tap] + c0;
      const float* gyg = gyp + g * M * Kg + kb * blk;
      wgrad_block(xg, in.origin.data(), M, gyg, Kg, __mmask16((1u << kn) - 1), block);
      for (int64_t c = c0; c < std::min(c0 + blk, Cg); ++c)
        for (int64_t k = 0; k < kn; ++k) gw[((k0 + k) * Cg + c) * taps + tap] = block[(c - c0) * blk + k];
    }
  });
}

#else  // not x86: the plan never picks grouped_taps here

void grouped_taps_fprop(Isa, const Conv2dParams&, const float*, const float*, const float*, float*, bool) {
  TORCH_CHECK(false, "cuconv: grouped_taps is an AVX2/AVX-512 kernel");
}
void grouped_taps_dgrad(Isa, const Conv2dParams&, const float*, const float*, float*) {
  TORCH_CHECK(false, "cuconv: grouped_taps is an AVX2/AVX-512 kernel");
}
void grouped_taps_wgrad(Isa, const Conv2dParams&, const float*, const float*, float*) {
  TORCH_CHECK(false, "cuconv: grouped_taps is an AVX2/AVX-512 kernel");
}
bool grouped_taps_wgrad_fits(const Conv2dParams&, Isa) { return false; }

#endif

}  // namespace cuconv::cpu
