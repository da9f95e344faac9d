#pragma once
// bfloat16 forward conv on AMX tiles read straight from the input (amx_direct.cpp).
#include <ATen/core/Tensor.h>

#include "conv2d_params.h"

namespace cuconv::cpu {

// No dilation, one group, and 16 input channels or a window of at most 256 values (R x S x C: such a
// conv runs unfolded, as a 1x1 conv over the windows), any stride and number of output channels
// (under 32, a C block's other columns are computed and dropped: a first layer's grad input has 3).
bool amx_direct_shape(const Conv2dParams& p);

// A conv of few channels (C < 16) runs on the tiles as a 1x1 conv over its unfolded input: each
// output pixel's window of R x S x C values (in that order) as its channels, the weight
// [K][R][S][C] as [K][RSC]. This is that 1x1 conv (output P x Q, stride 1, no padding).
Conv2dParams unfolded(const Conv2dParams& p);

// y = conv(x, w) + bias, ReLU'd when asked, all bfloat16 (bias may be undefined); x in p's layout,
// y in p's layout or any view whose channels are adjacent (written in place), w [K, C, R, S] (any
// strides). flipped: w is instead the weight [C, K, R, S] of the conv whose grad input this conv
// computes (grad_input_as_forward), read flipped in R and S and transposed, without a copy. Runs
// only where cpu_has_amx_bf16().
void amx_direct_fprop(const Conv2dParams& p, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                      const at::Tensor& y, bool relu, bool flipped = false);

}  // namespace cuconv::cpu
