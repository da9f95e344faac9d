// The conv2d ops' router, shared by every dispatch key: it checks arguments once, lays tensors out
// as the runners expect (ops/runner.h), allocates outputs, handles empty tensors and empty
// reductions, and hands the work to the tensors' runner. The conv + ReLU + pool composition that a
// runner does not fuse is written here, once.
#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/config.h"
#include "ops/router.h"

namespace cuconv {

Runner runner_for(const at::Tensor& t) {
  if (t.is_cuda()) {
#ifndef CUCONV_WITH_CUDA
    TORCH_CHECK_NOT_IMPLEMENTED(false, "cuconv was built without CUDA support; rebuild it with a CUDA toolkit");
#endif
    return Runner::cuda;
  }
  return config::simulate() ? Runner::sim : Runner::cpu;
}

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format) {
  at::Tensor t = at::empty(sizes, options.memory_format(format));
  if (config::poison() && t.numel() > 0) {
    if (at::isFloatingType(t.scalar_type())) t.fill_(std::numeric_limits<double>::quiet_NaN());
    else t.fill_(-7);
  }
  return t;
}

namespace {

std::vector<int64_t> conv2d_output_size(const Conv2dParams& p) { return {p.N, p.K, p.P, p.Q}; }

// The runner calls, one per pass; the tensors are checked, laid out and allocated (the forward's
// weight by its runner, for the kernel it picks).
void run_forward(const Conv2dParams& p, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                 const at::Tensor& y, bool relu, const KernelOverride& force) {
  on_runner(
      x, [&] { cpu::conv2d_forward(p, x, w.contiguous(), b, y, relu); },
      [&](auto d) { gpu::conv2d_forward<device_of<decltype(d)>>(p, x, w, b, y, relu, force); });
}
void run_backward_bias(const Conv2dParams& p, const at::Tensor& gy, const at::Tensor& gb) {
  on_runner(
      gy, [&] { cpu::conv2d_backward_bias(p, gy, gb); },
      [&](auto d) { gpu::conv2d_backward_bias<device_of<decltype(d)>>(p, gy, gb); });
}

}  // namespace

at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                          bool relu, const KernelOverride& force) {
  const Conv2dParams p = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const bool batched = input.dim() == 4;
  const auto format = layout(p.channels_last);
  at::Tensor output = new_output(conv2d_output_size(p), input.options(), format);
  if (output.numel() == 0) return as_given(output, batched);
  const bool has_bias = bias.has_value() && bias->defined();
  if (p.C == 0) {  // no input channels: the sum over them is empty, only the bias remains
    output.zero_();
    if (has_bias) output.add_(bias->view({1, p.K, 1, 1}));
    if (relu) output.clamp_min_(0);
    return as_given(output, batched);
  }
  const at::Tensor x = as_batched(input, batched).contiguous(format);
  run_forward(p, x, weight, has_bias ? bias->contiguous() : at::Tensor(), output, relu, force);
  return as_given(output, batched);
}

namespace {

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_forward(input, weight, bias, stride, padding, dilation, groups, /*relu=*/false, {});
}

// relu(conv2d(...)) in one pass: the kernels apply the ReLU in their epilogue.
at::Tensor conv2d_bias_relu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_forward(input, weight, bias, stride, padding, dilation, groups, /*relu=*/true, {});
}

// max_pool2d(relu(conv2d(...)), 2, 2) with its indices, in one pass where the runner fuses it: the
// same values and int64 indices (flat in the conv output plane) as the composition; an odd last
// row/column of the conv output is dropped.
std::tuple<at::Tensor, at::Tensor> conv2d_bias_relu_max_pool2d(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const bool batched = input.dim() == 4;
  const MaxPool2dParams pool = check_relu_pool(p, batched);
  const auto format = layout(p.channels_last);
  at::Tensor output = new_output({p.N, p.K, pool.P, pool.Q}, input.options(), format);
  at::Tensor indices = new_output({p.N, p.K, pool.P, pool.Q}, input.options().dtype(at::kLong), format);
  if (output.numel() == 0) return {as_given(output, batched), as_given(indices, batched)};
  const at::Tensor x = as_batched(input, batched).contiguous(format);
  const bool fused = p.C > 0 && on_runner(
      x, [&] { return cpu::conv2d_relu_max_pool2d_fuses(p, x); },
      [&](auto d) { return gpu::conv2d_relu_max_pool2d_fuses<device_of<decltype(d)>>(p, x); });
  if (fused) {
    const at::Tensor w = weight.contiguous();
    const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
    on_runner(
        x, [&] { cpu::conv2d_relu_max_pool2d_forward(p, x, w, b, output, indices); },
        [&](auto d) { gpu::conv2d_relu_max_pool2d_forward<device_of<decltype(d)>>(p, x, w, b, output, indices); });
  } else {
    // The conv with its ReLU, then the pooling (which decides the indices, NaN rules included).
    const at::Tensor conv_out = conv2d_forward(x, weight, bias, stride, padding, dilation, groups, true, {});
    run_max_pool2d_forward(pool, conv_out.contiguous(format), output, indices);
  }
  return {as_given(output, batched), as_given(indices, batched)};
}

