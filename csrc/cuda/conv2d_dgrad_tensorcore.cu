// CUDA launcher of the tensor-core conv2d grad input (csrc/kernels/conv2d_dgrad_tensorcore.cuh):
// cuda::conv2d_backward_input_tensorcore for the runner, and the CUDA kernel of the test op
// cuconv::_conv2d_backward_input_tensorcore (schema and simulator kernel: csrc/sim/sim_conv2d_tensorcore.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "../runners.h"
#include "../kernels/conv2d_dgrad_tensorcore.cuh"
#include "cuda_dispatch.cuh"
#include "tensorcore.h"

namespace cuconv::cuda {

void conv2d_backward_input_tensorcore(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                                      const at::Tensor& grad_input, int config) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  dispatch_kernel_type(grad_output, "conv2d_backward (tensor cores)", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (std::is_same_v<T, double>) {
      TORCH_CHECK_NOT_IMPLEMENTED(false, "cuconv::conv2d_backward (tensor cores): float64");
    } else {
      kern::conv2d_dgrad_tensorcore<T>(p, ptr<T>(grad_output), ptr<T>(weight), mut_ptr<T>(grad_input),
                                       current_stream(), config);
    }
  });
}

Conv2dParams check_tensorcore_backward_op(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups, bool tf32, int64_t config) {
  TORCH_CHECK(input.dim() == 4, "cuconv::", op, ": expected 4-D input, got ", input.dim(), "-D");
  const Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  check_same_cuda_device(op, {&grad_output, &input, &weight});
  TORCH_CHECK(conv2d_tensorcore_eligible(input, tf32), "cuconv::", op,
              ": needs float16, bfloat16 or float32 with tf32=True on an sm_80+ GPU");
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), "cuconv::", op, ": grad_output must have the input's dtype");
  check_grad_output(op, grad_output, {p.N, p.K, p.P, p.Q});
  TORCH_CHECK(p.N * p.P * p.Q > 0 && p.C > 0 && p.K > 0, "cuconv::", op, ": empty reductions are the router's job");
  TORCH_CHECK(config >= -1 && config < kern::kTcConfigCount, "cuconv::", op, ": bad config ", config);
  return p;
}

namespace {

at::Tensor backward_input_tensorcore_op(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                        int64_t groups, bool tf32, int64_t config) {
  const char* op = "_conv2d_backward_input_tensorcore";
  const Conv2dParams p =
      check_tensorcore_backward_op(op, grad_output, input, weight, stride, padding, dilation, groups, tf32, config);
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor grad_input = at::empty({p.N, p.C, p.H, p.W}, input.options().memory_format(format));
  if (poison_enabled()) grad_input.fill_(std::numeric_limits<double>::quiet_NaN());
  conv2d_backward_input_tensorcore(p, grad_output.contiguous(format), weight.contiguous(), grad_input, int(config));
  return grad_input;
}

}  // namespace
}  // namespace cuconv::cuda

TORCH_LIBRARY_IMPL(cuconv, CUDA, m) {
  m.impl("_conv2d_backward_input_tensorcore", &cuconv::cuda::backward_input_tensorcore_op);
}
