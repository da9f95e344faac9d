// Grouped and dilated convs on the CPU, all three passes, both layouts, float32 and float64, with
// output pixels in the vector lanes.
//
// Every pass is a correlation of a source (the input; grad_output for the grad input) with a window
// geometry. Per block of images and group, the source's channels are copied into zero-padded,
// phase-split planes: plane (c, a, b) holds padded pixel (i * stride_h + a, j * stride_w + b) of
// channel c at [i][j], Hq x Wq per image, the images one under another. Output pixel (oh, ow) of
// image n is grid position f = (n * Hq + oh) * Wq + ow, and its tap (r, s) reads plane
// (c, r * dil_h % stride_h, s * dil_w % stride_w) at f + (r * dil_h / stride_h) * Wq + s * dil_w /
// stride_w: one offset per tap for every output pixel. So a run of consecutive grid positions is one
// vector load per tap; the grid positions outside the output (ow >= Q, oh >= P) are computed and
// dropped.
//  - Forward: each output channel's vector of pixels is init (bias or 0) plus one multiply-add per
//    tap (c, r, s) in order, the weight broadcast; a ReLU in the store.
//  - Grad input (stride 1): the forward of grad_output with the kernel turned 180 degrees and its
//    channel axes swapped, padding (R - 1) * dil - pad.
//  - Grad weight: per (output channel, tap), a 64-byte block of per-lane sums over the grid
//    positions in order (grad_output's grid is zero outside the output), its lanes added in a fixed
//    tree per block of images; the blocks in order per fixed batch chunk, the chunks in order.
//
// The vector code is written once with GCC vector extensions and inlined into one function per ISA
// path (zmm, ymm, 16-byte vectors). Forward and grad input sum each output in one lane; the grad
// weight keeps 64 bytes of lanes on every path (two ymm, four xmm), so AVX-512 and AVX2, both
// contracting each multiply-add into an FMA, give the same bits.
#include "cpu/conv2d/grouped.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/even_odd.h"
#endif

#include "cpu/conv2d/operands.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"
#include "cpu/sizes.h"

// The helpers below pass vectors by value and are always inlined into the per-ISA functions.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace cuconv::cpu {
namespace {

constexpr int64_t kKB = 4;       // output channels per register block (weights padded to a multiple)
constexpr int64_t kTB = 6;       // grad-weight taps per register block (taps padded to a multiple)
constexpr int64_t kFlat = 96;    // the grid is a multiple of every path's forward pixel block
constexpr int64_t kBlockBytes = 64;
// A block of images' planes stays within this, so they and the output grid stay in L2.
constexpr int64_t kPlaneBytes = int64_t(256) << 10;

// ----------------------------------------------------------------------------------------- geometry

// A correlation: output (oh, ow) of channel k reads source (oh * sh - ph + r * dh, ow * sw - pw +
// s * dw) of the group's Cs channels. Source and output are [n][channel][h][w] or [n][h][w][channel]
// tensors of Cs_all and Ko_all channels.
struct Corr {
  int64_t N, G, Cs, Ko, Hs, Ws, P, Q, R, S, sh, sw, dh, dw, ph, pw;
  int64_t Cs_all, Ko_all;
  bool cl;
  // Derived: phase-plane extent per image, images per block, grid length, plane pitch, tap offsets.
  int64_t Hq = 0, Wq = 0, phases = 0, nb = 0, flat = 0, plane = 0, taps = 0;
  std::vector<int64_t> off;  // per tap (c, r, s), padded to a multiple of kTB

