// The conv2d ops' autograd kernels (the Autograd key). The backends' kernels are the router's
// (ops/conv2d.cpp) and the fake kernels are Python's (pyext/cuconv/ops.py); these record the node
// and give its backward. Each backward calls conv2d_backward, whose own autograd kernel here gives
// double backward. Without a graph to record, a kernel calls its op below autograd and nothing else.
#include <ATen/Functions.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/autograd.h"

namespace cuconv {

namespace dispatch {

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto op = find<ConvSignature<at::Tensor>>("cuconv::conv2d");
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  static const auto op = find<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
      int64_t, std::array<bool, 3>)>("cuconv::conv2d_backward");
  return op.call(grad_output, input, weight, stride, padding, dilation, groups, output_mask);
}

}  // namespace dispatch

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor conv2d_bias_relu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups) {
  static const auto op = dispatch::find<dispatch::ConvSignature<at::Tensor>>("cuconv::conv2d_bias_relu");
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor> conv2d_bias_relu_max_pool2d(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto op = dispatch::find<dispatch::ConvSignature<std::tuple<at::Tensor, at::Tensor>>>(
      "cuconv::conv2d_bias_relu_max_pool2d");
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

// The conv's arguments besides its tensors, and whether it has a bias, as the backward needs them.
struct ConvArgs : dispatch::SavedInts {
  at::IntArrayRef stride() const { return slice(0, 2); }
  at::IntArrayRef dilation() const { return slice(2, 2); }
  int64_t groups() const { return values[4]; }
  bool has_bias() const { return values[5] != 0; }
  at::IntArrayRef padding() const { return slice(6); }

  static void save(AutogradContext* ctx, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                   int64_t groups, bool has_bias) {
    const int64_t bias_flag = has_bias;
    SavedInts::save(ctx, {stride, dilation, groups, bias_flag, padding});
  }
  static ConvArgs load(AutogradContext* ctx) { return {SavedInts::load(ctx)}; }
};

bool defined(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// The gradients a conv backward returns for (input, weight, bias), in the first slots of a forward
// that took num_args arguments. Without a bias there is no third edge to ask about.
std::array<bool, 3> grad_mask(AutogradContext* ctx, const ConvArgs& a) {
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1), a.has_bias() && ctx->needs_input_grad(2)};
}
variable_list input_grads(const std::array<bool, 3>& mask, std::tuple<at::Tensor, at::Tensor, at::Tensor> grads,
                          size_t num_args) {
  variable_list out(num_args);
  if (mask[0]) out[0] = std::move(std::get<0>(grads));
  if (mask[1]) out[1] = std::move(std::get<1>(grads));
  if (mask[2]) out[2] = std::move(std::get<2>(grads));
  return out;
}

// The gradients of a conv's (input, weight, bias) from its output's gradient, through conv2d_backward.
variable_list conv_grads(AutogradContext* ctx, const ConvArgs& a, const at::Tensor& grad_output,
                         const at::Tensor& input, const at::Tensor& weight, size_t num_args) {
  const std::array<bool, 3> mask = grad_mask(ctx, a);
  return input_grads(mask,
                     dispatch::conv2d_backward(grad_output, input, weight, a.stride(), a.padding(), a.dilation(),
                                               a.groups(), mask),
                     num_args);
}

// conv2d and, with relu, conv2d_bias_relu (relu(conv2d(...)) in one pass).
class Conv2dFunction : public torch::autograd::Function<Conv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, bool relu) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      output = (relu ? conv2d_bias_relu : dispatch::conv2d)(input, weight, bias, stride, padding, dilation, groups);
    }
    ConvArgs::save(ctx, stride, padding, dilation, groups, defined(bias));
    // With the ReLU, the output rather than a mask of it: the next layer keeps it alive anyway.
    ctx->save_for_backward(relu ? variable_list{input, weight, output} : variable_list{input, weight});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const dispatch::BelowAutogradWithoutGrad below;
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor grad_output = std::move(grads[0]);
    // ReLU's backward in one pass (the gradient where output > 0, else 0), differentiable.
    if (saved.size() == 3) grad_output = at::threshold_backward(grad_output, saved[2], 0);
    return conv_grads(ctx, ConvArgs::load(ctx), grad_output, saved[0], saved[1], 8);
  }
};

