// Depthwise convolutions on the CPU, all three passes, both layouts, float32 and float64.
//
// Channels sit in vector lanes, in blocks of 64 bytes (16 float or 8 double channels): each lane is
// one channel's own chain of multiply-adds, and no lanes are ever added together. Every pass walks
// its output pixels per image, band of rows and block, gathering each pixel's taps:
//  - NHWC full blocks without a multiplier read their source in place, all blocks of a pixel in one
//    work item. A border pixel drops the taps that leave the source, so the pixels are grouped in
//    segments that share a tap list (the interior, each border row and column class).
//  - Every other block (NCHW, the last partial block, a multiplier's) copies its lanes of the band's
//    source rows into a zero-bordered buffer, [row][col][lane] (NHWC: 64 bytes per pixel; NCHW: the
//    block's planes transposed, cpu/transpose.h), where every pixel takes every tap; its output goes
//    through a [pixel][lane] buffer transposed (or copied) out. A multiplier m maps lane k of a
//    forward or grad-weight block to input channel k / m, and gives the grad input m copies per
//    block, copy j holding output channel c * m + j of each input channel c.
//
// The grad input is a gather too: the input pixels (h, w) with (h + pad_h) % stride_h == a and
// (w + pad_w) % stride_w == b receive only the taps r, s with r * dil_h % stride_h == a and
// s * dil_w % stride_w == b, each from grad_output pixel (u - (r * dil_h - a) / stride_h, ...) where
// u = (h + pad_h) / stride_h. So each phase (a, b) is a list of taps at fixed offsets, and every input
// pixel is one lane-wise sum, written once (no scatter, no col2im). Phases no tap reaches are zeros.
//
// The grad weight keeps one vector of sums per tap and block: the batch in the plan's fixed chunks,
// each chunk's images summed inside each segment, pixel by pixel in order, then the chunks' partials
// added in order. Its bands and pixel order depend on the shapes only, so the bits do not depend on
// the thread count.
//
// Row kernels: where a segment's taps come in kernel rows one source pixel apart (3x3, 5x5, 7x7
// layers and the grad input's phases), several output pixels of a row load the source pixels under
// them once per kernel row instead of once per tap; they sum in the same order.
//
// The vector code is written once with GCC vector extensions (no intrinsics) and inlined into one
// function per ISA path: AVX-512 (zmm), AVX2 (ymm, two per block) and portable (16-byte vectors,
// SSE2 or NEON). Each output is the same chain on every path: init (bias or 0), then one multiply-add
// per tap in tap order (grad weight: per pixel in order). The vector paths contract each
// multiply-add into an FMA, so AVX-512 and AVX2 give the same bits; the portable path (x86-64
// without FMA) rounds the product and the sum separately, so its last bits differ.
#include "cpu/conv2d/depthwise.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/conv2d/operands.h"
#include "cpu/scratch.h"
#include "cpu/sizes.h"
#include "cpu/transpose.h"