  void derive(int64_t elem) {
    Hq = P + (R - 1) * dh / sh, Wq = Q + (S - 1) * dw / sw, phases = sh * sw;
    const int64_t per_image = Hq * Wq;
    nb = std::clamp<int64_t>(512 / per_image, 1, std::max<int64_t>(N, 1));
    while (nb > 1 && Cs * phases * nb * per_image * elem > kPlaneBytes) nb = (nb + 1) / 2;
    taps = Cs * R * S;
    const int64_t reach = (R - 1) * dh / sh * Wq + (S - 1) * dw / sw;
    set_block(nb, reach);
    off.assign(round_up(taps, kTB), 0);
    for (int64_t c = 0; c < Cs; ++c)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s)
          off[(c * R + r) * S + s] = (c * phases + (r * dh % sh) * sw + s * dw % sw) * plane + r * dh / sh * Wq + s * dw / sw;
  }
  void set_block(int64_t images, int64_t reach) {
    flat = round_up(images * Hq * Wq, kFlat);
    plane = round_up(flat + reach, 16);  // every vector read of a tap stays inside its plane
  }
  int64_t plane_values() const { return Cs * phases * plane; }
};

#if defined(__x86_64__) || defined(__i386__)
// d[j] = s[2 * j] for j < n: the even values of 2n - 1, by 8-value shuffles on AVX2 (any x86 path
// but portable) where a scalar loop took as long as the NCHW stride-2 kernels that read the planes.
// Values past the row, up to `end` (the source tensor's), may be read and are dropped: a row of 8
// outputs is one 16-value step.
CUCONV_AVX2 void copy_even_avx2(const float* s, float* d, int64_t n, const float* end) {
  int64_t j = 0;
  for (; j + 8 <= n && s + 2 * j + 16 <= end; j += 8)
    _mm256_storeu_ps(d + j, evens(_mm256_loadu_ps(s + 2 * j), _mm256_loadu_ps(s + 2 * j + 8)));
  if (j + 4 <= n && s + 2 * j + 8 <= end) {
    _mm_storeu_ps(d + j, _mm_shuffle_ps(_mm_loadu_ps(s + 2 * j), _mm_loadu_ps(s + 2 * j + 4), _MM_SHUFFLE(2, 0, 2, 0)));
    j += 4;
  }
  // The last few one by one: AMD's masked stores are microcoded, many times slower than this loop.
  for (; j < n; ++j) d[j] = s[2 * j];
}
#endif

template <typename T>
void copy_strided(const T* s, int64_t stride, T* d, int64_t n, bool avx2, const T* end) {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (std::is_same_v<T, float>)
    if (stride == 2 && avx2) return copy_even_avx2(s, d, n, end);
#endif
  for (int64_t j = 0; j < n; ++j) d[j] = s[j * stride];
}

// Planes of images n0..n0+nb of group g (see the top of the file), the rest of each plane zero.
// NCHW row by row; NHWC pixel by pixel (each pixel's Cs channels are one run), into zeroed planes.
template <typename T>
void fill_planes(const Corr& k, const T* src, int64_t n0, int64_t nb, int64_t g, T* planes) {
  const int64_t img = k.Hs * k.Ws * k.Cs_all;
  const bool avx2 = active_isa() != Isa::portable;
  if (k.cl) std::fill(planes, planes + k.plane_values(), T(0));
  for (int64_t a = 0; a < k.sh; ++a)
    for (int64_t b = 0; b < k.sw; ++b) {
      int64_t lo, hi;
      valid_range(b - k.pw, k.sw, k.Ws, k.Wq, lo, hi);
      T* ph = planes + (a * k.sw + b) * k.plane;
      for (int64_t i = 0; i < nb; ++i) {
        const T* si = src + (n0 + i) * img;
        for (int64_t ii = 0; ii < k.Hq; ++ii) {
          const int64_t h = ii * k.sh + a - k.ph, at = (i * k.Hq + ii) * k.Wq;
          const bool inside = h >= 0 && h < k.Hs && hi > lo;
          if (k.cl) {
            if (!inside) continue;
            const T* s = si + (h * k.Ws + b - k.pw) * k.Cs_all + k.Cs * g;
            for (int64_t j = lo; j < hi; ++j) {
              const T* px = s + j * k.sw * k.Cs_all;
              T* d = ph + at + j;
              for (int64_t c = 0; c < k.Cs; ++c) d[c * k.phases * k.plane] = px[c];
            }
            continue;
          }
          for (int64_t c = 0; c < k.Cs; ++c) {
            T* row = ph + c * k.phases * k.plane + at;
            if (!inside) {
              std::fill(row, row + k.Wq, T(0));
              continue;
            }
            std::fill(row, row + lo, T(0));
            const T* s = si + ((k.Cs * g + c) * k.Hs + h) * k.Ws + b - k.pw;
            if (k.sw == 1) std::memcpy(row + lo, s + lo, (hi - lo) * sizeof(T));
            else copy_strided(s + lo * k.sw, k.sw, row + lo, hi - lo, avx2, src + k.N * img);
            std::fill(row + hi, row + k.Wq, T(0));
          }
        }
      }
      if (!k.cl)
        for (int64_t c = 0; c < k.Cs; ++c)
          std::fill(ph + c * k.phases * k.plane + nb * k.Hq * k.Wq, ph + (c * k.phases + 1) * k.plane, T(0));
    }
}

