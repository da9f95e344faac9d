// Simulator runner: fused conv2d + bias + ReLU + 2x2 max-pool (ops/gpu_runner.h on the simulator adapter;
// one translation unit per pass, as for CUDA).
#include "sim/adapter.h"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_relu_max_pool2d_fuses<SimDevice>) conv2d_relu_max_pool2d_fuses<SimDevice>;
template decltype(conv2d_relu_max_pool2d_forward<SimDevice>) conv2d_relu_max_pool2d_forward<SimDevice>;
}  // namespace cuconv::gpu
