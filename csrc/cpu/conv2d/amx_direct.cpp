// bfloat16 forward conv on AMX tiles, the A tiles loaded straight from a zero-padded bfloat16 copy
// of the input in pixel-major phase images: no float32 copy, no im2col and no packing of the input
// (FpropStrategy::amx_direct; also the stride-1 grad input, as a forward conv of grad_output). An
// NCHW input is transposed into them in registers, 16 pixels x 32 channels at a time.
//
// The padded input is split into stride_h x stride_w phase images: phase (a, b) holds padded pixel
// (i * stride_h + a, j * stride_w + b) at (i, j), Hq x Wq of them. Tap (r, s) of output (p, q)
// reads pixel (p + r / stride_h, q + s / stride_w) of phase (r % stride_h, s % stride_w), so with
// the outputs laid on the phase width Wq instead of Q, output m = p * Wq + q reads pixel
// m + (r / stride_h) * Wq + s / stride_w: consecutive outputs read consecutive pixels, across
// output rows too, and the A tile of 16 outputs x 32 channels of one tap is one tileloadd with a
// row stride of Cp values. Outputs with q >= Q (windows that wrap into the next row) are computed
// and dropped. At stride 1 there is one phase, the padded image itself.
//
// A C block is 32 outputs x 32 output channels in four float tiles, summed over the taps and
// 32-channel slices in a fixed order, then bias, ReLU and one rounding to bfloat16 on the way out:
// as deterministic as the GEMM paths. The weight is packed once per call into B tiles: per 16
// output channels, tap and 32 input channels, 16 channel pairs x 16 output channels of bfloat16
// pair words (1 KiB). The output channels go in groups whose B tiles fit in half of L2. An NHWC
// output is stored from each block; an NCHW output per image, from a buffer in the blocks' order
// transposed in registers into whole rows of its channel planes (stored from the blocks, the runs of
// 32 positions scattered over 32 planes ran at half the speed).
#include "cpu/conv2d/amx_direct.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "cpu/scratch.h"

#if defined(__x86_64__) || defined(__i386__)
#include "cpu/amx.h"
#endif

