// The cuconv operator library: schemas, and the router that every dispatch key shares. The router
// checks arguments once, lays tensors out as the runners expect (runners.h), allocates outputs,
// handles empty tensors, and hands the work to the CPU fallback, the simulator or the CUDA kernels.
#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <atomic>

#include "checks.h"
#include "runners.h"

namespace cuconv {

namespace {
std::atomic<bool> g_simulate{false};
std::atomic<bool> g_poison{false};
}  // namespace

bool simulate_enabled() { return g_simulate.load(std::memory_order_relaxed); }
void set_simulate_enabled(bool on) { g_simulate.store(on); }
bool poison_enabled() { return g_poison.load(std::memory_order_relaxed); }
void set_poison_enabled(bool on) { g_poison.store(on); }

namespace {

// The runner for tensors on this device, as a table of the functions of runners.h.
struct Runner {
  decltype(&cpu::conv2d_forward) conv2d_forward;
  decltype(&cpu::conv2d_backward_input) conv2d_backward_input;
  decltype(&cpu::conv2d_backward_weight) conv2d_backward_weight;
  decltype(&cpu::conv2d_backward_bias) conv2d_backward_bias;
  decltype(&cpu::conv2d_relu_max_pool2d_forward) conv2d_relu_max_pool2d_forward;
  decltype(&cpu::max_pool2d_forward) max_pool2d_forward;
  decltype(&cpu::max_pool2d_backward) max_pool2d_backward;
};

#define CUCONV_RUNNER_TABLE(ns)                                                                       \
  Runner {                                                                                            \
    &ns::conv2d_forward, &ns::conv2d_backward_input, &ns::conv2d_backward_weight,                     \
        &ns::conv2d_backward_bias, &ns::conv2d_relu_max_pool2d_forward, &ns::max_pool2d_forward,      \
        &ns::max_pool2d_backward                                                                      \
  }

const Runner& runner_for(const at::Tensor& t) {
  static const Runner cpu_runner = CUCONV_RUNNER_TABLE(cpu);
  static const Runner sim_runner = CUCONV_RUNNER_TABLE(sim);
#ifdef CUCONV_WITH_CUDA
  static const Runner cuda_runner = CUCONV_RUNNER_TABLE(cuda);
  if (t.is_cuda()) return cuda_runner;
#else
  TORCH_CHECK_NOT_IMPLEMENTED(!t.is_cuda(), "cuconv was built without CUDA support; rebuild with FORCE_CUDA=1");
#endif
  return simulate_enabled() ? sim_runner : cpu_runner;
}

at::MemoryFormat layout(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// Allocates a runner's output; with poisoning on (the tests), fills it so that an element the
// kernel forgets to write fails the comparison.
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format) {
  at::Tensor t = at::empty(sizes, options.memory_format(format));
  if (poison_enabled() && t.numel() > 0) {
    if (at::isFloatingType(t.scalar_type())) t.fill_(std::numeric_limits<double>::quiet_NaN());
    else t.fill_(-7);
  }
  return t;
}

at::Tensor as_batched(const at::Tensor& t, bool batched) { return batched ? t : t.unsqueeze(0); }
at::Tensor as_given(const at::Tensor& t, bool batched) { return batched ? t : t.squeeze(0); }

std::vector<int64_t> conv2d_output_size(const Conv2dParams& p) { return {p.N, p.K, p.P, p.Q}; }

// ------------------------------------------------------------------------------------------ conv2d

at::Tensor conv2d_impl(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool relu) {
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
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  runner_for(x).conv2d_forward(p, x, w, b, output, relu);
  return as_given(output, batched);
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_impl(input, weight, bias, stride, padding, dilation, groups, /*relu=*/false);
}

// relu(conv2d(...)) in one pass: the kernels apply the ReLU in their epilogue.
at::Tensor conv2d_bias_relu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_impl(input, weight, bias, stride, padding, dilation, groups, /*relu=*/true);
}

// max_pool2d(relu(conv2d(...)), 2, 2) with its indices in one pass where a runner can: the same values and int64
// indices (flat in the conv output plane) as the composition; an odd last row/column of the conv output is dropped.
std::tuple<at::Tensor, at::Tensor> conv2d_bias_relu_max_pool2d(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dParams p = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const bool batched = input.dim() == 4;
  const MaxPool2dParams pool = check_relu_pool(p, batched);
  const auto format = layout(p.channels_last);
  at::Tensor output = new_output({p.N, p.K, pool.P, pool.Q}, input.options(), format);
  at::Tensor indices = new_output({p.N, p.K, pool.P, pool.Q}, input.options().dtype(at::kLong), format);
  if (output.numel() > 0) {
    const bool has_bias = bias.has_value() && bias->defined();
    if (p.C == 0) {
      // No input channels: each plane is relu(bias), constant; the pooling decides the indices (NaN rules included).
      at::Tensor conv_out = conv2d_impl(input, weight, bias, stride, padding, dilation, groups, /*relu=*/true);
      runner_for(conv_out).max_pool2d_forward(pool, as_batched(conv_out, batched).contiguous(format), output, indices);
    } else {
      const at::Tensor x = as_batched(input, batched).contiguous(format);
      const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
      runner_for(x).conv2d_relu_max_pool2d_forward(p, x, weight.contiguous(), b, output, indices);
    }
  }
  return {as_given(output, batched), as_given(indices, batched)};
}

// The gradients of a conv of geometry p from gy, its output's gradient (batched, laid out in p's format).
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_impl(const Conv2dParams& p, bool batched,
                                                                    const at::Tensor& gy, const at::Tensor& input,
                                                                    const at::Tensor& weight,
                                                                    std::array<bool, 3> output_mask) {
  const auto format = layout(p.channels_last);
  // Masked-off gradients come back as empty tensors (a custom op cannot return None).
  at::Tensor grad_input = output_mask[0] ? new_output({p.N, p.C, p.H, p.W}, input.options(), format)
                                         : at::empty({0}, input.options());
  at::Tensor grad_weight = output_mask[1] ? new_output(weight.sizes(), weight.options(), at::MemoryFormat::Contiguous)
                                          : at::empty({0}, weight.options());
  at::Tensor grad_bias = output_mask[2] ? new_output({p.K}, weight.options(), at::MemoryFormat::Contiguous)
                                        : at::empty({0}, weight.options());

  const bool empty_sum = p.N == 0 || p.P * p.Q == 0 || p.K == 0;
  const bool no_channels = p.C == 0;
  if (output_mask[0] && grad_input.numel() > 0) {
    if (empty_sum) grad_input.zero_();
    else runner_for(gy).conv2d_backward_input(p, gy, weight.contiguous(), grad_input);
  }
  if (output_mask[1] && grad_weight.numel() > 0) {
    if (empty_sum || no_channels) grad_weight.zero_();
    else runner_for(gy).conv2d_backward_weight(p, gy, as_batched(input, batched).contiguous(format), grad_weight);
  }
  if (output_mask[2] && grad_bias.numel() > 0) {
    if (empty_sum) grad_bias.zero_();
    else runner_for(gy).conv2d_backward_bias(p, gy, grad_bias);
  }
  if (output_mask[0]) grad_input = as_given(grad_input, batched);
  // Gradients keep their parameter's layout.
  if (output_mask[1]) grad_weight = grad_weight.contiguous(weight.suggest_memory_format());
  return {grad_input, grad_weight, grad_bias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  const Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  const bool batched = input.dim() == 4;
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && grad_output.device() == input.device(),
              "cuconv::conv2d_backward: grad_output must have the input's dtype and device, but got ",
              grad_output.scalar_type(), " on ", grad_output.device());
  check_grad_output("conv2d_backward", as_batched(grad_output, batched), conv2d_output_size(p));
  const at::Tensor gy = as_batched(grad_output, batched).contiguous(layout(p.channels_last));
  return conv2d_backward_impl(p, batched, gy, input, weight, output_mask);
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
  if (poison_enabled() && t.numel() > 0) t.fill_(std::numeric_limits<double>::quiet_NaN());
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
  const at::Tensor gy = at::threshold_backward(g, as_batched(output, batched), 0).contiguous(format);
  if (grad_conv.numel() > 0) {
    if (gy.numel() == 0) grad_conv.zero_();  // no window: the conv output gets no gradient
    else runner_for(gy).max_pool2d_backward(pool, gy, as_batched(indices, batched).contiguous(format), grad_conv);
  }
  // The bias gradient sums the conv output's gradient, which is zero outside the window winners: the
  // same sum over the pooled gradient reads a quarter of the values.
  auto [grad_input, grad_weight, unused] =
      conv2d_backward_impl(p, batched, grad_conv, input, weight, {output_mask[0], output_mask[1], false});
  at::Tensor grad_bias = at::empty({0}, weight.options());
  if (output_mask[2]) {
    grad_bias = new_output({p.K}, weight.options(), at::MemoryFormat::Contiguous);
    Conv2dParams pooled_p = p;
    pooled_p.P = pool.P, pooled_p.Q = pool.Q;
    if (gy.numel() == 0) grad_bias.zero_();
    else runner_for(gy).conv2d_backward_bias(pooled_p, gy, grad_bias);
  }
  return {grad_input, grad_weight, grad_bias};
}

// -------------------------------------------------------------------------------------- max_pool2d

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  const MaxPool2dParams p = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
  const bool batched = input.dim() == 4;
  const auto format = layout(p.channels_last);
  at::Tensor output = new_output({p.N, p.C, p.P, p.Q}, input.options(), format);
  at::Tensor indices = new_output({p.N, p.C, p.P, p.Q}, input.options().dtype(at::kLong), format);
  if (output.numel() > 0) {
    const at::Tensor x = as_batched(input, batched).contiguous(format);
    runner_for(x).max_pool2d_forward(p, x, output, indices);
  }
  return {as_given(output, batched), as_given(indices, batched)};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  const MaxPool2dParams p = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
  const bool batched = input.dim() == 4;
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && grad_output.device() == input.device(),
              "cuconv::max_pool2d_backward: grad_output must have the input's dtype and device, but got ",
              grad_output.scalar_type(), " on ", grad_output.device());
  TORCH_CHECK(indices.scalar_type() == at::kLong && indices.device() == input.device(),
              "cuconv::max_pool2d_backward: indices must be int64 on the input's device, but got ",
              indices.scalar_type(), " on ", indices.device());
  check_grad_output("max_pool2d_backward", as_batched(grad_output, batched), {p.N, p.C, p.P, p.Q});
  check_grad_output("max_pool2d_backward", as_batched(indices, batched), {p.N, p.C, p.P, p.Q});
  const auto format = layout(p.channels_last);
  at::Tensor grad_input = new_output({p.N, p.C, p.H, p.W}, input.options(), format);
  if (grad_input.numel() > 0) {
    const at::Tensor gy = as_batched(grad_output, batched).contiguous(format);
    const at::Tensor idx = as_batched(indices, batched).contiguous(format);
    runner_for(gy).max_pool2d_backward(p, gy, idx, grad_input);
  }
  return as_given(grad_input, batched);
}

}  // namespace

