// The max_pool2d ops' router (see ops/conv2d.cpp): checks, layout, allocation, then the runner.
#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/router.h"

namespace cuconv {

void run_max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& x, const at::Tensor& y,
                            const at::Tensor& idx) {
  on_runner(
      x, [&] { cpu::max_pool2d_forward(p, x, y, idx); },
      [&](auto d) { gpu::max_pool2d_forward<device_of<decltype(d)>>(p, x, y, idx); });
}

void run_max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& gy, const at::Tensor& idx,
                             const at::Tensor& gx) {
  on_runner(
      gy, [&] { cpu::max_pool2d_backward(p, gy, idx, gx); },
      [&](auto d) { gpu::max_pool2d_backward<device_of<decltype(d)>>(p, gy, idx, gx); });
}

namespace {

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
    run_max_pool2d_forward(p, x, output, indices);
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
    run_max_pool2d_backward(p, gy, idx, grad_input);
  }
  return as_given(grad_input, batched);
}

}  // namespace
}  // namespace cuconv

// One router serves both keys (see ops/conv2d.cpp).
TORCH_LIBRARY_IMPL(cuconv, CPU, m) {
  m.impl("max_pool2d", &cuconv::max_pool2d);
  m.impl("max_pool2d_backward", &cuconv::max_pool2d_backward);
}
#ifdef CUCONV_WITH_CUDA
TORCH_LIBRARY_IMPL(cuconv, CUDA, m) {
  m.impl("max_pool2d", &cuconv::max_pool2d);
  m.impl("max_pool2d_backward", &cuconv::max_pool2d_backward);
}
#endif