namespace cuconv::cpu {

constexpr int64_t kMaxUnfolded = 256;  // window values of an unfolded conv (a 7x7 stem of 3 channels has 147)

Conv2dParams unfolded(const Conv2dParams& p) {
  Conv2dParams u = p;
  u.C = p.R * p.S * p.C, u.H = p.P, u.W = p.Q, u.R = u.S = 1, u.stride_h = u.stride_w = 1, u.pad_h = u.pad_w = 0;
  return u;
}

bool amx_direct_shape(const Conv2dParams& p) {
  return p.dil_h == 1 && p.dil_w == 1 && p.groups == 1 && p.K >= 16 &&
         (p.C >= 16 || p.R * p.S * p.C <= kMaxUnfolded);
}

#if defined(__x86_64__) || defined(__i386__)

namespace {

constexpr int64_t kPix = 32, kOut = 32, kSlice = 32;  // a C block's outputs and channels; channels per A tile
constexpr int64_t kWeightGroupBytes = int64_t(1) << 20;  // half of the L2 of the cores measured

struct Geometry {
  int64_t Hq, Wq;  // a phase image: every window's pixels of that phase inside it
  int64_t Cp, Kp;  // channels rounded up to whole slices / C blocks
  int64_t img;     // elements per phase image, with room for the last block's reads past it
  int64_t blocks;  // C blocks of outputs per image
};

Geometry geometry(const Conv2dParams& p) {
  Geometry g;
  g.Hq = p.P + (p.R - 1) / p.stride_h, g.Wq = p.Q + (p.S - 1) / p.stride_w;
  g.Cp = (p.C + kSlice - 1) / kSlice * kSlice, g.Kp = (p.K + kOut - 1) / kOut * kOut;
  g.blocks = (p.P * g.Wq + kPix - 1) / kPix;
  // The last block reads up to output blocks * 32 - 1 plus the last tap's offset.
  g.img = (g.blocks * kPix + (p.R - 1) / p.stride_h * g.Wq + (p.S - 1) / p.stride_w) * g.Cp;
  return g;
}

// Phase image (a, b) of image n: stride_h x stride_w of them per image, the taps' phases only.
int64_t phase_offset(const Conv2dParams& p, const Geometry& g, int64_t n, int64_t a, int64_t b) {
  return ((n * p.stride_h + a) * p.stride_w + b) * g.img;
}

// One row of a phase image from an NHWC input row h (outside the input: h < 0 or h >= H): pixel j
// is input column j * stride_w + b - pad_w, its channels past C and the pixels outside zero.
CUCONV_AMX void pad_row_nhwc(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t n, int64_t h,
                             int64_t b, uint16_t* row) {
  const bool inside = h >= 0 && h < p.H;
  for (int64_t j = 0; j < g.Wq; ++j) {
    const int64_t w = j * p.stride_w + b - p.pad_w;
    uint16_t* dst = row + j * g.Cp;
    const bool pixel = inside && w >= 0 && w < p.W;
    const uint16_t* src = pixel ? x + ((n * p.H + h) * p.W + w) * p.C : nullptr;
    for (int64_t c = 0; c < g.Cp; c += kSlice)
      _mm512_storeu_si512(dst + c,
                          pixel ? _mm512_maskz_loadu_epi16(lanes32(p.C - c), src + c) : _mm512_setzero_si512());
  }
}

// Lanes first <= e < end of 16 read input columns w0 + e * stride_w (inside the input); `lanes`
// marks them, `even_lanes` the lanes 2e of 32 consecutive columns (stride 2).
struct Columns {
  int64_t w0, first, end;
  __mmask16 lanes;
  __mmask32 even_lanes;
};

// Channel c's 16 values at those columns of input row h (zero elsewhere), one per 32-bit lane.
CUCONV_AMX inline __m512i channel_run(const Conv2dParams& p, const uint16_t* x, int64_t n, int64_t h, int64_t c,
                                      const Columns& cols, __m512i even) {
  if (c >= p.C || cols.first == cols.end) return _mm512_setzero_si512();
  const uint16_t* src = x + ((n * p.C + c) * p.H + h) * p.W + cols.w0;  // lane e at src + e * stride_w
  if (p.stride_w == 1) return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(cols.lanes, src));
  if (p.stride_w == 2)
    return _mm512_cvtepu16_epi32(
        _mm512_castsi512_si256(_mm512_permutexvar_epi16(even, _mm512_maskz_loadu_epi16(cols.even_lanes, src))));
  alignas(32) uint16_t v[16] = {};
  for (int64_t e = cols.first; e < cols.end; ++e) v[e] = src[e * p.stride_w];
  return _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(v)));
}

// The lanes e < count of 16 pixels whose input columns w0 + e * stride_w lie inside the input (none
// when the row does not: inside false).
CUCONV_AMX inline Columns columns(const Conv2dParams& p, int64_t w0, int64_t count, bool inside) {
  const int64_t e0 = w0 >= 0 ? 0 : std::min<int64_t>(count, (-w0 + p.stride_w - 1) / p.stride_w);
  const int64_t e1 = inside ? std::clamp<int64_t>((p.W - w0 + p.stride_w - 1) / p.stride_w, e0, count) : e0;
  __mmask32 even = 0;  // stride 2: the even lanes of 32 consecutive columns
  if (p.stride_w == 2)
    for (int64_t e = e0; e < e1; ++e) even |= __mmask32(1u) << (2 * e);
  return {w0, e0, e1, __mmask16(lanes(e1) & ~lanes(e0)), even};
}

// Even lanes of 32 into the low 16: stride_w 2's columns.
alignas(64) constexpr uint16_t kEvenLanes[32] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};

