#pragma once
// Deterministic block-wide sum: a fixed shuffle tree inside each warp, then warp 0 sums the warp
// totals in order. The result is valid in thread 0. Every thread of the block must call it.
#include "portable.cuh"

namespace cuconv::kern {

template <typename Acc>
CUCONV_DEVICE Acc warp_reduce_sum(Acc v) {
  CUCONV_UNROLL
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename Acc, int kThreads>
CUCONV_DEVICE Acc block_reduce_sum(Acc v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  CUCONV_SHARED(Acc, warp_sums, kThreads / 32);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  v = warp_reduce_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  Acc total = Acc(0);
  if (threadIdx.x == 0)
    for (int i = 0; i < kThreads / 32; ++i) total += warp_sums[i];
  return total;
}

}  // namespace cuconv::kern
