#pragma once
// A bfloat16 conv weight packed into AMX tiles for amx_direct (amx_weight.cpp).
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "conv2d_params.h"

namespace cuconv::cpu {

// The packed weight: per 16 output channels, tap (r, s) and 32 input channels (Cp: p.C rounded up
// to 32), one tile of 16 x 16 words; this is the offset of tile (k16, r, s, slice), in words.
inline int64_t weight_tile(const Conv2dParams& p, int64_t Cp, int64_t k16, int64_t r, int64_t s, int64_t slice) {
  return (((k16 * p.R + r) * p.S + s) * (Cp / 32) + slice) * 256;
}

// The weight of the conv p into wp (Kp / 16 x R x S x Cp / 32 tiles; Kp: p.K rounded up to 32),
// zero past p.K and p.C: as B tiles (row j: input channels 2j and 2j + 1 of 16 output channels as
// pair words), or as A tiles (as_a: a row of 32 input channels per output channel). w is [K][C][R][S]
// with any strides (a conv run unfolded, p 1x1 over the R x S x C window values, takes the original
// weight: [K][R][S][C] is its [K][RSC]); with flipped, w is the weight [C][K][R][S] of the conv whose
// grad input p computes (grad_input_as_forward), read flipped in R and S and transposed.
void pack_amx_weight(const Conv2dParams& p, int64_t Cp, int64_t Kp, const at::Tensor& w, bool flipped, bool as_a,
                     uint32_t* wp);

}  // namespace cuconv::cpu
