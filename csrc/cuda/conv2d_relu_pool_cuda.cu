// cuda:: fused conv2d + bias + ReLU + 2x2 max-pool runner: checks, device guard, current stream, then the kernel.
#include <ATen/ATen.h>

#include "../kernels/conv2d_fprop_relu_pool.cuh"
#include "../runners.h"
#include "cuda_dispatch.cuh"

namespace cuconv::cuda {

void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& output, const at::Tensor& indices) {
  check_same_cuda_device("conv2d_bias_relu_max_pool2d", {&input, &weight, &bias, &output, &indices});
  // 16-bit inputs on sm_80 and newer: the tensor-core convolution (with its ReLU), then the pooling kernel; the
  // SIMT fused kernel would give up the tensor cores to save one pass. float32 and float64 take the fused kernel
  // (float32 computed exactly, without TF32).
  const bool half = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  if (half && !is_depthwise(p) && conv2d_tensorcore_eligible(input, /*allow_tf32=*/false)) {
    const at::Tensor conv_out = at::empty({p.N, p.K, p.P, p.Q}, input.options().memory_format(
        p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    conv2d_forward_tensorcore(p, input, weight, bias, conv_out, /*relu=*/true);
    max_pool2d_forward(relu_pool_params(p), conv_out, output, indices);
    return;
  }
  const c10::cuda::CUDAGuard guard(input.device());
  dispatch_kernel_type(input, "conv2d_bias_relu_max_pool2d", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_fprop_relu_pool<T>(p, ptr<T>(input), ptr<T>(weight), ptr<T>(bias), mut_ptr<T>(output),
                                    indices.data_ptr<int64_t>(), current_stream());
  });
}

}  // namespace cuconv::cuda
