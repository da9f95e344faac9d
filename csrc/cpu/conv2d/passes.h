#pragma once
// The CPU conv passes for float and double (fprop.cpp, dgrad.cpp, wgrad.cpp, bias.cpp), each a
// switch over its plan (plan.h). All tensors are contiguous in the layouts of ops/runner.h;
// `opts` allocates the packed weights.
#include <ATen/core/TensorBody.h>

#include "cpu/conv2d/plan.h"
#include "cpu/float32_copies.h"

namespace cuconv::cpu {

// y = conv(x, w) + bias (bias may be null), then max(., 0) when relu. With y16 (float only, a
// strategy that takes_blocks16), the sums go to y16 instead, a block at a time, and y is null.
template <typename T>
void conv2d_fprop(Isa isa, const FpropPlan& plan, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y,
                  bool relu, const at::TensorOptions& opts, const Blocks16& y16 = {});
// gx = the grad input from gy and w; with gy16 (as y16 above) grad_output is read from it and gy is null.
template <typename T>
void conv2d_dgrad(Isa isa, const DgradPlan& plan, const Conv2dParams& p, const T* gy, const T* w, T* gx,
                  const at::TensorOptions& opts, const Blocks16& gy16 = {});
// gw = the grad weight from gy and x (OIHW); gy16 as in conv2d_dgrad.
template <typename T>
void conv2d_wgrad(Isa isa, const WgradPlan& plan, const Conv2dParams& p, const T* gy, const T* x, T* gw,
                  const Blocks16& gy16 = {});
// gb[k] = sum of gy over images and positions of channel k.
template <typename T>
void conv2d_bias_grad(const Conv2dParams& p, const T* gy, T* gb);
// The same for 16-bit gy, read in place and summed in float32 (the bits of conv2d_bias_grad<float>
// on a float32 copy), gb rounded once; false (nothing written) where the CPU path lacks AVX-512BW.
bool conv2d_bias_grad_16bit(const Conv2dParams& p, const at::Tensor& gy, const at::Tensor& gb);

}  // namespace cuconv::cpu
