// Simulator runner: conv2d grad weight and grad bias (ops/gpu_runner.h on the simulator adapter;
// one translation unit per pass, as for CUDA).
#include "sim/adapter.h"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_backward_weight<SimDevice>) conv2d_backward_weight<SimDevice>;
template decltype(conv2d_backward_bias<SimDevice>) conv2d_backward_bias<SimDevice>;
}  // namespace cuconv::gpu