// The same from an NCHW input: per 16 pixels and 32 channels, each channel pair's 16 values joined
// into pair words, then transposed in registers into 16 pixels' 32 channels.
CUCONV_AMX void pad_row_nchw(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t n, int64_t h,
                             int64_t b, uint16_t* row) {
  const bool inside = h >= 0 && h < p.H;
  const __m512i even = _mm512_load_si512(kEvenLanes);
  __m512i r[16];
  for (int64_t j0 = 0; j0 < g.Wq; j0 += 16) {
    const int64_t count = std::min<int64_t>(16, g.Wq - j0);
    const Columns cols = columns(p, j0 * p.stride_w + b - p.pad_w, count, inside);
    for (int64_t c0 = 0; c0 < g.Cp; c0 += kSlice) {
      for (int64_t j = 0; j < 16; ++j) {
        const __m512i lo = channel_run(p, x, n, h, c0 + 2 * j, cols, even);
        r[j] = _mm512_or_si512(lo, _mm512_slli_epi32(channel_run(p, x, n, h, c0 + 2 * j + 1, cols, even), 16));
      }
      transpose16x16(r);  // r[e]: pixel j0 + e's 32 channels
      for (int64_t e = 0; e < count; ++e) _mm512_storeu_si512(row + (j0 + e) * g.Cp + c0, r[e]);
    }
  }
}

// Output row i of image n unfolded from an NCHW input, 16 pixels x 32 window values at a time:
// value t = (r * S + s) * C + c of the 16 pixels is a run of input row i * stride_h + r - pad_h,
// joined in pairs and transposed in registers as pad_row_nchw's channels.
// Window value t's input channel, kernel row and kernel column (t = (r * S + s) * C + c), computed
// once per call: three divisions per value and block cost more than the block's loads.
struct WindowValue {
  int32_t c, r, s;
};

CUCONV_AMX void unfold_row_nchw(const Conv2dParams& p, const Geometry& g, const WindowValue* values,
                                const uint16_t* x, int64_t n, int64_t i, uint16_t* row) {
  const __m512i even = _mm512_load_si512(kEvenLanes);
  const int64_t count_values = p.R * p.S * p.C;
  Columns cols[kMaxUnfolded];  // per kernel column s, then none (value t of an outside row or past the window)
  __m512i r[16];
  for (int64_t j0 = 0; j0 < p.Q; j0 += 16) {
    const int64_t count = std::min<int64_t>(16, p.Q - j0);
    for (int64_t s = 0; s <= p.S; ++s) cols[s] = columns(p, j0 * p.stride_w + s - p.pad_w, count, s < p.S);
    for (int64_t t0 = 0; t0 < g.Cp; t0 += kSlice) {
      __m512i half[2];
      for (int64_t j = 0; j < 16; ++j) {
        for (int64_t k = 0; k < 2; ++k) {
          const int64_t t = t0 + 2 * j + k;
          const WindowValue v = t < count_values ? values[t] : WindowValue{0, 0, int32_t(p.S)};
          const int64_t h = i * p.stride_h + v.r - p.pad_h;
          half[k] = channel_run(p, x, n, h, v.c, cols[h >= 0 && h < p.H ? v.s : p.S], even);
        }
        r[j] = _mm512_or_si512(half[0], _mm512_slli_epi32(half[1], 16));
      }
      transpose16x16(r);  // r[e]: pixel j0 + e's 32 window values
      for (int64_t e = 0; e < count; ++e) _mm512_storeu_si512(row + (j0 + e) * g.Cp + t0, r[e]);
    }
  }
}

// The same from an NHWC input: a window's kernel row is a run of S * C adjacent input values,
// expanded into its lanes of the pixel's 32-value vectors.
CUCONV_AMX void unfold_row_nhwc(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t n, int64_t i,
                                uint16_t* row) {
  __m512i v[kMaxUnfolded / kSlice];
  const int64_t vectors = g.Cp / kSlice;
  for (int64_t j = 0; j < p.Q; ++j) {
    for (int64_t k = 0; k < vectors; ++k) v[k] = _mm512_setzero_si512();
    const int64_t w0 = j * p.stride_w - p.pad_w, s0 = std::max<int64_t>(0, -w0), s1 = std::min(p.S, p.W - w0);
    for (int64_t tap_r = 0; tap_r < p.R && s0 < s1; ++tap_r) {
      const int64_t h = i * p.stride_h + tap_r - p.pad_h;
      if (h < 0 || h >= p.H) continue;
      const uint16_t* src = x + ((n * p.H + h) * p.W + w0 + s0) * p.C;
      const int64_t first = (tap_r * p.S + s0) * p.C, end = (tap_r * p.S + s1) * p.C;  // its lanes
      for (int64_t k = first / kSlice; k * kSlice < end; ++k) {
        const int64_t lo = std::max(first, k * kSlice), hi = std::min(end, (k + 1) * kSlice);
        const __mmask32 m = lanes32(hi - k * kSlice) & ~lanes32(lo - k * kSlice);
        v[k] = _mm512_or_si512(v[k], _mm512_maskz_expandloadu_epi16(m, src + (lo - first)));
      }
    }
    for (int64_t k = 0; k < vectors; ++k) _mm512_storeu_si512(row + j * g.Cp + k * kSlice, v[k]);
  }
}