// The helpers below pass vectors by value and are always inlined into the per-ISA functions, so
// no call ever passes them: GCC's note that such calls change ABI between targets does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace cuconv::cpu {
namespace {

constexpr int64_t kBlockBytes = 64;  // a channel block: one zmm, one cache line
template <typename T>
constexpr int64_t kLanes = kBlockBytes / int64_t(sizeof(T));
// Each band's copy of its source rows stays within this, so it and the band's output stay in L2.
constexpr int64_t kBandBytes = int64_t(256) << 10;

// The row kernel (gather_row) takes taps in rows of these many, one source pixel apart, for output
// pixels `step` source pixels apart: the kernel rows of 3x3, 5x5 and 7x7 layers, and their grad
// inputs' phases. It computes `row_pixels` pixels of a row at a time (its register block).
bool row_kernel(int64_t taps, int64_t step) {
  return step == 1 ? taps == 2 || taps == 3 || taps == 4 || taps == 5 || taps == 7
                   : step == 2 && (taps == 3 || taps == 5 || taps == 7);
}
constexpr int row_pixels(int bytes, int64_t step) { return bytes == 64 ? 8 : step == 1 ? 4 : 3; }
constexpr int isa_bytes(Isa isa) { return is_avx512(isa) ? 64 : isa == Isa::avx2 ? 32 : 16; }

// ----------------------------------------------------------------------------------------- geometry

// One axis (rows or columns) of a pass: output index o reads source index origin[o] + delta of each
// tap of its phase. The taps of a phase are listed with delta monotonic, so those that land inside
// the source are a contiguous run of the list.
struct Axis {
  int64_t src = 0;                               // the source's extent
  std::vector<std::vector<int64_t>> k, delta;    // per phase: kernel index and offset of each tap
  std::vector<int64_t> phase, origin;            // per output index
};

// Forward and grad weight: output o reads input o * stride - pad + k * dil, one phase.
Axis window_axis(int64_t out, int64_t src, int64_t kernel, int64_t stride, int64_t pad, int64_t dil) {
  Axis x;
  x.src = src, x.k.resize(1), x.delta.resize(1);
  for (int64_t k = 0; k < kernel; ++k) x.k[0].push_back(k), x.delta[0].push_back(k * dil);
  for (int64_t o = 0; o < out; ++o) x.phase.push_back(0), x.origin.push_back(o * stride - pad);
  return x;
}

// Grad input (see the top of the file): input index h of phase a = (h + pad) % stride, u = (h + pad)
// / stride, takes the taps k with k * dil % stride == a from grad_output index u - (k * dil - a) / stride.
Axis phase_axis(int64_t out, int64_t src, int64_t kernel, int64_t stride, int64_t pad, int64_t dil) {
  Axis x;
  x.src = src, x.k.resize(stride), x.delta.resize(stride);
  for (int64_t k = kernel - 1; k >= 0; --k) {  // by increasing offset, as the forward's taps
    const int64_t a = k * dil % stride;
    x.k[a].push_back(k), x.delta[a].push_back(-(k * dil - a) / stride);
  }
  for (int64_t h = 0; h < out; ++h) x.phase.push_back((h + pad) % stride), x.origin.push_back((h + pad) / stride);
  return x;
}

// Indices [o0, o1) of an axis grouped by phase and by the run [lo, hi) of its taps that land inside
// the source (every tap when `clip` is false: a zero-bordered copy), in order of first appearance.
struct AxisClass {
  int64_t phase, lo, hi;
  std::vector<int64_t> idx;
};
std::vector<AxisClass> axis_classes(const Axis& x, int64_t o0, int64_t o1, bool clip) {
  std::vector<AxisClass> out;
  for (int64_t o = o0; o < o1; ++o) {
    const int64_t ph = x.phase[o], n = int64_t(x.delta[ph].size());
    int64_t lo = clip ? n : 0, hi = clip ? 0 : n;
    for (int64_t t = 0; t < n && clip; ++t) {
      const int64_t i = x.origin[o] + x.delta[ph][t];
      if (i >= 0 && i < x.src) lo = std::min(lo, t), hi = t + 1;
    }
    if (lo >= hi) lo = hi = 0;
    auto c = std::find_if(out.begin(), out.end(), [&](const AxisClass& c) { return c.phase == ph && c.lo == lo && c.hi == hi; });
    if (c == out.end()) out.push_back({ph, lo, hi, {}}), c = out.end() - 1;
    c->idx.push_back(o);
  }
  return out;
}

// The source indices that indices [o0, o1) read through their phases' taps: [lo, hi), empty if none.
void axis_reach(const Axis& x, int64_t o0, int64_t o1, int64_t& lo, int64_t& hi) {
  lo = hi = 0;
  bool any = false;
  for (int64_t o = o0; o < o1; ++o) {
    const std::vector<int64_t>& d = x.delta[x.phase[o]];
    if (d.empty()) continue;
    const auto [dmin, dmax] = std::minmax_element(d.begin(), d.end());
    lo = any ? std::min(lo, x.origin[o] + *dmin) : x.origin[o] + *dmin;
    hi = any ? std::max(hi, x.origin[o] + *dmax + 1) : x.origin[o] + *dmax + 1;
    any = true;
  }
}

// Where a pass reads and writes, per band of output rows. The source is either read in place (the
// taps that leave it are dropped, per class of border pixels) or, per band, copied into a
// zero-bordered buffer of blocked pixels (every tap kept), rows [in0, in1) and columns [col0, col0 +
// width) of the source. The band's output pixels are computed in segments, each a run of pixels
// that share one tap list.
struct Segment {
  int64_t begin, end;          // pixels: in_off / out_idx entries
  int64_t tap_begin, tap_end;  // taps: tap_off / tap_w entries
  // Its pixels are rows of row_len (in row order, or, for the forward's and grad input's row kernel,
  // the first `chunks` x row_pixels of them runs of a row and the rest after them), consecutive
  // pixels of a row `step` source pixels apart; its taps rows of `row_taps` one source pixel apart
  // (0: they are not).
  int64_t row_len, chunks, step, row_taps;
};
struct Band {
  int64_t out0, out1;  // output rows
  int64_t in0, in1;    // source rows copied
  int64_t seg_begin, seg_end;
};
struct Geometry {
  bool copy = false;
  int64_t col0 = 0, width = 0;  // source columns copied
  int64_t in_rows = 0;          // source rows of the largest band's copy
  int64_t out_pixels = 0;       // output pixels of the largest band
  std::vector<Band> bands;
  std::vector<Segment> segs;
  std::vector<int64_t> in_off;   // per pixel: its origin in the band's copy or the source (elements)
  std::vector<int64_t> out_idx;  // per pixel: its offset in the band's output rows (elements)
  std::vector<int64_t> tap_off;  // per tap: offset from the pixel's origin (elements)
  std::vector<int64_t> tap_w;    // per tap: its weight vector in the block's weights (elements)
};

// The output rows x columns the axes give, in bands of `band_rows`. The source's pixels (in place,
// copy false) or the copy's are `pix` elements apart, the output's `out_pix`; a copy holds `copies`
// sources one after another (the
// grad input's copy j per input channel c, of output channel c * m + j), whose taps take the
// weights of row j of the block's weights. `bytes`: the ISA path's vector width, for the row
// kernel's runs (0: none, pixels in row order, the same on every path).
template <typename T>
Geometry make_geometry(const Axis& rows, const Axis& cols, int64_t S, int64_t RS, bool copy, int64_t pix,
                       int64_t out_pix, int64_t copies, int64_t band_rows, int bytes) {
  constexpr int64_t CB = kLanes<T>;
  Geometry g;
  g.copy = copy;
  const int64_t out_h = int64_t(rows.phase.size()), out_w = int64_t(cols.phase.size());
  int64_t col_hi = 0;
  axis_reach(cols, 0, out_w, g.col0, col_hi);
  g.width = col_hi - g.col0;
  const int64_t row_pitch = (copy ? g.width : cols.src) * pix, pix_pitch = pix;
  const std::vector<AxisClass> ccls = axis_classes(cols, 0, out_w, !copy);
  // Tap lists by (row class, column class) key; their offsets wait for the copies' size.
  std::vector<std::array<int64_t, 6>> keys;
  std::vector<int64_t> seg_key;
  for (int64_t o0 = 0; o0 < out_h; o0 += band_rows) {
    Band b{o0, std::min(out_h, o0 + band_rows), 0, 0, int64_t(g.segs.size()), 0};
    if (copy) axis_reach(rows, b.out0, b.out1, b.in0, b.in1);
    const int64_t row0 = copy ? b.in0 : 0, col0 = copy ? g.col0 : 0;
    for (const AxisClass& rc : axis_classes(rows, b.out0, b.out1, !copy))
      for (const AxisClass& cc : ccls) {
        const int64_t begin = int64_t(g.in_off.size());
        // A pixel's origin is its first tap's source pixel (inside the source when any tap is), the
        // taps' offsets relative to it: no address outside the source is ever formed.
        const bool tapped = rc.lo < rc.hi && cc.lo < cc.hi;
        const int64_t dr = tapped ? rows.delta[rc.phase][rc.lo] : 0, dc = tapped ? cols.delta[cc.phase][cc.lo] : 0;
        auto pixel = [&](int64_t r, int64_t c) {
          g.in_off.push_back(tapped ? (rows.origin[r] + dr - row0) * row_pitch + (cols.origin[c] + dc - col0) * pix_pitch : 0);
          g.out_idx.push_back(((r - b.out0) * out_w + c) * out_pix);
        };
        // The row kernel's runs of each row first, then every row's rest.
        const int64_t step = cc.idx.size() > 1 ? cols.origin[cc.idx[1]] - cols.origin[cc.idx[0]] : 1;
        bool unit = tapped;
        for (int64_t tc = cc.lo; unit && tc + 1 < cc.hi; ++tc)
          unit = cols.delta[cc.phase][tc + 1] - cols.delta[cc.phase][tc] == 1;
        const int64_t np = row_pixels(bytes, step), ns = cc.hi - cc.lo;
        const int64_t runs = bytes > 0 && unit && row_kernel(ns, step) ? int64_t(cc.idx.size()) / np : 0;
        for (int64_t r : rc.idx)
          for (int64_t c = 0; c < runs * np; ++c) pixel(r, cc.idx[c]);
        for (int64_t r : rc.idx)
          for (int64_t c = runs * np; c < int64_t(cc.idx.size()); ++c) pixel(r, cc.idx[c]);
        const std::array<int64_t, 6> key{rc.phase, rc.lo, rc.hi, cc.phase, cc.lo, cc.hi};
        auto it = std::find(keys.begin(), keys.end(), key);
        if (it == keys.end()) keys.push_back(key), it = keys.end() - 1;
        g.segs.push_back({begin, int64_t(g.in_off.size()), 0, 0, int64_t(cc.idx.size()), runs * int64_t(rc.idx.size()),
                          step, unit ? ns : 0});
        seg_key.push_back(it - keys.begin());
      }
    b.seg_end = int64_t(g.segs.size());
    g.bands.push_back(b);
    g.in_rows = std::max(g.in_rows, b.in1 - b.in0);
    g.out_pixels = std::max(g.out_pixels, (b.out1 - b.out0) * out_w);
  }
  const int64_t copy_size = g.in_rows * g.width * pix;
  std::vector<int64_t> key_tap0;
  for (const auto& [rph, rlo, rhi, cph, clo, chi] : keys) {
    key_tap0.push_back(int64_t(g.tap_off.size()));
    for (int64_t j = 0; j < copies; ++j)
      for (int64_t tr = rlo; tr < rhi; ++tr)
        for (int64_t tc = clo; tc < chi; ++tc) {
          const int64_t dr = rows.delta[rph][tr] - rows.delta[rph][rlo], dc = cols.delta[cph][tc] - cols.delta[cph][clo];
          g.tap_off.push_back(j * copy_size + dr * row_pitch + dc * pix_pitch);
          g.tap_w.push_back((j * RS + rows.k[rph][tr] * S + cols.k[cph][tc]) * CB);
        }
  }
  key_tap0.push_back(int64_t(g.tap_off.size()));
  for (size_t i = 0; i < g.segs.size(); ++i)
    g.segs[i].tap_begin = key_tap0[seg_key[i]], g.segs[i].tap_end = key_tap0[seg_key[i] + 1];
  return g;
}

// Output rows per band: a copy of about `in_per_out` source rows per output row, `row_bytes` each,
// within kBandBytes, and enough bands that every thread has work when the `items` (images x blocks)
// are few. items = 0: by shape only (the grad weight, whose sums' order follows the bands).
int64_t rows_per_band(int64_t out_rows, double in_per_out, int64_t row_bytes, int64_t items) {
  if (out_rows <= 0) return 1;
  const double band_bytes = double(out_rows) * in_per_out * double(row_bytes);
  int64_t bands = std::max<int64_t>(1, int64_t(band_bytes / double(kBandBytes)) + 1);
  if (items > 0) bands = std::max(bands, ceil_div(at::get_num_threads(), items));
  return ceil_div(out_rows, std::min(bands, out_rows));
}

// ------------------------------------------------------------------------------------------- copies

// One image of an NCHW or NHWC tensor of C channels.
template <typename T>
struct Image {
  T* base;
  int64_t C, H, W;
  bool channels_last;
  T* at(int64_t c, int64_t h, int64_t w) const {
    return channels_last ? base + (h * W + w) * C + c : base + (c * H + h) * W + w;
  }
};

// The source channel of each lane of a block: lane i reads channel first + i * step, or, for a
// forward or grad-weight block with a multiplier, (k0 + i) / m.
struct Lanes {
  int64_t n = 0;  // lanes in use; the rest are zeros
  int64_t first = 0, step = 1;
  int64_t div = 1;  // > 1: lane i reads channel (first + i) / div
  int64_t channel(int64_t i) const { return div > 1 ? (first + i) / div : first + i * step; }
};

// dst[i - i0][j][lane] = src(lane's channel, i, col0 + j) for rows [i0, i1) and j < width, zero outside
// the source and in lanes past l.n.
template <typename T>
void load_rows(Isa isa, const Image<const T>& src, const Lanes& l, int64_t i0, int64_t i1, int64_t col0,
               int64_t width, T* dst) {
  constexpr int64_t CB = kLanes<T>;
  int64_t lo = 0, hi = 0;  // columns j inside the source
  valid_range(col0, 1, src.W, width, lo, hi);
  const int64_t w0 = col0 + lo, n = hi - lo;
  // NCHW rows shorter than transpose()'s 8 x 8 blocks: the rows inside the source transposed in one
  // call (contiguous in each plane), then copied to their places.
  const int64_t ia = std::clamp<int64_t>(i0, 0, src.H), ib = std::clamp<int64_t>(i1, 0, src.H);
  const bool joined = !src.channels_last && l.div == 1 && src.W < 8 && ib > ia && n > 0;
  T* tmp = joined ? scratch<T>(Scratch::extra, (ib - ia) * src.W * CB) : nullptr;
  if (joined) transpose(isa, src.at(l.first, ia, 0), l.step * src.H * src.W, tmp, CB, l.n, (ib - ia) * src.W);
  for (int64_t i = i0; i < i1; ++i, dst += width * CB) {
    if (i < 0 || i >= src.H || n <= 0) {
      std::fill(dst, dst + width * CB, T(0));
      continue;
    }
    std::fill(dst, dst + lo * CB, T(0));
    std::fill(dst + hi * CB, dst + width * CB, T(0));
    T* d = dst + lo * CB;
    if (joined) {
      std::memcpy(d, tmp + ((i - ia) * src.W + w0) * CB, n * CB * sizeof(T));
    } else if (!src.channels_last && l.div == 1) {  // the lanes' planes evenly spaced: one transpose
      transpose(isa, src.at(l.first, i, w0), l.step * src.H * src.W, d, CB, l.n, n);
    } else if (src.channels_last && l.div == 1 && l.step == 1) {  // each pixel's lanes contiguous
      const T* s = src.at(l.first, i, w0);
      if (l.n == CB)
        for (int64_t j = 0; j < n; ++j) std::memcpy(d + j * CB, s + j * src.C, CB * sizeof(T));
      else
        for (int64_t j = 0; j < n; ++j) std::memcpy(d + j * CB, s + j * src.C, l.n * sizeof(T));
    } else {  // lane by lane (a multiplier's lanes): each lane's channel once per row
      const T* lane[CB];
      for (int64_t c = 0; c < l.n; ++c) lane[c] = src.at(l.channel(c), i, w0);
      const int64_t ps = src.channels_last ? src.C : 1;  // elements between pixels
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < l.n; ++c) d[j * CB + c] = lane[c][j * ps];
    }
    if (l.n < CB)
      for (int64_t j = 0; j < n; ++j) std::fill(d + j * CB + l.n, d + (j + 1) * CB, T(0));
  }
}

