#pragma once
// Depthwise convolutions on the CPU (groups == C > 1: one input channel per group, K = m x C output
// channels, output channel k reading input channel k / m), for the plan's `depthwise` strategy of
// each pass. The grouped GEMMs would reduce over only R x S values per group; these kernels keep
// channels in vector lanes instead, each lane one channel's own sum (depthwise.cpp).
#include <cstdint>

#include "conv2d_params.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

// y = conv(x, w) + bias (bias may be null), then max(., 0) when relu. All contiguous, NCHW or NHWC.
template <typename T>
void depthwise_fprop(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu);
// gx = the grad input from gy and w.
template <typename T>
void depthwise_dgrad(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx);
// gw (K x 1 x R x S) = the grad weight from gy and x, the batch summed in `chunks` fixed chunks whose
// partials are added in order (the plan's choice, from the shapes only).
template <typename T>
void depthwise_wgrad(Isa isa, const Conv2dParams& p, int64_t chunks, const T* gy, const T* x, T* gw);

}  // namespace cuconv::cpu
