#pragma once
// Winograd convolution for 3x3 stride-1 convs on the CPU (winograd.cpp). The plan
// (cpu/conv2d/plan.h) picks it per pass; cuconv.config's cpu_conv_algo overrides the choice.
#include <cstdint>

#include "conv2d_params.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

// One correlation y(n,k,p,q) = sum_{c,r,s} x(n, c, p - pad_h + r, q - pad_w + s) w(k, c, r, s),
// r, s in 0..2, over arbitrary element strides (n, c, h, w for x; n, k, p, q for y; k, c, r, s
// for w, which may be negative to read a flipped or transposed filter). Reads outside the image are zero.
struct WinogradConv {
  int64_t N, C, H, W, K, P, Q, pad_h, pad_w;
  int64_t xs[4], ys[4], ws[4];
};

// The activations (x, y, gy) are float32, float16 or bfloat16: 16-bit ones are widened as the input
// transforms load them and rounded as the output transform stores them (the float32 sums, rounded
// once), so a 16-bit conv makes no float32 copy of them (except the channels-last float32 copy that
// the AVX-512 path makes of an NCHW forward input). The weight has the activations' type (the
// filter transform widens it); bias and grad weight are float32.

// y = conv(x, w) + bias, then max(., 0) when relu. Every output element is written.
template <typename A>
void winograd_conv3x3(Isa isa, const WinogradConv& s, const A* x, const A* w, const float* bias, A* y, bool relu);

// gw(k, c, r, s) = sum_{n,p,q} gy(n, k, p, q) x(n, c, p - pad_h + r, q - pad_w + s), written whole
// (OIHW, contiguous). s.ys are gy's strides; s.ws is unused.
template <typename A>
void winograd_conv3x3_backward_weight(Isa isa, const WinogradConv& s, const A* gy, const A* x, float* gw);

// The three passes of a 3x3 stride-1 ungrouped conv (contiguous tensors in p's layout) as the
// correlations above; A is float, c10::BFloat16 or c10::Half.
template <typename A>
void winograd_conv2d_fprop(Isa isa, const Conv2dParams& p, const A* x, const A* w, const float* bias, A* y,
                           bool relu);
template <typename A>
void winograd_conv2d_dgrad(Isa isa, const Conv2dParams& p, const A* gy, const A* w, A* gx);
template <typename A>
void winograd_conv2d_wgrad(Isa isa, const Conv2dParams& p, const A* gy, const A* x, float* gw);

}  // namespace cuconv::cpu
