// max_pool2d on the CPU. Forward: for each output row (NCHW) or output pixel (NHWC) the window
// elements are visited in row-major order, each as one vectorisable pass over the row's outputs
// (NCHW) or the pixel's channels (NHWC) with a branch-free update: take v when v > best, when v is
// NaN (so a NaN wins and the last NaN is reported, as torch) or when nothing was taken yet; a tie
// keeps the first maximum. Padding is never read (acts as -inf); a window that misses the input
// entirely gives -inf and index -1. The same source is compiled for AVX2 with F16C (per-function target
// attribute) and for the baseline ISA; plan.h picks the kernel. Backward: bprop.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/even_odd.h"
// GCC 12's AVX-512 casts and extracts pass a deliberately uninitialised placeholder
// (_mm256_undefined_pd and the like), which -Wmaybe-uninitialized reports once per use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu/convert16.h"
#include "cpu/float32_copies.h"
#include "cpu/max_pool2d/bf16_2x2.h"
#include "cpu/max_pool2d/plan.h"
#include "cpu/transpose.h"
#include "ops/runner.h"

namespace cuconv::cpu {

namespace {

// Window positions are tracked as flat h*W + w in I: int32 next to float (same lane width, so the
// compiler vectorises the update), int64 next to double.
template <typename T>
using PoolIndex = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;


// best[o], pos[o] for o in [lo, hi) against the window element at src[o * stride], flat base + o * stride.
template <int kStride, typename T, typename I>
CUCONV_INLINE void update_strided(const T* src, int stride_rt, int lo, int hi, I base, T* best, I* pos) {
  const int stride = kStride > 0 ? kStride : stride_rt;
  for (int o = lo; o < hi; ++o) {
    const T v = src[o * stride];
    const T b = best[o];
    const I q = pos[o];
    const bool take = (v > b) | (v != v) | (q < 0);
    best[o] = take ? v : b;
    pos[o] = take ? I(base + I(o) * I(stride)) : q;
  }
}

// best[c], pos[c] for all channels against one input pixel at flat position at.
template <typename T, typename I>
CUCONV_INLINE void update_pixel(const T* src, int64_t C, I at, T* best, I* pos) {
  for (int64_t c = 0; c < C; ++c) {
    const T v = src[c];
    const T b = best[c];
    const I q = pos[c];
    const bool take = (v > b) | (v != v) | (q < 0);
    best[c] = take ? v : b;
    pos[c] = take ? at : q;
  }
}

template <typename T>
CUCONV_INLINE void range_of(int64_t offset, int64_t stride, int64_t limit, int64_t count, int& lo, int& hi) {
  int64_t l = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  int64_t h = limit - offset <= 0 ? 0 : (limit - offset + stride - 1) / stride;
  l = std::min(l, count);
  h = std::max(l, std::min(h, count));
  lo = int(l), hi = int(h);
}

// One (n, c) plane, NCHW. pos: a Q-long scratch row.
template <typename T>
CUCONV_INLINE void forward_plane_nchw(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx, PoolIndex<T>* pos) {
  using I = PoolIndex<T>;
  for (int64_t oh = 0; oh < p.P; ++oh) {
    T* best = y + oh * p.Q;
    std::fill(best, best + p.Q, -std::numeric_limits<T>::infinity());
    std::fill(pos, pos + p.Q, I(-1));
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      const int64_t h = oh * p.stride_h - p.pad_h + i * p.dil_h;
      if (h < 0 || h >= p.H) continue;
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const int64_t woff = j * p.dil_w - p.pad_w;
        int lo, hi;
        range_of<T>(woff, p.stride_w, p.W, p.Q, lo, hi);
        const T* src = x + h * p.W + woff;
        const I base = I(h * p.W + woff);
        if (p.stride_w == 1) update_strided<1>(src, 1, lo, hi, base, best, pos);
        else if (p.stride_w == 2) update_strided<2>(src, 2, lo, hi, base, best, pos);
        else update_strided<0>(src, int(p.stride_w), lo, hi, base, best, pos);
      }
    }
    int64_t* out = idx + oh * p.Q;
    for (int64_t o = 0; o < p.Q; ++o) out[o] = pos[o];
  }
}