// ------------------------------------------------------------------------------------------ kernels

template <typename T>
struct FpropArgs {
  const T* planes;
  const int64_t* off;
  int64_t taps;
  const T* w;      // [k / kKB][tap][k % kKB]
  const T* init;   // per output channel (padded), or null
  T* out;          // [k][flat]
  int64_t kpad, flat;
  bool relu;
};

template <typename T>
struct WgradArgs {
  const T* planes;
  const int64_t* off;
  int64_t taps;    // padded to kTB
  const T* gy;     // [k][flat], zero outside the output
  T* part;         // [k][taps] += the block's sums
  int64_t kpad, k_valid, t_valid, flat, ld_part;
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

// Register blocks per path: forward KB x NV vectors of pixels; grad weight KW x TW blocks of
// 64 bytes (NR vectors each). They leave room for the operands in 32 zmm or 16 ymm / xmm registers.
template <typename T, int Bytes>
struct Simd {
  typedef T V __attribute__((vector_size(Bytes)));
  static constexpr int L = Bytes / int(sizeof(T));
  static constexpr int NR = int(kBlockBytes) / Bytes;
  static constexpr int NV = Bytes == 64 ? 6 : 3;
  static constexpr int KW = Bytes == 64 ? 4 : Bytes == 32 ? 2 : 1;
  static constexpr int TW = Bytes == 64 ? 6 : 3;
};

template <typename T, int Bytes>
CUCONV_INLINE void fprop_kernel(const FpropArgs<T>& a) {
  using S = Simd<T, Bytes>;
  using V = typename S::V;
  constexpr int L = S::L, NV = S::NV, KB = int(kKB);
  for (int64_t f0 = 0; f0 < a.flat; f0 += NV * L)
    for (int64_t k0 = 0; k0 < a.kpad; k0 += KB) {
      V acc[KB][NV];
#pragma GCC unroll 4
      for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 6
        for (int v = 0; v < NV; ++v) acc[kk][v] = a.init ? V{} + a.init[k0 + kk] : V{};
      const T* wk = a.w + k0 * a.taps;
      const T* src = a.planes + f0;
      for (int64_t t = 0; t < a.taps; ++t) {
        const T* x = src + a.off[t];
        const T* wt = wk + t * KB;
#pragma GCC unroll 6
        for (int v = 0; v < NV; ++v) {
          const V xv = load<V>(x + v * L);
#pragma GCC unroll 4
          for (int kk = 0; kk < KB; ++kk) acc[kk][v] += xv * wt[kk];
        }
      }
#pragma GCC unroll 4
      for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 6
        for (int v = 0; v < NV; ++v)
          store(a.out + (k0 + kk) * a.flat + f0 + v * L, a.relu ? (acc[kk][v] < V{} ? V{} : acc[kk][v]) : acc[kk][v]);
    }
}

// The 64-byte block's lanes added in a fixed tree (the same on every path).
template <typename T>
CUCONV_INLINE T lane_sum(T* lanes) {
  constexpr int LB = int(kBlockBytes / int64_t(sizeof(T)));
#pragma GCC unroll 4
  for (int w = LB / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) lanes[i] += lanes[i + w];
  return lanes[0];
}

template <typename T, int Bytes>
CUCONV_INLINE void wgrad_kernel(const WgradArgs<T>& a) {
  using S = Simd<T, Bytes>;
  using V = typename S::V;
  constexpr int L = S::L, NR = S::NR, KW = S::KW, TW = S::TW;
  constexpr int64_t LB = kBlockBytes / int64_t(sizeof(T));
  for (int64_t k0 = 0; k0 < a.kpad; k0 += KW)
    for (int64_t t0 = 0; t0 < a.taps; t0 += TW) {
      V acc[KW][TW][NR];
#pragma GCC unroll 4
      for (int kk = 0; kk < KW; ++kk)
#pragma GCC unroll 6
        for (int tt = 0; tt < TW; ++tt)
#pragma GCC unroll 4
          for (int h = 0; h < NR; ++h) acc[kk][tt][h] = V{};
      const T* x[TW];
#pragma GCC unroll 6
      for (int tt = 0; tt < TW; ++tt) x[tt] = a.planes + a.off[t0 + tt];
      const T* g = a.gy + k0 * a.flat;
      for (int64_t f = 0; f < a.flat; f += LB)
#pragma GCC unroll 4
        for (int h = 0; h < NR; ++h) {
          V gv[KW];
#pragma GCC unroll 4
          for (int kk = 0; kk < KW; ++kk) gv[kk] = load<V>(g + kk * a.flat + f + h * L);
#pragma GCC unroll 6
          for (int tt = 0; tt < TW; ++tt) {
            const V xv = load<V>(x[tt] + f + h * L);
#pragma GCC unroll 4
            for (int kk = 0; kk < KW; ++kk) acc[kk][tt][h] += gv[kk] * xv;
          }
        }
      for (int kk = 0; kk < KW; ++kk)
        for (int tt = 0; tt < TW; ++tt) {
          if (k0 + kk >= a.k_valid || t0 + tt >= a.t_valid) continue;
          T lanes[LB];
          for (int h = 0; h < NR; ++h) store(lanes + h * L, acc[kk][tt][h]);
          a.part[(k0 + kk) * a.ld_part + t0 + tt] += lane_sum(lanes);
        }
    }
}

template <typename T, int Bytes>
CUCONV_INLINE void run_kernel(const FpropArgs<T>* f, const WgradArgs<T>* w) {
  if (f) fprop_kernel<T, Bytes>(*f);
  else wgrad_kernel<T, Bytes>(*w);
}
template <typename T>
CUCONV_AVX512 void kernel_avx512(const FpropArgs<T>* f, const WgradArgs<T>* w) { run_kernel<T, 64>(f, w); }
template <typename T>
CUCONV_AVX2 void kernel_avx2(const FpropArgs<T>* f, const WgradArgs<T>* w) { run_kernel<T, 32>(f, w); }
template <typename T>
void kernel_portable(const FpropArgs<T>* f, const WgradArgs<T>* w) { run_kernel<T, 16>(f, w); }

template <typename T>
using KernelFn = void (*)(const FpropArgs<T>*, const WgradArgs<T>*);
template <typename T>
KernelFn<T> kernel(Isa isa) {
  return is_avx512(isa) ? &kernel_avx512<T> : isa == Isa::avx2 ? &kernel_avx2<T> : &kernel_portable<T>;
}

// ------------------------------------------------------------------------------------------- passes

// The correlation `k` with weight wk(g, o, t) (output channel o < Ko of group g, tap t = (c, r, s)),
// into dst (Ko_all channels, P x Q). Weights are packed [g][o / kKB][t][o % kKB], zero-padded.
template <typename T, class Weight>
void correlate(Isa isa, const Corr& k, const T* src, Weight wk, const T* bias, T* dst, bool relu) {
  const int64_t kpad = round_up(k.Ko, kKB), T_ = k.taps;
  std::vector<T> wp(k.G * kpad * T_, T(0)), bp(bias ? k.G * kpad : 0, T(0));
  at::parallel_for(0, k.G, 1, [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g)
      for (int64_t o = 0; o < k.Ko; ++o) {
        T* row = wp.data() + g * kpad * T_ + (o / kKB) * kKB * T_ + o % kKB;
        for (int64_t t = 0; t < T_; ++t) row[t * kKB] = wk(g, o, t);
        if (bias) bp[g * kpad + o] = bias[g * k.Ko + o];
      }
  });
  const KernelFn<T> run = kernel<T>(isa);
  const int64_t blocks = ceil_div(k.N, k.nb);
  const int64_t out_img = k.P * k.Q * k.Ko_all;
  at::parallel_for(0, blocks * k.G, 1, [&](int64_t begin, int64_t end) {
    T* planes = scratch<T>(Scratch::input, k.plane_values());
    T* grid = scratch<T>(Scratch::output, kpad * k.flat);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t blk = item / k.G, g = item % k.G, n0 = blk * k.nb, nb = std::min(k.nb, k.N - n0);
      fill_planes(k, src, n0, nb, g, planes);
      FpropArgs<T> a{planes, k.off.data(), T_, wp.data() + g * kpad * T_, bias ? bp.data() + g * kpad : nullptr,
                     grid, kpad, round_up(nb * k.Hq * k.Wq, kFlat), relu};
      run(&a, nullptr);
      const int64_t flat = a.flat;
      for (int64_t i = 0; i < nb; ++i) {
        T* di = dst + (n0 + i) * out_img;
        for (int64_t oh = 0; oh < k.P; ++oh) {
          const T* gr = grid + (i * k.Hq + oh) * k.Wq;
          if (!k.cl) {
            for (int64_t o = 0; o < k.Ko; ++o)
              std::memcpy(di + ((g * k.Ko + o) * k.P + oh) * k.Q, gr + o * flat, k.Q * sizeof(T));
          } else {
            T* d = di + oh * k.Q * k.Ko_all + g * k.Ko;
            for (int64_t ow = 0; ow < k.Q; ++ow)
              for (int64_t o = 0; o < k.Ko; ++o) d[ow * k.Ko_all + o] = gr[o * flat + ow];
          }
        }
      }
    }
  });
}

