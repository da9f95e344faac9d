#pragma once
// Few-channel NCHW stride-1 convs (first layers: 3 -> 32/64, 3x3) on AVX-512, vectorised along the
// output rows instead of through a GEMM: in NCHW an output row and the input rows under it are
// contiguous, so the kernels read them in place (no im2col, no transposes). conv2d_cpu.cpp takes
// them where rows_avx512_eligible says so.
//  - forward: conv2d_fprop_rows_avx512.cpp
//  - grad weight: conv2d_wgrad_rows_avx512.cpp
#include "../conv2d_params.h"
#include "cpu_isa.h"

namespace cuconv::cpu {

// float32 NCHW, one group, stride 1, no dilation, C*R*S <= 32, Q >= 16, on the AVX-512 path.
inline bool rows_avx512_eligible(Isa isa, const Conv2dParams& p) {
  return isa == Isa::avx512 && !p.channels_last && p.groups == 1 && p.stride_h == 1 && p.stride_w == 1 &&
         p.dil_h == 1 && p.dil_w == 1 && p.C * p.R * p.S <= 32 && p.Q >= 16;
}

// y (N x K x P x Q) = conv(x, w) + bias (bias may be null), then max(., 0) when relu. All contiguous.
void conv2d_fprop_rows_avx512(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y,
                              bool relu);

// gw (K x C x R x S) = the grad weight from gy (N x K x P x Q) and x (N x C x H x W). All contiguous.
void conv2d_wgrad_rows_avx512(const Conv2dParams& p, const float* gy, const float* x, float* gw);

}  // namespace cuconv::cpu
