// Grouped convs whose groups' output channels fill whole vectors, NHWC, float32, forward and grad
// input (the grad weight: grouped_taps_wgrad.cpp): on AVX-512 16k channels per group, or groups of 8
// or 4 channels in and out packed 2 or 4 to a vector (grouped_taps_planes.h), or 8k onto maps of at
// most 4 pixels (the vector half used); on AVX2 8k. Each output pixel's group channels are one to
// four vectors, summed over the group's taps (r, s) and input channels from a zero-padded copy of
// the input laid out group by group (AVX2's strided forward reads the input in place, its taps
// outside the input from zeros).
//
// A pixel tile is MR output pixels x 16 (or 32) channels of one group, its MR accumulators fed by one
// weight vector load and MR broadcasts of input values per input channel and tap, like the GEMM
// micro-kernel's, with A's rows pointing at each pixel's window: any stride, dilation and padding,
// and no computed value is thrown away. AVX2 runs the same tile in 8-lane vectors, and groups of 8
// channels all in one call. AVX-512 runs row runs where the taps along a row share input pixels
// (segment_tile).
//
// Why not the other grouped paths: with 16 channels per group on small maps (ResNeXt's last stages
// at 4x4 and 2x2) the pixel-lane kernels (grouped.cpp) compute a padded grid of which fewer than
// half the positions are outputs, and a per-group GEMM needs an im2col of R x S copies of the input.
//
// Each output is one FMA chain over (r, c, s) in that order whatever the tile, thread or ISA path,
// so the bits do not depend on the thread count, and AVX2 gives AVX-512's.
#include "cpu/conv2d/grouped_taps.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "cpu/conv2d/grouped_taps_planes.h"
#include "cpu/conv2d/plan.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"
#include "cpu/sizes.h"
#include "cpu/transpose.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// GCC 12's _mm512_max_ps, _mm512_permutexvar_ps and _mm512_broadcast_f32x4 pass a deliberately
// uninitialised placeholder (_mm512_undefined_ps), which -Wmaybe-uninitialized reports once per use.
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

using namespace grouped_taps_detail;

namespace {

// Pixels per tile: 12 accumulator chains per vector of channels (12 x 32 with two: 24 of the 32
// registers), more than the FMA latency needs, with few enough row pointers to stay in registers.
// AVX2 runs a tile of 16 channels as two halves of 6 pixels.
constexpr int kRows = 12;

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

// The valid channels of run_packed's plane g: a group's, or those of the groups in pack g (the last
// pack may hold fewer than P).
int64_t plane_channels(const Conv2dParams& p, int P, int64_t g) {
  return std::min<int64_t>(P, p.groups - g * P) * p.K_per_group();
}

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
  // G planes of groups (or packs of P groups) of Kg channels (16 when packed; valid: plane_channels)
  const int64_t G = ceil_div(p.groups, int64_t(P)), Cg = p.C_per_group(), Kg = p.K_per_group() * P, taps = p.R * p.S;
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
      const int64_t Kv = plane_channels(p, P, g);
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

// The forward conv p of x (see grouped_taps_fprop), its weight packed per group (or pack of groups)
// as [r][c][s][Kg] (wp), output pixel m's channels at y + yoff(m). AVX-512 reads a zero-padded copy of x group by
// group (GroupPlanes); AVX2 reads a strided conv's x in place (below): tiles of the pixels whose
// windows lie inside the input by window origin and tap offset, then tiles of the others with a
// pointer per pixel and tap (a tap outside the input reads zeros: the same sums).
template <class OutOffset>
void run_packed(Isa isa, const Conv2dParams& p, const float* x, const float* wp, const float* bias, float* y,
                OutOffset yoff, bool relu, const GroupPlanes* shared = nullptr) {
  // G planes of groups, or of packs of P groups (group_pack) of Kg = 16 channels (plane_channels valid)
  const int P = group_pack(p, isa);
  const int64_t G = ceil_div(p.groups, int64_t(P)), Cg = p.C_per_group(), Kg = p.K_per_group() * P;
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
      const int64_t Kv = plane_channels(p, P, g);
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

#else  // not x86: the plan never picks grouped_taps here

void grouped_taps_fprop(Isa, const Conv2dParams&, const float*, const float*, const float*, float*, bool) {
  TORCH_CHECK(false, "cuconv: grouped_taps is an AVX2/AVX-512 kernel");
}
void grouped_taps_dgrad(Isa, const Conv2dParams&, const float*, const float*, float*) {
  TORCH_CHECK(false, "cuconv: grouped_taps is an AVX2/AVX-512 kernel");
}
bool grouped_taps_dgrad_phases_fit(const Conv2dParams&) { return false; }
#endif

}  // namespace cuconv::cpu