at::Tensor conv2d_autograd(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!dispatch::needs_graph(input, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return dispatch::conv2d(input, weight, bias, stride, padding, dilation, groups);
  }
  return Conv2dFunction::apply(input, weight, bias, stride, padding, dilation, groups, false);
}

at::Tensor conv2d_bias_relu_autograd(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!dispatch::needs_graph(input, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return conv2d_bias_relu(input, weight, bias, stride, padding, dilation, groups);
  }
  return Conv2dFunction::apply(input, weight, bias, stride, padding, dilation, groups, true);
}

// An empty tensor with the shape and layout of the conv output of (input, weight), as the fake
// kernel gives it; sizes stay symbolic under torch.compile.
at::Tensor conv_output_like(const at::Tensor& input, const at::Tensor& weight, const ConvArgs& a) {
  const int64_t dim = input.dim();
  const c10::SymIntArrayRef x = input.sym_sizes(), w = weight.sym_sizes();
  const at::IntArrayRef pad = a.padding();
  const int64_t pad_h = pad[0] + (pad.size() == 4 ? pad[2] : pad[0]);
  const int64_t pad_w = pad[1] + (pad.size() == 4 ? pad[3] : pad[1]);
  auto out = [](const c10::SymInt& size, const c10::SymInt& kernel, int64_t pad, int64_t stride, int64_t dilation) {
    return (size + pad - dilation * (kernel - 1) - 1) / stride + 1;
  };
  std::vector<c10::SymInt> sizes;
  if (dim == 4) sizes.push_back(x[0]);
  sizes.push_back(w[0]);
  sizes.push_back(out(x[dim - 2], w[2], pad_h, a.stride()[0], a.dilation()[0]));
  sizes.push_back(out(x[dim - 1], w[3], pad_w, a.stride()[1], a.dilation()[1]));
  auto channels_last = [](const at::Tensor& t) {
    return t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
  };
  const bool cl = dim == 4 && (channels_last(input) || channels_last(weight));
  return at::empty_symint(sizes, input.options(), cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

// conv2d_bias_relu_max_pool2d: max_pool2d(relu(conv2d(...)), 2, 2) with its indices. As with
// max_pool2d (ops/max_pool2d_autograd.cpp), the node's one output is the pooled values; the
// indices come out through `indices`.
class Conv2dReluPoolFunction : public torch::autograd::Function<Conv2dReluPoolFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, at::Tensor* indices) {
    at::Tensor values;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      std::tie(values, *indices) = conv2d_bias_relu_max_pool2d(input, weight, bias, stride, padding, dilation, groups);
    }
    ConvArgs::save(ctx, stride, padding, dilation, groups, defined(bias));
    // values > 0 is the ReLU's gradient: a window whose maximum is <= 0 passes none (its winner was clamped).
    ctx->save_for_backward({input, weight, *indices, values});
    return values;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &indices = saved[2], &values = saved[3];
    const ConvArgs a = ConvArgs::load(ctx);
    if (c10::GradMode::is_enabled()) {
      // Double backward: the same steps as differentiable ops. The pooled gradient goes back to each
      // window's winner in the conv output (max_pool2d_backward's scatter; the conv-output-like tensor
      // only gives it the conv output's shape and layout), then through the conv.
      const at::Tensor grad_pooled = at::threshold_backward(grads[0], values, 0);
      const at::Tensor grad_conv = dispatch::max_pool2d_backward(grad_pooled, conv_output_like(input, weight, a),
                                                                 indices, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false);
      return conv_grads(ctx, a, grad_conv, input, weight, 8);
    }
    // The usual case (no graph of the backward): one op, which on the CPU keeps the conv output's
    // gradient in a buffer reused between calls instead of a fresh tensor per step. Nothing
    // differentiates it, so it has no autograd kernel and is called below autograd.
    static const auto op = dispatch::find<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t, std::array<bool, 3>)>(
        "cuconv::conv2d_bias_relu_max_pool2d_backward");
    const dispatch::BelowAutogradWithoutGrad below;
    const std::array<bool, 3> mask = grad_mask(ctx, a);
    return input_grads(
        mask, op.call(grads[0], values, indices, input, weight, a.stride(), a.padding(), a.dilation(), a.groups(), mask),
        8);
  }
};

