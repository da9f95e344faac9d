#pragma once
// The one launch helper: `launch_kernel(&kernel<...>, grid, block, smem_bytes, stream, args...)`.
// Under nvcc it is `kernel<<<grid, block, smem_bytes, stream>>>(args...)` followed by a launch
// check; under g++ it runs the kernel in the simulator (synchronously; the stream is ignored).
#include <cstddef>
#include <utility>

#include "device_props.cuh"
#include "portable.cuh"

namespace cuconv::kern {

#if defined(__CUDACC__)
using stream_t = cudaStream_t;
// Defined in csrc/cuda/launch_check.cu: throws a c10::Error naming the kernel when its launch
// failed, or, with cuconv.config sync_launches, when it faulted while running.
void check_launch(const void* kernel, cudaStream_t stream);

template <typename... P, typename... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, stream_t stream, A&&... args) {
  kernel<<<grid, block, smem_bytes, stream>>>(static_cast<P>(args)...);
  check_launch(reinterpret_cast<const void*>(kernel), stream);
}
#else
using stream_t = std::nullptr_t;

template <typename... P, typename... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, stream_t, A&&... args) {
  ::cuconv_sim::launch(kernel, grid, block, smem_bytes, std::forward<A>(args)...);
}
#endif

// Grid for a grid-stride loop over `total` elements with `threads` per block: one block per
// `threads` elements, capped at what the device holds resident at once (more blocks would only
// queue; each resident block strides over the rest).
inline unsigned grid_stride_blocks(int64_t total, int threads, stream_t stream) {
  const DeviceProps& d = device_props(stream);
  const int64_t blocks = (total + threads - 1) / threads, cap = int64_t(d.sm_count) * resident_blocks_per_sm(d, threads);
  return unsigned(blocks < cap ? blocks : cap);
}

}  // namespace cuconv::kern
