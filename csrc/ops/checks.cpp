// Argument checks for conv2d and max_pool2d, in the order ATen applies them so that the first
// error reported is the one torch would report.
#include "ops/checks.h"

#include <tuple>
#include <vector>

#include <c10/util/Exception.h>

#include "ops/config.h"
#include "ops/runner.h"

namespace cuconv {
namespace {

// The C type name torch prints in its dtype-mismatch messages ("float", "double", "long int").
std::string scalar_name(const at::Tensor& t) { return std::string(t.dtype().name()); }

void check_pair(const char* op, const char* name, c10::IntArrayRef v) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": expected ", name, " to have 2 values (height, width), but got ",
                    name, "=", v);
}

// max_pool2d's input must have non-empty planes (a batch of 0 is fine).
void check_pool_input_size(c10::IntArrayRef sizes, bool channels_last) {
  const size_t dim = sizes.size();
  const bool ok = sizes[dim - 3] > 0 && sizes[dim - 2] > 0 && sizes[dim - 1] > 0;
  if (channels_last) {
    TORCH_CHECK(ok,
                "Expected 4D (batch mode) tensor expected for input with channels_last layout with optional 0 dim "
                "batch size for input, but got: ",
                sizes);
  } else {
    TORCH_CHECK(ok, "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:", sizes);
  }
}

void check_pooled_size(int64_t C, int64_t H, int64_t W, int64_t P, int64_t Q) {
  TORCH_CHECK(P >= 1 && Q >= 1, "Given input size: (", C, "x", H, "x", W, "). Calculated output size: (", C, "x", P,
              "x", Q, "). Output size is too small");
}

}  // namespace

MaxPool2dParams check_relu_pool(const Conv2dParams& conv, bool batched) {
  const MaxPool2dParams p = relu_pool_params(conv);
  const std::vector<int64_t> batched_sizes{conv.N, conv.K, conv.P, conv.Q};
  const c10::IntArrayRef sizes(batched_sizes);
  check_pool_input_size(batched ? sizes : sizes.slice(1), conv.channels_last);
  check_pooled_size(conv.K, conv.P, conv.Q, p.P, p.Q);
  return p;
}

void check_runner_dtype(const char* op, const at::Tensor& t) {
  const auto st = t.scalar_type();
  const bool is_float = st == at::kFloat || st == at::kDouble;
  const bool is_half = st == at::kHalf || st == at::kBFloat16;
  TORCH_CHECK_NOT_IMPLEMENTED(t.is_cpu() || t.is_cuda(), "cuconv::", op, ": tensors on ", t.device(),
                              " are not supported (CPU and CUDA are)");
  TORCH_CHECK_NOT_IMPLEMENTED(is_float || is_half, "cuconv::", op, ": dtype ", st,
                              " is not supported (float32, float64, float16 and bfloat16 are)");
}

void check_grad_output(const char* op, const at::Tensor& grad_output, c10::IntArrayRef expected) {
  TORCH_CHECK(grad_output.sizes() == expected, "cuconv::", op, ": expected grad_output of size ",
              expected, ", but got ", grad_output.sizes());
}

