// sim:: fused conv2d + bias + ReLU + 2x2 max-pool runner: the CUDA kernel runs on CPU tensors by the simulator.
#include <ATen/ATen.h>

#include "../runners.h"
#include "sim_dispatch.h"
// after the torch headers: the kernel headers define the CUDA keywords away
#include "../kernels/conv2d_fprop_relu_pool.cuh"

namespace cuconv::sim {

void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& output, const at::Tensor& indices) {
  // As on the GPU, 16-bit inputs on sm_80 and newer take the tensor-core convolution (with its ReLU), then the
  // pooling kernel: the SIMT fused kernel would give up the tensor cores to save one pass.
  const bool half = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  if (half && !is_depthwise(p) && kern::simulated_device().cc_major >= 8) {
    const at::Tensor conv_out = at::empty({p.N, p.K, p.P, p.Q}, input.options().memory_format(
        p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
    conv2d_forward(p, input, weight, bias, conv_out, /*relu=*/true);
    max_pool2d_forward(relu_pool_params(p), conv_out, output, indices);
    return;
  }
  dispatch_kernel_type(input, "conv2d_bias_relu_max_pool2d", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    run_simulated("conv2d_bias_relu_max_pool2d", [&] {
      kern::conv2d_fprop_relu_pool<T>(p, ptr<T>(input), ptr<T>(weight), ptr<T>(bias), mut_ptr<T>(output),
                                      indices.data_ptr<int64_t>(), nullptr);
    });
  });
}

}  // namespace cuconv::sim
