#pragma once
// The three runners of the same ops: the CPU fallback (cpu::), the simulator that runs the CUDA
// kernel source on the CPU (sim::) and the CUDA kernels (cuda::). The routers (ops/conv2d.cpp,
// ops/max_pool2d.cpp) call them for tensors they have already checked, laid out and allocated:
//  - input, output, grad_output, grad_input: contiguous in p.channels_last ? NHWC : NCHW;
//  - weight, grad_weight: contiguous OIHW; bias, grad_bias: contiguous, length K;
//  - no tensor is empty, and no reduction is (C, K, N*P*Q > 0; the routers handle the rest), and
//    outputs may hold garbage (or poison).
// Each runner chooses its kernels itself (cpu/conv2d/plan.h; kernels/conv2d.cuh for the simulator
// and CUDA, which share one chooser).
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "conv2d_params.h"
#include "max_pool2d_params.h"

namespace cuconv {

enum class Runner { cpu, sim, cuda };

// A kernel choice that a test op forces (ops/testing.cpp); the default lets the runner choose. Only
// the GPU runners (simulator, CUDA) take one.
struct KernelOverride {
  bool tensor_cores = false;  // run the tensor-core kernels (float32 as TF32; the test op has checked the dtype)
  int config = -1;            // with tensor_cores: the tile configuration (-1: the chooser's)
};

// The 2x2, stride-2 max-pool of conv2d_relu_max_pool2d_forward, on a conv output of p's geometry
// (floor mode: an odd last row or column is dropped).
inline MaxPool2dParams relu_pool_params(const Conv2dParams& p) {
  return MaxPool2dParams{p.N, p.K, p.P, p.Q, p.P / 2, p.Q / 2, 2, 2, 2, 2, 0, 0, 1, 1, p.channels_last};
}

namespace cpu {
// output = conv(input, weight) + bias (bias undefined when absent), then max(0, .) if relu.
void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output, bool relu);
void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input);
void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight);
void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias);
// Whether conv2d_relu_max_pool2d_forward runs fused for these tensors; the router composes the
// conv and the pool itself otherwise.
bool conv2d_relu_max_pool2d_fuses(const Conv2dParams& p, const at::Tensor& input);
// output, indices = max_pool2d(relu(conv + bias), 2, 2) with indices: N x K x P/2 x Q/2.
void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& output, const at::Tensor& indices);
void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices);
void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input);
// ReLU's backward: grad, zeroed where output <= 0 (threshold_backward(grad, output, 0); NaN passes).
at::Tensor relu_backward(const at::Tensor& grad, const at::Tensor& output);
// The strategy each pass would take for these tensors, by name (cpu/conv2d/plan.h, cpu/max_pool2d/plan.h).
std::vector<std::string> conv2d_plan(const Conv2dParams& p, const at::Tensor& input);
std::vector<std::string> max_pool2d_plan(const MaxPool2dParams& p, const at::Tensor& input);
// Every strategy name the two plans can report, as "conv2d.<pass>:<name>" / "max_pool2d.<pass>:<name>".
std::vector<std::string> plan_strategies();
}  // namespace cpu

// The simulator and the CUDA runners: one body (ops/gpu_runner.h) over the device's adapter
// (sim/adapter.h: no stream, simulator errors as c10::Error; cuda/adapter.cuh: device guard, current
// stream, launch checks), instantiated per pass in csrc/sim and csrc/cuda. Same contracts as the
// CPU runner's functions, plus a kernel choice a test op may force.
struct SimDevice;
struct CudaDevice;
namespace gpu {
template <class Device>
void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output, bool relu, const KernelOverride& force);
template <class Device>
void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input, const KernelOverride& force);
template <class Device>
void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight, const KernelOverride& force);
template <class Device>
void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias);
template <class Device>
bool conv2d_relu_max_pool2d_fuses(const Conv2dParams& p, const at::Tensor& input);
template <class Device>
void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& output, const at::Tensor& indices);
template <class Device>
void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices);
template <class Device>
void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input);
// [kernel, tile configuration, pipeline stages, split-K chunks] of a pass on the tensors' device
// (kern::Conv2dPlan: kernel 0 = depthwise, 1 = SIMT implicit GEMM, 2 = tensor cores).
template <class Device>
std::vector<int64_t> conv2d_plan(const Conv2dParams& p, const at::Tensor& input, Conv2dPass pass,
                                 const KernelOverride& force);
}  // namespace gpu

}  // namespace cuconv
