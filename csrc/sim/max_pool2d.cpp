// Simulator runner: max_pool2d forward and backward (ops/gpu_runner.h on the simulator adapter;
// one translation unit per pass, as for CUDA).
#include "sim/adapter.h"
#include "ops/gpu_runner.h"

namespace cuconv::gpu {
template decltype(max_pool2d_forward<SimDevice>) max_pool2d_forward<SimDevice>;
template decltype(max_pool2d_backward<SimDevice>) max_pool2d_backward<SimDevice>;
}  // namespace cuconv::gpu
