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
// pair words (1 KiB; amx_weight.cpp). The output channels go in groups whose B tiles fit in half
// of L2. An NHWC output is stored from each block; an NCHW output per image, from a buffer in the blocks' order
// transposed in registers into whole rows of its channel planes (stored from the blocks, the runs of
// 32 positions scattered over 32 planes ran at half the speed).
//
// Few input channels (C < 16) run unfolded, as a 1x1 conv over each output's window of R x S x C
// values (unfolded(), amx_direct.h). Their products are few: the time is the unfolding and the
// stores, so each worker unfolds one image at a time into its own buffer and runs its blocks from
// there; into an NCHW output the products run transposed (run_pair_images), the weight as the A
// tiles, so a sum tile's rows are runs of one channel plane.
#include "cpu/conv2d/amx_direct.h"
#include "cpu/conv2d/amx_weight.h"

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
  return p.dil_h == 1 && p.dil_w == 1 && p.groups == 1 &&
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

// The 16 values at those columns of an input row (zero elsewhere), one per 32-bit lane.
CUCONV_AMX inline __m512i row_run(const Conv2dParams& p, const uint16_t* row, const Columns& cols, __m512i even) {
  if (cols.first == cols.end) return _mm512_setzero_si512();
  const uint16_t* src = row + cols.w0;  // lane e at src + e * stride_w
  if (p.stride_w == 1) return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(cols.lanes, src));
  if (p.stride_w == 2)
    return _mm512_cvtepu16_epi32(
        _mm512_castsi512_si256(_mm512_permutexvar_epi16(even, _mm512_maskz_loadu_epi16(cols.even_lanes, src))));
  alignas(32) uint16_t v[16] = {};
  for (int64_t e = cols.first; e < cols.end; ++e) v[e] = src[e * p.stride_w];
  return _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(v)));
}

// Channel c's run in input row h.
CUCONV_AMX inline __m512i channel_run(const Conv2dParams& p, const uint16_t* x, int64_t n, int64_t h, int64_t c,
                                      const Columns& cols, __m512i even) {
  if (c >= p.C) return _mm512_setzero_si512();
  return row_run(p, x + ((n * p.C + c) * p.H + h) * p.W, cols, even);
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

// Window value t's input channel, kernel row and kernel column (t = (r * S + s) * C + c), computed
// once per call: three divisions per value and block cost more than the block's loads.
struct WindowValue {
  int32_t c, r, s;
};

// An NHWC window's kernel row r is a run of S * C adjacent input values, lanes r * S * C .. of the
// pixel's unfolded vectors. The part of it in vector k: a masked load whose lane t reads the run's
// value k * 32 + t - r * S * C (the load's address is shifted by that much from the run's start).
struct RowPiece {
  int32_t k, r;
  int64_t shift;
  __mmask32 lanes;
};

// The tables of an unfolded conv, made once per call.
struct Unfolding {
  WindowValue values[kMaxUnfolded];
  RowPiece pieces[kMaxUnfolded + kMaxUnfolded / kSlice];
  int64_t count_pieces = 0;
};

void make_unfolding(const Conv2dParams& p, Unfolding& u) {
  for (int64_t t = 0; t < p.R * p.S * p.C; ++t)
    u.values[t] = {int32_t(t % p.C), int32_t(t / p.C / p.S), int32_t(t / p.C % p.S)};
  const int64_t run = p.S * p.C;
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t k = r * run / kSlice; k * kSlice < (r + 1) * run; ++k) {
      const int64_t lo = std::max(r * run, k * kSlice), hi = std::min((r + 1) * run, (k + 1) * kSlice);
      u.pieces[u.count_pieces++] = {int32_t(k), int32_t(r), k * kSlice - r * run,
                                    __mmask32(lanes32(hi - k * kSlice) & ~lanes32(lo - k * kSlice))};
    }
}

// Output row i of image n unfolded from an NCHW input, 16 pixels x 32 window values at a time:
// value t = (r * S + s) * C + c of the 16 pixels is a run of input row i * stride_h + r - pad_h,
// joined in pairs: pair rows (B tiles) of the row's pixel groups at `pairs` when given, else
// transposed in registers (as pad_row_nchw's channels) into the pixels' vectors at `row`.
// Lane 2e of a pair word vector from value run a, lane 2e + 1 from b: e = lane e of a run at stride 1
// (kJoinLow), lane 2e at stride 2 (kEvenLanes' columns).
alignas(64) constexpr uint16_t kJoinStride2[32] = {0,  32, 2,  34, 4,  36, 6,  38, 8,  40, 10, 42, 12, 44, 14, 46,
                                                   16, 48, 18, 50, 20, 52, 22, 54, 24, 56, 26, 58, 28, 60, 30, 62};

