// cuda:: max_pool2d runners: checks, device guard, current stream, then the kernels of csrc/kernels.
#include "../runners.h"
#include "../kernels/max_pool2d_bprop.cuh"
#include "../kernels/max_pool2d_fprop.cuh"
#include "cuda_dispatch.cuh"

namespace cuconv::cuda {

void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices) {
  check_same_cuda_device("max_pool2d", {&input, &output, &indices});
  const c10::cuda::CUDAGuard guard(input.device());
  dispatch_kernel_type(input, "max_pool2d", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::max_pool2d_fprop<T>(p, ptr<T>(input), mut_ptr<T>(output), indices.data_ptr<int64_t>(), current_stream());
  });
}

void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input) {
  check_same_cuda_device("max_pool2d_backward", {&grad_output, &indices, &grad_input});
  const c10::cuda::CUDAGuard guard(grad_output.device());
  dispatch_kernel_type(grad_output, "max_pool2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::max_pool2d_bprop<T>(p, ptr<T>(grad_output), indices.const_data_ptr<int64_t>(), mut_ptr<T>(grad_input),
                              current_stream());
  });
}

}  // namespace cuconv::cuda