// One output pixel (n, oh, ow), NHWC: x is image n, y/idx point at the pixel's C outputs.
template <typename T>
CUCONV_INLINE void forward_pixel_nhwc(const MaxPool2dParams& p, const T* x, int64_t oh, int64_t ow, T* y,
                                      int64_t* idx, PoolIndex<T>* pos) {
  using I = PoolIndex<T>;
  std::fill(y, y + p.C, -std::numeric_limits<T>::infinity());
  std::fill(pos, pos + p.C, I(-1));
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    const int64_t h = oh * p.stride_h - p.pad_h + i * p.dil_h;
    if (h < 0 || h >= p.H) continue;
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t w = ow * p.stride_w - p.pad_w + j * p.dil_w;
      if (w < 0 || w >= p.W) continue;
      update_pixel(x + (h * p.W + w) * p.C, p.C, I(h * p.W + w), y, pos);
    }
  }
  for (int64_t c = 0; c < p.C; ++c) idx[c] = pos[c];
}

template <typename T>
void forward_planes_portable(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx, PoolIndex<T>* pos,
                             int64_t begin, int64_t end) {
  for (int64_t nc = begin; nc < end; ++nc)
    forward_plane_nchw(p, x + nc * p.H * p.W, y + nc * p.P * p.Q, idx + nc * p.P * p.Q, pos);
}

template <typename T>
void forward_pixels_portable(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx, PoolIndex<T>* pos,
                             int64_t begin, int64_t end) {
  for (int64_t npq = begin; npq < end; ++npq) {
    const int64_t n = npq / (p.P * p.Q), oh = (npq / p.Q) % p.P, ow = npq % p.Q;
    forward_pixel_nhwc(p, x + n * p.H * p.W * p.C, oh, ow, y + npq * p.C, idx + npq * p.C, pos);
  }
}

#if defined(__x86_64__) || defined(__i386__)
// float, AVX2: 8 outputs (NCHW: along a row; NHWC: along channels) held in registers while the
// window is scanned. Lanes outside the input are masked out of the loads and of the update.
CUCONV_AVX2_F16C CUCONV_INLINE void update8(__m256 v, __m256i at, __m256i valid, __m256& best, __m256i& pos) {
  const __m256 take = _mm256_and_ps(
      _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)),
                   _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setzero_si256(), pos))),
      _mm256_castsi256_ps(valid));
  best = _mm256_blendv_ps(best, v, take);
  pos = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(pos), _mm256_castsi256_ps(at), take));
}

// Stores the first n of 8 values and int32 positions (widened to int64). A 16-bit input's pooled
// values are its own values, stored back exactly.
template <typename A>
CUCONV_AVX2_F16C CUCONV_INLINE void store8(int n, __m256 best, __m256i pos, A* y, int64_t* idx) {
  const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(pos));
  const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(pos, 1));
  if (n == 8) {
    store8_exact(y, best);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + 4), hi);
  } else {
    alignas(32) float yb[8];
    alignas(32) int64_t ib[8];
    _mm256_store_ps(yb, best);
    _mm256_store_si256(reinterpret_cast<__m256i*>(ib), lo);
    _mm256_store_si256(reinterpret_cast<__m256i*>(ib + 4), hi);
    for (int k = 0; k < n; ++k) y[k] = from_float<A>(yb[k]), idx[k] = ib[k];
  }
}

// take v over best when v > best or v is NaN (the window's first element is taken unconditionally
// by the caller, so no "nothing taken yet" test is needed).
CUCONV_AVX2_F16C CUCONV_INLINE void update8_taken(__m256 v, __m256i at, __m256& best, __m256i& pos) {
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  best = _mm256_blendv_ps(best, v, take);
  pos = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(pos), _mm256_castsi256_ps(at), take));
}