CUCONV_AMX void unfold_row_nchw(const Conv2dParams& p, const Geometry& g, const Unfolding& u, const uint16_t* x,
                                int64_t n, int64_t i, uint16_t* row, uint32_t* pairs = nullptr) {
  const __m512i even = _mm512_load_si512(kEvenLanes);
  const __m512i join = _mm512_load_si512(p.stride_w == 1 ? kJoinLow : kJoinStride2);
  // Window value t's input row (null: outside the input, or t past the window) and kernel column.
  const uint16_t* source[kMaxUnfolded];
  int32_t column[kMaxUnfolded];
  for (int64_t t = 0; t < g.Cp; ++t) {
    const WindowValue v = t < p.R * p.S * p.C ? u.values[t] : WindowValue{0, -1, 0};
    const int64_t h = i * p.stride_h + v.r - p.pad_h;
    source[t] = v.r >= 0 && h >= 0 && h < p.H ? x + ((n * p.C + v.c) * p.H + h) * p.W : nullptr;
    column[t] = v.s;
  }
  Columns cols[kMaxUnfolded];  // per kernel column s
  __m512i r[16];
  for (int64_t j0 = 0; j0 < p.Q; j0 += 16) {
    const int64_t count = std::min<int64_t>(16, p.Q - j0);
    for (int64_t s = 0; s < p.S; ++s) cols[s] = columns(p, j0 * p.stride_w + s - p.pad_w, count, true);
    for (int64_t t0 = 0; t0 < g.Cp; t0 += kSlice) {
      for (int64_t j = 0; j < 16; ++j) {
        const int64_t t = t0 + 2 * j;
        if (p.stride_w <= 2) {  // the two runs loaded whole and joined by one permute
          __m512i v[2];
          for (int k = 0; k < 2; ++k) {
            const Columns& c = cols[column[t + k]];
            v[k] = source[t + k] ? _mm512_maskz_loadu_epi16(p.stride_w == 1 ? __mmask32(c.lanes) : c.even_lanes,
                                                            source[t + k] + c.w0)
                                 : _mm512_setzero_si512();
          }
          r[j] = _mm512_permutex2var_epi16(v[0], join, v[1]);
          continue;
        }
        __m512i half[2];
        for (int k = 0; k < 2; ++k)
          half[k] = source[t + k] ? row_run(p, source[t + k], cols[column[t + k]], even) : _mm512_setzero_si512();
        r[j] = _mm512_or_si512(half[0], _mm512_slli_epi32(half[1], 16));
      }
      if (pairs) {  // r[j]: window values t0 + 2j and t0 + 2j + 1 of the 16 pixels
        uint32_t* tile = pairs + (j0 / 16 * (g.Cp / kSlice) + t0 / kSlice) * 256;
        for (int64_t j = 0; j < 16; ++j) _mm512_storeu_si512(tile + j * 16, r[j]);
        continue;
      }
      transpose16x16(r);  // r[e]: pixel j0 + e's 32 window values
      for (int64_t e = 0; e < count; ++e) _mm512_storeu_si512(row + (j0 + e) * g.Cp + t0, r[e]);
    }
  }
}