// Pixels [pix0, pix0 + npix) of dst's rows (flattened h * W + w) = stage[pixel][lane], for the nl
// channels c0.. of dst.
template <typename T>
void store_pixels(Isa isa, const T* stage, int64_t npix, const Image<T>& dst, int64_t c0, int64_t nl, int64_t pix0) {
  constexpr int64_t CB = kLanes<T>;
  if (!dst.channels_last) return transpose(isa, stage, CB, dst.at(c0, 0, 0) + pix0, dst.H * dst.W, npix, nl);
  T* d = dst.base + pix0 * dst.C + c0;
  if (nl == CB)  // a fixed-size copy the compiler inlines, not a memcpy call per pixel
    for (int64_t j = 0; j < npix; ++j) std::memcpy(d + j * dst.C, stage + j * CB, CB * sizeof(T));
  else
    for (int64_t j = 0; j < npix; ++j) std::memcpy(d + j * dst.C, stage + j * CB, nl * sizeof(T));
}

// ---------------------------------------------------------------------------------- vector kernels

// What both kernels take from a segment of a band (Segment), and the source's layout.
struct SegmentArgs {
  const int64_t *in_off = nullptr, *out_idx = nullptr;
  int64_t pixels = 0;
  const int64_t *tap_off = nullptr, *tap_w = nullptr;
  int64_t taps = 0;
  int64_t row_len = 0, chunks = 0, step = 1, row_taps = 0;
  int64_t pix = 0;     // elements between the source's pixels
  int64_t blocks = 1;  // channel blocks of each pixel (in place: kLanes apart)

