// The max_pool2d ops' autograd kernels (the Autograd key; see ops/conv2d_autograd.cpp): max_pool2d's
// backward calls max_pool2d_backward from the top, whose own autograd kernel here gives double backward.
#include <ATen/Functions.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/autograd.h"

namespace cuconv {

namespace dispatch {

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  static const auto op = find<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                         at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool)>(
      "cuconv::max_pool2d_backward");
  return op.call(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode);
}

}  // namespace dispatch

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The pooling's arguments besides its tensors.
struct PoolArgs : dispatch::SavedInts {
  at::IntArrayRef kernel_size() const { return slice(0, 2); }
  at::IntArrayRef stride() const { return slice(2, 2); }
  at::IntArrayRef padding() const { return slice(4, 2); }
  at::IntArrayRef dilation() const { return slice(6, 2); }
  bool ceil_mode() const { return values[8] != 0; }

  static void save(AutogradContext* ctx, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
    const int64_t ceil_flag = ceil_mode;
    SavedInts::save(ctx, {kernel_size, stride, padding, dilation, ceil_flag});
  }
  static PoolArgs load(AutogradContext* ctx) { return {SavedInts::load(ctx)}; }
};

// The node's one output is the pooled values. The indices are int64, never differentiable, and come
// out through `indices` instead: as an output they would cost the node their metadata, a gradient
// slot, and compiled autograd, which takes no C++ node with an output marked non-differentiable.
class MaxPool2dFunction : public torch::autograd::Function<MaxPool2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                            at::Tensor* indices) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      std::tie(output, *indices) = call(input, kernel_size, stride, padding, dilation, ceil_mode);
    }
    PoolArgs::save(ctx, kernel_size, stride, padding, dilation, ceil_mode);
    ctx->save_for_backward({input, *indices});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(7);
    const dispatch::BelowAutogradWithoutGrad below;
    const variable_list saved = ctx->get_saved_variables();
    const PoolArgs a = PoolArgs::load(ctx);
    result[0] = dispatch::max_pool2d_backward(grads[0], saved[0], saved[1], a.kernel_size(), a.stride(), a.padding(),
                                              a.dilation(), a.ceil_mode());
    return result;
  }

  static std::tuple<at::Tensor, at::Tensor> call(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation, bool ceil_mode) {
    static const auto op = dispatch::find<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool)>(
        "cuconv::max_pool2d");
    return op.call(input, kernel_size, stride, padding, dilation, ceil_mode);
  }
};

std::tuple<at::Tensor, at::Tensor> max_pool2d_autograd(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                                       at::IntArrayRef dilation, bool ceil_mode) {
  if (!dispatch::needs_graph(input)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return MaxPool2dFunction::call(input, kernel_size, stride, padding, dilation, ceil_mode);
  }
  at::Tensor indices;
  at::Tensor output = MaxPool2dFunction::apply(input, kernel_size, stride, padding, dilation, ceil_mode, &indices);
  return {std::move(output), std::move(indices)};
}

// max_pool2d_backward, for double backward. It is linear in grad_output (grad_input[idx] +=
// grad_output), so its adjoint gathers the incoming gradient at the indices; empty windows (index
// -1) gather zero. Only grad_output is differentiable: input gives shapes and indices are integers.
class MaxPool2dBackwardFunction : public torch::autograd::Function<MaxPool2dBackwardFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& indices, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
    at::Tensor grad_input;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      grad_input =
          dispatch::max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode);
    }
    ctx->save_for_backward({indices});
    return grad_input;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(8);
    if (!ctx->needs_input_grad(0)) return result;
    const at::Tensor indices = ctx->get_saved_variables()[0];
    const at::Tensor idx = indices.flatten(-2);
    const at::Tensor picked = grads[0].flatten(-2).gather(-1, idx.clamp_min(0)).mul(idx.ge(0));
    result[0] = picked.view_as(indices);
    return result;
  }
};

at::Tensor max_pool2d_backward_autograd(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& indices, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  if (!dispatch::needs_graph(grad_output, input, indices)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return dispatch::max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation,
                                         ceil_mode);
  }
  return MaxPool2dBackwardFunction::apply(grad_output, input, indices, kernel_size, stride, padding, dilation,
                                          ceil_mode);
}

}  // namespace
}  // namespace cuconv

TORCH_LIBRARY_IMPL(cuconv, Autograd, m) {
  m.impl("max_pool2d", &cuconv::max_pool2d_autograd);
  m.impl("max_pool2d_backward", &cuconv::max_pool2d_backward_autograd);
}