// The same from an NHWC input. A window whose columns all lie inside the input takes its kernel
// rows whole: each piece a masked load at an address shifted by the piece (lanes outside its mask
// are not read) and a masked store, over a pixel's vectors stored as zeros first; a window over
// the left or right padding takes its columns inside one by one.
CUCONV_AMX void unfold_row_nhwc(const Conv2dParams& p, const Geometry& g, const Unfolding& u, const uint16_t* x,
                                int64_t n, int64_t i, uint16_t* row) {
  const int64_t vectors = g.Cp / kSlice;
  // The pieces of the kernel rows inside the input, each with its address at input column 0.
  uintptr_t base[kMaxUnfolded + kMaxUnfolded / kSlice];
  RowPiece pieces[kMaxUnfolded + kMaxUnfolded / kSlice];
  int64_t count = 0;
  for (int64_t e = 0; e < u.count_pieces; ++e) {
    const int64_t h = i * p.stride_h + u.pieces[e].r - p.pad_h;
    if (h < 0 || h >= p.H) continue;
    pieces[count] = u.pieces[e];
    base[count++] = reinterpret_cast<uintptr_t>(x + (n * p.H + h) * p.W * p.C) + u.pieces[e].shift * 2;
  }
  for (int64_t j = 0; j < p.Q; ++j) {
    uint16_t* dst = row + j * g.Cp;
    const int64_t w0 = j * p.stride_w - p.pad_w, s0 = std::max<int64_t>(0, -w0), s1 = std::min(p.S, p.W - w0);
    if (s0 == 0 && s1 == p.S && vectors == 1) {  // R x S x C <= 32: the pieces merged in a register
      const uintptr_t column = uintptr_t(w0 * p.C * 2);
      __m512i v = _mm512_setzero_si512();
      for (int64_t e = 0; e < count; ++e)
        v = _mm512_mask_loadu_epi16(v, pieces[e].lanes, reinterpret_cast<const void*>(base[e] + column));
      _mm512_storeu_si512(dst, v);
      continue;
    }
    for (int64_t k = 0; k < vectors; ++k) _mm512_storeu_si512(dst + k * kSlice, _mm512_setzero_si512());
    if (s0 == 0 && s1 == p.S) {
      const uintptr_t column = uintptr_t(w0 * p.C * 2);
      for (int64_t e = 0; e < count; ++e)
        _mm512_mask_storeu_epi16(
            dst + pieces[e].k * kSlice, pieces[e].lanes,
            _mm512_maskz_loadu_epi16(pieces[e].lanes, reinterpret_cast<const void*>(base[e] + column)));
      continue;
    }
    for (int64_t tap_r = 0; tap_r < p.R && s0 < s1; ++tap_r) {
      const int64_t h = i * p.stride_h + tap_r - p.pad_h;
      if (h < 0 || h >= p.H) continue;
      const uint16_t* src = x + ((n * p.H + h) * p.W + w0 + s0) * p.C;
      const int64_t first = (tap_r * p.S + s0) * p.C, end = (tap_r * p.S + s1) * p.C;  // its lanes
      for (int64_t k = first / kSlice; k * kSlice < end; ++k) {
        const int64_t lo = std::max(first, k * kSlice), hi = std::min(end, (k + 1) * kSlice);
        const __mmask32 m = lanes32(hi - k * kSlice) & ~lanes32(lo - k * kSlice);
        _mm512_mask_storeu_epi16(dst + k * kSlice, m, _mm512_maskz_expandloadu_epi16(m, src + (lo - first)));
      }
    }
  }
}

// Image n of x (p's layout) unfolded into the grid of unfolded(p) (Q positions per row), zeros after it.
void unfold_image(const Conv2dParams& p, const Geometry& g, const Unfolding& u, const uint16_t* x, int64_t n,
                  uint16_t* image) {
  for (int64_t i = 0; i < p.P; ++i)
    if (p.channels_last)
      unfold_row_nhwc(p, g, u, x, n, i, image + i * p.Q * g.Cp);
    else
      unfold_row_nchw(p, g, u, x, n, i, image + i * p.Q * g.Cp);
  std::memset(image + p.P * p.Q * g.Cp, 0, size_t(g.img - p.P * p.Q * g.Cp) * 2);
}

// Every image of x unfolded, the rows shared by the threads (fewer images than threads).
void unfold_input(const Conv2dParams& p, const Geometry& g, const Unfolding& u, const uint16_t* x, uint16_t* xp) {
  at::parallel_for(0, p.N * p.P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / p.P, i = item % p.P;
      uint16_t* image = xp + n * g.img;
      if (p.channels_last)
        unfold_row_nhwc(p, g, u, x, n, i, image + i * p.Q * g.Cp);
      else
        unfold_row_nchw(p, g, u, x, n, i, image + i * p.Q * g.Cp);
      if (i == p.P - 1) std::memset(image + p.P * p.Q * g.Cp, 0, size_t(g.img - p.P * p.Q * g.Cp) * 2);
    }
  });
}

