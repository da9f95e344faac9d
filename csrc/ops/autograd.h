#pragma once
// What the autograd kernels (ops/conv2d_autograd.cpp, ops/max_pool2d_autograd.cpp) and the Python
// module's direct calls (ops/module.cpp) share: the public ops called through the dispatcher, when
// an op call needs a graph, and how a node keeps its int arguments.
//
// The forward of an autograd kernel calls its op below autograd, so the dispatcher goes on to the
// backend (or, under torch.compile and opcheck, to the fake kernel registered in Python). A
// backward formula calls the ops from the top when grad mode is on (create_graph): they record
// their own autograd nodes, which is what makes double backward work.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/csrc/autograd/custom_function.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <vector>

namespace cuconv::dispatch {

// An op's typed handle, looked up once per call site: `static const auto op = find<Signature>(name);`.
template <class Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The three conv ops' signature: (input, weight, bias, stride, padding, dilation, groups) -> Result.
template <class Result>
using ConvSignature = Result(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, at::IntArrayRef,
                             at::IntArrayRef, at::IntArrayRef, int64_t);

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask);
at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode);

inline bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const std::optional<at::Tensor>& t) { return t.has_value() && requires_grad(*t); }
// Whether an op call on these tensors records a node: grad mode is on and one of them requires
// grad. Otherwise the autograd kernels call the op below autograd and build nothing.
template <class... Tensors>
bool needs_graph(const Tensors&... tensors) {
  return c10::GradMode::is_enabled() && (requires_grad(tensors) || ...);
}

// Held by a backward formula: with grad mode off (no graph of the backward), the ops it calls go
// below autograd at once, where their autograd kernels would send them anyway.
class BelowAutogradWithoutGrad {
 public:
  BelowAutogradWithoutGrad() {
    if (!c10::GradMode::is_enabled()) below_.emplace();
  }

 private:
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_;
};

// A node's int arguments (sizes, strides, flags), kept in its context as one saved entry: the
// lists one after the other, read back by position.
struct SavedInts {
  std::vector<int64_t> values;

  static void save(torch::autograd::AutogradContext* ctx, std::initializer_list<at::IntArrayRef> lists) {
    std::vector<int64_t> all;
    for (at::IntArrayRef list : lists) all.insert(all.end(), list.begin(), list.end());
    ctx->saved_data["ints"] = std::move(all);
  }
  static SavedInts load(torch::autograd::AutogradContext* ctx) { return {ctx->saved_data["ints"].toIntVector()}; }
  at::IntArrayRef slice(size_t start, size_t size) const { return at::IntArrayRef(values).slice(start, size); }
  at::IntArrayRef slice(size_t start) const { return at::IntArrayRef(values).slice(start); }
};

}  // namespace cuconv::dispatch
