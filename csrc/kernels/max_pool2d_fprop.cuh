#pragma once
// max_pool2d forward: one thread per output element scans its window. NaN wins (the last NaN's index
// is reported), ties keep the first maximum, padding acts as -inf, and a window that covers no input
// element gives -inf with index -1. Indices are flat within each (n, c) plane: h * W + w.
#include "../max_pool2d_params.h"
#include "launch.cuh"
#include "max_pool2d_index.cuh"

namespace cuconv::kern {

constexpr int kPoolThreads = 256;

template <typename T, typename I>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_fprop_kernel(const T* x, T* y, int64_t* indices, MaxPool2dParams p, PoolDivisors<I> d) {
  using Acc = acc_t<T>;
  const I total = I(p.N * p.C * p.P * p.Q), H = I(p.H), W = I(p.W);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += I(gridDim.x) * I(blockDim.x)) {
    I image, c, oh, ow;
    pool_decode(i, p.channels_last, d, image, c, oh, ow);
    const I C = I(p.C), step = p.channels_last ? C : I(1);
    const I in_base = pool_plane_base(p.channels_last, image, c, H, W, C);
    T best{};
    Acc best_acc = Acc(0);
    I best_idx = -1;
    const I h0 = oh * I(p.stride_h) - I(p.pad_h), w0 = ow * I(p.stride_w) - I(p.pad_w);
    for (I a = 0; a < I(p.kernel_h); ++a) {
      const I h = h0 + a * I(p.dil_h);
      if (h < 0 || h >= H) continue;
      for (I b = 0; b < I(p.kernel_w); ++b) {
        const I w = w0 + b * I(p.dil_w);
        if (w < 0 || w >= W) continue;
        const T v = x[in_base + (h * W + w) * step];
        const Acc va = to_acc(v);
        // strict > keeps the first maximum; every NaN replaces, so the last NaN is reported
        if (best_idx < 0 || va > best_acc || va != va) {
          best = v;
          best_acc = va;
          best_idx = h * W + w;
        }
      }
    }
    y[i] = best_idx < 0 ? from_acc<T>(-Acc(INFINITY)) : best;
    indices[i] = int64_t(best_idx);
  }
}

template <typename T, typename I>
void launch_max_pool2d_fprop(const MaxPool2dParams& p, const T* x, T* y, int64_t* indices, stream_t stream) {
  launch_kernel(&max_pool2d_fprop_kernel<T, I>, dim3(grid_stride_blocks(p.N * p.C * p.P * p.Q, kPoolThreads, stream)),
                dim3(kPoolThreads), 0, stream, x, y, indices, p, pool_divisors<I>(p, p.P, p.Q));
}

template <typename T>
void max_pool2d_fprop(const MaxPool2dParams& p, const T* x, T* y, int64_t* indices, stream_t stream) {
  if (pool_fits_int32(p)) launch_max_pool2d_fprop<T, int32_t>(p, x, y, indices, stream);
  else launch_max_pool2d_fprop<T, int64_t>(p, x, y, indices, stream);
}

}  // namespace cuconv::kern
