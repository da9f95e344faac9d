// max_pool2d on the CPU. Forward: for each output row (NCHW) or output pixel (NHWC) the window
// elements are visited in row-major order, each as one vectorisable pass over the row's outputs
// (NCHW) or the pixel's channels (NHWC) with a branch-free update: take v when v > best, when v is
// NaN (so a NaN wins and the last NaN is reported, as torch) or when nothing was taken yet; a tie
// keeps the first maximum. Padding is never read (acts as -inf); a window that misses the input
// entirely gives -inf and index -1. The same source is compiled for AVX2 (per-function target
// attribute) and for the baseline ISA, picked at run time (cpu_isa.h).
// Backward: each (n, c) plane (NCHW) or image (NHWC) is zeroed and scattered into by one thread in
// a fixed order, with bounds-checked indices: deterministic.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>

#include "../runners.h"
#include "cpu_isa.h"

namespace cuconv::cpu {

namespace {

// Window positions are tracked as flat h*W + w in I: int32 next to float (same lane width, so the
// compiler vectorises the update), int64 next to double.
template <typename T>
using PoolIndex = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

#define CUCONV_INLINE inline __attribute__((always_inline))

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
#define CUCONV_AVX2 __attribute__((target("avx2,fma")))
template <typename T>
CUCONV_AVX2 void forward_planes_avx2(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx, PoolIndex<T>* pos,
                                     int64_t begin, int64_t end) {
  for (int64_t nc = begin; nc < end; ++nc)
    forward_plane_nchw(p, x + nc * p.H * p.W, y + nc * p.P * p.Q, idx + nc * p.P * p.Q, pos);
}

template <typename T>
CUCONV_AVX2 void forward_pixels_avx2(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx, PoolIndex<T>* pos,
                                     int64_t begin, int64_t end) {
  for (int64_t npq = begin; npq < end; ++npq) {
    const int64_t n = npq / (p.P * p.Q), oh = (npq / p.Q) % p.P, ow = npq % p.Q;
    forward_pixel_nhwc(p, x + n * p.H * p.W * p.C, oh, ow, y + npq * p.C, idx + npq * p.C, pos);
  }
}
#else
template <typename T>
void forward_planes_avx2(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx, PoolIndex<T>* pos, int64_t begin,
                         int64_t end) {
  forward_planes_portable(p, x, y, idx, pos, begin, end);
}
template <typename T>
void forward_pixels_avx2(const MaxPool2dParams& p, const T* x, T* y, int64_t* idx, PoolIndex<T>* pos, int64_t begin,
                         int64_t end) {
  forward_pixels_portable(p, x, y, idx, pos, begin, end);
}
#endif

}  // namespace

void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices) {
  const Isa isa = active_isa();
  // Flat positions must fit the index type used while scanning (int32 for float).
  const bool small_planes = p.H * p.W < (int64_t(1) << 31) && p.Q < (int64_t(1) << 31);
  TORCH_CHECK(small_planes || input.scalar_type() == at::kDouble,
              "cuconv max_pool2d (CPU): planes of 2^31 elements or more are not supported for float32");
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cuconv_max_pool2d_cpu", [&] {
    using I = PoolIndex<scalar_t>;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = output.data_ptr<scalar_t>();
    int64_t* idx = indices.data_ptr<int64_t>();
    const auto index_opts = input.options().dtype(sizeof(I) == 4 ? at::kInt : at::kLong);
    if (!p.channels_last) {
      const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.P * p.Q));
      at::parallel_for(0, p.N * p.C, grain, [&](int64_t begin, int64_t end) {
        at::Tensor scratch = at::empty({p.Q}, index_opts);
        I* pos = scratch.data_ptr<I>();
        if (isa == Isa::avx2) forward_planes_avx2(p, x, y, idx, pos, begin, end);
        else forward_planes_portable(p, x, y, idx, pos, begin, end);
      });
    } else {
      const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.C));
      at::parallel_for(0, p.N * p.P * p.Q, grain, [&](int64_t begin, int64_t end) {
        at::Tensor scratch = at::empty({p.C}, index_opts);
        I* pos = scratch.data_ptr<I>();
        if (isa == Isa::avx2) forward_pixels_avx2(p, x, y, idx, pos, begin, end);
        else forward_pixels_portable(p, x, y, idx, pos, begin, end);
      });
    }
  });
}

void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_max_pool2d_backward_cpu", [&] {
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    const int64_t* idx = indices.const_data_ptr<int64_t>();
    scalar_t* gx = grad_input.data_ptr<scalar_t>();
    const int64_t plane = p.H * p.W, PQ = p.P * p.Q;
    if (!p.channels_last) {
      const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, plane));
      at::parallel_for(0, p.N * p.C, grain, [&](int64_t begin, int64_t end) {
        for (int64_t nc = begin; nc < end; ++nc) {
          scalar_t* g = gx + nc * plane;
          std::fill(g, g + plane, scalar_t(0));
          const int64_t* ix = idx + nc * PQ;
          const scalar_t* go = gy + nc * PQ;
          for (int64_t o = 0; o < PQ; ++o)
            if (ix[o] >= 0 && ix[o] < plane) g[ix[o]] += go[o];
        }
      });
    } else {
      at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          scalar_t* g = gx + n * plane * p.C;
          std::fill(g, g + plane * p.C, scalar_t(0));
          for (int64_t o = 0; o < PQ; ++o) {
            const int64_t* ix = idx + (n * PQ + o) * p.C;
            const scalar_t* go = gy + (n * PQ + o) * p.C;
            for (int64_t c = 0; c < p.C; ++c)
              if (ix[c] >= 0 && ix[c] < plane) g[ix[c] * p.C + c] += go[c];
          }
        }
      });
    }
  });
}

}  // namespace cuconv::cpu
