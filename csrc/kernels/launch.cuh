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
// Defined in csrc/cuda/launch_check.cu (C10_CUDA_KERNEL_LAUNCH_CHECK): throws a c10::Error.
void check_last_launch(const char* kernel_name);

template <typename... P, typename... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, stream_t stream, A&&... args) {
  kernel<<<grid, block, smem_bytes, stream>>>(static_cast<P>(args)...);
  check_last_launch(__func__);
}
#else
using stream_t = std::nullptr_t;

template <typename... P, typename... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, stream_t, A&&... args) {
  ::cuconv_sim::launch(kernel, grid, block, smem_bytes, std::forward<A>(args)...);
}
#endif

}  // namespace cuconv::kern
