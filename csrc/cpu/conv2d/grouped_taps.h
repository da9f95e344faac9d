#pragma once
// Grouped convs whose groups' output channels fill whole vectors, NHWC, float32 on AVX-512 and AVX2
// (the grouped_taps strategy of each pass: grouped_taps.cpp forward and grad input,
// grouped_taps_wgrad.cpp grad weight): each output pixel is a GEMM row of a group's channels (or of
// a pack of 2 or 4 small groups', group_pack), one to four vectors, summed over the group's taps,
// read from a zero-padded per-group copy of the input (grouped_taps_planes.h; no im2col, no output
// grid wider than the map); the AVX2 grad weight reads the input in place.
#include <cstdint>

#include "conv2d_params.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

// Whether grouped_taps_fprop takes the shape on the ISA path (any stride, dilation and padding):
// AVX-512, groups of 16k output channels (8k onto maps of at most 4 pixels, half-used vectors), or
// of 8 or 4 channels in and out (group_pack); AVX2, groups of 8k.
bool grouped_taps_shape(const Conv2dParams& p, Isa isa);
// How many groups grouped_taps packs into one vector on this path: 16 / Kg for groups of 8 or 4
// channels in and out on AVX-512 (grouped_taps_planes.h), else 1.
int group_pack(const Conv2dParams& p, Isa isa);

// y = conv(x, w) + bias (bias may be null), then max(., 0) when relu. x and y NHWC, w OIHW, all
// contiguous. Each output is one FMA chain over the taps (r, s) and then channels in order.
void grouped_taps_fprop(Isa isa, const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y, bool relu);
// gx = the grad input from gy and w (OIHW), NHWC. Stride 1: the forward conv
// grad_input_as_forward(p) (plan.h) with the weight turned 180 degrees and its channel axes swapped
// per group as it is packed. Strided (grouped_taps_dgrad_phases_fit): per phase of the grad input,
// the stride-1 forward conv of gy with the kernel taps that reach it, written to its pixels.
void grouped_taps_dgrad(Isa isa, const Conv2dParams& p, const float* gy, const float* w, float* gx);
// Whether grouped_taps_dgrad takes a strided p: dilation 1, and each phase's first grad_output row
// and column at or after the map's start (padding below the kernel's reach).
bool grouped_taps_dgrad_phases_fit(const Conv2dParams& p);
// gw = the grad weight (OIHW) from gy and x (NHWC), each weight summed over the output pixels in
// order: on AVX-512 per (group, tap, 16 input x 16 output channels) one block of accumulators over
// the zero-padded copy; on AVX2 read in place, 8 input channels x 4 output channels x up to 3 taps
// of a kernel row at a time, over runs of output pixels whose taps lie inside the input.
void grouped_taps_wgrad(Isa isa, const Conv2dParams& p, const float* gy, const float* x, float* gw);
// Whether grouped_taps_wgrad takes a shape grouped_taps_shape takes: packed groups only on rows it
// reads three taps at a time (or where the vectors' own rule takes them).
bool grouped_taps_wgrad_fits(const Conv2dParams& p, Isa isa);

}  // namespace cuconv::cpu
