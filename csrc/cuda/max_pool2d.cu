// CUDA runner: max_pool2d forward and backward (ops/gpu_runner.h on the CUDA adapter;
// one translation unit per pass keeps nvcc's units small).
#include "cuda/adapter.cuh"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(max_pool2d_forward<CudaDevice>) max_pool2d_forward<CudaDevice>;
template decltype(max_pool2d_backward<CudaDevice>) max_pool2d_backward<CudaDevice>;
}  // namespace cuconv::gpu