// x (p's layout) unfolded into the grid of unfolded(p) (Q positions per row), zeros after it.
void unfold_input(const Conv2dParams& p, const Geometry& g, const uint16_t* x, uint16_t* xp) {
  WindowValue values[kMaxUnfolded];
  for (int64_t t = 0; t < p.R * p.S * p.C; ++t)
    values[t] = {int32_t(t % p.C), int32_t(t / p.C / p.S), int32_t(t / p.C % p.S)};
  at::parallel_for(0, p.N * p.P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / p.P, i = item % p.P;
      uint16_t* image = xp + n * g.img;
      if (p.channels_last)
        unfold_row_nhwc(p, g, x, n, i, image + i * p.Q * g.Cp);
      else
        unfold_row_nchw(p, g, values, x, n, i, image + i * p.Q * g.Cp);
      if (i == p.P - 1) std::memset(image + p.P * p.Q * g.Cp, 0, size_t(g.img - p.P * p.Q * g.Cp) * 2);
    }
  });
}

// x (bfloat16 bits, p's layout) into the phase images: pixel (i, j) of phase (a, b) is input pixel
// (i * stride_h + a - pad_h, j * stride_w + b - pad_w); channels past C and pixels outside the
// input are zero. Phases no tap reads (a >= R or b >= S: a 1x1 strided conv reads one) are skipped.
void pad_input(const Conv2dParams& p, const Geometry& g, const uint16_t* x, uint16_t* xp) {
  const int64_t A = std::min(p.stride_h, p.R), B = std::min(p.stride_w, p.S);
  at::parallel_for(0, p.N * A * B * g.Hq, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item % g.Hq, b = item / g.Hq % B, a = item / g.Hq / B % A, n = item / g.Hq / B / A;
      uint16_t* image = xp + phase_offset(p, g, n, a, b);
      const int64_t h = i * p.stride_h + a - p.pad_h;
      if (p.channels_last)
        pad_row_nhwc(p, g, x, n, h, b, image + i * g.Wq * g.Cp);
      else
        pad_row_nchw(p, g, x, n, h, b, image + i * g.Wq * g.Cp);
      if (i == g.Hq - 1)  // the room after the phase image's last row
        std::memset(image + g.Hq * g.Wq * g.Cp, 0, size_t(g.img - g.Hq * g.Wq * g.Cp) * 2);
    }
  });
}

// The B tiles: word (j, k) of tile (k16, r, s, slice) = w[16 k16 + k][32 slice + 2j (low), +1 (high)][r][s].
int64_t b_tile(const Conv2dParams& p, const Geometry& g, int64_t k16, int64_t r, int64_t s, int64_t slice) {
  return (((k16 * p.R + r) * p.S + s) * (g.Cp / kSlice) + slice) * 256;
}

// The B tiles of output channels 16 k16 .. and tap rs from w_krsc, the weight as [K][R][S][C]:
// per tile, 16 output channels' runs of 32 input channels (16 pair words each) transposed in registers.
CUCONV_AMX void pack_weight_tap(const Conv2dParams& p, const Geometry& g, const uint16_t* w_krsc, int64_t k16,
                                int64_t rs, uint32_t* wp) {
  __m512i rows[16];
  for (int64_t slice = 0; slice < g.Cp / kSlice; ++slice) {
    const __mmask32 channels = lanes32(p.C - slice * kSlice);
    for (int64_t k = 0; k < 16; ++k) {
      const int64_t ko = k16 * 16 + k;
      rows[k] = ko < p.K ? _mm512_maskz_loadu_epi16(channels, w_krsc + (ko * p.R * p.S + rs) * p.C + slice * kSlice)
                         : _mm512_setzero_si512();
    }
    transpose16x16(rows);  // rows[j]: channel pair j of the 16 output channels
    uint32_t* tile = wp + b_tile(p, g, k16, rs / p.S, rs % p.S, slice);
    for (int64_t j = 0; j < 16; ++j) _mm512_storeu_si512(tile + j * 16, rows[j]);
  }
}

