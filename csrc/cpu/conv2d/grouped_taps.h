#pragma once
// Grouped convs whose groups have a multiple of 16 output channels (of 8 onto maps of at most 4
// pixels), NHWC, float32 on AVX-512 (the grouped_taps strategy of each pass, grouped_taps.cpp): a
// group's output channels fill whole vectors, so each output pixel is a GEMM row of 16 or 32 lanes
// summed over the group's taps, read from a zero-padded per-group copy of the input (no im2col, no
// output grid wider than the map).
#include <cstdint>

#include "conv2d_params.h"

namespace cuconv::cpu {

// Whether grouped_taps_fprop takes the shape (any stride, dilation and padding).
bool grouped_taps_shape(const Conv2dParams& p);

// y = conv(x, w) + bias (bias may be null), then max(., 0) when relu. x and y NHWC, w OIHW, all
// contiguous. Each output is one FMA chain over the taps (r, s) and then channels in order.
void grouped_taps_fprop(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y, bool relu);
// gx = the grad input from gy and w (OIHW), NHWC, as the forward conv grad_input_as_forward(p)
// (plan.h) with the weight turned 180 degrees and its channel axes swapped per group as it is packed.
void grouped_taps_dgrad(const Conv2dParams& p, const float* gy, const float* w, float* gx);
// gw = the grad weight (OIHW) from gy and x (NHWC): per (group, tap, 16 input channels, 16 output
// channels) one block of 16 accumulators summed over every output pixel in order.
void grouped_taps_wgrad(const Conv2dParams& p, const float* gy, const float* x, float* gw);

}  // namespace cuconv::cpu