// NCHW, 2x2 window, stride 2, no padding or dilation, every window inside the input: per output
// row, 8 outputs from two 16-float loads per input row split into even and odd columns. A row's
// last partial group is recomputed as the 8 outputs ending at Q (identical values, stored twice);
// rows shorter than 8 load only their 2Q columns. Same visiting order and rules as the general path.
// The first 8 values at p, lanes at and past n (<= 8) zero.
CUCONV_AVX2_F16C CUCONV_INLINE __m256 load8_first(const float* p, int n) {
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}
template <typename A>
CUCONV_AVX2_F16C CUCONV_INLINE __m256 load8_first(const A* p, int n) {
  A buf[8] = {};
  std::copy(p, p + std::max(n, 0), buf);
  return load8(buf);
}
// A is float, or a 16-bit type whose values are widened as they are loaded (convert16.h).
template <typename A>
CUCONV_AVX2_F16C void forward_planes_2x2_avx2(const MaxPool2dParams& p, const A* x, A* y, int64_t* idx,
                                             int64_t begin, int64_t end) {
  const int64_t W = p.W, Q = p.Q;
  const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const int na = int(std::min<int64_t>(2 * Q, 8)), nb = int(2 * Q - 8);  // Q < 8 rows only
  const A* const x_end = x + p.N * p.C * p.H * W;
  for (int64_t nc = begin; nc < end; ++nc) {
    const A* plane = x + nc * p.H * W;
    for (int64_t oh = 0; oh < p.P; ++oh) {
      const A* r0 = plane + 2 * oh * W;
      const A* r1 = r0 + W;
      A* yrow = y + (nc * p.P + oh) * Q;
      int64_t* irow = idx + (nc * p.P + oh) * Q;
      if (Q < 8) {  // one group: only the row's 2Q input columns are loaded, only Q outputs stored
        const __m256i at0 = _mm256_add_epi32(_mm256_set1_epi32(int32_t(2 * oh * W)), lane2);
        const __m256i at1 = _mm256_add_epi32(at0, _mm256_set1_epi32(int32_t(W)));
        const __m256i one = _mm256_set1_epi32(1);
        // Masked loads are slow on some CPUs: plain ones where reading past the row stays inside
        // the input (the extra lanes' outputs are never stored).
        const bool plain = r1 + 16 <= x_end;
        const __m256 a0 = plain ? load8(r0) : load8_first(r0, na);
        const __m256 b0 = plain ? load8(r0 + 8) : load8_first(r0 + 8, nb);
        const __m256 a1 = plain ? load8(r1) : load8_first(r1, na);
        const __m256 b1 = plain ? load8(r1 + 8) : load8_first(r1 + 8, nb);
        __m256 best = evens(a0, b0);
        __m256i pos = at0;
        update8_taken(odds(a0, b0), _mm256_add_epi32(at0, one), best, pos);
        update8_taken(evens(a1, b1), at1, best, pos);
        update8_taken(odds(a1, b1), _mm256_add_epi32(at1, one), best, pos);
        // A full store runs into the plane's next output rows, which are written afterwards; near
        // the plane's end only the row's Q outputs are stored.
        store8((p.P - oh) * Q >= 8 ? 8 : int(Q), best, pos, yrow, irow);
        continue;
      }
      for (int64_t o = 0; o < Q; o += 8) {
        const int64_t o0 = std::min(o, Q - 8);
        const __m256i at0 = _mm256_add_epi32(_mm256_set1_epi32(int32_t(2 * oh * W + 2 * o0)), lane2);
        const __m256i at1 = _mm256_add_epi32(at0, _mm256_set1_epi32(int32_t(W)));
        const __m256i one = _mm256_set1_epi32(1);
        const __m256 a0 = load8(r0 + 2 * o0), b0 = load8(r0 + 2 * o0 + 8);
        const __m256 a1 = load8(r1 + 2 * o0), b1 = load8(r1 + 2 * o0 + 8);
        __m256 best = evens(a0, b0);
        __m256i pos = at0;
        update8_taken(odds(a0, b0), _mm256_add_epi32(at0, one), best, pos);
        update8_taken(evens(a1, b1), at1, best, pos);
        update8_taken(odds(a1, b1), _mm256_add_epi32(at1, one), best, pos);
        store8(8, best, pos, yrow + o0, irow + o0);
      }
    }
  }
}