// x (bfloat16 bits, p's layout) into the phase images: pixel (i, j) of phase (a, b) is input pixel
// (i * stride_h + a - pad_h, j * stride_w + b - pad_w); channels past C and pixels outside the
// input are zero. Phases no tap reads (a >= R or b >= S: a 1x1 strided conv reads one) are skipped.
// Row i of phase image (a, b) of image n, in the phase image at `image`.
void pad_phase_row(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t n, int64_t a, int64_t b,
                   int64_t i, uint16_t* image) {
  const int64_t h = i * p.stride_h + a - p.pad_h;
  if (p.channels_last)
    pad_row_nhwc(p, g, x, n, h, b, image + i * g.Wq * g.Cp);
  else
    pad_row_nchw(p, g, x, n, h, b, image + i * g.Wq * g.Cp);
  if (i == g.Hq - 1)  // the room after the phase image's last row
    std::memset(image + g.Hq * g.Wq * g.Cp, 0, size_t(g.img - g.Hq * g.Wq * g.Cp) * 2);
}

void pad_input(const Conv2dParams& p, const Geometry& g, const uint16_t* x, uint16_t* xp) {
  const int64_t A = std::min(p.stride_h, p.R), B = std::min(p.stride_w, p.S);
  at::parallel_for(0, p.N * A * B * g.Hq, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item % g.Hq, b = item / g.Hq % B, a = item / g.Hq / B % A, n = item / g.Hq / B / A;
      pad_phase_row(p, g, x, n, a, b, i, xp + phase_offset(p, g, n, a, b));
    }
  });
}

// Image n's phase images alone, into `image` (a worker's buffer).
void pad_image(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t n, uint16_t* image) {
  for (int64_t a = 0; a < std::min(p.stride_h, p.R); ++a)
    for (int64_t b = 0; b < std::min(p.stride_w, p.S); ++b)
      for (int64_t i = 0; i < g.Hq; ++i) pad_phase_row(p, g, x, n, a, b, i, image + phase_offset(p, g, 0, a, b));
}

