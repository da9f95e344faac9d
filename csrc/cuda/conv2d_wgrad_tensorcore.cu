// CUDA launcher of the tensor-core conv2d grad weight (csrc/kernels/conv2d_wgrad_tensorcore.cuh):
// cuda::conv2d_backward_weight_tensorcore for the runner (allocates the split-K workspace), and the
// CUDA kernel of the test op cuconv::_conv2d_backward_weight_tensorcore.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "../runners.h"
#include "../kernels/conv2d_wgrad_tensorcore.cuh"
#include "cuda_dispatch.cuh"
#include "tensorcore.h"

namespace cuconv::cuda {

void conv2d_backward_weight_tensorcore(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& grad_weight, int config) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  dispatch_kernel_type(grad_output, "conv2d_backward (tensor cores)", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (std::is_same_v<T, double>) {
      TORCH_CHECK_NOT_IMPLEMENTED(false, "cuconv::conv2d_backward (tensor cores): float64");
    } else {
      // split-K partial sums (float), reduced in a fixed order by a second kernel (no float atomics)
      const at::Tensor workspace =
          at::empty({kern::conv2d_wgrad_tensorcore_workspace(p, int(sizeof(T)), current_stream(), config)},
                    grad_output.options().dtype(at::kFloat));
      kern::conv2d_wgrad_tensorcore<T>(p, ptr<T>(grad_output), ptr<T>(input), mut_ptr<T>(grad_weight),
                                       workspace.data_ptr<float>(), current_stream(), config);
    }
  });
}

namespace {

at::Tensor backward_weight_tensorcore_op(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                         int64_t groups, bool tf32, int64_t config) {
  const char* op = "_conv2d_backward_weight_tensorcore";
  const Conv2dParams p =
      check_tensorcore_backward_op(op, grad_output, input, weight, stride, padding, dilation, groups, tf32, config);
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options());
  if (poison_enabled()) grad_weight.fill_(std::numeric_limits<double>::quiet_NaN());
  conv2d_backward_weight_tensorcore(p, grad_output.contiguous(format), input.contiguous(format), grad_weight, int(config));
  return grad_weight;
}

}  // namespace
}  // namespace cuconv::cuda

TORCH_LIBRARY_IMPL(cuconv, CUDA, m) {
  m.impl("_conv2d_backward_weight_tensorcore", &cuconv::cuda::backward_weight_tensorcore_op);
}