void pack_weight(const Conv2dParams& p, const Geometry& g, const uint16_t* w_krsc, uint32_t* wp) {
  const int64_t RS = p.R * p.S;
  at::parallel_for(0, g.Kp / 16 * RS, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) pack_weight_tap(p, g, w_krsc, item / RS, item % RS, wp);
  });
}

// The C block of outputs m0.. and output channels k0.. of image n, into sums (32 x 32 floats).
CUCONV_AMX void block_sums(const Conv2dParams& p, const Geometry& g, const uint16_t* xp, int64_t n,
                           const uint32_t* wp, int64_t m0, int64_t k0, float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t lda = g.Cp * 2, slices = g.Cp / kSlice;
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) {
      const uint16_t* a = xp + phase_offset(p, g, n, r % p.stride_h, s % p.stride_w) +
                          (m0 + r / p.stride_h * g.Wq + s / p.stride_w) * g.Cp;
      const uint32_t* b0 = wp + b_tile(p, g, k0 / 16, r, s, 0);
      const uint32_t* b1 = wp + b_tile(p, g, k0 / 16 + 1, r, s, 0);
      for (int64_t slice = 0; slice < slices; ++slice) {
        // Each product right after the loads it needs: no tile is renamed, so a load waits for the
        // products still reading its register, and the next ones wait for it.
        _tile_loadd(4, a + slice * kSlice, lda);
        _tile_loadd(6, b0 + slice * 256, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b1 + slice * 256, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, a + 16 * g.Cp + slice * kSlice, lda);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  _tile_stored(0, sums, kOut * 4);
  _tile_stored(1, sums + 16, kOut * 4);
  _tile_stored(2, sums + 16 * kOut, kOut * 4);
  _tile_stored(3, sums + 16 * kOut + 16, kOut * 4);
}

// An output whose channels are adjacent (NHWC, or a strided view of it): its pixel strides.
struct PixelStrides {
  int64_t n, h, w;
};

// Bias, ReLU and rounding of a C block into the output (image n), skipping the dropped outputs.
CUCONV_AMX void store_block(const Conv2dParams& p, const Geometry& g, const float* sums, const float* bias, bool relu,
                            int64_t n, int64_t m0, int64_t k0, uint16_t* y, const PixelStrides& ys) {
  const __mmask16 m[2] = {lanes(p.K - k0), lanes(p.K - k0 - 16)};
  const __m512 zero = _mm512_setzero_ps();
  int64_t op = m0 / g.Wq, oq = m0 % g.Wq;
  for (int64_t i = 0; i < kPix; ++i, oq = oq + 1 == g.Wq ? (++op, 0) : oq + 1) {
    if (op >= p.P || oq >= p.Q) continue;
    uint16_t* out = y + n * ys.n + op * ys.h + oq * ys.w + k0;
    for (int h = 0; h < 2; ++h) {
      if (!m[h]) continue;
      __m512 v = _mm512_load_ps(sums + i * kOut + 16 * h);
      if (bias) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m[h], bias + k0 + 16 * h), v);
      if (relu) v = _mm512_max_ps(zero, v);  // a NaN sum stays NaN, as torch.relu
      _mm256_mask_storeu_epi16(out + 16 * h, m[h], to_bfloat16(v));
    }
  }
}

// Bias, ReLU and rounding of a C block into rows m0 .. m0 + 31 of an image's buffer in grid order
// (every position of the phase width, Kp channels each), on its way to an NCHW output.
CUCONV_AMX void store_block_grid(const Conv2dParams& p, const Geometry& g, const float* sums, const float* bias,
                                 bool relu, int64_t m0, int64_t k0, uint16_t* grid) {
  const __mmask16 m[2] = {lanes(p.K - k0), lanes(p.K - k0 - 16)};
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < kPix; ++i)
    for (int h = 0; h < 2; ++h) {
      __m512 v = _mm512_load_ps(sums + i * kOut + 16 * h);
      if (bias) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m[h], bias + k0 + 16 * h), v);
      if (relu) v = _mm512_max_ps(zero, v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(grid + (m0 + i) * g.Kp + k0 + 16 * h), to_bfloat16(v));
    }
}