CUCONV_AVX2_F16C void forward_planes_avx2_f32(const MaxPool2dParams& p, const float* x, float* y, int64_t* idx,
                                         int64_t begin, int64_t end) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i even = _mm256_setr_epi32(-1, 0, -1, 0, -1, 0, -1, 0);
  const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), dup_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
  const int sw = int(p.stride_w);
  for (int64_t nc = begin; nc < end; ++nc) {
    const float* plane = x + nc * p.H * p.W;
    for (int64_t oh = 0; oh < p.P; ++oh) {
      float* yrow = y + (nc * p.P + oh) * p.Q;
      int64_t* irow = idx + (nc * p.P + oh) * p.Q;
      for (int64_t o0 = 0; o0 < p.Q; o0 += 8) {
        const int n = int(std::min<int64_t>(8, p.Q - o0));
        const __m256i o = _mm256_add_epi32(_mm256_set1_epi32(int(o0)), lane);
        const __m256i in_row = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
        __m256 best = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
        __m256i pos = _mm256_set1_epi32(-1);
        for (int64_t i = 0; i < p.kernel_h; ++i) {
          const int64_t h = oh * p.stride_h - p.pad_h + i * p.dil_h;
          if (h < 0 || h >= p.H) continue;
          for (int64_t j = 0; j < p.kernel_w; ++j) {
            const int64_t woff = j * p.dil_w - p.pad_w;
            int lo, hi;
            range_of<float>(woff, p.stride_w, p.W, p.Q, lo, hi);
            const __m256i valid = _mm256_and_si256(
                in_row, _mm256_and_si256(_mm256_cmpgt_epi32(o, _mm256_set1_epi32(lo - 1)),
                                         _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), o)));
            if (_mm256_testz_si256(valid, valid)) continue;
            // Only valid lanes are read, so src may point before the row for negative offsets.
            const float* src = plane + h * p.W + woff + o0 * sw;
            __m256 v;
            // All 8 lanes inside the row: plain loads (masked loads are slow on some CPUs).
            const bool whole = n == 8 && lo <= o0 && o0 + 8 <= hi && woff + (o0 + 8) * sw <= p.W;
            if (sw == 1) {
              v = whole ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, valid);
            } else if (sw == 2 && whole) {
              const __m256 a = _mm256_loadu_ps(src), b = _mm256_loadu_ps(src + 8);
              v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
            } else if (sw == 2) {
              const __m256i ma = _mm256_and_si256(_mm256_permutevar8x32_epi32(valid, dup_lo), even);
              const __m256i mb = _mm256_and_si256(_mm256_permutevar8x32_epi32(valid, dup_hi), even);
              const __m256 a = _mm256_maskload_ps(src, ma), b = _mm256_maskload_ps(src + 8, mb);
              v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
            } else {
              v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, _mm256_mullo_epi32(lane, _mm256_set1_epi32(sw)),
                                           _mm256_castsi256_ps(valid), 4);
            }
            const __m256i at = _mm256_add_epi32(_mm256_set1_epi32(int(h * p.W + woff)),
                                                _mm256_mullo_epi32(o, _mm256_set1_epi32(sw)));
            update8(v, at, valid, best, pos);
          }
        }
        store8(n, best, pos, yrow + o0, irow + o0);
      }
    }
  }
}

// The output pixels begin, begin + 1, ... of an NHWC pool: (n, oh, ow) advanced one pixel at a
// time (divisions per pixel would cost more than the pooling itself).
struct PixelWalk {
  const MaxPool2dParams& p;
  int64_t n, oh, ow;
  PixelWalk(const MaxPool2dParams& params, int64_t begin)
      : p(params), n(begin / (p.P * p.Q)), oh((begin / p.Q) % p.P), ow(begin % p.Q - 1) {}
  void next() {
    if (++ow == p.Q) {
      ow = 0;
      if (++oh == p.P) oh = 0, ++n;
    }
  }
  // Of a 2x2 stride-2 window: the flat position 2*oh*W + 2*ow of its first element.
  int32_t first_of_2x2() const { return int32_t(2 * oh * p.W + 2 * ow); }
};

// The window taps of the current output pixel that lie inside the input, row-major, as flat
// positions h * W + w. Returns how many.
CUCONV_INLINE int window_taps(const PixelWalk& px, int32_t* taps) {
  const MaxPool2dParams& p = px.p;
  int n = 0;
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    const int64_t h = px.oh * p.stride_h - p.pad_h + i * p.dil_h;
    if (h < 0 || h >= p.H) continue;
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t w = px.ow * p.stride_w - p.pad_w + j * p.dil_w;
      if (w >= 0 && w < p.W) taps[n++] = int32_t(h * p.W + w);
    }
  }
  return n;
}

// NHWC, 2x2 window, stride 2, no padding or dilation, C a multiple of 8 (the CNN pooling layers):
// every window of the P x Q outputs lies inside the input (floor mode, or ceil mode where the
// sizes are even), so there are no bounds tests or masks. Same visiting order and rules as the
// general path: (0,0), (0,1), (1,0), (1,1).
// A as in forward_planes_2x2_avx2.
template <typename A>
CUCONV_AVX2_F16C void forward_pixels_2x2_avx2(const MaxPool2dParams& p, const A* x, A* y, int64_t* idx,
                                             int64_t begin, int64_t end) {
  const int64_t C = p.C, rowC = p.W * p.C;
  PixelWalk px(p, begin);
  for (int64_t npq = begin; npq < end; ++npq) {
    px.next();
    const int32_t at00 = px.first_of_2x2();
    const A* s00 = x + px.n * p.H * rowC + at00 * C;
    const __m256i a00 = _mm256_set1_epi32(at00), a01 = _mm256_set1_epi32(at00 + 1);
    const __m256i a10 = _mm256_set1_epi32(at00 + int32_t(p.W)), a11 = _mm256_set1_epi32(at00 + int32_t(p.W) + 1);
    A* yp = y + npq * C;
    int64_t* ip = idx + npq * C;
    for (int64_t c = 0; c < C; c += 8) {
      __m256 best = load8(s00 + c);
      __m256i pos = a00;
      update8_taken(load8(s00 + C + c), a01, best, pos);
      update8_taken(load8(s00 + rowC + c), a10, best, pos);
      update8_taken(load8(s00 + rowC + C + c), a11, best, pos);
      store8(8, best, pos, yp + c, ip + c);
    }
  }
}

