// Autocast for the convolutions, with native conv2d's policy: inside torch.autocast the floating
// inputs (not float64) are cast to the autocast dtype of the region's device (bfloat16 or float16),
// and the op runs there with autocast off; its gradients come back in the inputs' dtypes through
// the cast. max_pool2d has no autocast kernel: it runs in its input's dtype, as native's does.
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace cuconv {
namespace {

using IntList = at::IntArrayRef;

template <class Sig>
c10::TypedOperatorHandle<Sig> op_named(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// conv2d, conv2d_bias_relu and conv2d_bias_relu_max_pool2d share the argument list; only the result differs.
template <c10::DeviceType kDevice, class Result, const char* kName>
Result conv_autocast(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     IntList stride, IntList padding, IntList dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
  const at::ScalarType dtype = at::autocast::get_lower_precision_fp_from_device_type(kDevice);
  static const auto op = op_named<Result(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         IntList, IntList, IntList, int64_t)>(kName);
  return op.call(at::autocast::cached_cast(dtype, input, kDevice), at::autocast::cached_cast(dtype, weight, kDevice),
                 at::autocast::cached_cast(dtype, bias, kDevice), stride, padding, dilation, groups);
}

constexpr char kConv2d[] = "cuconv::conv2d";
constexpr char kConv2dBiasRelu[] = "cuconv::conv2d_bias_relu";
constexpr char kConv2dBiasReluMaxPool2d[] = "cuconv::conv2d_bias_relu_max_pool2d";
using Pooled = std::tuple<at::Tensor, at::Tensor>;

template <c10::DeviceType kDevice>
void register_autocast(torch::Library& m) {
  m.impl("conv2d", &conv_autocast<kDevice, at::Tensor, kConv2d>);
  m.impl("conv2d_bias_relu", &conv_autocast<kDevice, at::Tensor, kConv2dBiasRelu>);
  m.impl("conv2d_bias_relu_max_pool2d", &conv_autocast<kDevice, Pooled, kConv2dBiasReluMaxPool2d>);
}

}  // namespace
}  // namespace cuconv

TORCH_LIBRARY_IMPL(cuconv, AutocastCPU, m) { cuconv::register_autocast<c10::DeviceType::CPU>(m); }
TORCH_LIBRARY_IMPL(cuconv, Autocast, m) { cuconv::register_autocast<c10::DeviceType::CUDA>(m); }
