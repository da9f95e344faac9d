#pragma once
// The three runners of the same ops: the CPU fallback (cpu::), the simulator that runs the CUDA
// kernel source on the CPU (sim::) and the CUDA kernels (cuda::). Each implements the functions
// below for tensors the shared router in ops.cpp has already checked, laid out and allocated:
//  - input, output, grad_output, grad_input: contiguous in p.channels_last ? NHWC : NCHW;
//  - weight, grad_weight: contiguous OIHW; bias, grad_bias: contiguous, length K;
//  - no tensor is empty (the router returns early), and outputs may hold garbage (or poison).
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "conv2d_params.h"
#include "max_pool2d_params.h"

namespace cuconv {

#define CUCONV_RUNNER_FUNCTIONS                                                                  \
  /* output = conv(input, weight) + bias (bias undefined when absent), then max(0, .) if relu */ \
  void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, \
                      const at::Tensor& bias, const at::Tensor& output, bool relu);             \
  void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output,             \
                             const at::Tensor& weight, const at::Tensor& grad_input);          \
  void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output,            \
                              const at::Tensor& input, const at::Tensor& grad_weight);         \
  void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output,              \
                            const at::Tensor& grad_bias);                                      \
  /* output, indices = max_pool2d(relu(conv + bias), 2, 2) with indices: N x K x P/2 x Q/2 */  \
  void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input,          \
                                      const at::Tensor& weight, const at::Tensor& bias,        \
                                      const at::Tensor& output, const at::Tensor& indices);    \
  void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input,                   \
                          const at::Tensor& output, const at::Tensor& indices);                \
  void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output,            \
                           const at::Tensor& indices, const at::Tensor& grad_input);

namespace cpu { CUCONV_RUNNER_FUNCTIONS }
namespace sim {
CUCONV_RUNNER_FUNCTIONS
// The simulated device (csrc/sim/sim_device.cpp): its properties by name; setting some keeps the
// rest, an empty map restores the default. And the grad-weight split-K factor it leads to.
std::map<std::string, int64_t> device_properties();
void set_device_properties(const std::map<std::string, int64_t>& props);
int64_t conv2d_wgrad_splits(const at::Tensor& input, const at::Tensor& weight, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups);
}  // namespace sim
#ifdef CUCONV_WITH_CUDA
namespace cuda {
CUCONV_RUNNER_FUNCTIONS
// The tensor-core forward (conv2d_fprop_tensorcore.cu), which cuda::conv2d_forward picks for
// 16-bit inputs, and for float32 when TF32 is allowed for convolutions, on sm_80 and newer.
bool conv2d_tensorcore_eligible(const at::Tensor& input, bool allow_tf32);
void conv2d_forward_tensorcore(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& output, bool relu);
}  // namespace cuda
#endif

// The 2x2, stride-2 max-pool that conv2d_relu_max_pool2d_forward applies to a conv output of p's
// geometry (floor mode: an odd last row or column is dropped).
inline MaxPool2dParams relu_pool_params(const Conv2dParams& p) {
  return MaxPool2dParams{p.N, p.K, p.P, p.Q, p.P / 2, p.Q / 2, 2, 2, 2, 2, 0, 0, 1, 1, p.channels_last};
}

// Depthwise convolutions (one input channel per group) have a dedicated kernel; tensor-core tiles
// would be almost empty for them.
inline bool is_depthwise(const Conv2dParams& p) { return p.groups > 1 && p.C == p.groups; }

// Runtime switches, set from Python (cuconv.simulate(), the test suite's poisoning).
bool simulate_enabled();
void set_simulate_enabled(bool on);
bool poison_enabled();
void set_poison_enabled(bool on);

}  // namespace cuconv