Conv2dParams check_conv2d(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias_opt, c10::IntArrayRef stride,
                          c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  const at::Tensor* bias = bias_opt.has_value() && bias_opt->defined() ? &*bias_opt : nullptr;

  // 1. dtypes and devices: no type promotion, as torch.
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(), "Input type (", scalar_name(input),
              ") and weight type (", scalar_name(weight), ") should be the same");
  TORCH_CHECK(!bias || bias->scalar_type() == input.scalar_type(), "Input type (", scalar_name(input),
              ") and bias type (", scalar_name(*bias), ") should be the same");
  TORCH_CHECK(input.device() == weight.device(), "Input and weight should be on the same device, but got input on ",
              input.device(), " and weight on ", weight.device());
  TORCH_CHECK(!bias || bias->device() == input.device(), "Input and bias should be on the same device, but got input on ",
              input.device(), " and bias on ", bias->device());

  // 2. stride, padding, dilation values.
  check_pair("conv2d", "stride", stride);
  check_pair("conv2d", "dilation", dilation);
  TORCH_CHECK_VALUE(padding.size() == 2 || padding.size() == 4,
                    "conv2d: expected padding to have 2 values (height, width) or 4 (top, left, bottom, right), but got padding=",
                    padding);
  for (auto s : stride) TORCH_CHECK(s > 0, "non-positive stride is not supported, but got stride=", stride);
  for (auto q : padding) TORCH_CHECK(q >= 0, "negative padding is not supported, but got padding=", padding);
  for (auto d : dilation)
    TORCH_CHECK(d > 0, "non-positive dilation is not supported: dilation should be greater than zero, but got dilation=",
                dilation);
  // 3. groups.
  TORCH_CHECK(groups > 0, "non-positive groups is not supported, but got groups=", groups);

  // 4. dimensions.
  TORCH_CHECK(input.dim() == 3 || input.dim() == 4,
              "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: ", input.sizes());
  TORCH_CHECK(weight.dim() == 4 || weight.dim() != input.dim(), "Expected 4-dimensional weight for conv2d, but got weight of size ",
              weight.sizes());
  TORCH_CHECK(weight.dim() == 4, "Expected ", weight.dim(), "-dimensional input for ", weight.dim(),
              "-dimensional weight ", weight.sizes(), ", but got ", input.dim(), "-dimensional input of size ",
              input.sizes(), " instead");

  // 5. weight against groups.
  const int64_t K = weight.size(0);
  TORCH_CHECK(K >= groups, "Given groups=", groups, ", expected weight to be at least ", groups,
              " at dimension 0, but got weight of size ", weight.sizes(), " instead");
  TORCH_CHECK(K % groups == 0, "Given groups=", groups, ", expected weight to be divisible by ", groups,
              " at dimension 0, but got weight of size ", weight.sizes(), " instead");

  // 6. channels.
  const bool batched = input.dim() == 4;
  const int64_t N = batched ? input.size(0) : 1;
  const int64_t C = input.size(batched ? 1 : 0), H = input.size(batched ? 2 : 1), W = input.size(batched ? 3 : 2);
  TORCH_CHECK(C == weight.size(1) * groups, "Given groups=", groups, ", weight of size ", weight.sizes(),
              ", expected input", input.sizes(), " to have ", weight.size(1) * groups, " channels, but got ", C,
              " channels instead");

  // 7. bias.
  TORCH_CHECK(!bias || (bias->dim() == 1 && bias->size(0) == K), "Given weight of size ", weight.sizes(),
              ", expected bias to be 1-dimensional with ", K, " elements, but got bias of size ",
              bias ? bias->sizes() : c10::IntArrayRef{}, " instead");

  // 8. kernel against the padded input.
  const int64_t R = weight.size(2), S = weight.size(3);
  TORCH_CHECK(R > 0 && S > 0, "kernel size should be greater than zero, but got kernel_height: ", R,
              " kernel_width: ", S);
  const int64_t pad_top = padding[0], pad_left = padding[1];
  const int64_t pad_bottom = padding.size() == 4 ? padding[2] : pad_top;
  const int64_t pad_right = padding.size() == 4 ? padding[3] : pad_left;
  if (H == 0 || W == 0) {
    TORCH_CHECK(pad_top + pad_bottom + pad_left + pad_right == 0,
                "Only zero batch or zero channel inputs are supported, but got input shape: ", input.sizes());
  }
  const int64_t padded_h = H + pad_top + pad_bottom, padded_w = W + pad_left + pad_right;
  const int64_t eff_r = dilation[0] * (R - 1) + 1, eff_s = dilation[1] * (S - 1) + 1;
  TORCH_CHECK(padded_h >= eff_r && padded_w >= eff_s, "Calculated padded input size per channel: (", padded_h, " x ",
              padded_w, "). Kernel size: (", eff_r, " x ", eff_s,
              "). Kernel size can't be greater than actual input size");

  Conv2dParams p{};
  p.N = N; p.C = C; p.H = H; p.W = W;
  p.K = K; p.R = R; p.S = S;
  p.P = (padded_h - eff_r) / stride[0] + 1;
  p.Q = (padded_w - eff_s) / stride[1] + 1;
  p.stride_h = stride[0]; p.stride_w = stride[1];
  p.pad_h = pad_top; p.pad_w = pad_left;
  p.dil_h = dilation[0]; p.dil_w = dilation[1];
  p.groups = groups;
  // Output is channels_last when the input or the weight is, as torch decides.
  p.channels_last = batched && (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                                weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
  check_runner_dtype("conv2d", input);
  return p;
}