std::tuple<at::Tensor, at::Tensor> conv2d_bias_relu_max_pool2d_autograd(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!dispatch::needs_graph(input, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return conv2d_bias_relu_max_pool2d(input, weight, bias, stride, padding, dilation, groups);
  }
  at::Tensor indices;
  at::Tensor values = Conv2dReluPoolFunction::apply(input, weight, bias, stride, padding, dilation, groups, &indices);
  return {std::move(values), std::move(indices)};
}

// conv2d_backward, for double backward. It is bilinear: grad_input = J_x(w)^T gy, grad_weight =
// J_w(x)^T gy, grad_bias = sum(gy); its vector-Jacobian products are conv2d and conv2d_backward calls.
class Conv2dBackwardFunction : public torch::autograd::Function<Conv2dBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
    at::Tensor gi, gw, gb;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      std::tie(gi, gw, gb) =
          dispatch::conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask);
    }
    // A gradient nobody differentiates stays undefined rather than a zero-filled tensor.
    ctx->set_materialize_grads(false);
    ConvArgs::save(ctx, stride, padding, dilation, groups, false);
    ctx->save_for_backward({grad_output, input, weight});
    return {gi, gw, gb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const dispatch::BelowAutogradWithoutGrad below;
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &input = saved[1], &weight = saved[2];
    const ConvArgs a = ConvArgs::load(ctx);
    // Masked-off gradients are empty tensors: they carry nothing back.
    auto used = [](const at::Tensor& g) { return g.defined() && g.sym_numel() > 0; };
    const at::Tensor &gg_input = grads[0], &gg_weight = grads[1], &gg_bias = grads[2];
    auto conv = [&a](const at::Tensor& x, const at::Tensor& w) {
      return dispatch::conv2d(x, w, std::nullopt, a.stride(), a.padding(), a.dilation(), a.groups());
    };
    auto conv_backward = [&a](const at::Tensor& gy, const at::Tensor& x, const at::Tensor& w, int which) {
      std::array<bool, 3> mask{};
      mask[which] = true;
      auto grads = dispatch::conv2d_backward(gy, x, w, a.stride(), a.padding(), a.dilation(), a.groups(), mask);
      return which == 0 ? std::get<0>(grads) : std::get<1>(grads);
    };
    variable_list result(8);
    if (ctx->needs_input_grad(0)) {
      at::Tensor g;
      auto add = [&g](const at::Tensor& term) { g = g.defined() ? g.add(term) : term; };
      if (used(gg_input)) add(conv(gg_input, weight));
      if (used(gg_weight)) add(conv(input, gg_weight));
      if (used(gg_bias)) {
        const at::Tensor b = grad_output.dim() == 3 ? gg_bias.view({-1, 1, 1}) : gg_bias.view({1, -1, 1, 1});
        g = g.defined() ? g.add(b) : at::zeros_like(grad_output).add(b);
      }
      result[0] = std::move(g);
    }
    if (ctx->needs_input_grad(1) && used(gg_weight)) result[1] = conv_backward(grad_output, input, gg_weight, 0);
    if (ctx->needs_input_grad(2) && used(gg_input)) result[2] = conv_backward(grad_output, gg_input, weight, 1);
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_autograd(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  if (!dispatch::needs_graph(grad_output, input, weight)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return dispatch::conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask);
  }
  const variable_list out =
      Conv2dBackwardFunction::apply(grad_output, input, weight, stride, padding, dilation, groups, output_mask);
  return {out[0], out[1], out[2]};
}

}  // namespace
}  // namespace cuconv

TORCH_LIBRARY_IMPL(cuconv, Autograd, m) {
  m.impl("conv2d", &cuconv::conv2d_autograd);
  m.impl("conv2d_bias_relu", &cuconv::conv2d_bias_relu_autograd);
  m.impl("conv2d_bias_relu_max_pool2d", &cuconv::conv2d_bias_relu_max_pool2d_autograd);
  m.impl("conv2d_backward", &cuconv::conv2d_backward_autograd);
}
