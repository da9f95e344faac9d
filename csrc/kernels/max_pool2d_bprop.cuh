#pragma once
// max_pool2d backward as a gather: one thread per input element sums the gradients of the output
// windows that cover it and chose it (indices[o] == h * W + w). Each window covering (h, w) is
// visited once, in increasing output order, so overlapping windows and dilation are handled, no
// atomics are needed and the result is deterministic.
#include "../max_pool2d_params.h"
#include "launch.cuh"
#include "max_pool2d_index.cuh"

namespace cuconv::kern {

constexpr int kPoolBpropThreads = 256;

template <typename T, typename I>
__global__ void __launch_bounds__(kPoolBpropThreads)
    max_pool2d_bprop_kernel(const T* gy, const int64_t* indices, T* gx, MaxPool2dParams p, PoolDivisors<I> d) {
  using Acc = acc_t<T>;
  const I total = I(p.N * p.C * p.H * p.W), P = I(p.P), Q = I(p.Q), C = I(p.C);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += I(gridDim.x) * I(blockDim.x)) {
    I image, c, h, w;
    pool_decode(i, p.channels_last, d, image, c, h, w);
    const I out_base = pool_plane_base(p.channels_last, image, c, P, Q, C), out_step = p.channels_last ? C : I(1);
    const int64_t self = int64_t(h) * p.W + w;
    Acc acc = Acc(0);
    // Tap a of window oh lands on h when oh*stride - pad + a*dil == h; a from high to low gives oh ascending.
    for (I a = I(p.kernel_h) - 1; a >= 0; --a) {
      const I th = h + I(p.pad_h) - a * I(p.dil_h);
      if (th < 0) continue;
      I oh, rh;
      d.stride_h.divmod(th, oh, rh);
      if (rh != 0 || oh >= P) continue;
      for (I b = I(p.kernel_w) - 1; b >= 0; --b) {
        const I tw = w + I(p.pad_w) - b * I(p.dil_w);
        if (tw < 0) continue;
        I ow, rw;
        d.stride_w.divmod(tw, ow, rw);
        if (rw != 0 || ow >= Q) continue;
        const I o = out_base + (oh * Q + ow) * out_step;
        if (indices[o] == self) acc += to_acc(gy[o]);
      }
    }
    gx[i] = from_acc<T>(acc);
  }
}

template <typename T, typename I>
void launch_max_pool2d_bprop(const MaxPool2dParams& p, const T* gy, const int64_t* indices, T* gx, stream_t stream) {
  launch_kernel(&max_pool2d_bprop_kernel<T, I>,
                dim3(grid_stride_blocks(p.N * p.C * p.H * p.W, kPoolBpropThreads, stream)), dim3(kPoolBpropThreads), 0,
                stream, gy, indices, gx, p, pool_divisors<I>(p, p.H, p.W));
}

template <typename T>
void max_pool2d_bprop(const MaxPool2dParams& p, const T* gy, const int64_t* indices, T* gx, stream_t stream) {
  if (pool_fits_int32(p)) launch_max_pool2d_bprop<T, int32_t>(p, gy, indices, gx, stream);
  else launch_max_pool2d_bprop<T, int64_t>(p, gy, indices, gx, stream);
}

}  // namespace cuconv::kern
