// CUDA runner: conv2d grad input (ops/gpu_runner.h on the CUDA adapter;
// one translation unit per pass keeps nvcc's units small).
#include "cuda/adapter.cuh"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_backward_input<CudaDevice>) conv2d_backward_input<CudaDevice>;
}  // namespace cuconv::gpu
