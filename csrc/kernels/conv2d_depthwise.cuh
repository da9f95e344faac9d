#pragma once
// Depthwise conv2d (one input channel per group, groups == C): direct kernels, one thread per output
// element (forward) or per input element (grad input, a gather: no atomics), and one block per weight
// element for grad weight (a fixed-order block reduction: deterministic).
#include "../conv2d_params.h"
#include "block_reduce.cuh"
#include "launch.cuh"

namespace cuconv::kern {

constexpr int kDepthwiseThreads = 256;

CUCONV_HD int64_t act_offset(const Conv2dParams&, bool cl, int64_t n, int64_t c, int64_t h, int64_t w, int64_t C,
                             int64_t H, int64_t W) {
  return cl ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_fprop_kernel(const T* x, const T* w, const T* bias, T* y, Conv2dParams p, bool relu) {
  using Acc = acc_t<T>;
  const int64_t total = p.N * p.K * p.P * p.Q, Kg = p.K / p.groups;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, k, oh, ow;
    if (p.channels_last) {
      k = i % p.K; ow = (i / p.K) % p.Q; oh = (i / (p.K * p.Q)) % p.P; n = i / (p.K * p.Q * p.P);
    } else {
      ow = i % p.Q; oh = (i / p.Q) % p.P; k = (i / (p.Q * p.P)) % p.K; n = i / (p.Q * p.P * p.K);
    }
    const int64_t c = k / Kg;
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
    conv2d_depthwise_dgrad_kernel(const T* gy, const T* w, T* gx, Conv2dParams p) {
  using Acc = acc_t<T>;
  const int64_t total = p.N * p.C * p.H * p.W, Kg = p.K / p.groups;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, ww;
    if (p.channels_last) {
      c = i % p.C; ww = (i / p.C) % p.W; h = (i / (p.C * p.W)) % p.H; n = i / (p.C * p.W * p.H);
    } else {
      ww = i % p.W; h = (i / p.W) % p.H; c = (i / (p.W * p.H)) % p.C; n = i / (p.W * p.H * p.C);
    }
    Acc acc = Acc(0);
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t th = h + p.pad_h - r * p.dil_h;
      if (th < 0 || th % p.stride_h) continue;
      const int64_t oh = th / p.stride_h;
      if (oh >= p.P) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t tw = ww + p.pad_w - s * p.dil_w;
        if (tw < 0 || tw % p.stride_w) continue;
        const int64_t ow = tw / p.stride_w;
        if (ow >= p.Q) continue;
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
    conv2d_depthwise_wgrad_kernel(const T* gy, const T* x, T* gw, Conv2dParams p) {
  using Acc = acc_t<T>;
  const int64_t widx = blockIdx.x, s = widx % p.S, r = (widx / p.S) % p.R, k = widx / (p.S * p.R);
  const int64_t c = k / (p.K / p.groups), total = p.N * p.P * p.Q;
  Acc acc = Acc(0);
  for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
    const int64_t n = i / (p.P * p.Q), oh = (i / p.Q) % p.P, ow = i % p.Q;
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
                dim3(kDepthwiseThreads), 0, st, x, w, bias, y, p, relu);
}
template <typename T>
void conv2d_depthwise_dgrad(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t st) {
  launch_kernel(&conv2d_depthwise_dgrad_kernel<T>, dim3(grid_stride_blocks(p.N * p.C * p.H * p.W, kDepthwiseThreads, st)),
                dim3(kDepthwiseThreads), 0, st, gy, w, gx, p);
}
template <typename T>
void conv2d_depthwise_wgrad(const Conv2dParams& p, const T* gy, const T* x, T* gw, stream_t st) {
  launch_kernel(&conv2d_depthwise_wgrad_kernel<T>, dim3(unsigned(p.K * p.R * p.S)), dim3(kDepthwiseThreads), 0, st,
                gy, x, gw, p);
}

}  // namespace cuconv::kern
