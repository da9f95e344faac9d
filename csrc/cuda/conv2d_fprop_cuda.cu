// cuda:: conv2d forward runner: checks, device guard, current stream, then the kernels of csrc/kernels.
#include <ATen/Context.h>

#include "../kernels/conv2d.cuh"
#include "../runners.h"
#include "cuda_dispatch.cuh"

namespace cuconv::cuda {

void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output, bool relu) {
  check_same_cuda_device("conv2d", {&input, &weight, &bias, &output});
  // Tensor cores as cuDNN uses them: 16-bit inputs, and float32 through TF32 when
  // torch.backends.cudnn.allow_tf32 (PyTorch's default for convolutions) allows it.
  if (!is_depthwise(p) && conv2d_tensorcore_eligible(input, at::globalContext().allowTF32CuDNN(at::Float32Op::CONV))) {
    conv2d_forward_tensorcore(p, input, weight, bias, output, relu);
    return;
  }
  const c10::cuda::CUDAGuard guard(input.device());
  dispatch_kernel_type(input, "conv2d", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_fprop<T>(p, ptr<T>(input), ptr<T>(weight), ptr<T>(bias), mut_ptr<T>(output), relu, current_stream());
  });
}

}  // namespace cuconv::cuda
