#pragma once
// The CPU max-pool's kernel for each pass, chosen in one place (plan.cpp) from the geometry, the
// dtype and the ISA path; `_cpu_max_pool2d_plan` reports them by name. Every kernel keeps torch's
// rules (NaN wins, the first maximum of a tie, padding never read) and writes the same bits.
#include <ATen/core/ScalarType.h>

#include <string>
#include <vector>

#include "cpu/isa.h"
#include "max_pool2d_params.h"

namespace cuconv::cpu {

enum class PoolFpropStrategy {
  large_planes,       // planes of 2^31 elements or more: scalar, int64 positions
  planes,             // NCHW, any window: one vectorisable pass per window element over a row's outputs
  planes_avx2,        // NCHW float on AVX2: 8 outputs of a row in registers (planes too large to stage)
  planes_2x2_avx2,    // NCHW float 2x2 stride 2 inside the input: even/odd column splits
  pixels,             // NHWC, any window: one pass per window element over a pixel's channels
  pixels_avx2,        // NHWC float on AVX2: 8 channels in registers
  pixels_2x2_avx2,    // NHWC float 2x2 stride 2 inside the input, C a multiple of 8: no bounds tests
  pixels_2x2_avx512,  // the same on AVX-512, C a multiple of 16
  pixels_avx512,      // NHWC float on AVX-512, any window: 16 channels in registers, the window listed once
  planes_2x2_bf16,    // NCHW bfloat16 2x2 stride 2 inside the input, AVX-512: no float32 copies (bf16_2x2.cpp)
  pixels_2x2_bf16,    // the same, NHWC
  planes_as_pixels_avx2,  // NCHW float on AVX2, any window: 8 planes as the channels of a pixel walk
};

enum class PoolBpropStrategy {
  scatter,           // zero each plane, then add every grad_output element at its index
  windows_2x2_avx2,  // float 2x2 stride 2 inside the input on AVX2: windows written whole, no zero-fill
  windows_2x2_bf16,  // the same for bfloat16 on AVX-512, on the bfloat16 values (bf16_2x2.cpp)
};

struct MaxPool2dPlan {
  PoolFpropStrategy forward;
  PoolBpropStrategy backward;
};

MaxPool2dPlan plan_max_pool2d(const MaxPool2dParams& p, Isa isa, at::ScalarType dtype);
const char* name(PoolFpropStrategy s);
const char* name(PoolBpropStrategy s);
// Every kernel of both passes as "forward:<name>", "backward:<name>".
std::vector<std::string> all_max_pool2d_strategies();

// 2x2 windows, stride 2, no padding or dilation, every window inside the input (the CNN pooling
// layers), with flat positions that fit int32.
bool is_2x2_stride2_inside(const MaxPool2dParams& p);
// Whether planes_as_pixels_avx2's per-thread buffers stay within their bounds for these planes.
bool planes_as_pixels_fit(const MaxPool2dParams& p);

}  // namespace cuconv::cpu
