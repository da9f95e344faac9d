#pragma once
// The one launch helper: `launch_kernel(&kernel<...>, grid, block, smem_bytes, stream, args...)`.
// Under nvcc it is `kernel<<<grid, block, smem_bytes, stream>>>(args...)` followed by a launch-error
// check; under g++ it runs the kernel in the simulator (synchronously; the stream is ignored).
#include <cstddef>
#include <utility>

#include "portable.cuh"

namespace cuconv::kern {

#if defined(__CUDACC__)
using stream_t = cudaStream_t;
// Blocks a grid-stride kernel needs to fill the current device (8 resident blocks per SM).
inline int64_t grid_stride_block_cap() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    sms = 132;
  return int64_t(sms) * 8;
}
// Defined in csrc/cuda/launch_check.cu (C10_CUDA_KERNEL_LAUNCH_CHECK): throws a c10::Error.
void check_last_launch(const char* kernel_name);

template <typename... P, typename... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, stream_t stream, A&&... args) {
  kernel<<<grid, block, smem_bytes, stream>>>(static_cast<P>(args)...);
  check_last_launch(__func__);
}
#else
using stream_t = std::nullptr_t;
// The simulator runs one block at a time and each block's start costs a wake-up of all its threads:
// few blocks, each striding over many elements, exercise the same code far faster.
inline int64_t grid_stride_block_cap() { return 4; }

template <typename... P, typename... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, stream_t, A&&... args) {
  ::cuconv_sim::launch(kernel, grid, block, smem_bytes, std::forward<A>(args)...);
}
#endif

// Grid for a grid-stride loop over `total` elements with `threads` per block.
inline unsigned grid_stride_blocks(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads, cap = grid_stride_block_cap();
  return unsigned(blocks < cap ? blocks : cap);
}

}  // namespace cuconv::kern