// The same 2x2 NHWC forward with AVX-512 (C a multiple of 16): 16 channels per step, the take
// masks in mask registers, and the int32 positions widened to int64 16 at a time. A as in
// forward_planes_2x2_avx2.
template <typename A>
CUCONV_AVX512 void forward_pixels_2x2_avx512(const MaxPool2dParams& p, const A* x, A* y, int64_t* idx, int64_t begin,
                                             int64_t end) {
  const int64_t C = p.C, rowC = p.W * p.C;
  PixelWalk px(p, begin);
  for (int64_t npq = begin; npq < end; ++npq) {
    px.next();
    const int32_t at00 = px.first_of_2x2();
    const A* s00 = x + px.n * p.H * rowC + at00 * C;
    const __m512i a00 = _mm512_set1_epi32(at00), a01 = _mm512_set1_epi32(at00 + 1);
    const __m512i a10 = _mm512_set1_epi32(at00 + int32_t(p.W)), a11 = _mm512_set1_epi32(at00 + int32_t(p.W) + 1);
    A* yp = y + npq * C;
    int64_t* ip = idx + npq * C;
    for (int64_t c = 0; c < C; c += 16) {
      __m512 best = load16(s00 + c, 16);
      __m512i pos = a00;
      // take v over best when v > best or v is NaN (visiting order (0,0), (0,1), (1,0), (1,1)).
      const __m512 v01 = load16(s00 + C + c, 16), v10 = load16(s00 + rowC + c, 16);
      const __m512 v11 = load16(s00 + rowC + C + c, 16);
      __mmask16 take = _mm512_cmp_ps_mask(v01, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v01, v01, _CMP_UNORD_Q);
      best = _mm512_mask_mov_ps(best, take, v01), pos = _mm512_mask_mov_epi32(pos, take, a01);
      take = _mm512_cmp_ps_mask(v10, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v10, v10, _CMP_UNORD_Q);
      best = _mm512_mask_mov_ps(best, take, v10), pos = _mm512_mask_mov_epi32(pos, take, a10);
      take = _mm512_cmp_ps_mask(v11, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v11, v11, _CMP_UNORD_Q);
      best = _mm512_mask_mov_ps(best, take, v11), pos = _mm512_mask_mov_epi32(pos, take, a11);
      store16_exact(yp + c, best);
      _mm512_storeu_si512(ip + c, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(pos)));
      _mm512_storeu_si512(ip + c + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(pos, 1)));
    }
  }
}

// NHWC, any window, AVX-512: each output pixel's window elements inside the input are listed once
// (window_taps), then every 16-channel block scans the list with its best values and positions in
// registers: the first element taken as it is, each next one where it is greater or NaN (the rules
// of the other paths, so the same values and indices).
CUCONV_AVX512 void forward_pixels_avx512_f32(const MaxPool2dParams& p, const float* x, float* y, int64_t* idx,
                                             int64_t begin, int64_t end) {
  std::vector<int32_t> taps(size_t(p.kernel_h * p.kernel_w));
  PixelWalk px(p, begin);
  for (int64_t npq = begin; npq < end; ++npq) {
    px.next();
    const int count = window_taps(px, taps.data());
    const float* img = x + px.n * p.H * p.W * p.C;
    float* yp = y + npq * p.C;
    int64_t* ip = idx + npq * p.C;
    for (int64_t c = 0; c < p.C; c += 16) {
      const __mmask16 m = p.C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (p.C - c)) - 1);
      __m512 best = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      __m512i pos = _mm512_set1_epi32(-1);
      if (count > 0)
        best = _mm512_maskz_loadu_ps(m, img + int64_t(taps[0]) * p.C + c), pos = _mm512_set1_epi32(taps[0]);
      for (int e = 1; e < count; ++e) {
        const __m512 v = _mm512_maskz_loadu_ps(m, img + int64_t(taps[e]) * p.C + c);
        const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, take, v), pos = _mm512_mask_mov_epi32(pos, take, _mm512_set1_epi32(taps[e]));
      }
      _mm512_mask_storeu_ps(yp + c, m, best);
      _mm512_mask_storeu_epi64(ip + c, __mmask8(m), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(pos)));
      _mm512_mask_storeu_epi64(ip + c + 8, __mmask8(m >> 8), _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(pos, 1)));
    }
  }
}

