// CUDA runner: fused conv2d + bias + ReLU + 2x2 max-pool (ops/gpu_runner.h on the CUDA adapter;
// one translation unit per pass keeps nvcc's units small).
#include "cuda/adapter.cuh"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_relu_max_pool2d_fuses<CudaDevice>) conv2d_relu_max_pool2d_fuses<CudaDevice>;
template decltype(conv2d_relu_max_pool2d_forward<CudaDevice>) conv2d_relu_max_pool2d_forward<CudaDevice>;
}  // namespace cuconv::gpu