  void set(const Geometry& g, const Segment& s) {
    in_off = &g.in_off[s.begin], out_idx = &g.out_idx[s.begin], pixels = s.end - s.begin;
    tap_off = &g.tap_off[s.tap_begin], tap_w = &g.tap_w[s.tap_begin], taps = s.tap_end - s.tap_begin;
    row_len = s.row_len, chunks = s.chunks, step = s.step, row_taps = s.row_taps;
  }
};

template <typename T>
struct GatherArgs : SegmentArgs {
  const T* in;  // the band's copy, or the source image
  T* out;       // the band's output rows (or their buffer)
  const T* w;     // the first block's weights
  const T* init;  // the first block's bias, or null
  bool relu;
  int64_t w_block = 0;   // elements between the blocks' weights
  int64_t prefetch = 0;  // bytes past each pixel's origin to prefetch (0: none)
};

template <typename T>
struct WgradArgs : SegmentArgs {
  const T* in;  // the band's copy of the input, or the input image
  const T* gy;  // the band's grad_output rows (or their copy)
  T* acc;       // the first block's running sums, one vector per tap at its weight's place
  int64_t acc_block = 0;                           // elements between the blocks' sums
  int64_t images = 1, in_image = 0, gy_image = 0;  // images summed, and their strides in `in` and `gy`
};

// The kernel `run` on each segment of a band, its arguments `a` set to the segment.
template <class Args, class Run>
void for_segments(const Geometry& g, const Band& band, Args& a, Run run) {
  for (int64_t s = band.seg_begin; s < band.seg_end; ++s) a.set(g, g.segs[s]), run(a);
}

// One ISA path's vectors: `Bytes` wide, kRegs of them per channel block. kPixels (forward and grad
// input) and kTaps (grad weight) size the register blocks: 8 x 1 zmm, 6 x 2 ymm or 3 x 4 xmm sums,
// which leave room for the operands in 32 zmm or 16 ymm / xmm registers. They change no sum.
template <typename T, int Bytes>
struct Simd {
  typedef T V __attribute__((vector_size(Bytes)));
  static constexpr int kWidth = Bytes / int(sizeof(T));
  static constexpr int kRegs = int(kBlockBytes) / Bytes;
  static constexpr int kPixels = Bytes == 64 ? 8 : Bytes == 32 ? 6 : 3;
  static constexpr int kTaps = Bytes == 64 ? 16 : Bytes == 32 ? 6 : 3;
};

template <class V, typename T>
CUCONV_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V, typename T>
CUCONV_INLINE void store(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// NP output pixels of channel block b: init + the taps in order, one multiply-add each, then
// max(., 0) when relu (a NaN stays NaN, as torch.relu).
template <typename T, int Bytes, int NP>
CUCONV_INLINE void gather_pixels(const GatherArgs<T>& a, int64_t i0, int64_t b) {
  using S = Simd<T, Bytes>;
  using V = typename S::V;
  constexpr int L = S::kWidth, NV = S::kRegs;
  constexpr int64_t CB = kLanes<T>;
  const T* in[NP];
  T* out[NP];
#pragma GCC unroll 8
  for (int j = 0; j < NP; ++j) {
    const int64_t i = i0 + j;
    in[j] = a.in + a.in_off[i] + b * CB, out[j] = a.out + a.out_idx[i] + b * CB;
  }
  const T* w = a.w + b * a.w_block;
  if (a.prefetch)
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) __builtin_prefetch(reinterpret_cast<const void*>(uintptr_t(in[j]) + a.prefetch));
  V acc[NP][NV];
#pragma GCC unroll 8
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[j][v] = a.init ? load<V>(a.init + b * a.w_block + v * L) : V{};
  for (int64_t t = 0; t < a.taps; ++t) {
    const T* wt = w + a.tap_w[t];
    const int64_t off = a.tap_off[t];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const V wv = load<V>(wt + v * L);
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j) acc[j][v] += wv * load<V>(in[j] + off + v * L);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store(out[j] + v * L, a.relu ? (acc[j][v] < V{} ? V{} : acc[j][v]) : acc[j][v]);
}

