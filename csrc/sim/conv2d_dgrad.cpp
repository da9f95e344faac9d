// Simulator runner: conv2d grad input (ops/gpu_runner.h on the simulator adapter;
// one translation unit per pass, as for CUDA).
#include "sim/adapter.h"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(conv2d_backward_input<SimDevice>) conv2d_backward_input<SimDevice>;
}  // namespace cuconv::gpu
