#pragma once
// Argument checks, written once and shared by every runner. They raise the exception type torch
// raises for the same mistake (RuntimeError, ValueError, TypeError, NotImplementedError) with a
// message that names the problem, before any memory is touched.
#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include "conv2d_params.h"
#include "max_pool2d_params.h"

namespace cuconv {

// Accepts 3-D (unbatched) or 4-D input; padding has 2 (symmetric) or 4 entries
// (top, left, bottom, right).
Conv2dParams check_conv2d(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                          c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups);

MaxPool2dParams check_max_pool2d(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                 c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 c10::IntArrayRef dilation, bool ceil_mode);

// The checks max_pool2d(kernel 2, stride 2) applies to a conv output of `conv`'s geometry (as the composition
// max_pool2d(relu(conv2d(...)), 2) would report them), and that pooling's geometry.
MaxPool2dParams check_relu_pool(const Conv2dParams& conv, bool batched);

// The dtypes a runner supports for tensors on this device (with the simulator switch applied).
void check_runner_dtype(const char* op, const at::Tensor& t);

// grad_output of a backward op must have the forward output's shape.
void check_grad_output(const char* op, const at::Tensor& grad_output, c10::IntArrayRef expected);

}  // namespace cuconv