// Pixels [i, end) in steps of NP, then the rest in steps of NP / 2, NP / 4, .., 1: a short segment
// (border pixels of one tap class) computes no pixel twice.
template <typename T, int Bytes, int NP>
CUCONV_INLINE void gather_steps(const GatherArgs<T>& a, int64_t i, int64_t end) {
  for (; i + NP <= end; i += NP)
    for (int64_t b = 0; b < a.blocks; ++b) gather_pixels<T, Bytes, NP>(a, i, b);
  if constexpr (NP > 1) gather_steps<T, Bytes, NP / 2>(a, i, end);
}

// NP consecutive pixels of a segment row from pixel i0, channel block b, whose taps come in rows of
// NS one source pixel apart and whose pixels are STEP source pixels apart: per tap row, the
// (NP - 1) * STEP + NS source pixels under them are loaded once, not once per tap. The same sums
// in the same order as gather_pixels.
template <typename T, int Bytes, int NP, int NS, int STEP>
CUCONV_INLINE void gather_row(const GatherArgs<T>& a, int64_t i0, int64_t b) {
  using S = Simd<T, Bytes>;
  using V = typename S::V;
  constexpr int L = S::kWidth, NV = S::kRegs, NX = (NP - 1) * STEP + NS;
  constexpr int64_t CB = kLanes<T>;
  const T* x0 = a.in + a.in_off[i0] + b * CB;
  const T* w = a.w + b * a.w_block;
  if (a.prefetch)
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j)
      __builtin_prefetch(reinterpret_cast<const void*>(uintptr_t(x0 + j * STEP * a.pix) + a.prefetch));
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {  // one register of the block at a time: NX + NP + 1 registers
    V acc[NP];
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) acc[j] = a.init ? load<V>(a.init + b * a.w_block + v * L) : V{};
    for (int64_t r = 0; r < a.taps; r += NS) {
      const T* xr = x0 + a.tap_off[r] + v * L;
      V xs[NX];
#pragma GCC unroll 32
      for (int k = 0; k < NX; ++k) xs[k] = load<V>(xr + k * a.pix);
#pragma GCC unroll 8
      for (int t = 0; t < NS; ++t) {
        const V wv = load<V>(w + a.tap_w[r + t] + v * L);
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) acc[j] += wv * xs[j * STEP + t];
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j)
      store(a.out + a.out_idx[i0 + j] + b * CB + v * L,
            a.relu ? (acc[j] < V{} ? V{} : acc[j]) : acc[j]);
  }
}

// A segment's row runs by gather_row, then its other pixels by gather_steps.
template <typename T, int Bytes, int NS, int STEP>
CUCONV_INLINE void gather_rows(const GatherArgs<T>& a) {
  constexpr int NP = row_pixels(Bytes, STEP);
  for (int64_t i = 0; i < a.chunks * NP; i += NP)
    for (int64_t b = 0; b < a.blocks; ++b) gather_row<T, Bytes, NP, NS, STEP>(a, i, b);
  gather_steps<T, Bytes, Simd<T, Bytes>::kPixels>(a, a.chunks * NP, a.pixels);
}

template <typename T, int Bytes>
CUCONV_INLINE void gather(const GatherArgs<T>& a) {
  const int64_t ns = a.chunks > 0 ? a.row_taps : 0;  // a.chunks > 0: row_kernel() holds
  if (a.step == 1 && ns == 2) return gather_rows<T, Bytes, 2, 1>(a);
  if (a.step == 1 && ns == 3) return gather_rows<T, Bytes, 3, 1>(a);
  if (a.step == 1 && ns == 4) return gather_rows<T, Bytes, 4, 1>(a);
  if (a.step == 1 && ns == 5) return gather_rows<T, Bytes, 5, 1>(a);
  if (a.step == 1 && ns == 7) return gather_rows<T, Bytes, 7, 1>(a);
  if (a.step == 2 && ns == 3) return gather_rows<T, Bytes, 3, 2>(a);
  if (a.step == 2 && ns == 5) return gather_rows<T, Bytes, 5, 2>(a);
  if (a.step == 2 && ns == 7) return gather_rows<T, Bytes, 7, 2>(a);
  gather_steps<T, Bytes, Simd<T, Bytes>::kPixels>(a, 0, a.pixels);
}

// NT taps' sums of channel block b (NT x kRegs registers) over the images' pixels, image by image
// in pixel order.
template <typename T, int Bytes, int NT>
CUCONV_INLINE void wgrad_taps(const WgradArgs<T>& a, const int64_t* off, const int64_t* slot, int64_t b) {
  using S = Simd<T, Bytes>;
  using V = typename S::V;
  constexpr int L = S::kWidth, NV = S::kRegs;
  constexpr int64_t CB = kLanes<T>;
  T* sums = a.acc + b * a.acc_block;
  V acc[NT][NV];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[t][v] = load<V>(sums + slot[t] + v * L);
  for (int64_t n = 0; n < a.images; ++n)
  for (int64_t i = 0; i < a.pixels; ++i) {
    const T* x = a.in + n * a.in_image + a.in_off[i] + b * CB;
    const T* g = a.gy + n * a.gy_image + a.out_idx[i] + b * CB;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const V gv = load<V>(g + v * L);
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) acc[t][v] += gv * load<V>(x + off[t] + v * L);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store(sums + slot[t] + v * L, acc[t][v]);
}

template <typename T, int Bytes, int... NT>
CUCONV_INLINE void wgrad_group(const WgradArgs<T>& a, int64_t t0, int64_t nt, int64_t b,
                               std::integer_sequence<int, NT...>) {
  ((nt == NT + 1 ? wgrad_taps<T, Bytes, NT + 1>(a, a.tap_off + t0, a.tap_w + t0, b) : void()), ...);
}