// Any NHWC window, AVX2: per output pixel, its taps inside the input listed once (window_taps),
// then 16 channels at a time (two vectors, 8 with a mask at the end): the first tap taken as it is, each later one by
// update8_taken, the same rules as update8 over the window in row-major order. A window that misses
// the input gives -inf and -1.
CUCONV_AVX2_F16C void forward_pixels_avx2_f32(const MaxPool2dParams& p, const float* x, float* y, int64_t* idx,
                                         int64_t begin, int64_t end) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int64_t C = p.C;
  std::vector<int32_t> taps(size_t(p.kernel_h * p.kernel_w));
  PixelWalk px(p, begin);
  for (int64_t npq = begin; npq < end; ++npq) {
    px.next();
    const float* img = x + px.n * p.H * p.W * C;
    float* yp = y + npq * C;
    int64_t* ip = idx + npq * C;
    const int nt = window_taps(px, taps.data());
    if (nt == 0) {
      std::fill_n(yp, C, -std::numeric_limits<float>::infinity());
      std::fill_n(ip, C, int64_t(-1));
      continue;
    }
    int64_t c0 = 0;
    for (; c0 + 16 <= C; c0 += 16) {
      const float* src = img + int64_t(taps[0]) * C + c0;
      __m256 b0 = _mm256_loadu_ps(src), b1 = _mm256_loadu_ps(src + 8);
      __m256i q0 = _mm256_set1_epi32(taps[0]), q1 = q0;
      for (int t = 1; t < nt; ++t) {
        const float* v = img + int64_t(taps[t]) * C + c0;
        const __m256i at = _mm256_set1_epi32(taps[t]);
        update8_taken(_mm256_loadu_ps(v), at, b0, q0);
        update8_taken(_mm256_loadu_ps(v + 8), at, b1, q1);
      }
      store8(8, b0, q0, yp + c0, ip + c0);
      store8(8, b1, q1, yp + c0 + 8, ip + c0 + 8);
    }
    for (; c0 < C; c0 += 8) {
      const int cnt = int(std::min<int64_t>(8, C - c0));
      const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), lane);
      __m256 b = _mm256_maskload_ps(img + int64_t(taps[0]) * C + c0, m);
      __m256i q = _mm256_set1_epi32(taps[0]);
      for (int t = 1; t < nt; ++t)
        update8_taken(_mm256_maskload_ps(img + int64_t(taps[t]) * C + c0, m), _mm256_set1_epi32(taps[t]), b, q);
      store8(cnt, b, q, yp + c0, ip + c0);
    }
  }
}

