#pragma once
// The tensor-core backward launchers (conv2d_dgrad_tensorcore.cu, conv2d_wgrad_tensorcore.cu), which
// the CUDA runners pick under the same rule as the forward (runners.h: conv2d_tensorcore_eligible):
// 16-bit inputs, and float32 as TF32 when allowed for convolutions, on sm_80 and newer. Same contracts
// as cuda::conv2d_backward_input / conv2d_backward_weight; `config` >= 0 forces a table entry (tests).
#include <ATen/core/Tensor.h>

#include "../conv2d_params.h"

namespace cuconv::cuda {

void conv2d_backward_input_tensorcore(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                                      const at::Tensor& grad_input, int config = -1);
void conv2d_backward_weight_tensorcore(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& grad_weight, int config = -1);

}  // namespace cuconv::cuda
