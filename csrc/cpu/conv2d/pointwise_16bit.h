#pragma once
// 16-bit 1x1 convolutions (any stride, no padding, one group), forward and grad input: the float32
// GEMM on chunks of the operand converted as they are read, each chunk's result rounded into the
// output in cache, instead of whole-tensor float32 copies (pointwise_16bit.cpp).
// FpropStrategy::pointwise_16bit, DgradStrategy::pointwise_16bit.
#include <ATen/core/Tensor.h>

#include "conv2d_params.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"

namespace cuconv::cpu {

// A float16 or bfloat16 1x1 forward that every output position computes from an input pixel, with
// cuconv.config's cpu_conv_algo automatic (runner.cpp asks after amx_direct).
bool use_pointwise_16bit(const Conv2dParams& p, at::ScalarType dtype);
// y = conv(x, w) + bias (bias may be undefined), max(., 0) when relu; contiguous tensors in p's layout.
void pointwise_16bit_fprop(Isa isa, const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias, const at::Tensor& output, bool relu);
// The grad weight of a strided 1x1 conv is that of the unstrided 1x1 conv (pointwise_unstrided: the
// output's size, stride 1) on the pixels it reads: those pixels widened, [N][C][P][Q] in the input's
// layout, in `slot` (a quarter of a stride-2 input's float32 copy).
Conv2dParams pointwise_unstrided(const Conv2dParams& p);
at::Tensor float32_strided_pixels(const Conv2dParams& p, const at::Tensor& input, Scratch slot);
// grad_input from grad_output and the weight, for the convs use_pointwise_16bit takes.
void pointwise_16bit_dgrad(Isa isa, const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input);

}  // namespace cuconv::cpu
