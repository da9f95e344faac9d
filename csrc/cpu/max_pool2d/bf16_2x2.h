#pragma once
// bfloat16 2x2 stride-2 max-pool with every window inside the input, on AVX-512 (bf16_2x2.cpp);
// the plan (plan.cpp) picks it on the AVX-512 paths. Tensors in p's layout, contiguous; values and
// gradients as bfloat16 bits.
#include <cstdint>

#include "max_pool2d_params.h"

namespace cuconv::cpu {

void max_pool2d_forward_bf16_2x2(const MaxPool2dParams& p, const uint16_t* x, uint16_t* y, int64_t* idx);
// False when an index is not one of its window's positions: grad_input is then incomplete and the
// caller scatters instead.
bool max_pool2d_backward_bf16_2x2(const MaxPool2dParams& p, const uint16_t* gy, const int64_t* idx, uint16_t* gx);

}  // namespace cuconv::cpu
