#pragma once
// What the autograd kernels (ops/conv2d_autograd.cpp, ops/max_pool2d_autograd.cpp) share: the
// public ops called through the dispatcher, and when an op call needs a graph.
//
// The forward of an autograd kernel calls its op below autograd, so the dispatcher goes on to the
// backend (or, under torch.compile and opcheck, to the fake kernel registered in Python). A
// backward formula calls the ops from the top: with grad mode on (create_graph) they record their
// own autograd nodes, which is what makes double backward work.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>

#include <array>
#include <optional>
#include <tuple>

namespace cuconv::dispatch {

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask);
at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode);

// An op's typed handle, looked up once per call site: `static const auto op = find<Signature>(name);`.
template <class Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

inline bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const std::optional<at::Tensor>& t) { return t.has_value() && requires_grad(*t); }
// Whether an op call on these tensors records a node: grad mode is on and one of them requires
// grad. Otherwise the autograd kernels call the op below autograd and build nothing.
template <class... Tensors>
bool needs_graph(const Tensors&... tensors) {
  return c10::GradMode::is_enabled() && (requires_grad(tensors) || ...);
}

}  // namespace cuconv::dispatch