Corr forward_corr(const Conv2dParams& p) {
  Corr k{p.N, p.groups, p.C_per_group(), p.K_per_group(), p.H, p.W, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w,
         p.dil_h, p.dil_w, p.pad_h, p.pad_w, p.C, p.K, p.channels_last};
  return k;
}

}  // namespace

bool grouped_dgrad_fits(const Conv2dParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.pad_h <= (p.R - 1) * p.dil_h && p.pad_w <= (p.S - 1) * p.dil_w;
}

template <typename T>
void grouped_fprop(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu) {
  if (p.N == 0) return;
  Corr k = forward_corr(p);
  k.derive(sizeof(T));
  const int64_t Kg = p.K_per_group(), taps = k.taps;
  correlate<T>(isa, k, x, [&](int64_t g, int64_t o, int64_t t) { return w[(g * Kg + o) * taps + t]; }, bias, y, relu);
}

template <typename T>
void grouped_dgrad(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx) {
  if (p.N == 0) return;
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), R = p.R, S = p.S;
  // grad_output (Kg channels per group, P x Q) correlated with w turned 180 degrees, its channel
  // axes swapped, padding (R - 1) * dil - pad: output H x W.
  Corr k{p.N, p.groups, Kg, Cg, p.P, p.Q, p.H, p.W, R, S, 1, 1, p.dil_h, p.dil_w,
         (R - 1) * p.dil_h - p.pad_h, (S - 1) * p.dil_w - p.pad_w, p.K, p.C, p.channels_last};
  k.derive(sizeof(T));
  auto wk = [&](int64_t g, int64_t c, int64_t t) {
    const int64_t kk = t / (R * S), r = R - 1 - t / S % R, s = S - 1 - t % S;
    return w[(((g * Kg + kk) * Cg + c) * R + r) * S + s];
  };
  correlate<T>(isa, k, gy, wk, nullptr, gx, false);
}

