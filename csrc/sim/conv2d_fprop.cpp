// Simulator runner: conv2d forward, and the plan op's view of every pass (ops/gpu_runner.h on the simulator adapter;
// one translation unit per pass, as for CUDA).
#include "sim/adapter.h"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_forward<SimDevice>) conv2d_forward<SimDevice>;
template decltype(conv2d_plan<SimDevice>) conv2d_plan<SimDevice>;
}  // namespace cuconv::gpu
