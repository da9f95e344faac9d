#pragma once
// The tensor-core backward launchers (conv2d_dgrad_tensorcore.cu, conv2d_wgrad_tensorcore.cu), which
// the CUDA runners pick under the same rule as the forward (runners.h: conv2d_tensorcore_eligible):
// 16-bit inputs, and float32 as TF32 when allowed for convolutions, on sm_80 and newer. Same contracts
// as cuda::conv2d_backward_input / conv2d_backward_weight; `config` >= 0 forces a table entry (tests).
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include "../conv2d_params.h"

namespace cuconv::cuda {

void conv2d_backward_input_tensorcore(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                                      const at::Tensor& grad_input, int config = -1);
void conv2d_backward_weight_tensorcore(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& grad_weight, int config = -1);

// The checks of the backward test ops (_conv2d_backward_{input,weight}_tensorcore), before any
// allocation: the geometry, one CUDA device, tensor-core eligibility, grad_output's dtype and shape,
// non-empty reductions, a valid config. Returns the geometry.
Conv2dParams check_tensorcore_backward_op(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups, bool tf32, int64_t config);

}  // namespace cuconv::cuda