// The gradients of a conv of geometry p from gy, its output's gradient (batched, laid out in p's format).
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const Conv2dParams& p, bool batched, const at::Tensor& gy,
                                                        const at::Tensor& input, const at::Tensor& weight,
                                                        std::array<bool, 3> output_mask,
                                                        const KernelOverride& force) {
  const auto format = layout(p.channels_last);
  // Masked-off gradients come back as empty tensors (a custom op cannot return None).
  at::Tensor grad_input = output_mask[0] ? new_output({p.N, p.C, p.H, p.W}, input.options(), format)
                                         : at::empty({0}, input.options());
  at::Tensor grad_weight = output_mask[1] ? new_output(weight.sizes(), weight.options(), at::MemoryFormat::Contiguous)
                                          : at::empty({0}, weight.options());
  at::Tensor grad_bias = output_mask[2] ? new_output({p.K}, weight.options(), at::MemoryFormat::Contiguous)
                                        : at::empty({0}, weight.options());

  const bool empty_sum = p.N == 0 || p.P * p.Q == 0 || p.K == 0;
  if (output_mask[0] && grad_input.numel() > 0) {
    const at::Tensor w = weight.contiguous();
    if (empty_sum) grad_input.zero_();
    else
      on_runner(
          gy, [&] { cpu::conv2d_backward_input(p, gy, w, grad_input); },
          [&](auto d) { gpu::conv2d_backward_input<device_of<decltype(d)>>(p, gy, w, grad_input, force); });
  }
  if (output_mask[1] && grad_weight.numel() > 0) {
    const at::Tensor x = as_batched(input, batched).contiguous(format);
    if (empty_sum || p.C == 0) grad_weight.zero_();
    else
      on_runner(
          gy, [&] { cpu::conv2d_backward_weight(p, gy, x, grad_weight); },
          [&](auto d) { gpu::conv2d_backward_weight<device_of<decltype(d)>>(p, gy, x, grad_weight, force); });
  }
  if (output_mask[2] && grad_bias.numel() > 0) {
    if (empty_sum) grad_bias.zero_();
    else run_backward_bias(p, gy, grad_bias);
  }
  if (output_mask[0]) grad_input = as_given(grad_input, batched);
  // Gradients keep their parameter's layout.
  if (output_mask[1]) grad_weight = grad_weight.contiguous(weight.suggest_memory_format());
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask,
    const KernelOverride& force) {
  const Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  const bool batched = input.dim() == 4;
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && grad_output.device() == input.device(),
              "cuconv::conv2d_backward: grad_output must have the input's dtype and device, but got ",
              grad_output.scalar_type(), " on ", grad_output.device());
  check_grad_output("conv2d_backward", as_batched(grad_output, batched), conv2d_output_size(p));
  const at::Tensor gy = as_batched(grad_output, batched).contiguous(layout(p.channels_last));
  return backward(p, batched, gy, input, weight, output_mask, force);
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_op(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  return conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask, {});
}