// AVX-512: NR rows of NS taps (one source pixel apart), channel block b, over segment rows whose
// pixels are STEP source pixels apart. Per 4 pixels of a row and tap row, the 3 * STEP + NS source
// pixels under them are loaded once, not once per tap; the rest of a row goes pixel by pixel. Each
// sum still takes the pixels in order: the same sums as wgrad_taps.
template <typename T, int NS, int STEP, int NR>
CUCONV_INLINE void wgrad_rows(const WgradArgs<T>& a, const int64_t* off, const int64_t* slot, int64_t b) {
  using V = typename Simd<T, 64>::V;
  constexpr int NP = 4, NX = (NP - 1) * STEP + NS, NT = NR * NS;
  constexpr int64_t CB = kLanes<T>;
  T* sums = a.acc + b * a.acc_block;
  V acc[NT];
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) acc[t] = load<V>(sums + slot[t]);
  for (int64_t n = 0; n < a.images; ++n) {
    const T* in = a.in + n * a.in_image + b * CB;
    const T* gy = a.gy + n * a.gy_image + b * CB;
    for (int64_t r0 = 0; r0 < a.pixels; r0 += a.row_len) {
      int64_t i = r0;
      for (; i + NP <= r0 + a.row_len; i += NP) {
        const T* x = in + a.in_off[i];
        V gv[NP];
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) gv[j] = load<V>(gy + a.out_idx[i + j]);
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) {
          V xs[NX];
#pragma GCC unroll 32
          for (int k = 0; k < NX; ++k) xs[k] = load<V>(x + off[r * NS] + k * a.pix);
#pragma GCC unroll 8
          for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
            for (int t = 0; t < NS; ++t) acc[r * NS + t] += gv[j] * xs[j * STEP + t];
        }
      }
      for (; i < r0 + a.row_len; ++i) {
        const T* x = in + a.in_off[i];
        const V g = load<V>(gy + a.out_idx[i]);
#pragma GCC unroll 32
        for (int t = 0; t < NT; ++t) acc[t] += g * load<V>(x + off[t]);
      }
    }
  }
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) store(sums + slot[t], acc[t]);
}

// Tap rows in groups of NR (as even as can be), each group one wgrad_rows pass over the pixels.
template <typename T, int NS, int STEP, int NR>
CUCONV_INLINE void wgrad_row_groups(const WgradArgs<T>& a, int64_t b) {
  const int64_t rows = a.taps / NS, groups = ceil_div(rows, NR);
  for (int64_t grp = 0, r0 = 0; grp < groups; ++grp) {
    const int64_t nr = rows / groups + (grp < rows % groups ? 1 : 0);
    const int64_t* off = a.tap_off + r0 * NS;
    const int64_t* slot = a.tap_w + r0 * NS;
    if (nr == NR) wgrad_rows<T, NS, STEP, NR>(a, off, slot, b);
    if constexpr (NR > 1)
      if (nr == NR - 1) wgrad_rows<T, NS, STEP, NR - 1>(a, off, slot, b);
    if constexpr (NR > 2)
      if (nr == NR - 2) wgrad_rows<T, NS, STEP, NR - 2>(a, off, slot, b);
    r0 += nr;
  }
}

// Per channel block: on AVX-512, segments of rows of 3, 5 or 7 taps and at least 4 pixels (pixels 1
// or 2 apart) by wgrad_rows, up to 28 registers (NR rows of sums, 4 of grad_output, the source
// pixels); otherwise the taps in groups of at most kTaps (sizes as even as can be), each group one
// pass over the pixels.
template <typename T, int Bytes>
CUCONV_INLINE void wgrad(const WgradArgs<T>& a) {
  constexpr int NT = Simd<T, Bytes>::kTaps;
  const int64_t groups = ceil_div(a.taps, NT);
  const int64_t ns = Bytes == 64 && a.row_len >= 4 && a.row_taps > 0 && a.taps % a.row_taps == 0 ? a.row_taps : 0;
  for (int64_t b = 0; b < a.blocks; ++b) {
    if constexpr (Bytes == 64) {
      if (a.step == 1 && ns == 3) { wgrad_row_groups<T, 3, 1, 3>(a, b); continue; }
      if (a.step == 1 && ns == 5) { wgrad_row_groups<T, 5, 1, 3>(a, b); continue; }
      if (a.step == 1 && ns == 7) { wgrad_row_groups<T, 7, 1, 2>(a, b); continue; }
      if (a.step == 2 && ns == 3) { wgrad_row_groups<T, 3, 2, 3>(a, b); continue; }
      if (a.step == 2 && ns == 5) { wgrad_row_groups<T, 5, 2, 2>(a, b); continue; }
      if (a.step == 2 && ns == 7) { wgrad_row_groups<T, 7, 2, 1>(a, b); continue; }
    }
    for (int64_t grp = 0, t0 = 0; grp < groups; ++grp) {
      const int64_t nt = a.taps / groups + (grp < a.taps % groups ? 1 : 0);
      wgrad_group<T, Bytes>(a, t0, nt, b, std::make_integer_sequence<int, NT>());
      t0 += nt;
    }
  }
}

// The vector code, compiled once per ISA path: a gather (forward, grad input) or a grad-weight call.
template <typename T, int Bytes>
CUCONV_INLINE void run_kernel(const GatherArgs<T>* g, const WgradArgs<T>* w) {
  if (g) gather<T, Bytes>(*g);
  else wgrad<T, Bytes>(*w);
}
template <typename T>
CUCONV_AVX512 void kernel_avx512(const GatherArgs<T>* g, const WgradArgs<T>* w) { run_kernel<T, 64>(g, w); }
template <typename T>
CUCONV_AVX2 void kernel_avx2(const GatherArgs<T>* g, const WgradArgs<T>* w) { run_kernel<T, 32>(g, w); }
template <typename T>
void kernel_portable(const GatherArgs<T>* g, const WgradArgs<T>* w) { run_kernel<T, 16>(g, w); }

template <typename T>
struct Kernels {
  void (*run)(const GatherArgs<T>*, const WgradArgs<T>*);
  void gather(const GatherArgs<T>& a) const { run(&a, nullptr); }
  void wgrad(const WgradArgs<T>& a) const { run(nullptr, &a); }
};
template <typename T>
Kernels<T> kernels(Isa isa) {
  return {is_avx512(isa) ? &kernel_avx512<T> : isa == Isa::avx2 ? &kernel_avx2<T> : &kernel_portable<T>};
}

// ------------------------------------------------------------------------------------------- passes

// Per block b of `lanes` channels and per weight row j < rows: out[b][j][t][lane] = w[(b * lanes +
// lane) * rows + j][t] for taps t < RS (zero past `count` channels), then, with a bias, one more
// vector out[b][rows][0][lane] = bias[b * lanes + lane]. Returns the block stride.
template <typename T>
int64_t block_weights(const T* w, const T* bias, int64_t count, int64_t rows, int64_t RS, T* out) {
  constexpr int64_t CB = kLanes<T>;
  const int64_t stride = (rows * RS + (bias ? 1 : 0)) * CB;
  for (int64_t b = 0; b < ceil_div(count, CB); ++b) {
    T* o = out + b * stride;
    std::fill(o, o + stride, T(0));
    for (int64_t i = 0; i < std::min(CB, count - b * CB); ++i) {
      const int64_t c = b * CB + i;
      for (int64_t j = 0; j < rows; ++j)
        for (int64_t t = 0; t < RS; ++t) o[(j * RS + t) * CB + i] = w[(c * rows + j) * RS + t];
      if (bias) o[rows * RS * CB + i] = bias[c];
    }
  }
  return stride;
}

