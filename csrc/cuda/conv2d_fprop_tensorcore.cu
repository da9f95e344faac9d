// CUDA launcher of the tensor-core conv2d forward (csrc/kernels/conv2d_fprop_tensorcore.cuh):
// cuda::conv2d_forward_tensorcore for the router, and the CUDA kernel of the test op
// cuconv::_conv2d_tensorcore (its schema and CPU/simulator kernel: csrc/sim/sim_conv2d_tensorcore.cpp).
// Tensor cores need sm_80: cp.async, ldmatrix and mma.sync with bf16/tf32.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "../runners.h"
#include "../kernels/conv2d_fprop_tensorcore.cuh"

namespace cuconv::cuda {

// True when the tensor-core path can run this forward: 16-bit inputs, or float32 with TF32
// allowed, on an sm_80+ device.
bool conv2d_tensorcore_eligible(const at::Tensor& input, bool allow_tf32) {
  if (!input.is_cuda()) return false;
  const auto st = input.scalar_type();
  if (!(st == at::kHalf || st == at::kBFloat16 || (st == at::kFloat && allow_tf32))) return false;
  return at::cuda::getDeviceProperties(input.device().index())->major >= 8;
}

namespace {
void forward_tensorcore(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                        const at::Tensor& output, bool relu, int config) {
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  auto run = [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* b = bias.defined() ? static_cast<const T*>(bias.const_data_ptr()) : nullptr;
    kern::conv2d_fprop_tensorcore<T>(p, static_cast<const T*>(input.const_data_ptr()),
                                     static_cast<const T*>(weight.const_data_ptr()), b,
                                     static_cast<T*>(output.data_ptr()), relu, stream, config);
  };
  switch (input.scalar_type()) {
    case at::kFloat: return run(static_cast<float*>(nullptr));
    case at::kHalf: return run(static_cast<kern::half_t*>(nullptr));
    case at::kBFloat16: return run(static_cast<kern::bfloat16_t*>(nullptr));
    default: TORCH_CHECK_NOT_IMPLEMENTED(false, "cuconv::conv2d (tensor cores): dtype ", input.scalar_type());
  }
}
}  // namespace

// Same contract as cuda::conv2d_forward (runners.h): tensors checked, laid out and allocated.
void conv2d_forward_tensorcore(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& output, bool relu) {
  forward_tensorcore(p, input, weight, bias, output, relu, -1);
}

namespace {

at::Tensor conv2d_tensorcore_op(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, bool tf32, int64_t config) {
  TORCH_CHECK(input.dim() == 4, "cuconv::_conv2d_tensorcore: expected 4-D input, got ", input.dim(), "-D");
  const Conv2dParams p = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  TORCH_CHECK(conv2d_tensorcore_eligible(input, tf32),
              "cuconv::_conv2d_tensorcore: needs float16, bfloat16 or float32 with tf32=True on an sm_80+ GPU");
  TORCH_CHECK(p.C > 0, "cuconv::_conv2d_tensorcore: needs at least one input channel");
  TORCH_CHECK(config >= -1 && config < kern::kTcConfigCount, "cuconv::_conv2d_tensorcore: bad config ", config);
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor output = at::empty({p.N, p.K, p.P, p.Q}, input.options().memory_format(format));
  if (poison_enabled()) output.fill_(std::numeric_limits<double>::quiet_NaN());
  if (output.numel() == 0) return output;
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  forward_tensorcore(p, input.contiguous(format), weight.contiguous(), b, output, /*relu=*/false, int(config));
  return output;
}

}  // namespace
}  // namespace cuconv::cuda

TORCH_LIBRARY_IMPL(cuconv, CUDA, m) { m.impl("_conv2d_tensorcore", &cuconv::cuda::conv2d_tensorcore_op); }