// The C block of outputs m0.. and output channels k0.. of an image whose phase images begin at x_n,
// into sums (32 x 32 floats).
CUCONV_AMX void block_sums(const Conv2dParams& p, const Geometry& g, const uint16_t* x_n, const uint32_t* wp,
                           int64_t m0, int64_t k0, float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t lda = g.Cp * 2, slices = g.Cp / kSlice;
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) {
      const uint16_t* a = x_n + phase_offset(p, g, 0, r % p.stride_h, s % p.stride_w) +
                          (m0 + r / p.stride_h * g.Wq + s / p.stride_w) * g.Cp;
      const uint32_t* b0 = wp + weight_tile(p, g.Cp, k0 / 16, r, s, 0);
      const uint32_t* b1 = wp + weight_tile(p, g.Cp, k0 / 16 + 1, r, s, 0);
      if (p.K - k0 <= 16) {  // the second 16 channels past the output (tiles 1 and 3 stay zero)
        for (int64_t slice = 0; slice < slices; ++slice)
          tile_products_2x1(a + slice * kSlice, lda, a + 16 * g.Cp + slice * kSlice, lda, b0 + slice * 256);
        continue;
      }
      for (int64_t slice = 0; slice < slices; ++slice)
        tile_products_2x2(a + slice * kSlice, lda, a + 16 * g.Cp + slice * kSlice, lda, b0 + slice * 256,
                          b1 + slice * 256);
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

// A C block's 32 channels of bias (zero without one: adding +0 changes no sum, which starts at +0)
// and the ReLU, applied to each output's sums as they are rounded.
struct Epilogue {
  __m512 bias[2];
  bool relu;
};

CUCONV_AMX inline Epilogue epilogue(const Conv2dParams& p, const float* bias, bool relu, int64_t k0) {
  Epilogue e{{_mm512_setzero_ps(), _mm512_setzero_ps()}, relu};
  if (bias)
    for (int h = 0; h < 2; ++h) e.bias[h] = _mm512_maskz_loadu_ps(lanes(p.K - k0 - 16 * h), bias + k0 + 16 * h);
  return e;
}

// Output i of the block (its 32 channels) as bfloat16 bits.
CUCONV_AMX inline __m512i block_output(const Epilogue& e, const float* sums, int64_t i) {
  __m512 v[2];
  for (int h = 0; h < 2; ++h) {
    v[h] = _mm512_add_ps(e.bias[h], _mm512_load_ps(sums + i * kOut + 16 * h));
    if (e.relu) v[h] = _mm512_max_ps(_mm512_setzero_ps(), v[h]);  // a NaN sum stays NaN, as torch.relu
  }
  return to_bfloat16_daz(v[0], v[1]);
}

// Bias, ReLU and rounding of a C block into the output (image n), skipping the dropped outputs.
CUCONV_AMX void store_block(const Conv2dParams& p, const Geometry& g, const float* sums, const float* bias, bool relu,
                            int64_t n, int64_t m0, int64_t k0, uint16_t* y, const PixelStrides& ys) {
  const __mmask32 keep = lanes32(p.K - k0);
  const Epilogue e = epilogue(p, bias, relu, k0);
  int64_t op = m0 / g.Wq, oq = m0 % g.Wq;
  for (int64_t i = 0; i < kPix; ++i, oq = oq + 1 == g.Wq ? (++op, 0) : oq + 1) {
    if (op >= p.P || oq >= p.Q) continue;
    _mm512_mask_storeu_epi16(y + n * ys.n + op * ys.h + oq * ys.w + k0, keep, block_output(e, sums, i));
  }
}

// Bias, ReLU and rounding of a C block into rows m0 .. m0 + 31 of an image's buffer in grid order
// (every position of the phase width, Kp channels each), on its way to an NCHW output.
CUCONV_AMX void store_block_grid(const Conv2dParams& p, const Geometry& g, const float* sums, const float* bias,
                                 bool relu, int64_t m0, int64_t k0, uint16_t* grid) {
  const Epilogue e = epilogue(p, bias, relu, k0);
  for (int64_t i = 0; i < kPix; ++i) _mm512_storeu_si512(grid + (m0 + i) * g.Kp + k0, block_output(e, sums, i));
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
        block_sums(p, g, xp + phase_offset(p, g, n, 0, 0), wp, m0, k0, sums);
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
            block_sums(p, g, xp + phase_offset(p, g, n, 0, 0), wp, m0, k0, sums);
            store_block_grid(p, g, sums, bias, relu, m0, k0, grids + (n - n0) * grid);
          }
    for (int64_t n = n0; n < n1; ++n) grid_to_nchw(p, g, grids + (n - n0) * grid, n, y);
  }
  amx_release();
}

// Images begin .. end into an output whose channels are adjacent, each prepared (padded, or
// unfolded) into the worker's buffer by prepare(n, buffer) right before its blocks run (in the
// worker's cache; the whole batch prepared first would go out to memory and back). With more than
// one channel group, as many images as fit 1 MiB go through each group together (the group's
// weight read once per batch of images).
template <class Prepare>
CUCONV_AMX void run_prepared_images(const Conv2dParams& p, const Geometry& g, const Prepare& prepare,
                                    const uint32_t* wp, const float* bias, bool relu, uint16_t* y,
                                    const PixelStrides& ys, int64_t begin, int64_t end) {
  const int64_t group = channel_group(p, g), image = p.stride_h * p.stride_w * g.img;
  const int64_t batch = group >= g.Kp ? 1 : std::max<int64_t>(1, (int64_t(1) << 20) / (image * 2));
  uint16_t* images = scratch<uint16_t>(Scratch::input, std::min(batch, end - begin) * image);
  amx_configure();
  alignas(64) float sums[kPix * kOut];
  for (int64_t n0 = begin; n0 < end; n0 += batch) {
    const int64_t n1 = std::min(end, n0 + batch);
    for (int64_t n = n0; n < n1; ++n) prepare(n, images + (n - n0) * image);
    for (int64_t k1 = 0; k1 < g.Kp; k1 += group)
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t m0 = 0; m0 < g.blocks * kPix; m0 += kPix)
          for (int64_t k0 = k1; k0 < std::min(g.Kp, k1 + group); k0 += kOut) {
            block_sums(p, g, images + (n - n0) * image, wp, m0, k0, sums);
            store_block(p, g, sums, bias, relu, n, m0, k0, y, ys);
          }
  }
  amx_release();
}

