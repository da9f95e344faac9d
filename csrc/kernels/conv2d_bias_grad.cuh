#pragma once
// conv2d grad bias: grad_bias[k] = sum of grad_output[:, k, :, :], one block per channel, a fixed-order
// block reduction (deterministic, no atomics).
#include "../conv2d_params.h"
#include "block_reduce.cuh"
#include "fast_divmod.cuh"
#include "launch.cuh"

namespace cuconv::kern {

constexpr int kBiasGradThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kBiasGradThreads)
    conv2d_bias_grad_kernel(const T* gy, T* gb, Conv2dParams p, FastDivmod64 div_pq) {
  using Acc = acc_t<T>;
  const int64_t k = blockIdx.x, PQ = p.P * p.Q, total = p.N * PQ;
  Acc acc = Acc(0);
  for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
    if (p.channels_last) {  // i = n * PQ + pq is the pixel
      acc += to_acc(gy[i * p.K + k]);
    } else {
      int64_t n, pq;
      div_pq.divmod(i, n, pq);
      acc += to_acc(gy[(n * p.K + k) * PQ + pq]);
    }
  }
  acc = block_reduce_sum<Acc, kBiasGradThreads>(acc);
  if (threadIdx.x == 0) gb[k] = from_acc<T>(acc);
}

template <typename T>
void conv2d_bias_grad(const Conv2dParams& p, const T* gy, T* gb, stream_t stream) {
  launch_kernel(&conv2d_bias_grad_kernel<T>, dim3(unsigned(p.K)), dim3(kBiasGradThreads), 0, stream, gy, gb, p,
                FastDivmod64(p.P * p.Q));
}

}  // namespace cuconv::kern