// NCHW planes, any window (planes_as_pixels_fit): where planes_avx2 runs 8 outputs of a row, with a
// mask built per window element and most lanes idle on short rows, 8 planes at a time are pooled as the 8
// channels of a pixel walk. Their values are first transposed into a [H*W][8] stage (one 32-byte
// load per window element); every output position's window elements inside the input are listed
// once per call; the results of 8 output positions are transposed back in registers, so each
// plane's outputs are stored as a row. Same visiting order and rules as forward_pixels_avx2_f32.
// A as in forward_planes_2x2_avx2: 16-bit planes are widened as they are staged.
template <typename A>
CUCONV_AVX2_F16C void forward_planes_as_pixels_avx2(const MaxPool2dParams& p, const A* x, A* y, int64_t* idx,
                                                   int64_t begin, int64_t end) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q, window = p.kernel_h * p.kernel_w;
  thread_local std::vector<float> stage_buf;
  thread_local std::vector<int32_t> taps_buf, counts_buf;
  if (stage_buf.size() < size_t(HW * 8)) stage_buf.resize(size_t(HW * 8));
  if (taps_buf.size() < size_t(PQ * window)) taps_buf.resize(size_t(PQ * window));
  if (counts_buf.size() < size_t(PQ)) counts_buf.resize(size_t(PQ));
  float* stage = stage_buf.data();
  int32_t* taps = taps_buf.data();
  int32_t* counts = counts_buf.data();
  PixelWalk px(p, 0);
  for (int64_t o = 0; o < PQ; ++o) px.next(), counts[o] = window_taps(px, taps + o * window);
  for (int64_t c0 = begin; c0 < end; c0 += 8) {
    const int planes = int(std::min<int64_t>(8, end - c0));
    const A* src = x + c0 * HW;
    for (int64_t j0 = 0; j0 < HW; j0 += 8) {  // stage[j][k] = plane k's element j
      const int cols = int(std::min<int64_t>(8, HW - j0));
      __m256 in[8], out[8];
      for (int k = 0; k < 8; ++k)
        in[k] = k >= planes ? _mm256_setzero_ps()
                : cols == 8 ? load8(src + k * HW + j0)
                            : load8_first(src + k * HW + j0, cols);
      transpose8x8(in, out);
      for (int j = 0; j < cols; ++j) _mm256_storeu_ps(stage + (j0 + j) * 8, out[j]);
    }
    for (int64_t o0 = 0; o0 < PQ; o0 += 8) {
      const int n = int(std::min<int64_t>(8, PQ - o0));
      __m256 best[8], pos_f[8], best_t[8], pos_t[8];
      for (int o = 0; o < 8; ++o) {
        const int nt = o < n ? counts[o0 + o] : 0;
        const int32_t* t = taps + (o0 + o) * window;
        if (nt == 0) {  // a window that misses the input (or a position past the last): -inf, -1
          best[o] = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
          pos_f[o] = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
          continue;
        }
        __m256 b = _mm256_loadu_ps(stage + int64_t(t[0]) * 8);
        __m256i q = _mm256_set1_epi32(t[0]);
        for (int e = 1; e < nt; ++e) update8_taken(_mm256_loadu_ps(stage + int64_t(t[e]) * 8), _mm256_set1_epi32(t[e]), b, q);
        best[o] = b, pos_f[o] = _mm256_castsi256_ps(q);
      }
      transpose8x8(best, best_t);  // lane moves only: the positions' bits pass through unchanged
      transpose8x8(pos_f, pos_t);
      for (int k = 0; k < planes; ++k)
        store8(n, best_t[k], _mm256_castps_si256(pos_t[k]), y + (c0 + k) * PQ + o0, idx + (c0 + k) * PQ + o0);
    }
  }
}

#endif

// Planes of 2^31 elements or more, whose flat positions overflow the int32 lanes of the vector
// path: a scalar scan of each window with int64 positions, same rules.
template <typename T>
void forward_large_planes(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx) {
  const int64_t h_step = p.channels_last ? p.W * p.C : p.W, w_step = p.channels_last ? p.C : 1;
  at::parallel_for(0, p.N * p.C * p.P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ncp = begin; ncp < end; ++ncp) {
      const int64_t oh = ncp % p.P, nc = ncp / p.P, n = nc / p.C, c = nc % p.C;
      const T* plane = p.channels_last ? x + n * p.H * p.W * p.C + c : x + nc * p.H * p.W;
      for (int64_t ow = 0; ow < p.Q; ++ow) {
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_idx = -1;
        for (int64_t i = 0; i < p.kernel_h; ++i) {
          const int64_t h = oh * p.stride_h - p.pad_h + i * p.dil_h;
          if (h < 0 || h >= p.H) continue;
          for (int64_t j = 0; j < p.kernel_w; ++j) {
            const int64_t w = ow * p.stride_w - p.pad_w + j * p.dil_w;
            if (w < 0 || w >= p.W) continue;
            const T v = plane[h * h_step + w * w_step];
            if (best_idx < 0 || v > best || v != v) best = v, best_idx = h * p.W + w;
          }
        }
        const int64_t o = p.channels_last ? ((n * p.P + oh) * p.Q + ow) * p.C + c : (nc * p.P + oh) * p.Q + ow;
        y[o] = best;
        idx[o] = best_idx;
      }
    }
  });
}

