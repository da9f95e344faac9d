#pragma once
// The CPU conv's strategy for each pass, chosen in one place (plan.cpp) from the shapes, the dtype,
// the ISA path, cuconv.config's cpu_conv_algo and, where a GEMM path depends on it, the thread
// count. The passes (fprop.cpp, dgrad.cpp, wgrad.cpp) switch over these; `_cpu_conv2d_plan`
// reports them by name so tests assert the strategy a case reaches. Choices never change results'
// bits across thread counts: every strategy sums each output in a fixed order.
#include <ATen/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

#include "conv2d_params.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

enum class FpropStrategy {
  winograd,          // F(2x2, 3x3), float32 3x3 stride 1 (winograd.cpp)
  rows_avx512,       // few-channel NCHW first layers vectorised along output rows (fprop_rows_avx512.cpp)
  nchw_via_nhwc,     // NCHW through the NHWC row GEMMs on a transposed, zero-padded copy per image
  nchw_im2col,       // NCHW: W[K, CRS] * im2col[CRS, PQ] per image
  nchw_direct,       // NCHW 1x1 stride 1 unpadded: the input is the GEMM's B as it is
  nhwc_rows,         // NHWC: one GEMM per kernel row, A rows pointing into the input (or a padded copy)
  nhwc_interleaved,  // NHWC few channels: one GEMM over a row-interleaved copy (R rows per output row)
  nhwc_im2col,       // NHWC: im2col[PQ, RSC] * W[RSC, K] (dilated kernel rows)
  nhwc_direct,       // NHWC 1x1 stride 1 unpadded: the input is the GEMM's A as it is
  depthwise,         // one input channel per group: channels in vector lanes, no GEMM (depthwise.cpp)
  grouped,           // at most 16 channels per group: output pixels in vector lanes (grouped.cpp)
  nchw_as_nhwc,      // NCHW pointwise or strided onto few positions: the batch run as NHWC (runner.cpp)
  amx_direct,        // bfloat16 on AMX: tiles loaded from padded bfloat16 phase images (amx_direct.cpp)
  grouped_taps,      // NHWC groups of 16k output channels (grouped_taps.h), channels in vector lanes
  pointwise_16bit,   // float16 / bfloat16 1x1: the float32 GEMM on chunks converted in cache (pointwise_16bit.h)
  nhwc_taps,         // NHWC small maps: one GEMM per kernel tap over the outputs that have it inside the input
};

enum class DgradStrategy {
  winograd,     // the flipped-filter correlation as F(2x2, 3x3)
  nhwc_phases,  // NHWC strided: stride_h x stride_w stride-1 correlations written in place
  nchw_col2im,  // W^T * grad_output, then col2im adds the columns into grad_input
  nhwc_col2im,
  depthwise,    // one input channel per group: each input pixel gathers its taps per stride phase
  grouped,      // stride 1: the forward's kernel on grad_output with the flipped filter (grouped.cpp)
  nchw_as_nhwc,  // as FpropStrategy::nchw_as_nhwc
  as_forward,    // stride 1 on AMX (and float32 NHWC on AVX-512): the forward of grad_output with the
                 // flipped, transposed weight
  grouped_taps,  // stride 1, NHWC groups of 16k input channels: grouped_taps' forward of grad_output
  amx_phases,    // strided, bfloat16 on AMX: an amx_direct forward of grad_output per stride phase
                 // (amx_dgrad_phases.cpp)
  pointwise_16bit,  // float16 / bfloat16 1x1: the float32 GEMM on chunks converted in cache (pointwise_16bit.h)
  nhwc_taps,        // NHWC small maps: per tap, the pixels it reaches gather their positions' grads (taps.h)
};

enum class WgradStrategy {
  winograd,     // F(3x3, 2x2)
  rows_avx512,  // few-channel NCHW first layers (wgrad_rows_avx512.cpp)
  direct,       // 1x1 stride 1 unpadded: the input is the GEMM's A as it is
  pixel_cols,   // NHWC 1x1 strided (shortcuts): A's columns point at each position's channels
  window_runs,  // whole pixels per kernel row: A's columns are each window's R runs of S*C values
                // in a zero-padded NHWC copy (or the NHWC input in place)
  interleaved,  // few channels: A's columns point into a row-interleaved copy
  im2col,       // im2col columns
  depthwise,    // one input channel per group: per-channel sums in vector lanes over fixed batch chunks
  grouped,      // per-lane sums over output pixels per (output channel, tap), fixed batch chunks (grouped.cpp)
  nchw_as_nhwc,  // as FpropStrategy::nchw_as_nhwc
  grouped_taps,  // NHWC groups of 16k output channels: 16 x 16 blocks summed over every pixel
  amx_direct,    // bfloat16 on AMX: tiles loaded from channel-major phase images and grad_output
                 // pairs (amx_wgrad.cpp)
};

