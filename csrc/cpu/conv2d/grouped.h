#pragma once
// Grouped convs with few channels per group, and dilated convs, on the CPU (the plan's `grouped`
// strategy of each pass, grouped.cpp). The grouped GEMMs give each group a GEMM whose N is the
// group's few output channels (4 or 8 of a 16-wide tile) after an im2col of R x S copies; these
// kernels put output pixels in the vector lanes instead, so every lane does useful work whatever
// the group's width, and the taps are read in place from a zero-padded copy.
#include <cstdint>

#include "conv2d_params.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

// Whether grouped_dgrad takes the shape: stride 1 and padding at most the dilated kernel's reach
// (the grad input is then a stride-1 correlation of grad_output with the flipped kernel).
bool grouped_dgrad_fits(const Conv2dParams& p);

// y = conv(x, w) + bias (bias may be null), then max(., 0) when relu. All contiguous, NCHW or NHWC.
template <typename T>
void grouped_fprop(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu);
// gx = the grad input from gy and w (grouped_dgrad_fits(p) holds).
template <typename T>
void grouped_dgrad(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx);
// gw = the grad weight (OIHW) from gy and x, the batch in `chunks` fixed chunks whose partials are
// added in order.
template <typename T>
void grouped_wgrad(Isa isa, const Conv2dParams& p, int64_t chunks, const T* gy, const T* x, T* gw);

}  // namespace cuconv::cpu
