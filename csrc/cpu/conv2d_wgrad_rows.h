#pragma once
// Grad weight of a few-channel NCHW stride-1 conv on AVX-512, vectorised along the output rows
// (conv2d_wgrad_rows_avx512.cpp). conv2d_cpu.cpp takes it where wgrad_rows_eligible says so.
#include "../conv2d_params.h"
#include "cpu_isa.h"

namespace cuconv::cpu {

// float32 NCHW, one group, stride 1, no dilation, C*R*S <= 32, Q >= 16, on the AVX-512 path.
bool wgrad_rows_eligible(Isa isa, const Conv2dParams& p);

// gw (K x C x R x S, contiguous) = the grad weight from gy (N x K x P x Q) and x (N x C x H x W), both contiguous.
void conv2d_wgrad_rows_avx512(const Conv2dParams& p, const float* gy, const float* x, float* gw);

}  // namespace cuconv::cpu