struct FpropPlan {
  FpropStrategy strategy;
};

struct DgradPlan {
  DgradStrategy strategy;
  int64_t images_per_gemm;  // images joined along the GEMM's M (col2im strategies)
};

struct WgradPlan {
  WgradStrategy strategy;
  int64_t images_per_gemm;  // images whose positions one GEMM sums over
  int64_t chunks;           // fixed split of the batch; the chunk partials are summed in order (also depthwise's)
  bool small_output;        // the AVX-512 small-output GEMM (C in registers over a long K) runs
  bool copy_grad_output;    // NHWC grad_output is copied to a better row pitch first
  // The order of the partial's rows: NCHW im2col's (c, r, s), NHWC's (r, s, c), or the
  // row-interleaved buffer's (s, r, c).
  enum class Rows { crs, rsc, src } rows;
};

FpropPlan plan_fprop(const Conv2dParams& p, Isa isa, at::ScalarType dtype);
DgradPlan plan_dgrad(const Conv2dParams& p, Isa isa, at::ScalarType dtype);
// `threads`: the GEMM may split across threads only when the chunks do not, which decides whether
// the small-output GEMM can run (it is single-threaded).
WgradPlan plan_wgrad(const Conv2dParams& p, Isa isa, at::ScalarType dtype, int64_t threads);

const char* name(FpropStrategy s);
const char* name(DgradStrategy s);
const char* name(WgradStrategy s);
// The strategies that take a 16-bit tensor as Blocks16 (float32_copies.h), converting it a block at
// a time: the forward's output, the grad input's and grad weight's grad_output (the GEMM strategies).
bool takes_blocks16(FpropStrategy s);
bool takes_blocks16(DgradStrategy s);
bool takes_blocks16(WgradStrategy s);
// Every strategy of every pass as "fprop:<name>", "dgrad:<name>", "wgrad:<name>" (for the test that
// every strategy is reached by some case).
std::vector<std::string> all_conv2d_strategies();

// Shared blocking rules of the GEMM strategies:
// images joined into one NHWC GEMM when feature maps are small (about 256 positions per GEMM), so
// the weight is read once per 256 positions instead of once per image;
int64_t images_per_gemm(int64_t N, int64_t PQ);
// a GEMM splits its columns over the threads when the outer loop has fewer items than threads.
bool gemm_should_split(int64_t outer_items);

// A bfloat16 forward (or stride-1 grad input, as a forward) that runs amx_direct on its bfloat16
// tensors, before any float32 copy (runner.cpp).
bool use_amx_direct(const Conv2dParams& p, Isa isa, at::ScalarType dtype);
// A bfloat16 strided grad input that runs DgradStrategy::amx_phases, before any float32 copy.
bool use_amx_dgrad_phases(const Conv2dParams& p, Isa isa, at::ScalarType dtype);
// A bfloat16 grad weight that runs WgradStrategy::amx_direct, before any float32 copy (runner.cpp).
bool use_amx_wgrad(const Conv2dParams& p, Isa isa, at::ScalarType dtype);

// The stride-1 grad input as a forward conv (DgradStrategy::as_forward): grad_output, padded by
// (R - 1) * dil - pad, correlated with the weight flipped in R and S and, per group, transposed to
// [C, K / groups, R, S], gives grad_input (its bottom and right padding follow from the sizes, as
// any forward's do).
Conv2dParams grad_input_as_forward(const Conv2dParams& p);
// The same conv on NHWC tensors (the nchw_as_nhwc strategies run it on transposed copies).
inline Conv2dParams as_nhwc(Conv2dParams p) {
  p.channels_last = true;
  return p;
}

// Convs that read their input in place (1x1, stride 1, no padding, output the input's size).
bool reads_input_directly(const Conv2dParams& p);
// NHWC convs whose kernel rows are whole pixels of at least 32 values (one GEMM per kernel row,
// A rows in place) or, with fewer channels, the row-interleaved GEMM (both undilated along W).
bool nhwc_reads_rows_in_place(const Conv2dParams& p);

}  // namespace cuconv::cpu