// Runs outputs [begin, end) with the strategy's vector kernel; false for the portable loops.
template <typename T>
bool forward_vector(PoolFpropStrategy strategy, const MaxPool2dParams& p, const T* x, T* y, int64_t* idx,
                    int64_t begin, int64_t end) {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (!std::is_same_v<T, double>) {  // these take 16-bit values too (widened as loaded)
    if (strategy == PoolFpropStrategy::planes_2x2_avx2) return forward_planes_2x2_avx2(p, x, y, idx, begin, end), true;
    if (strategy == PoolFpropStrategy::pixels_2x2_avx2) return forward_pixels_2x2_avx2(p, x, y, idx, begin, end), true;
    if (strategy == PoolFpropStrategy::pixels_2x2_avx512)
      return forward_pixels_2x2_avx512(p, x, y, idx, begin, end), true;
    if (strategy == PoolFpropStrategy::planes_as_pixels_avx2)
      return forward_planes_as_pixels_avx2(p, x, y, idx, begin, end), true;
  }
  if constexpr (std::is_same_v<T, float>) {
    switch (strategy) {
      case PoolFpropStrategy::planes_avx2: return forward_planes_avx2_f32(p, x, y, idx, begin, end), true;

      case PoolFpropStrategy::pixels_avx2: return forward_pixels_avx2_f32(p, x, y, idx, begin, end), true;
      case PoolFpropStrategy::pixels_avx512: return forward_pixels_avx512_f32(p, x, y, idx, begin, end), true;
      default: break;
    }
  }
#endif
  return false;
}

// f(begin, end) over the work items in parallel: (n, c) planes for NCHW, output pixels for NHWC,
// about 4096 outputs per task.
template <typename F>
void for_each_item(const MaxPool2dParams& p, const F& f) {
  const int64_t outputs_per_item = p.channels_last ? p.C : p.P * p.Q;
  const int64_t items = p.channels_last ? p.N * p.P * p.Q : p.N * p.C;
  at::parallel_for(0, items, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, outputs_per_item)), f);
}

}  // namespace

void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices) {
  const PoolFpropStrategy planned = plan_max_pool2d(p, active_isa(), input.scalar_type()).forward;
  if (planned == PoolFpropStrategy::planes_2x2_bf16 || planned == PoolFpropStrategy::pixels_2x2_bf16)
    return max_pool2d_forward_bf16_2x2(p, reinterpret_cast<const uint16_t*>(input.const_data_ptr<c10::BFloat16>()),
                                       reinterpret_cast<uint16_t*>(output.data_ptr<c10::BFloat16>()),
                                       indices.data_ptr<int64_t>());
  // 2x2 windows and NCHW planes as pixels on AVX2 and AVX-512 run on the 16-bit values, widened as
  // they are loaded (the float32 copy and the rounding pass moved three times the bytes of the pool).
  if (is_16bit(input.scalar_type()) &&
      (planned == PoolFpropStrategy::planes_2x2_avx2 || planned == PoolFpropStrategy::pixels_2x2_avx2 ||
       planned == PoolFpropStrategy::pixels_2x2_avx512 || planned == PoolFpropStrategy::planes_as_pixels_avx2))
    return with_16bit_type(input.scalar_type(), [&](auto type) {
      using A = decltype(type);
      for_each_item(p, [&](int64_t begin, int64_t end) {
        forward_vector(planned, p, input.const_data_ptr<A>(), output.data_ptr<A>(), indices.data_ptr<int64_t>(),
                       begin, end);
      });
    });
  if (is_16bit(input.scalar_type())) {  // exact: every 16-bit value is a float32 value
    const at::Tensor out32 = float32_like(output, Scratch::wide_out);
    max_pool2d_forward(p, float32_copy(input, Scratch::wide_a), out32, indices);
    return round_into(output, out32);
  }
  const PoolFpropStrategy strategy = plan_max_pool2d(p, active_isa(), input.scalar_type()).forward;
  if (strategy == PoolFpropStrategy::large_planes) {
    forward_large_planes(p, input.const_data_ptr<float>(), output.data_ptr<float>(), indices.data_ptr<int64_t>());
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cuconv_max_pool2d_cpu", [&] {
    using I = PoolIndex<scalar_t>;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = output.data_ptr<scalar_t>();
    int64_t* idx = indices.data_ptr<int64_t>();
    const auto index_opts = input.options().dtype(sizeof(I) == 4 ? at::kInt : at::kLong);
    for_each_item(p, [&](int64_t begin, int64_t end) {
      if (forward_vector(strategy, p, x, y, idx, begin, end)) return;
      // The portable loops, with a scratch row (NCHW) or pixel (NHWC) of positions.
      at::Tensor scratch = at::empty({p.channels_last ? p.C : p.Q}, index_opts);
      I* pos = scratch.data_ptr<I>();
      if (p.channels_last) forward_pixels_portable(p, x, y, idx, pos, begin, end);
      else forward_planes_portable(p, x, y, idx, pos, begin, end);
    });
  });
}

}  // namespace cuconv::cpu