// An unfolded conv into an NCHW output runs transposed: the weight's rows are the A tiles and the
// unfolded input the B tiles (pair rows of 16 pixels of one output row: unfold_row_nchw's pairs),
// so a sum tile's rows are 16 adjacent outputs of one channel plane, stored in place. A pixel
// group is 16 outputs of a row (the last one of a row partly past Q: computed, not stored); a
// block, two consecutive groups, each with the image's pair rows of all its window values.
struct PairGroups {
  int64_t per_row;  // groups per output row
  int64_t count;    // per image, rounded up to whole blocks (an odd last block's second group zero)
  int64_t tile_words(const Geometry& g) const { return g.Cp / kSlice * 256; }  // one group's B tiles
};

PairGroups pair_groups(const Conv2dParams& conv) {
  const int64_t per_row = (conv.Q + 15) / 16;
  return {per_row, (conv.P * per_row + 1) / 2 * 2};
}

// Image n's pair rows, every group of every output row, zeros in a group past the last.
void unfold_image_pairs(const Conv2dParams& conv, const Geometry& g, const Unfolding& u, const PairGroups& pg,
                        const uint16_t* x, int64_t n, uint32_t* image) {
  for (int64_t i = 0; i < conv.P; ++i)
    unfold_row_nchw(conv, g, u, x, n, i, nullptr, image + i * pg.per_row * pg.tile_words(g));
  const int64_t used = conv.P * pg.per_row;
  std::memset(image + used * pg.tile_words(g), 0, size_t((pg.count - used) * pg.tile_words(g)) * 4);
}

// The sums of output channels k0 .. k0 + 31 at the two groups from b (B tiles), into sums as four
// 16 x 16 tiles: (channels k0.., first group), (k0.., second), (k0 + 16.., first), (k0 + 16.., second).
CUCONV_AMX void pair_block_sums(const Geometry& g, const uint32_t* wa, const uint32_t* b, int64_t group_words,
                                int64_t k0, float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t slices = g.Cp / kSlice;
  const uint32_t* a0 = wa + k0 / 16 * slices * 256;
  const uint32_t* a1 = a0 + slices * 256;
  for (int64_t slice = 0; slice < slices; ++slice)
    tile_products_2x2(a0 + slice * 256, 64, a1 + slice * 256, 64, b + slice * 256, b + group_words + slice * 256);
  _tile_stored(0, sums, 64);
  _tile_stored(1, sums + 256, 64);
  _tile_stored(2, sums + 512, 64);
  _tile_stored(3, sums + 768, 64);
}

// Bias, ReLU and rounding of a pair block's sums into the NCHW output (image n): each tile row is a
// channel's run of up to 16 outputs of one output row.
CUCONV_AMX void store_pair_block(const Conv2dParams& conv, const PairGroups& pg, const float* sums, const float* bias,
                                 bool relu, int64_t n, int64_t group0, int64_t k0, uint16_t* y) {
  for (int t = 0; t < 4; ++t) {
    const int64_t group = group0 + t % 2, i = group / pg.per_row, j0 = group % pg.per_row * 16;
    if (i >= conv.P) continue;
    const __mmask16 keep = lanes(conv.Q - j0);
    for (int64_t row = 0; row < 16; ++row) {
      const int64_t k = k0 + 16 * (t / 2) + row;
      if (k >= conv.K) break;
      __m512 v = _mm512_load_ps(sums + t * 256 + row * 16);
      if (bias) v = _mm512_add_ps(_mm512_set1_ps(bias[k]), v);
      if (relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
      _mm256_mask_storeu_epi16(y + ((n * conv.K + k) * conv.P + i) * conv.Q + j0, keep, to_bfloat16_daz(v));
    }
  }
}

// Images begin .. end of the transposed unfolded conv: each image's pair rows in the worker's
// buffer, then its blocks over every output channel (wa: the weight as A tiles).
CUCONV_AMX void run_pair_images(const Conv2dParams& conv, const Geometry& g, const Unfolding& u, const uint16_t* x,
                                const uint32_t* wa, const float* bias, bool relu, uint16_t* y, int64_t begin,
                                int64_t end) {
  const PairGroups pg = pair_groups(conv);
  uint32_t* image = scratch<uint32_t>(Scratch::input, pg.count * pg.tile_words(g));
  amx_configure();
  alignas(64) float sums[4 * 256];
  for (int64_t n = begin; n < end; ++n) {
    unfold_image_pairs(conv, g, u, pg, x, n, image);
    for (int64_t group0 = 0; group0 < pg.count; group0 += 2)
      for (int64_t k0 = 0; k0 < g.Kp; k0 += kOut) {
        pair_block_sums(g, wa, image + group0 * pg.tile_words(g), pg.tile_words(g), k0, sums);
        store_pair_block(conv, pg, sums, bias, relu, n, group0, k0, y);
      }
  }
  amx_release();
}

}  // namespace

