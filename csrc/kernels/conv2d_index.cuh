#pragma once
// Conv2dParams plus what the implicit-GEMM problems divide by, as fast divisions built once on the
// host (fast_divmod.cuh says why). Converts implicitly from Conv2dParams, so a problem that holds one
// is initialised from the plain geometry as before. The 32-bit divisions need every index they take
// below 2^31: a reduction index of fprop/dgrad (one filter, Cg*R*S or Kg*R*S), a pixel of one plane
// (H*W, P*Q), a padded row or column; the constructor refuses a shape beyond that. Row indices and
// grad weight's reduction index run over the batch and use 64-bit divisions.
#include <algorithm>

#include "../conv2d_params.h"
#include "fast_divmod.cuh"

namespace cuconv::kern {

struct Conv2dIndexParams : Conv2dParams {
  int64_t Cg, Kg;  // channels per group: input, output
  FastDivmod div_q, div_w, div_s, div_rs, div_cg, div_kg, div_stride_h, div_stride_w;
  FastDivmod64 div_pq, div_hw;

  Conv2dIndexParams() = default;
  Conv2dIndexParams(const Conv2dParams& p)  // NOLINT: implicit by design
      : Conv2dParams(p), Cg(p.C / p.groups), Kg(p.K / p.groups), div_q(p.Q), div_w(p.W), div_s(p.S), div_rs(p.R * p.S),
        div_cg(p.C / p.groups), div_kg(p.K / p.groups), div_stride_h(p.stride_h), div_stride_w(p.stride_w),
        div_pq(p.P * p.Q), div_hw(p.H * p.W) {
    const int64_t limit = int64_t(1) << 31;
    // ... and the windows' extent: the last window's origin plus its last tap (32-bit row math)
    const int64_t largest = std::max({Cg * p.R * p.S, Kg * p.R * p.S, p.H * p.W, p.P * p.Q, p.H + p.pad_h,
                                      p.W + p.pad_w, (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1,
                                      (p.Q - 1) * p.stride_w + (p.S - 1) * p.dil_w + 1});
    if (largest >= limit)
      throw std::length_error("cuconv: conv2d with a filter or an image plane of 2^31 or more elements is not "
                              "supported by the CUDA kernels");
  }
};

}  // namespace cuconv::kern
