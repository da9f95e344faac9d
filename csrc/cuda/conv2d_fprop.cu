// CUDA runner: conv2d forward, and the plan op's view of every pass (ops/gpu_runner.h on the CUDA adapter;
// one translation unit per pass keeps nvcc's units small).
#include "cuda/adapter.cuh"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_forward<CudaDevice>) conv2d_forward<CudaDevice>;
template decltype(conv2d_plan<CudaDevice>) conv2d_plan<CudaDevice>;
}  // namespace cuconv::gpu
