#pragma once
// bfloat16 grad weight on AMX tiles read straight from channel-major phase images of the input and
// a pair-interleaved copy of grad_output (amx_wgrad.cpp).
#include <ATen/core/Tensor.h>

#include "conv2d_params.h"

namespace cuconv::cpu {

// One group, at least 16 output channels, and 16 input channels (any stride, padding and dilation)
// or an undilated window of at most 32 values (R x S x C: it runs unfolded, as amx_direct does).
bool amx_wgrad_shape(const Conv2dParams& p);

// grad_weight [K, C, R, S] (contiguous, bfloat16) from grad_output and the input, bfloat16 in p's
// layout. Returns false, having written nothing, when the input holds an infinity or a NaN: the
// tiles also multiply input values by the zeros that stand for positions outside the output, and
// zero times infinity is NaN where no product exists (the caller then runs the GEMM plan). A first
// layer's (unfolded, stride 1) runs image by image, with no such products, on any values.
// Runs only where cpu_has_amx_bf16().
bool amx_wgrad(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& x,
               const at::Tensor& grad_weight);

}  // namespace cuconv::cpu
