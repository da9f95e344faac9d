#pragma once
// Depthwise conv2d (one input channel per group, groups == C): direct kernels, one thread per output
// element (forward) or per input element (grad input, a gather: no atomics), and one block per weight
// element for grad weight (a fixed-order block reduction: deterministic).
// Index arithmetic by multiply-high (fast_divmod.cuh): no division in any loop.
#include <stdexcept>

#include "../conv2d_params.h"
#include "block_reduce.cuh"
#include "fast_divmod.cuh"
#include "launch.cuh"

namespace cuconv::kern {

constexpr int kDepthwiseThreads = 256;

// The divisions of a flat index over (n, channel, row, column) in either layout, built on the host:
// channels_last splits off the channel first (`inner` = channels), then the image (`outer` = the
// plane's positions); NCHW the plane's position first (`inner` = positions), then the image
// (`outer` = channels); `col` splits a position into row and column. `stride_h/w` divide the grad
// input's tap offsets, `multiplier` an output channel into its input channel (K / groups per group).
struct DepthwiseDivisors {
  FastDivmod64 inner, outer;
  FastDivmod col, stride_h, stride_w, multiplier;
  DepthwiseDivisors() = default;
  DepthwiseDivisors(const Conv2dParams& p, int64_t channels, int64_t rows, int64_t cols)
      : inner(p.channels_last ? channels : rows * cols), outer(p.channels_last ? rows * cols : channels), col(cols),
        stride_h(p.stride_h), stride_w(p.stride_w), multiplier(p.K / p.groups) {
    if (rows * cols >= (int64_t(1) << 31) || p.H + p.pad_h >= (int64_t(1) << 31) || p.W + p.pad_w >= (int64_t(1) << 31))
      throw std::length_error("cuconv: depthwise conv2d with an image plane of 2^31 or more elements is not supported "
                              "by the CUDA kernels");
  }
  // The flat index i of a tensor [N][channels][rows][cols] (or channels_last) as (n, channel, row, col).
  CUCONV_DEVICE void decode(bool cl, int64_t i, int64_t& n, int64_t& ch, int64_t& r, int64_t& c) const {
    int64_t a, b, pos;
    inner.divmod(i, a, b);  // channels_last: a = n * positions + pos, b = ch; NCHW: a = n * channels + ch, b = pos
    if (cl) {
      ch = b;
      outer.divmod(a, n, pos);
    } else {
      pos = b;
      outer.divmod(a, n, ch);
    }
    col.divmod(pos, r, c);
  }
};

CUCONV_HD int64_t act_offset(const Conv2dParams&, bool cl, int64_t n, int64_t c, int64_t h, int64_t w, int64_t C,
                             int64_t H, int64_t W) {
  return cl ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_fprop_kernel(const T* x, const T* w, const T* bias, T* y, Conv2dParams p, DepthwiseDivisors d,
                                  bool relu) {
  using Acc = acc_t<T>;
  const int64_t total = p.N * p.K * p.P * p.Q;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, k, oh, ow;
    d.decode(p.channels_last, i, n, k, oh, ow);
    const int64_t c = d.multiplier.div(int32_t(k));
    Acc acc = bias ? to_acc(bias[k]) : Acc(0);
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
      if (h < 0 || h >= p.H) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t ww = ow * p.stride_w - p.pad_w + s * p.dil_w;
        if (ww < 0 || ww >= p.W) continue;
        acc += to_acc(x[act_offset(p, p.channels_last, n, c, h, ww, p.C, p.H, p.W)]) * to_acc(w[(k * p.R + r) * p.S + s]);
      }
    }
    if (relu && acc < Acc(0)) acc = Acc(0);
    y[i] = from_acc<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_dgrad_kernel(const T* gy, const T* w, T* gx, Conv2dParams p, DepthwiseDivisors d) {
  using Acc = acc_t<T>;
  const int64_t total = p.N * p.C * p.H * p.W, Kg = p.K / p.groups;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, ww;
    d.decode(p.channels_last, i, n, c, h, ww);
    Acc acc = Acc(0);
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t th = h + p.pad_h - r * p.dil_h;
      if (th < 0) continue;
      int64_t oh, rem_h;
      d.stride_h.divmod(th, oh, rem_h);
      if (rem_h || oh >= p.P) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t tw = ww + p.pad_w - s * p.dil_w;
        if (tw < 0) continue;
        int64_t ow, rem_w;
        d.stride_w.divmod(tw, ow, rem_w);
        if (rem_w || ow >= p.Q) continue;
        for (int64_t k = c * Kg; k < (c + 1) * Kg; ++k)
          acc += to_acc(gy[act_offset(p, p.channels_last, n, k, oh, ow, p.K, p.P, p.Q)]) *
                 to_acc(w[(k * p.R + r) * p.S + s]);
      }
    }
    gx[i] = from_acc<T>(acc);
  }
}

// One block per weight element (k, r, s): a fixed-order sum over batch and output positions.
template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_wgrad_kernel(const T* gy, const T* x, T* gw, Conv2dParams p, FastDivmod64 div_pq, FastDivmod div_q) {
  using Acc = acc_t<T>;
  const int64_t widx = blockIdx.x, s = widx % p.S, r = (widx / p.S) % p.R, k = widx / (p.S * p.R);
  const int64_t c = k / (p.K / p.groups), total = p.N * p.P * p.Q;
  Acc acc = Acc(0);
  for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
    int64_t n, pq, oh, ow;
    div_pq.divmod(i, n, pq);
    div_q.divmod(pq, oh, ow);
    const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h, ww = ow * p.stride_w - p.pad_w + s * p.dil_w;
    if (h < 0 || h >= p.H || ww < 0 || ww >= p.W) continue;
    acc += to_acc(gy[act_offset(p, p.channels_last, n, k, oh, ow, p.K, p.P, p.Q)]) *
           to_acc(x[act_offset(p, p.channels_last, n, c, h, ww, p.C, p.H, p.W)]);
  }
  acc = block_reduce_sum<Acc, kDepthwiseThreads>(acc);
  if (threadIdx.x == 0) gw[widx] = from_acc<T>(acc);
}

template <typename T>
void conv2d_depthwise_fprop(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu, stream_t st) {
  launch_kernel(&conv2d_depthwise_fprop_kernel<T>, dim3(grid_stride_blocks(p.N * p.K * p.P * p.Q, kDepthwiseThreads, st)),
                dim3(kDepthwiseThreads), 0, st, x, w, bias, y, p, DepthwiseDivisors(p, p.K, p.P, p.Q), relu);
}
template <typename T>
void conv2d_depthwise_dgrad(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t st) {
  launch_kernel(&conv2d_depthwise_dgrad_kernel<T>, dim3(grid_stride_blocks(p.N * p.C * p.H * p.W, kDepthwiseThreads, st)),
                dim3(kDepthwiseThreads), 0, st, gy, w, gx, p, DepthwiseDivisors(p, p.C, p.H, p.W));
}
template <typename T>
void conv2d_depthwise_wgrad(const Conv2dParams& p, const T* gy, const T* x, T* gw, stream_t st) {
  const DepthwiseDivisors plane(p, p.K, p.P, p.Q);  // refuses planes of 2^31 or more positions
  launch_kernel(&conv2d_depthwise_wgrad_kernel<T>, dim3(unsigned(p.K * p.R * p.S)), dim3(kDepthwiseThreads), 0, st,
                gy, x, gw, p, FastDivmod64(p.P * p.Q), plane.col);
}

}  // namespace cuconv::kern
