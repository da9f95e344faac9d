// CUDA runner: conv2d grad weight and grad bias (ops/gpu_runner.h on the CUDA adapter;
// one translation unit per pass keeps nvcc's units small).
#include "cuda/adapter.cuh"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_backward_weight<CudaDevice>) conv2d_backward_weight<CudaDevice>;
template decltype(conv2d_backward_bias<CudaDevice>) conv2d_backward_bias<CudaDevice>;
}  // namespace cuconv::gpu
