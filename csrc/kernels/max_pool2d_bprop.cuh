#pragma once
// max_pool2d backward as a gather: one thread per input element sums the gradients of the output
// windows that cover it and chose it (indices[o] == h * W + w). Each window covering (h, w) is
// visited once, in increasing output order, so overlapping windows and dilation are handled, no
// atomics are needed and the result is deterministic.
#include "../max_pool2d_params.h"
#include "launch.cuh"

namespace cuconv::kern {

constexpr int kPoolBpropThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kPoolBpropThreads)
    max_pool2d_bprop_kernel(const T* gy, const int64_t* indices, T* gx, MaxPool2dParams p) {
  using Acc = acc_t<T>;
  const int64_t total = p.N * p.C * p.H * p.W;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t out_base, out_step, h, w;  // output plane origin and element stride of (n, c)
    if (p.channels_last) {
      const int64_t c = i % p.C, n = i / (p.C * p.W * p.H);
      w = (i / p.C) % p.W;
      h = (i / (p.C * p.W)) % p.H;
      out_base = n * p.P * p.Q * p.C + c;
      out_step = p.C;
    } else {
      w = i % p.W;
      h = (i / p.W) % p.H;
      out_base = (i / (p.W * p.H)) * p.P * p.Q;
      out_step = 1;
    }
    const int64_t self = h * p.W + w;
    Acc acc = Acc(0);
    // Tap a of window oh lands on h when oh*stride - pad + a*dil == h; a from high to low gives oh ascending.
    for (int64_t a = p.kernel_h - 1; a >= 0; --a) {
      const int64_t th = h + p.pad_h - a * p.dil_h;
      if (th < 0 || th % p.stride_h) continue;
      const int64_t oh = th / p.stride_h;
      if (oh >= p.P) continue;
      for (int64_t b = p.kernel_w - 1; b >= 0; --b) {
        const int64_t tw = w + p.pad_w - b * p.dil_w;
        if (tw < 0 || tw % p.stride_w) continue;
        const int64_t ow = tw / p.stride_w;
        if (ow >= p.Q) continue;
        const int64_t o = out_base + (oh * p.Q + ow) * out_step;
        if (indices[o] == self) acc += to_acc(gy[o]);
      }
    }
    gx[i] = from_acc<T>(acc);
  }
}

template <typename T>
void max_pool2d_bprop(const MaxPool2dParams& p, const T* gy, const int64_t* indices, T* gx, stream_t stream) {
  launch_kernel(&max_pool2d_bprop_kernel<T>, dim3(grid_stride_blocks(p.N * p.C * p.H * p.W, kPoolBpropThreads, stream)),
                dim3(kPoolBpropThreads), 0, stream, gy, indices, gx, p);
}

}  // namespace cuconv::kern