// Grid rows an image's buffer needs: its C blocks, and the reads of grid_to_nchw's last 32 positions.
int64_t grid_rows(const Conv2dParams& p, const Geometry& g) {
  return std::max(g.blocks * kPix, (p.P - 1) * g.Wq + (p.Q + kPix - 1) / kPix * kPix);
}

// An image's grid buffer into its NCHW output planes: per output row, 32 positions x 16 channels,
// two positions' channels joined into pair words, transposed in registers into 16 channels' runs
// of 32 positions. Whole 64-byte rows of the planes are written at once.
CUCONV_AMX void grid_to_nchw(const Conv2dParams& p, const Geometry& g, const uint16_t* grid, int64_t n, uint16_t* y) {
  __m512i r[16];
  for (int64_t op = 0; op < p.P; ++op)
    for (int64_t q0 = 0; q0 < p.Q; q0 += kPix) {
      const __mmask32 keep = lanes32(p.Q - q0);
      const uint16_t* src = grid + (op * g.Wq + q0) * g.Kp;
      for (int64_t k0 = 0; k0 < p.K; k0 += 16) {
        for (int64_t t = 0; t < 16; ++t) {
          const auto* a = reinterpret_cast<const __m256i*>(src + 2 * t * g.Kp + k0);
          const auto* b = reinterpret_cast<const __m256i*>(src + (2 * t + 1) * g.Kp + k0);
          r[t] = _mm512_or_si512(_mm512_cvtepu16_epi32(_mm256_loadu_si256(a)),
                                 _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(b)), 16));
        }
        transpose16x16(r);  // r[k]: channel k0 + k at the 32 positions
        for (int64_t k = 0; k < std::min<int64_t>(16, p.K - k0); ++k)
          _mm512_mask_storeu_epi16(y + ((n * p.K + k0 + k) * p.P + op) * p.Q + q0, keep, r[k]);
      }
    }
}

// The output channels go in groups whose packed weight (B tiles) fits in half of L2, every block
// through one group before the next: a large weight would otherwise stream from memory once per block.
int64_t channel_group(const Conv2dParams& p, const Geometry& g) {
  const int64_t weight_per_block = kOut * p.R * p.S * g.Cp * 2;  // bytes of one C block's B tiles
  return std::max<int64_t>(1, kWeightGroupBytes / weight_per_block) * kOut;
}

// The C blocks of outputs begin .. end (32 each, numbered across the images), all output channels,
// into an output with adjacent channels.
CUCONV_AMX void run_blocks(const Conv2dParams& p, const Geometry& g, const uint16_t* xp, const uint32_t* wp,
                           const float* bias, bool relu, uint16_t* y, const PixelStrides& ys, int64_t begin,
                           int64_t end) {
  amx_configure();
  alignas(64) float sums[kPix * kOut];
  const int64_t group = channel_group(p, g);
  for (int64_t k1 = 0; k1 < g.Kp; k1 += group)
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / g.blocks, m0 = item % g.blocks * kPix;
      for (int64_t k0 = k1; k0 < std::min(g.Kp, k1 + group); k0 += kOut) {
        block_sums(p, g, xp, n, wp, m0, k0, sums);
        store_block(p, g, sums, bias, relu, n, m0, k0, y, ys);
      }
    }
  amx_release();
}