// The geometries of a pass over `count` channels in blocks. The full blocks of an NHWC source whose
// lanes are whole channels (`direct`: no multiplier) read it in place (`pix` elements per pixel), all
// blocks of a pixel in one work item: whole pixels stream through, where one block alone reads one
// line of every pixel. Every other block (NCHW, the last partial one, a multiplier's) is a work item
// of its own, from a zero-bordered copy of its lanes (`copies` sources), its output through a
// [pixel][lane] buffer. Both share the bands. `pix`, `out_pix`: elements between the NHWC source's
// and output's pixels.
template <typename T>
struct Plans {
  Geometry direct, blocked;
  bool has_direct = false;
  int64_t bands = 0;
  std::vector<std::array<int64_t, 2>> groups;  // the blocks of each work item: first, count
  Plans(const Conv2dParams& p, const Axis& rows, const Axis& cols, int64_t count, int64_t copies, bool whole_channels,
        int64_t pix, int64_t out_pix, int64_t items, int bytes) {
    constexpr int64_t CB = kLanes<T>;
    const bool nhwc = p.channels_last && whole_channels;
    has_direct = nhwc && count >= CB;
    const int64_t out_rows = int64_t(rows.phase.size());
    const double in_per_out = double(rows.src * copies) / double(std::max<int64_t>(1, out_rows));
    const int64_t band_rows = rows_per_band(out_rows, in_per_out, (cols.src + p.S) * kBlockBytes, items);
    if (has_direct) direct = make_geometry<T>(rows, cols, p.S, p.R * p.S, false, pix, out_pix, 1, band_rows, bytes);
    if (!nhwc || count % CB != 0)
      blocked = make_geometry<T>(rows, cols, p.S, p.R * p.S, true, CB, CB, copies, band_rows, bytes);
    bands = int64_t((has_direct ? direct : blocked).bands.size());
    const int64_t full = has_direct ? count / CB : 0;
    if (full > 0) groups.push_back({0, full});
    for (int64_t b = full; b < ceil_div(count, CB); ++b) groups.push_back({b, 1});
  }
  const Geometry& of(int64_t nl) const { return has_direct && nl == kLanes<T> ? direct : blocked; }
};

// A gather pass (forward or grad input) from `src` to `dst`, whose pixels' channel blocks are the
// plans' groups: per image, group and band, the segments from the source in place or from its
// blocked copies (copy j of block b: lanes(j, b's first channel, its lanes)), then a staged output
// out. `wb`: per block the weights (and with `bias`, the bias after them), `wstride` apart;
// `prefetch`: bytes past each pixel's origin to prefetch in place.
template <typename T, class CopyLanes>
void run_gather(Isa isa, const Plans<T>& plans, int64_t N, const Image<const T>& src, const Image<T>& dst,
                int64_t copies, CopyLanes lanes, const T* wb, int64_t wstride, int64_t RS, bool bias, bool relu,
                int64_t prefetch) {
  constexpr int64_t CB = kLanes<T>;
  const Geometry& gb = plans.blocked;
  const int64_t copy = gb.in_rows * gb.width * CB;
  const Kernels<T> k = kernels<T>(isa);
  const int64_t bands = plans.bands, groups = int64_t(plans.groups.size());
  at::parallel_for(0, N * groups * bands, 1, [&](int64_t begin, int64_t end) {
    T* buf = scratch<T>(Scratch::input, copies * copy);
    T* stage = scratch<T>(Scratch::output, gb.out_pixels * CB);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / (groups * bands);
      const auto [b0, count] = plans.groups[item / bands % groups];
      const int64_t c0 = b0 * CB, nl = std::min(CB, dst.C - c0);
      const Geometry& g = plans.of(nl);
      const Band& band = g.bands[item % bands];
      Image<const T> sn = src;
      Image<T> dn = dst;
      sn.base += n * src.C * src.H * src.W, dn.base += n * dst.C * dst.H * dst.W;
      GatherArgs<T> a;
      if (g.copy) {
        for (int64_t j = 0; j < copies; ++j)
          load_rows(isa, sn, lanes(j, c0, nl), band.in0, band.in1, g.col0, g.width, buf + j * copy);
        a.in = buf, a.out = stage, a.pix = CB;
      } else {
        a.in = sn.at(c0, 0, 0), a.out = dn.at(c0, band.out0, 0), a.pix = src.C;
        a.prefetch = prefetch;
      }
      a.w = wb + b0 * wstride, a.init = bias ? a.w + RS * CB : nullptr, a.relu = relu;
      a.blocks = count, a.w_block = wstride;
      for_segments(g, band, a, [&](const GatherArgs<T>& s) { k.gather(s); });
      if (g.copy) store_pixels(isa, stage, (band.out1 - band.out0) * dst.W, dn, c0, nl, band.out0 * dst.W);
    }
  });
}

}  // namespace

template <typename T>
void depthwise_fprop(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu) {
  constexpr int64_t CB = kLanes<T>;
  const int64_t m = p.K / p.C, RS = p.R * p.S, blocks = ceil_div(p.K, CB);
  const Axis rows = window_axis(p.P, p.H, p.R, p.stride_h, p.pad_h, p.dil_h);
  const Axis cols = window_axis(p.Q, p.W, p.S, p.stride_w, p.pad_w, p.dil_w);
  const Plans<T> plans(p, rows, cols, p.K, 1, m == 1, p.C, p.K, p.N * blocks, isa_bytes(isa));
  T* wb = scratch<T>(Scratch::call, blocks * (RS + 1) * CB);
  const int64_t wstride = block_weights(w, bias, p.K, 1, RS, wb);
  // In place: the input row the output row below adds to its windows, ahead of the hardware
  // prefetchers, which miss the lines a block reads when pixels span several blocks' lines.
  const int64_t prefetch = int64_t(sizeof(T)) * ((p.R - 1) * p.dil_h + p.stride_h) * p.W * p.C;
  run_gather(isa, plans, p.N, Image<const T>{x, p.C, p.H, p.W, p.channels_last},
             Image<T>{y, p.K, p.P, p.Q, p.channels_last}, 1,
             [m](int64_t, int64_t k0, int64_t nl) { return Lanes{nl, k0, 1, m}; },  // lane i: channel (k0 + i) / m
             wb, wstride, RS, bias != nullptr, relu, prefetch);
}

