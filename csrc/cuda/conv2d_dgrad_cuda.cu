// cuda:: conv2d grad-input runner (one translation unit per op keeps nvcc's units small).
#include "../kernels/conv2d.cuh"
#include "../runners.h"
#include <ATen/Context.h>

#include "cuda_dispatch.cuh"
#include "tensorcore.h"

namespace cuconv::cuda {

void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input) {
  check_same_cuda_device("conv2d_backward", {&grad_output, &weight, &grad_input});
  // Tensor cores under the forward's rule: 16-bit, or float32 as TF32 when allowed for convolutions.
  if (!is_depthwise(p) &&
      conv2d_tensorcore_eligible(grad_output, at::globalContext().allowTF32CuDNN(at::Float32Op::CONV))) {
    conv2d_backward_input_tensorcore(p, grad_output, weight, grad_input);
    return;
  }
  const c10::cuda::CUDAGuard guard(grad_output.device());
  dispatch_kernel_type(grad_output, "conv2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_dgrad<T>(p, ptr<T>(grad_output), ptr<T>(weight), mut_ptr<T>(grad_input), current_stream());
  });
}

}  // namespace cuconv::cuda
