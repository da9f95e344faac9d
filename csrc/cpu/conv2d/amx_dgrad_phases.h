#pragma once
// bfloat16 strided grad input on AMX: a stride-1 amx_direct forward per stride phase
// (amx_dgrad_phases.cpp).
#include <ATen/core/Tensor.h>

#include "conv2d_params.h"

namespace cuconv::cpu {

// Strided, undilated, one group, at least 16 input and output channels.
bool amx_dgrad_phases_shape(const Conv2dParams& p);

// grad_input from grad_output and the weight [K, C, R, S], all bfloat16, grad_output and
// grad_input in p's layout. Runs only where cpu_has_amx_bf16().
void amx_dgrad_phases(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                      const at::Tensor& grad_input);

}  // namespace cuconv::cpu
