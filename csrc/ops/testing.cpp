// The private ops that exist for tests and tools (schemas: ops/schemas.cpp). They go through the
// same routers as the public ops, with a forced kernel choice, so allocation, layout, poisoning and
// empty-tensor handling are the public ops' own.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/router.h"
// after the torch headers: under g++ the kernel headers define the CUDA keywords away
#include "kernels/implicit_gemm_tensorcore.cuh"

namespace cuconv {
namespace {

// The tensor-core kernels run 4-D float16, bfloat16, or float32 (as TF32, when asked for), on the
// GPU or, for CPU tensors, in the simulator.
KernelOverride tensor_cores(const char* op, const at::Tensor& input, bool tf32, int64_t config) {
  TORCH_CHECK(input.dim() == 4, "cuconv::", op, ": expected 4-D input, got ", input.dim(), "-D");
  const auto st = input.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || (st == at::kFloat && tf32), "cuconv::", op,
              ": tensor cores take float16, bfloat16, or float32 with tf32=True; got ", st, " with tf32=", tf32);
  TORCH_CHECK(config >= -1 && config < kern::kTcConfigCount, "cuconv::", op, ": config must be -1 or in [0, ",
              int(kern::kTcConfigCount), "), got ", config);
  TORCH_CHECK(runner_for(input) != Runner::cpu, "cuconv::", op,
              ": CPU tensors run in the simulator; use cuconv.simulate()");
  return KernelOverride{true, int(config)};  // the GPU runner checks the device is sm_80 or newer
}

at::Tensor conv2d_tensorcore(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             bool tf32, int64_t config) {
  const KernelOverride force = tensor_cores("_conv2d_tensorcore", input, tf32, config);
  return conv2d_forward(input, weight, bias, stride, padding, dilation, groups, /*relu=*/false, force);
}

// One gradient (0: input, 1: weight) of conv2d_backward with the tensor cores forced.
template <int kGrad>
at::Tensor conv2d_backward_tensorcore(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups, bool tf32, int64_t config) {
  const char* op = kGrad == 0 ? "_conv2d_backward_input_tensorcore" : "_conv2d_backward_weight_tensorcore";
  const KernelOverride force = tensor_cores(op, input, tf32, config);
  return std::get<kGrad>(conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups,
                                         {kGrad == 0, kGrad == 1, false}, force));
}

Conv2dPass pass_named(c10::string_view pass) {
  if (pass == "fprop") return Conv2dPass::fprop;
  if (pass == "dgrad") return Conv2dPass::dgrad;
  TORCH_CHECK_VALUE(pass == "wgrad", "cuconv::_gpu_conv2d_plan: pass must be fprop, dgrad or wgrad, got '", pass, "'");
  return Conv2dPass::wgrad;
}

std::vector<int64_t> gpu_conv2d_plan(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                     c10::string_view pass, bool force_tensor_cores) {
  Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  const KernelOverride force{force_tensor_cores, -1};
  return on_runner(
      input,
      [&]() -> std::vector<int64_t> {
        TORCH_CHECK(false, "cuconv::_gpu_conv2d_plan: CPU tensors run in the simulator; use cuconv.simulate()");
      },
      [&](auto d) { return gpu::conv2d_plan<device_of<decltype(d)>>(p, input, pass_named(pass), force); });
}

std::vector<std::string> cpu_conv2d_plan(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  return cpu::conv2d_plan(p, input);
}

std::vector<std::string> cpu_max_pool2d_plan(const at::Tensor& input, at::IntArrayRef kernel_size,
                                             at::IntArrayRef stride, at::IntArrayRef padding,
                                             at::IntArrayRef dilation, bool ceil_mode) {
  const MaxPool2dParams p = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
  return cpu::max_pool2d_plan(p, input);
}

}  // namespace
}  // namespace cuconv

// Takes no tensor, so it is registered for every key.
TORCH_LIBRARY_IMPL(cuconv, CompositeExplicitAutograd, m) {
  m.impl("_cpu_plan_strategies", &cuconv::cpu::plan_strategies);
}

namespace {
// The ops that run on either device's tensors.
void register_device_ops(torch::Library& m) {
  m.impl("_conv2d_tensorcore", &cuconv::conv2d_tensorcore);
  m.impl("_conv2d_backward_input_tensorcore", &cuconv::conv2d_backward_tensorcore<0>);
  m.impl("_conv2d_backward_weight_tensorcore", &cuconv::conv2d_backward_tensorcore<1>);
  m.impl("_gpu_conv2d_plan", &cuconv::gpu_conv2d_plan);
}
}  // namespace

TORCH_LIBRARY_IMPL(cuconv, CPU, m) {
  register_device_ops(m);
  m.impl("_cpu_conv2d_plan", &cuconv::cpu_conv2d_plan);
  m.impl("_cpu_max_pool2d_plan", &cuconv::cpu_max_pool2d_plan);
}
#ifdef CUCONV_WITH_CUDA
TORCH_LIBRARY_IMPL(cuconv, CUDA, m) { register_device_ops(m); }
#endif