// The conv output's gradient inside the fused backward. On the CPU it is a per-thread buffer kept
// between calls (the size of the largest conv output seen): a fresh one of a first layer's size
// (3.7 MB at batch 32) is page-faulted in on every training step, which took ten times as long as
// the scatter that fills it. The runners write every element, so it is never read stale.
at::Tensor conv_output_grad_buffer(const Conv2dParams& p, const at::TensorOptions& options) {
  const auto format = layout(p.channels_last);
  if (options.device().is_cuda()) return new_output(conv2d_output_size(p), options, format);
  thread_local at::Tensor cache;
  const int64_t numel = p.N * p.K * p.P * p.Q;
  if (!cache.defined() || cache.scalar_type() != options.dtype().toScalarType() || cache.numel() < numel)
    cache = at::empty({numel}, options.memory_format(at::MemoryFormat::Contiguous));
  const std::vector<int64_t> sizes = conv2d_output_size(p);
  const std::vector<int64_t> strides = p.channels_last
      ? std::vector<int64_t>{p.P * p.Q * p.K, 1, p.Q * p.K, p.K}
      : std::vector<int64_t>{p.K * p.P * p.Q, p.P * p.Q, p.Q, 1};
  at::Tensor t = cache.as_strided(sizes, strides, 0);
  if (config::poison() && t.numel() > 0) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// The backward of conv2d_bias_relu_max_pool2d without double-backward support (autograd uses it
// when no graph of the backward is built): the pooled gradient passes where the pooled value is > 0
// (the ReLU), goes to each window's winner in the conv output, then back through the conv.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_bias_relu_max_pool2d_backward(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& indices, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, std::array<bool, 3> output_mask) {
  constexpr const char* op = "conv2d_bias_relu_max_pool2d_backward";
  const Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  const bool batched = input.dim() == 4;
  const MaxPool2dParams pool = check_relu_pool(p, batched);
  for (const at::Tensor* t : {&grad_output, &output})
    TORCH_CHECK(t->scalar_type() == input.scalar_type() && t->device() == input.device(), "cuconv::", op,
                ": grad_output and output must have the input's dtype and device, but got ", t->scalar_type(),
                " on ", t->device());
  TORCH_CHECK(indices.scalar_type() == at::kLong && indices.device() == input.device(), "cuconv::", op,
              ": indices must be int64 on the input's device, but got ", indices.scalar_type(), " on ",
              indices.device());
  const std::vector<int64_t> pooled{p.N, p.K, pool.P, pool.Q};
  for (const at::Tensor* t : {&grad_output, &output, &indices}) check_grad_output(op, as_batched(*t, batched), pooled);

  const auto format = layout(p.channels_last);
  at::Tensor grad_conv = conv_output_grad_buffer(p, input.options());
  const at::Tensor g = as_batched(grad_output, batched).contiguous(format);
  const at::Tensor values = as_batched(output, batched);
  const at::Tensor gy = on_runner(
      g, [&] { return cpu::relu_backward(g, values); },
      [&](auto) { return at::threshold_backward(g, values, 0); }).contiguous(format);
  if (grad_conv.numel() > 0) {
    if (gy.numel() == 0) grad_conv.zero_();  // no window: the conv output gets no gradient
    else run_max_pool2d_backward(pool, gy, as_batched(indices, batched).contiguous(format), grad_conv);
  }
  // The bias gradient sums the conv output's gradient, which is zero outside the window winners: the
  // same sum over the pooled gradient reads a quarter of the values.
  auto [grad_input, grad_weight, unused] =
      backward(p, batched, grad_conv, input, weight, {output_mask[0], output_mask[1], false}, {});
  at::Tensor grad_bias = at::empty({0}, weight.options());
  if (output_mask[2]) {
    grad_bias = new_output({p.K}, weight.options(), at::MemoryFormat::Contiguous);
    Conv2dParams pooled_p = p;
    pooled_p.P = pool.P, pooled_p.Q = pool.Q;
    if (gy.numel() == 0) grad_bias.zero_();
    else run_backward_bias(pooled_p, gy, grad_bias);
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace cuconv

// One router serves both keys; it picks the runner from the tensors' device.
namespace {
void register_conv2d_ops(torch::Library& m) {
  m.impl("conv2d", &cuconv::conv2d);
  m.impl("conv2d_bias_relu", &cuconv::conv2d_bias_relu);
  m.impl("conv2d_bias_relu_max_pool2d", &cuconv::conv2d_bias_relu_max_pool2d);
  m.impl("conv2d_backward", &cuconv::conv2d_backward_op);
  m.impl("conv2d_bias_relu_max_pool2d_backward", &cuconv::conv2d_bias_relu_max_pool2d_backward);
}
}  // namespace

TORCH_LIBRARY_IMPL(cuconv, CPU, m) { register_conv2d_ops(m); }
#ifdef CUCONV_WITH_CUDA
TORCH_LIBRARY_IMPL(cuconv, CUDA, m) { register_conv2d_ops(m); }
#endif
