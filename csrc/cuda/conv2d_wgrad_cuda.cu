// cuda:: conv2d grad-weight and grad-bias runners; grad weight uses a split-K workspace.
#include <ATen/Context.h>
#include <ATen/ops/empty.h>

#include "../kernels/conv2d.cuh"
#include "../runners.h"
#include "cuda_dispatch.cuh"
#include "tensorcore.h"

namespace cuconv::cuda {

void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight) {
  check_same_cuda_device("conv2d_backward", {&grad_output, &input, &grad_weight});
  // Tensor cores under the forward's rule: 16-bit, or float32 as TF32 when allowed for convolutions.
  if (!is_depthwise(p) &&
      conv2d_tensorcore_eligible(grad_output, at::globalContext().allowTF32CuDNN(at::Float32Op::CONV))) {
    conv2d_backward_weight_tensorcore(p, grad_output, input, grad_weight);
    return;
  }
  const c10::cuda::CUDAGuard guard(grad_output.device());
  dispatch_kernel_type(grad_output, "conv2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = kern::acc_t<T>;
    // split-K partial sums, reduced in a fixed order by a second kernel (no float atomics)
    const at::Tensor workspace = at::empty({kern::conv2d_wgrad_workspace(p, current_stream())},
                                           grad_output.options().dtype(sizeof(Acc) == 8 ? at::kDouble : at::kFloat));
    kern::conv2d_wgrad<T>(p, ptr<T>(grad_output), ptr<T>(input), mut_ptr<T>(grad_weight),
                          static_cast<Acc*>(workspace.data_ptr()), current_stream());
  });
}

void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias) {
  check_same_cuda_device("conv2d_backward", {&grad_output, &grad_bias});
  const c10::cuda::CUDAGuard guard(grad_output.device());
  dispatch_kernel_type(grad_output, "conv2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_bias_grad<T>(p, ptr<T>(grad_output), mut_ptr<T>(grad_bias), current_stream());
  });
}

}  // namespace cuconv::cuda