template <typename T>
void grouped_wgrad(Isa isa, const Conv2dParams& p, int64_t chunks, const T* gy, const T* x, T* gw) {
  const int64_t G = p.groups, Kg = p.K_per_group(), kpad = round_up(Kg, kKB);
  Corr k = forward_corr(p);
  k.derive(sizeof(T));
  const int64_t taps = k.taps, tpad = int64_t(k.off.size());
  if (p.N == 0) {
    std::fill(gw, gw + p.K * taps, T(0));
    return;
  }
  chunks = std::clamp<int64_t>(chunks, 1, p.N);
  T* part = scratch<T>(Scratch::call, chunks * G * Kg * taps);
  const KernelFn<T> run = kernel<T>(isa);
  const int64_t gy_img = p.P * p.Q * p.K;
  at::parallel_for(0, chunks * G, 1, [&](int64_t begin, int64_t end) {
    T* planes = scratch<T>(Scratch::input, k.plane_values());
    T* grid = scratch<T>(Scratch::output, kpad * k.flat);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t chunk = item / G, g = item % G;
      const int64_t c0 = chunk * p.N / chunks, c1 = (chunk + 1) * p.N / chunks;
      T* pg = part + (chunk * G + g) * Kg * taps;
      std::fill(pg, pg + Kg * taps, T(0));
      for (int64_t n0 = c0; n0 < c1; n0 += k.nb) {
        const int64_t nb = std::min(k.nb, c1 - n0), flat = round_up(nb * k.Hq * k.Wq, kFlat);
        fill_planes(k, x, n0, nb, g, planes);
        std::fill(grid, grid + kpad * flat, T(0));
        for (int64_t i = 0; i < nb; ++i) {
          const T* gi = gy + (n0 + i) * gy_img;
          for (int64_t oh = 0; oh < p.P; ++oh) {
            T* gr = grid + (i * k.Hq + oh) * k.Wq;
            if (!p.channels_last) {
              for (int64_t o = 0; o < Kg; ++o)
                std::memcpy(gr + o * flat, gi + ((g * Kg + o) * p.P + oh) * p.Q, p.Q * sizeof(T));
            } else {
              const T* s = gi + oh * p.Q * p.K + g * Kg;
              for (int64_t ow = 0; ow < p.Q; ++ow)
                for (int64_t o = 0; o < Kg; ++o) gr[o * flat + ow] = s[ow * p.K + o];
            }
          }
        }
        WgradArgs<T> a{planes, k.off.data(), tpad, grid, pg, kpad, Kg, taps, flat, taps};
        run(nullptr, &a);
      }
    }
  });
  // gw[g * Kg + o][t] = the chunks' partials added in order.
  at::parallel_for(0, G * Kg, 16, [&](int64_t begin, int64_t end) {
    for (int64_t go = begin; go < end; ++go)
      for (int64_t t = 0; t < taps; ++t) {
        T sum = part[go * taps + t];
        for (int64_t c = 1; c < chunks; ++c) sum += part[(c * G * Kg + go) * taps + t];
        gw[go * taps + t] = sum;
      }
  });
}

template void grouped_fprop<float>(Isa, const Conv2dParams&, const float*, const float*, const float*, float*, bool);
template void grouped_fprop<double>(Isa, const Conv2dParams&, const double*, const double*, const double*, double*,
                                    bool);
template void grouped_dgrad<float>(Isa, const Conv2dParams&, const float*, const float*, float*);
template void grouped_dgrad<double>(Isa, const Conv2dParams&, const double*, const double*, double*);
template void grouped_wgrad<float>(Isa, const Conv2dParams&, int64_t, const float*, const float*, float*);
template void grouped_wgrad<double>(Isa, const Conv2dParams&, int64_t, const double*, const double*, double*);

}  // namespace cuconv::cpu
