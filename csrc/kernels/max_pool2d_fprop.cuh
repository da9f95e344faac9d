#pragma once
// max_pool2d forward: one thread per output element scans its window. NaN wins (the last NaN's index
// is reported), ties keep the first maximum, padding acts as -inf, and a window that covers no input
// element gives -inf with index -1. Indices are flat within each (n, c) plane: h * W + w.
#include "../max_pool2d_params.h"
#include "launch.cuh"

namespace cuconv::kern {

constexpr int kPoolThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_fprop_kernel(const T* x, T* y, int64_t* indices, MaxPool2dParams p) {
  using Acc = acc_t<T>;
  const int64_t total = p.N * p.C * p.P * p.Q;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t nc_base, c_step, oh, ow;  // plane origin and element stride of (n, c)
    if (p.channels_last) {
      const int64_t c = i % p.C, n = i / (p.C * p.Q * p.P);
      ow = (i / p.C) % p.Q;
      oh = (i / (p.C * p.Q)) % p.P;
      nc_base = n * p.H * p.W * p.C + c;
      c_step = p.C;
    } else {
      ow = i % p.Q;
      oh = (i / p.Q) % p.P;
      nc_base = (i / (p.Q * p.P)) * p.H * p.W;
      c_step = 1;
    }
    T best{};
    Acc best_acc = Acc(0);
    int64_t best_idx = -1;
    const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
    for (int64_t a = 0; a < p.kernel_h; ++a) {
      const int64_t h = h0 + a * p.dil_h;
      if (h < 0 || h >= p.H) continue;
      for (int64_t b = 0; b < p.kernel_w; ++b) {
        const int64_t w = w0 + b * p.dil_w;
        if (w < 0 || w >= p.W) continue;
        const T v = x[nc_base + (h * p.W + w) * c_step];
        const Acc va = to_acc(v);
        // strict > keeps the first maximum; every NaN replaces, so the last NaN is reported
        if (best_idx < 0 || va > best_acc || va != va) {
          best = v;
          best_acc = va;
          best_idx = h * p.W + w;
        }
      }
    }
    y[i] = best_idx < 0 ? from_acc<T>(-Acc(INFINITY)) : best;
    indices[i] = best_idx;
  }
}

template <typename T>
void max_pool2d_fprop(const MaxPool2dParams& p, const T* x, T* y, int64_t* indices, stream_t stream) {
  launch_kernel(&max_pool2d_fprop_kernel<T>, dim3(grid_stride_blocks(p.N * p.C * p.P * p.Q, kPoolThreads, stream)),
                dim3(kPoolThreads), 0, stream, x, y, indices, p);
}

}  // namespace cuconv::kern