MaxPool2dParams check_max_pool2d(const at::Tensor& input, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                 c10::IntArrayRef padding, c10::IntArrayRef dilation, bool ceil_mode) {
  check_pair("max_pool2d", "kernel_size", kernel_size);
  check_pair("max_pool2d", "stride", stride);
  check_pair("max_pool2d", "padding", padding);
  check_pair("max_pool2d", "dilation", dilation);
  const int64_t kh = kernel_size[0], kw = kernel_size[1];
  const int64_t sh = stride[0], sw = stride[1];
  const int64_t ph = padding[0], pw = padding[1];
  const int64_t dh = dilation[0], dw = dilation[1];

  TORCH_CHECK(sh != 0 && sw != 0, "stride should not be zero");
  TORCH_CHECK(kh > 0 && kw > 0, "kernel size should be greater than zero, but got kH: ", kh, " kW: ", kw);
  TORCH_CHECK(sh > 0 && sw > 0, "stride should be greater than zero, but got dH: ", sh, " dW: ", sw);
  TORCH_CHECK(dh > 0 && dw > 0, "dilation should be greater than zero, but got dilationH: ", dh,
              " dilationW: ", dw);
  TORCH_CHECK(ph >= 0 && pw >= 0, "pad must be non-negative, but got pad: ", ph < 0 ? ph : pw);
  for (auto [pad, k, d] : {std::tuple{ph, kh, dh}, std::tuple{pw, kw, dw}}) {
    TORCH_CHECK(pad <= ((k - 1) * d + 1) / 2, "pad should be at most half of effective kernel size, but got pad=",
                pad, ", kernel_size=", k, " and dilation=", d);
  }
  TORCH_CHECK(ph <= kh / 2 && pw <= kw / 2, "pad should be smaller than or equal to half of kernel size, but got padW = ",
              pw, ", padH = ", ph, ", kW = ", kw, ", kH = ", kh);

  const int64_t dim = input.dim();
  TORCH_CHECK(dim == 3 || dim == 4, "non-empty 3D or 4D (batch mode) tensor expected for input");
  const bool batched = dim == 4;
  const int64_t N = batched ? input.size(0) : 1;
  const int64_t C = input.size(dim - 3), H = input.size(dim - 2), W = input.size(dim - 1);
  const bool channels_last = batched && input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  check_pool_input_size(input.sizes(), channels_last);

  MaxPool2dParams p{};
  p.N = N; p.C = C; p.H = H; p.W = W;
  p.P = pooled_size(H, kh, ph, sh, dh, ceil_mode);
  p.Q = pooled_size(W, kw, pw, sw, dw, ceil_mode);
  check_pooled_size(C, H, W, p.P, p.Q);
  p.kernel_h = kh; p.kernel_w = kw;
  p.stride_h = sh; p.stride_w = sw;
  p.pad_h = ph; p.pad_w = pw;
  p.dil_h = dh; p.dil_w = dw;
  p.channels_last = channels_last;
  check_runner_dtype("max_pool2d", input);
  return p;
}

}  // namespace cuconv
