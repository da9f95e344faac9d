// The launch-error check that csrc/kernels/launch.cuh runs after every kernel launch on the GPU.
#include <c10/cuda/CUDAException.h>

#include "../kernels/launch.cuh"

namespace cuconv::kern {

void check_last_launch(const char* kernel_name) {
  (void)kernel_name;
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuconv::kern
