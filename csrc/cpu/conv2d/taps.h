#pragma once
// The nhwc_taps strategy (taps.cpp): a conv on small channels-last maps as one GEMM per kernel tap
// over only the outputs whose window has that tap inside the input, so no product is taken with
// padding. The forward and the grad input.
#include <ATen/core/TensorBody.h>

#include "conv2d_params.h"
#include "cpu/float32_copies.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

// y = conv(x, w) + bias (bias may be null), then max(., 0) when relu; x and y NHWC, w OIHW, one
// group. With y16 (float only) the sums go to y16 instead, a block at a time, and y is null.
template <typename T>
void nhwc_taps_fprop(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                     const at::TensorOptions& opts, const Blocks16& y16 = {});
// gx = the grad input of conv p from gy (NHWC) and w (OIHW), any stride, dilation and padding:
// per tap, each input pixel the tap reaches gathers its output position's grad times W_t^T.
template <typename T>
void nhwc_taps_dgrad(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx, const at::TensorOptions& opts);

}  // namespace cuconv::cpu