// Images begin .. end whole, into the NCHW output, each through a grid buffer of the worker. With
// more than one channel group, as many images as fit 1 MiB of buffers go through each group
// together, so the group's weight is read once per batch of images, not per image.
CUCONV_AMX void run_images(const Conv2dParams& p, const Geometry& g, const uint16_t* xp, const uint32_t* wp,
                           const float* bias, bool relu, uint16_t* y, int64_t begin, int64_t end) {
  const int64_t group = channel_group(p, g), grid = grid_rows(p, g) * g.Kp;
  const int64_t batch = group >= g.Kp ? 1 : std::max<int64_t>(1, (int64_t(1) << 20) / (grid * 2));
  uint16_t* grids = scratch<uint16_t>(Scratch::output, std::min(batch, end - begin) * grid);
  amx_configure();
  alignas(64) float sums[kPix * kOut];
  for (int64_t n0 = begin; n0 < end; n0 += batch) {
    const int64_t n1 = std::min(end, n0 + batch);
    for (int64_t k1 = 0; k1 < g.Kp; k1 += group)
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t m0 = 0; m0 < g.blocks * kPix; m0 += kPix)
          for (int64_t k0 = k1; k0 < std::min(g.Kp, k1 + group); k0 += kOut) {
            block_sums(p, g, xp, n, wp, m0, k0, sums);
            store_block_grid(p, g, sums, bias, relu, m0, k0, grids + (n - n0) * grid);
          }
    for (int64_t n = n0; n < n1; ++n) grid_to_nchw(p, g, grids + (n - n0) * grid, n, y);
  }
  amx_release();
}

}  // namespace

void amx_direct_fprop(const Conv2dParams& conv, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                      const at::Tensor& y, bool relu) {
  const bool unfold = conv.C < 16;
  const Conv2dParams p = unfold ? unfolded(conv) : conv;  // the conv the tiles run
  const Geometry g = geometry(p);
  // NCHW runs whole images per worker (their outputs leave through the grid buffer), given an image
  // per thread; otherwise the blocks, into the output where its channels are adjacent (NHWC or a
  // view of it: a stride phase of a larger output), else into an NHWC copy.
  using at::MemoryFormat;
  const bool by_image = !p.channels_last && p.N >= at::get_num_threads() && y.is_contiguous();
  const at::Tensor xh = x.contiguous(p.channels_last ? MemoryFormat::ChannelsLast : MemoryFormat::Contiguous);
  const bool in_place = by_image || y.stride(1) == 1;
  const at::Tensor yh = in_place ? y : at::empty_like(y, MemoryFormat::ChannelsLast);
  const PixelStrides ys{yh.stride(0), yh.stride(2), yh.stride(3)};
  uint16_t* xp = scratch<uint16_t>(Scratch::wide_a, p.N * p.stride_h * p.stride_w * g.img);
  // [K][R][S][C]: also the unfolded conv's [K][RSC] 1x1 weight.
  uint32_t* wp = scratch<uint32_t>(Scratch::wide_b, g.Kp / 16 * p.R * p.S * (g.Cp / kSlice) * 256);
  float* b = bias.defined() ? scratch<float>(Scratch::wide_c, p.K) : nullptr;
  if (b)
    for (int64_t k = 0; k < p.K; ++k) b[k] = float(bias.const_data_ptr<c10::BFloat16>()[k]);
  const auto* xs = reinterpret_cast<const uint16_t*>(xh.const_data_ptr<c10::BFloat16>());
  if (unfold)
    unfold_input(conv, g, xs, xp);
  else
    pad_input(p, g, xs, xp);
  const at::Tensor w_krsc = w.permute({0, 2, 3, 1}).contiguous();  // no copy for a channels_last weight
  pack_weight(p, g, reinterpret_cast<const uint16_t*>(w_krsc.const_data_ptr<c10::BFloat16>()), wp);
  uint16_t* out = reinterpret_cast<uint16_t*>(yh.data_ptr<c10::BFloat16>());
  if (by_image)
    at::parallel_for(0, p.N, 1,
                     [&](int64_t begin, int64_t end) { run_images(p, g, xp, wp, b, relu, out, begin, end); });
  else
    at::parallel_for(0, p.N * g.blocks, 1,
                     [&](int64_t begin, int64_t end) { run_blocks(p, g, xp, wp, b, relu, out, ys, begin, end); });
  if (!in_place) y.copy_(yh);
}

#else  // not x86: the plan never picks it (no AMX)

void amx_direct_fprop(const Conv2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      bool) {
  TORCH_CHECK(false, "cuconv: amx_direct needs AMX");
}

#endif

}  // namespace cuconv::cpu