TORCH_LIBRARY(cuconv, m) {
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, int[2] dilation, "
        "int groups) -> Tensor");
  m.def("conv2d_bias_relu(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, int[2] dilation, "
        "int groups) -> Tensor");
  m.def("conv2d_bias_relu_max_pool2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, "
        "int[2] dilation, int groups) -> (Tensor output, Tensor indices)");
  m.def("conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[] padding, "
        "int[2] dilation, int groups, bool[3] output_mask) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
  m.def("conv2d_bias_relu_max_pool2d_backward(Tensor grad_output, Tensor output, Tensor indices, Tensor input, "
        "Tensor weight, int[2] stride, int[] padding, int[2] dilation, int groups, bool[3] output_mask) -> "
        "(Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
  m.def("max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> (Tensor output, Tensor indices)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, int[2] stride, "
        "int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
}

// One router serves both keys; it picks the runner from the tensors' device.
#define CUCONV_REGISTER_ROUTER(key)                            \
  TORCH_LIBRARY_IMPL(cuconv, key, m) {                         \
    m.impl("conv2d", &conv2d);                                 \
    m.impl("conv2d_bias_relu", &conv2d_bias_relu);             \
    m.impl("conv2d_bias_relu_max_pool2d", &conv2d_bias_relu_max_pool2d); \
    m.impl("conv2d_backward", &conv2d_backward);               \
    m.impl("conv2d_bias_relu_max_pool2d_backward", &conv2d_bias_relu_max_pool2d_backward); \
    m.impl("max_pool2d", &max_pool2d);                         \
    m.impl("max_pool2d_backward", &max_pool2d_backward);       \
  }
CUCONV_REGISTER_ROUTER(CPU)
#ifdef CUCONV_WITH_CUDA
CUCONV_REGISTER_ROUTER(CUDA)
#endif

}  // namespace cuconv