template <typename T>
void depthwise_dgrad(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx) {
  constexpr int64_t CB = kLanes<T>;
  const int64_t m = p.K / p.C, RS = p.R * p.S, blocks = ceil_div(p.C, CB);
  const Axis rows = phase_axis(p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h);
  const Axis cols = phase_axis(p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w);
  const Plans<T> plans(p, rows, cols, p.C, m, m == 1, p.K, p.C, p.N * blocks, isa_bytes(isa));
  T* wb = scratch<T>(Scratch::call, blocks * m * RS * CB);
  const int64_t wstride = block_weights<T>(w, nullptr, p.C, m, RS, wb);
  run_gather(isa, plans, p.N, Image<const T>{gy, p.K, p.P, p.Q, p.channels_last},
             Image<T>{gx, p.C, p.H, p.W, p.channels_last}, m,
             // copy j: lane i holds grad_output channel (c0 + i) * m + j
             [m](int64_t j, int64_t c0, int64_t nl) { return Lanes{nl, c0 * m + j, m, 1}; },
             wb, wstride, RS, false, false, int64_t(sizeof(T)) * p.Q * p.K /* the grad_output row below */);
}

template <typename T>
void depthwise_wgrad(Isa isa, const Conv2dParams& p, int64_t chunks, const T* gy, const T* x, T* gw) {
  constexpr int64_t CB = kLanes<T>;
  const int64_t m = p.K / p.C, RS = p.R * p.S, blocks = ceil_div(p.K, CB);
  const Axis rows = window_axis(p.P, p.H, p.R, p.stride_h, p.pad_h, p.dil_h);
  const Axis cols = window_axis(p.Q, p.W, p.S, p.stride_w, p.pad_w, p.dil_w);
  // Bands and pixel order by shape only (items 0, bytes 0): they are the order of the sums.
  const Plans<T> plans(p, rows, cols, p.K, 1, m == 1, p.C, p.K, 0, 0);
  T* part = scratch<T>(Scratch::call, chunks * blocks * RS * CB);
  const Kernels<T> k = kernels<T>(isa);
  // Work items: a chunk and blocks. In place, a run of full blocks walked together (whole pixels
  // stream through), the full blocks split into as many runs as give every thread two items; other
  // blocks alone. Items change no sum: each block's sums stay one chain per tap and lane.
  std::vector<std::array<int64_t, 2>> groups;
  for (const auto& [b0, nb] : plans.groups) {
    const int64_t runs = nb == 1 ? 1 : std::min(nb, ceil_div(2 * at::get_num_threads(), chunks));
    for (int64_t r = 0; r < runs; ++r) groups.push_back({b0 + r * nb / runs, (r + 1) * nb / runs - r * nb / runs});
  }
  const int64_t ngroups = int64_t(groups.size());
  at::parallel_for(0, chunks * ngroups, 1, [&](int64_t begin, int64_t end) {
    T* buf = scratch<T>(Scratch::input, plans.blocked.in_rows * plans.blocked.width * CB);
    T* stage = scratch<T>(Scratch::output, plans.blocked.out_pixels * CB);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t chunk = item / ngroups;
      const auto [kb, count] = groups[item % ngroups];
      const int64_t k0 = kb * CB, nl = std::min(CB, p.K - k0);
      const Geometry& g = plans.of(nl);
      WgradArgs<T> a;
      a.acc = part + (chunk * blocks + kb) * RS * CB, a.blocks = count, a.acc_block = RS * CB;
      std::fill(a.acc, a.acc + count * RS * CB, T(0));
      const int64_t n0 = chunk * p.N / chunks, n1 = (chunk + 1) * p.N / chunks;
      auto run = [&](const Band& band) { for_segments(g, band, a, [&](const WgradArgs<T>& s) { k.wgrad(s); }); };
      if (!g.copy) {  // NHWC in place: each segment sums over all the chunk's images at once
        a.images = n1 - n0, a.in_image = p.H * p.W * p.C, a.gy_image = p.P * p.Q * p.K, a.pix = p.C;
        for (const Band& band : g.bands) {
          a.in = x + n0 * a.in_image + k0, a.gy = gy + n0 * a.gy_image + band.out0 * p.Q * p.K + k0;
          run(band);
        }
        continue;
      }
      for (int64_t n = n0; n < n1; ++n) {
        const Image<const T> xn{x + n * p.C * p.H * p.W, p.C, p.H, p.W, p.channels_last};
        const Image<const T> gyn{gy + n * p.K * p.P * p.Q, p.K, p.P, p.Q, p.channels_last};
        for (const Band& band : g.bands) {
          load_rows(isa, xn, Lanes{nl, k0, 1, m}, band.in0, band.in1, g.col0, g.width, buf);
          load_rows(isa, gyn, Lanes{nl, k0, 1, 1}, band.out0, band.out1, 0, p.Q, stage);
          a.in = buf, a.gy = stage, a.pix = CB;
          run(band);
        }
      }
    }
  });
  // gw[k][t] = the chunks' partials added in order.
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t kb = begin; kb < end; ++kb)
      for (int64_t i = 0; i < std::min(CB, p.K - kb * CB); ++i)
        for (int64_t t = 0; t < RS; ++t) {
          T sum = part[kb * RS * CB + t * CB + i];
          for (int64_t c = 1; c < chunks; ++c) sum += part[((c * blocks + kb) * RS + t) * CB + i];
          gw[(kb * CB + i) * RS + t] = sum;
        }
  });
}

template void depthwise_fprop<float>(Isa, const Conv2dParams&, const float*, const float*, const float*, float*, bool);
template void depthwise_fprop<double>(Isa, const Conv2dParams&, const double*, const double*, const double*, double*,
                                      bool);
template void depthwise_dgrad<float>(Isa, const Conv2dParams&, const float*, const float*, float*);
template void depthwise_dgrad<double>(Isa, const Conv2dParams&, const double*, const double*, double*);
template void depthwise_wgrad<float>(Isa, const Conv2dParams&, int64_t, const float*, const float*, float*);
template void depthwise_wgrad<double>(Isa, const Conv2dParams&, int64_t, const double*, const double*, double*);

}  // namespace cuconv::cpu