void amx_direct_fprop(const Conv2dParams& conv, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                      const at::Tensor& y, bool relu, bool flipped) {
  const bool unfold = conv.C < 16;
  const Conv2dParams p = unfold ? unfolded(conv) : conv;  // the conv the tiles run
  const Geometry g = geometry(p);
  // Given an image per thread, each worker runs whole images: NCHW through the grid buffer; into
  // an output whose channels are adjacent (NHWC or a view of it: a stride phase of a larger
  // output), each image padded (or unfolded) by its worker right before its blocks. Otherwise the
  // blocks, the batch padded first, into the output where its channels are adjacent, else into an
  // NHWC copy.
  using at::MemoryFormat;
  const bool per_thread = p.N >= at::get_num_threads();
  const bool by_image = !p.channels_last && per_thread && y.is_contiguous();
  const at::Tensor xh = x.contiguous(p.channels_last ? MemoryFormat::ChannelsLast : MemoryFormat::Contiguous);
  const bool in_place = by_image || y.stride(1) == 1;
  const at::Tensor yh = in_place ? y : at::empty_like(y, MemoryFormat::ChannelsLast);
  const PixelStrides ys{yh.stride(0), yh.stride(2), yh.stride(3)};
  // The packed weight (amx_weight.h).
  uint32_t* wp = scratch<uint32_t>(Scratch::wide_b, g.Kp / 16 * p.R * p.S * (g.Cp / kSlice) * 256);
  float* b = bias.defined() ? scratch<float>(Scratch::wide_c, p.K) : nullptr;
  if (b)
    for (int64_t k = 0; k < p.K; ++k) b[k] = float(bias.const_data_ptr<c10::BFloat16>()[k]);
  const auto* xs = reinterpret_cast<const uint16_t*>(xh.const_data_ptr<c10::BFloat16>());
  const bool transposed = unfold && by_image;  // run_pair_images
  pack_amx_weight(p, g.Cp, g.Kp, w, flipped, transposed, wp);
  uint16_t* out = reinterpret_cast<uint16_t*>(yh.data_ptr<c10::BFloat16>());
  Unfolding u;
  if (unfold) make_unfolding(conv, u);
  if (transposed) {
    at::parallel_for(0, p.N, 1,
                     [&](int64_t begin, int64_t end) { run_pair_images(conv, g, u, xs, wp, b, relu, out, begin, end); });
  } else if (per_thread && (unfold || (in_place && !by_image))) {
    const auto unfold_one = [&](int64_t n, uint16_t* image) { unfold_image(conv, g, u, xs, n, image); };
    const auto pad_one = [&](int64_t n, uint16_t* image) { pad_image(p, g, xs, n, image); };
    at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
      if (unfold)
        run_prepared_images(p, g, unfold_one, wp, b, relu, out, ys, begin, end);
      else
        run_prepared_images(p, g, pad_one, wp, b, relu, out, ys, begin, end);
    });
  } else {
    uint16_t* xp = scratch<uint16_t>(Scratch::wide_a, p.N * p.stride_h * p.stride_w * g.img);
    if (unfold)
      unfold_input(conv, g, u, xs, xp);
    else
      pad_input(p, g, xs, xp);
    if (by_image)
      at::parallel_for(0, p.N, 1,
                       [&](int64_t begin, int64_t end) { run_images(p, g, xp, wp, b, relu, out, begin, end); });
    else
      at::parallel_for(0, p.N * g.blocks, 1,
                       [&](int64_t begin, int64_t end) { run_blocks(p, g, xp, wp, b, relu, out, ys, begin, end); });
  }
  if (!in_place) y.copy_(yh);
}

#else  // not x86: the plan never picks it (no AMX)

void amx_direct_fprop(const Conv2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      bool, bool) {
  TORCH_CHECK(false, "cuconv: amx_direct needs AMX");
}

#endif

}  // namespace cuconv::cpu
