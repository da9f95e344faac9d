// Every strategy threshold of the CPU conv, each with its reason (the measurements behind them are
// in docs/experiments.md and docs/design-cpu.md). The choices depend on the shapes, dtype, ISA path
// and cuconv.config; only the grad weight's small-output GEMM also depends on the thread count.
#include "cpu/conv2d/plan.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <iterator>

#include "cpu/conv2d/amx_dgrad_phases.h"
#include "cpu/conv2d/amx_direct.h"
#include "cpu/conv2d/amx_wgrad.h"
#include "cpu/conv2d/grouped.h"
#include "cpu/conv2d/grouped_taps.h"
#include "cpu/gemm/gemm.h"
#include "cpu/sizes.h"
#include "ops/config.h"

namespace cuconv::cpu {
namespace {

bool is_float(at::ScalarType t) { return t == at::kFloat; }

bool winograd_shape(const Conv2dParams& p) {
  return p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && p.groups == 1;
}

// Winograd F(2x2, 3x3) does 2.25x fewer FLOPs; by shape it runs when the correlation has at least 16
// input and output channels and 32 on one side: below that its transforms cost about what the
// products save. On AMX (a bfloat16 conv) the direct GEMMs' tile products outrun the float32
// Winograd products. cpu_conv_algo forces either way.
bool use_winograd(const Conv2dParams& p, Isa isa, at::ScalarType dtype, int64_t c_in, int64_t c_out) {
  const config::CpuConvAlgo algo = config::cpu_conv_algo();
  if (!is_float(dtype) || !winograd_shape(p) || algo == config::CpuConvAlgo::gemm) return false;
  return algo == config::CpuConvAlgo::winograd ||
         (isa != Isa::amx && std::min(c_in, c_out) >= 16 && std::max(c_in, c_out) >= 32);
}

// Few-channel NCHW stride-1 layers (C*R*S <= 32: a first layer's 27) on AVX-512: output rows of at
// least 16 fill a vector, and the input rows under them are read in place with no GEMM at all.
bool use_rows_avx512(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  return is_float(dtype) && is_avx512(isa) && !p.channels_last && p.groups == 1 && p.stride_h == 1 &&
         p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && p.C * p.R * p.S <= 32 && p.Q >= 16;
}

// The input rows and columns the windows cover, from -pad (undilated kernel rows).
int64_t padded_image_values(const Conv2dParams& p) {
  const int64_t Hb = (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1, Wb = (p.Q - 1) * p.stride_w + p.S;
  return Hb * Wb * p.C;
}

// NCHW convs with whole pixels per kernel row run the NHWC row GEMMs on a transposed, zero-padded
// copy of each image, where im2col would write R*S values per position that the GEMM then packs
// again. Not for maps of fewer than 64 positions (the GEMMs are too short; NCHW joins no images),
// 1x1 strided convs (the transposes cost what the GEMM does), or padded images past 1 MiB (the
// copy leaves L2).
bool use_nchw_via_nhwc(const Conv2dParams& p, at::ScalarType dtype) {
  Conv2dParams q = p;
  q.channels_last = true;
  return !p.channels_last && p.groups == 1 && p.dil_h == 1 && p.R * p.S > 1 && p.P * p.Q >= 64 &&
         nhwc_reads_rows_in_place(q) && padded_image_values(p) * int64_t(c10::elementSize(dtype)) <= (int64_t(1) << 20);
}

// Depthwise convs (one input channel per group, any multiplier, kernel, stride, dilation, dtype, ISA
// path): the depthwise kernels keep channels in vector lanes, where the grouped GEMMs reduce over
// only R*S values per group, far below the micro-kernels' peak (docs/experiments.md).
bool use_depthwise(const Conv2dParams& p) { return p.groups > 1 && p.groups == p.C; }

// Grouped convs (not depthwise) with at most 16 channels per group on both sides: the grouped
// kernels put output pixels in the vector lanes, where the grouped GEMMs fill 4 or 8 of a tile's 16
// columns with a group's output channels after an im2col. Wider groups and dilated single-group
// convs ran slower there than on the GEMMs (32-channel groups, 256 channels dilated).
bool use_grouped(const Conv2dParams& p) {
  return p.groups > 1 && !use_depthwise(p) && p.C_per_group() <= 16 && p.K_per_group() <= 16;
}

// The most positions of an NCHW map that runs grouped_taps through nchw_as_nhwc: past it the
// transposes leave the caches and cost more than the kernel saves. AVX-512: 16 (512 channels at
// 14x14 ran slower than the pixel-lane kernels), 64 for packed groups (group_pack: 8x8 maps 1.6-2.0x
// faster than on the pixel-lane kernels, 16x16 maps 0.71-1.30x). AVX2: 64, in and out (8x8 maps ran
// faster through the transposes, 0.44-0.72x native -> 0.59-0.99x; 16x16 and 32x32 inputs strided
// onto 8x8 and 16x16 slower), the pixel-lane kernels being half as wide there.
int64_t nchw_taps_positions(Isa isa, const Conv2dParams& p) {
  return isa == Isa::avx2 || group_pack(p, isa) > 1 ? 64 : 16;
}

// Groups whose output channels fill whole vectors (grouped_taps_shape: 16k on AVX-512, 8k on AVX2),
// float32, NHWC (small NCHW maps through nchw_as_nhwc): whole vectors of a group's channels per
// output pixel, where the pixel-lane kernels compute a padded grid (under half of it outputs on 4x4
// maps) and the per-group GEMMs need an im2col.
bool use_grouped_taps(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  const int64_t most = nchw_taps_positions(isa, p);
  return is_float(dtype) && !use_depthwise(p) && grouped_taps_shape(p, isa) &&
         (p.channels_last || (p.P * p.Q <= most && (isa != Isa::avx2 || p.H * p.W <= most)));
}

// The grouped grad input as grouped_taps' forward of grad_output, input channels per group as
// grouped_taps_shape takes output channels: stride 1 with padding within the dilated kernel's
// reach; also strided (dilation 1), one forward per phase of the grad input, where col2im ran
// 0.43-0.57x native (AVX2: ResNeXt's 256 in 32 groups, stride 2 from 16x16; AVX-512: 512 in 32
// groups from 8x8, NHWC, 0.46-0.52x, by phases 0.67-0.73x).
bool use_grouped_taps_dgrad(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  const bool stride1 = p.stride_h == 1 && p.stride_w == 1;
  const bool fits = stride1 ? p.pad_h <= (p.R - 1) * p.dil_h && p.pad_w <= (p.S - 1) * p.dil_w
                            : uses_avx2(isa) && grouped_taps_dgrad_phases_fit(p);
  Conv2dParams q = grad_input_as_forward(p);
  q.stride_h = q.stride_w = 1;  // the shape rule reads the channels per group (and the map, on AVX-512)
  // NCHW through the transposes: AVX2 counts the grad input's positions too; on AVX-512 (register
  // transposes into kept buffers) the output's, so strided layers go too (512 in 32 groups from 8x8:
  // 2.5 -> 1.0 ms against col2im; 256 in 32 from 16x16, packed: 2.4 -> 1.7).
  const int64_t positions = isa == Isa::avx2 ? p.H * p.W : p.P * p.Q;
  return fits && (p.channels_last || positions <= nchw_taps_positions(isa, p)) && use_grouped_taps(as_nhwc(q), isa, dtype);
}

// NCHW convs onto few positions run as NHWC over the whole batch (runner.cpp transposes): one
// image's GEMM is only P x Q columns wide, where the NHWC GEMM has N x P x Q rows; the transposes
// move (C + K) values per input and output position against C x K x R x S / groups multiply-adds.
// Pointwise or strided dense convs and groups the grouped kernels do not take, onto fewer than 16
// positions (the last stages of ImageNet models at small inputs; at 16, the per-image GEMMs
// measured faster but for the widest pointwise layers); windowed dense convs as below.
bool use_nchw_as_nhwc(const Conv2dParams& p, Conv2dPass pass) {
  const bool pointwise = p.R == 1 && p.S == 1, strided = p.stride_h > 1 || p.stride_w > 1;
  const bool dense = p.groups == 1 && (pointwise || strided);
  const bool wide_groups = p.groups > 1 && !use_depthwise(p) && !use_grouped(p);
  // At exactly 16 positions, pointwise convs with at least 512 channels on both sides too: there the
  // NHWC GEMM's 32-wide tiles gain more than the transposes cost (fewer channels on one side lost).
  // The grad input from 128 channels on both sides: per image, W^T is a K-strided A packed again
  // for every image (1024 -> 256 at 4x4: 0.62x native per image, 0.83x as NHWC; 512 -> 128 0.72x
  // -> 1.05x); forwards stayed faster per image (1.14-1.26x against 0.78-0.99x).
  const int64_t wide = pass == Conv2dPass::dgrad ? 128 : 512;
  const bool wide_pointwise = dense && pointwise && std::min(p.C, p.K) >= wide && p.P * p.Q == 16;
  // Windowed convs onto fewer than 64 positions (where nchw_via_nhwc stops), e.g. AlexNet's 5x5 at
  // 7x7: one image's GEMM is under 64 columns wide, and its im2col copies R x S values per position
  // (forward 1.3-3.6x). The backward passes only with at least 256 values per window: below that
  // they gained nothing, and a 3-channel stride-2 first layer lost (0.60x).
  const bool windowed = p.groups == 1 && !pointwise && p.P * p.Q < 64 &&
                        (pass == Conv2dPass::fprop || p.C * p.R * p.S >= 256);
  return !p.channels_last && (((dense || wide_groups) && (p.P * p.Q < 16 || wide_pointwise)) || windowed);
}

}  // namespace

Conv2dParams grad_input_as_forward(const Conv2dParams& p) {
  Conv2dParams q = p;
  q.C = p.K, q.H = p.P, q.W = p.Q;
  q.K = p.C, q.P = p.H, q.Q = p.W;
  q.pad_h = (p.R - 1) * p.dil_h - p.pad_h, q.pad_w = (p.S - 1) * p.dil_w - p.pad_w;
  return q;
}

bool reads_input_directly(const Conv2dParams& p) {
  return pitch_ok(p.H * p.W) && p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
         p.pad_w == 0 && p.P == p.H && p.Q == p.W;
}

// In place from 32 values per kernel row (whole pixels per group): shorter rows make GEMMs with a
// K too short to pay for a pass each; those take the row-interleaved buffer instead.
bool nhwc_reads_rows_in_place(const Conv2dParams& p) {
  return p.channels_last && p.dil_w == 1 && (p.groups == 1 || p.S == 1) && p.S * p.C_per_group() >= 32;
}

// Products of one image's windows with the input (not its padding), one per output and tap inside.
static int64_t inside_tap_products(const Conv2dParams& p) {
  int64_t rows = 0, cols = 0, lo = 0, hi = 0;
  for (int64_t r = 0; r < p.R; ++r) valid_range(r * p.dil_h - p.pad_h, p.stride_h, p.H, p.P, lo, hi), rows += hi - lo;
  for (int64_t s = 0; s < p.S; ++s) valid_range(s * p.dil_w - p.pad_w, p.stride_w, p.W, p.Q, lo, hi), cols += hi - lo;
  return rows * cols;
}

// Small NHWC maps where padding is a quarter or more of the windows' products: per-tap GEMMs skip
// it (nhwc_taps; the grad input pairs the same pixels and positions). A 3x3 stride-1 conv keeps
// Winograd (4 products per output on whole 2x2 tiles) unless the taps need 10% fewer: 3x3 maps (49
// against 64 products), 1x1 maps. At least 16 channels on each side: the tap GEMMs reduce over one
// side's channels alone. NCHW convs of those shapes run it through nchw_as_nhwc (small maps: the
// transposes move little).
static bool use_nhwc_taps(const Conv2dParams& p, Isa isa, at::ScalarType dtype, Conv2dPass pass) {
  if (!p.channels_last || p.groups != 1 || p.R * p.S == 1 || std::min(p.C, p.K) < 16 || isa == Isa::amx ||
      config::cpu_conv_algo() == config::CpuConvAlgo::winograd)
    return false;
  const int64_t inside = inside_tap_products(p);
  if (4 * inside > 3 * p.P * p.Q * p.R * p.S) return false;
  const bool grad = pass == Conv2dPass::dgrad;
  if (!use_winograd(p, isa, dtype, grad ? p.K : p.C, grad ? p.C : p.K)) return true;
  const int64_t tiles = grad ? ceil_div(p.H, 2) * ceil_div(p.W, 2) : ceil_div(p.P, 2) * ceil_div(p.Q, 2);
  return 10 * inside < 9 * 16 * tiles;
}

int64_t images_per_gemm(int64_t N, int64_t PQ) { return std::min(N, std::max<int64_t>(1, 256 / PQ)); }

bool gemm_should_split(int64_t outer_items) { return outer_items < at::get_num_threads(); }

// Its tiles read the input in place of the float32 copy, the im2col-like packing of the GEMM's A
// (R x S values per input value) and the rounding pass. Forced Winograd keeps Winograd.
bool use_amx_direct(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  return dtype == at::kBFloat16 && isa == Isa::amx && amx_direct_shape(p) &&
         config::cpu_conv_algo() != config::CpuConvAlgo::winograd;
}

// Each phase's forward reads grad_output in place of the float32 copies and the GEMM's columns.
bool use_amx_dgrad_phases(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  return dtype == at::kBFloat16 && isa == Isa::amx && amx_dgrad_phases_shape(p) &&
         config::cpu_conv_algo() != config::CpuConvAlgo::winograd;
}

// Its tiles read channel-major copies of the input and grad_output pairs in place of float32 copies
// and the GEMM's im2col columns (R x S values per input value).
bool use_amx_wgrad(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  return dtype == at::kBFloat16 && isa == Isa::amx && amx_wgrad_shape(p) &&
         config::cpu_conv_algo() != config::CpuConvAlgo::winograd;
}

FpropPlan plan_fprop(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  if (use_depthwise(p)) return {FpropStrategy::depthwise};
  if (use_grouped_taps(p, isa, dtype))
    return {p.channels_last ? FpropStrategy::grouped_taps : FpropStrategy::nchw_as_nhwc};
  if (use_grouped(p)) return {FpropStrategy::grouped};
  if (use_nhwc_taps(as_nhwc(p), isa, dtype, Conv2dPass::fprop))
    return {p.channels_last ? FpropStrategy::nhwc_taps : FpropStrategy::nchw_as_nhwc};
  if (use_winograd(p, isa, dtype, p.C, p.K)) return {FpropStrategy::winograd};
  if (use_rows_avx512(p, isa, dtype)) return {FpropStrategy::rows_avx512};
  if (use_nchw_as_nhwc(p, Conv2dPass::fprop)) return {FpropStrategy::nchw_as_nhwc};
  if (use_nchw_via_nhwc(p, dtype)) return {FpropStrategy::nchw_via_nhwc};
  const bool direct = reads_input_directly(p);
  // NCHW joins no images: side by side, small maps ran slower than one GEMM per image.
  if (!p.channels_last) return {direct ? FpropStrategy::nchw_direct : FpropStrategy::nchw_im2col};
  if (nhwc_reads_rows_in_place(p)) return {FpropStrategy::nhwc_rows};
  if (p.dil_w == 1) return {FpropStrategy::nhwc_interleaved};  // R copies of the input, where im2col makes R*S
  return {direct ? FpropStrategy::nhwc_direct : FpropStrategy::nhwc_im2col};
}

DgradPlan plan_dgrad(const Conv2dParams& p, Isa isa, at::ScalarType dtype) {
  const int64_t PQ = p.P * p.Q;
  if (use_depthwise(p)) return {DgradStrategy::depthwise, 1};
  if (use_grouped_taps_dgrad(p, isa, dtype))
    return {p.channels_last ? DgradStrategy::grouped_taps : DgradStrategy::nchw_as_nhwc, 1};
  if (use_grouped(p) && grouped_dgrad_fits(p)) return {DgradStrategy::grouped, 1};
  if (use_nhwc_taps(as_nhwc(p), isa, dtype, Conv2dPass::dgrad))
    return {p.channels_last ? DgradStrategy::nhwc_taps : DgradStrategy::nchw_as_nhwc, 1};
  if (use_winograd(p, isa, dtype, p.K, p.C)) return {DgradStrategy::winograd, 1};
  const bool dense_stride1 = p.R * p.S > 1 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 &&
                             p.groups == 1 && p.pad_h < p.R && p.pad_w < p.S;
  // Stride 1 on AMX (bfloat16): grad input is a forward conv, whose GEMMs read grad_output in place
  // where col2im writes and re-reads R*S columns per pixel, traffic the tile products cannot hide.
  // The same for float32 NHWC on AVX-512 with 16 or more input channels (the forward's GEMM columns)
  // on maps of 16 or more pixels: 1.04-1.5x over col2im (AlexNet's 5x5 at 7x7 1.04-1.13x); 3
  // channels ran 0.45x and a 3x3 map 0.93x.
  if (dense_stride1 && (isa == Isa::amx || (is_float(dtype) && is_avx512(isa) && p.channels_last && p.C >= 16 &&
                                             p.H * p.W >= 16)))
    return {DgradStrategy::as_forward, 1};
  if (use_nchw_as_nhwc(p, Conv2dPass::dgrad)) return {DgradStrategy::nchw_as_nhwc, 1};
  // NHWC strided: each phase is a stride-1 correlation written in place, where col2im writes R*S
  // values per position and adds them back.
  // Few input channels (first layers) take col2im: a phase GEMM's columns are the C input channels,
  // a fraction of one 16-wide sliver (3 channels: 0.88x native against col2im's 1.74-2.18x).
  if (p.channels_last && (p.stride_h > 1 || p.stride_w > 1) && p.dil_h == 1 && p.dil_w == 1 && p.groups == 1 &&
      p.C >= 16)
    return {DgradStrategy::nhwc_phases, images_per_gemm(p.N, PQ)};
  // Joined images: NCHW only for the smallest maps with real windows (a gain for 3x3 at 4x4, a loss
  // at 8x8 and for 1x1).
  if (!p.channels_last)
    return {DgradStrategy::nchw_col2im, PQ < 64 && p.R * p.S > 1 ? images_per_gemm(p.N, PQ) : 1};
  return {DgradStrategy::nhwc_col2im, images_per_gemm(p.N, PQ)};
}

WgradPlan plan_wgrad(const Conv2dParams& p, Isa isa, at::ScalarType dtype, int64_t threads) {
  WgradPlan plan{};
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q;
  const int64_t CRS = Cg * p.R * p.S, elem = int64_t(c10::elementSize(dtype));
  plan.rows = p.channels_last ? WgradPlan::Rows::rsc : WgradPlan::Rows::crs;
  // Depthwise: the batch in 8 fixed chunks (fewer images: one each), even work for 2, 4 or 8
  // threads; a chunk's partial is only R*S values per channel, so more chunks cost little.
  if (use_depthwise(p))
    return plan.strategy = WgradStrategy::depthwise, plan.images_per_gemm = 1,
           plan.chunks = std::clamp<int64_t>(p.N, 1, 8), plan;
  if (use_grouped_taps(p, isa, dtype) && grouped_taps_wgrad_fits(p, isa))
    return plan.strategy = p.channels_last ? WgradStrategy::grouped_taps : WgradStrategy::nchw_as_nhwc, plan;
  // AVX2 NHWC groups of 4 -> 4 channels (ResNeXt 32x4d) pair two groups in its 8 lanes: 128 in 32
  // groups at 16x16, 0.58x native on the pixel-lane kernels.
  if (p.channels_last && isa == Isa::avx2 && is_float(dtype) && p.groups > 1 && p.C_per_group() == 4 &&
      p.K_per_group() == 4)
    return plan.strategy = WgradStrategy::grouped_taps, plan;
  if (use_winograd(p, isa, dtype, p.C, p.K)) return plan.strategy = WgradStrategy::winograd, plan;
  if (use_nchw_as_nhwc(p, Conv2dPass::wgrad)) return plan.strategy = WgradStrategy::nchw_as_nhwc, plan;
  if (use_rows_avx512(p, isa, dtype)) return plan.strategy = WgradStrategy::rows_avx512, plan;
  // Images per GEMM, their positions concatenated along the GEMM's K: small maps sum ~512 positions
  // per pass over the partial instead of one image's few. Fewer when the GEMM's A block (CRS x
  // positions) would pass 512 KiB, half a core's L2 on the machines measured.
  int64_t per = std::max<int64_t>(1, 512 / PQ);
  while (per > 1 && CRS * per * PQ * elem > (int64_t(512) << 10)) per /= 2;
  plan.images_per_gemm = per;
  // A fixed split of the batch into 8, 4, 2 or 1 chunks (even work for 2, 4 or 8 threads), fewer
  // when the partials would be large or a chunk would sum fewer than 256 positions: each partial is
  // written, then read by the final sum, which for small maps moved more bytes than the products.
  int64_t chunks = 8;
  while (chunks > 1 && (chunks > p.N || chunks * G * CRS * Kg > (int64_t(1) << 23) || p.N / chunks * PQ < 256))
    chunks /= 2;
  plan.chunks = chunks;
  if (use_grouped(p)) return plan.strategy = WgradStrategy::grouped, plan;
  if (is_float(dtype)) {
    GemmArgs<float> probe;  // the GEMM the chunks run, as far as the small-output rule looks at it
    probe.M = CRS, probe.N = Kg, probe.K = std::min(per, ceil_div(p.N, chunks)) * PQ;
    probe.a = GemmA<float>::strided(nullptr, 1, 1);
    probe.parallel = chunks < threads;
    plan.small_output = gemm_small_output(isa, probe);
  }
  // NHWC grad_output rows are K apart: copied to a better pitch when K is a bad one for the packed
  // GEMM (the small-output GEMM reads them row by row, in place).
  plan.copy_grad_output = p.channels_last && !pitch_ok(p.K) && !plan.small_output;
  // NCHW images are not adjacent along K, so joined images go through im2col (a copy for 1x1).
  if (reads_input_directly(p) && (p.channels_last || per == 1)) return plan.strategy = WgradStrategy::direct, plan;
  // NHWC 1x1 unpadded but strided (shortcuts): each position's channels are one run of the input.
  if (p.channels_last && p.R == 1 && p.S == 1 && p.pad_h == 0 && p.pad_w == 0)
    return plan.strategy = WgradStrategy::pixel_cols, plan;
  const bool undilated = p.dil_h == 1 && p.dil_w == 1;
  // NHWC where the small-output GEMM runs (few channels: first layers): A's columns point at each
  // window's kernel rows, runs of S*C values, in a zero-padded copy (no interleaved buffer).
  if (p.channels_last && plan.small_output && G == 1 && undilated && p.R > 1)
    return plan.strategy = WgradStrategy::window_runs, plan.rows = WgradPlan::Rows::rsc, plan;
  // The row-interleaved buffer (R copies of the input, not R*S): NHWC with few channels, and NCHW
  // where the small-output GEMM runs, which reads A by columns (only for a first layer's few rows:
  // for a 64 x 128 shortcut the buffer was slower).
  if (nhwc_reads_rows_in_place(p) == false && p.channels_last && p.dil_w == 1)
    return plan.strategy = WgradStrategy::interleaved, plan.rows = WgradPlan::Rows::src, plan;
  if (!p.channels_last && plan.small_output && CRS <= 32 && Kg <= 64 && p.dil_w == 1)
    return plan.strategy = WgradStrategy::interleaved, plan.rows = WgradPlan::Rows::src, plan;
  // Whole pixels per kernel row, for the blocked GEMM: A's columns are the windows' runs of S*C
  // values in a zero-padded NHWC copy (transposed from NCHW), packed 8 rows per vector copy, where
  // im2col would write R*S values per position.
  if (!plan.small_output && G == 1 && undilated && p.R * p.S > 1 && p.S * p.C >= 32)
    return plan.strategy = WgradStrategy::window_runs, plan.rows = WgradPlan::Rows::rsc, plan;
  return plan.strategy = WgradStrategy::im2col, plan;
}

namespace {
// The names of plan.h's enums, in their order (what _cpu_conv2d_plan reports).
constexpr const char* kFpropNames[] = {"winograd",    "rows_avx512",      "nchw_via_nhwc",
                                       "nchw_im2col", "nchw_direct",      "nhwc_rows",
                                       "nhwc_interleaved", "nhwc_im2col", "nhwc_direct", "depthwise",
                                       "grouped",     "nchw_as_nhwc", "amx_direct", "grouped_taps",
                                       "pointwise_16bit", "nhwc_taps"};
constexpr const char* kDgradNames[] = {"winograd",  "nhwc_phases", "nchw_col2im", "nhwc_col2im",
                                       "depthwise", "grouped",     "nchw_as_nhwc", "as_forward",
                                       "grouped_taps", "amx_phases", "pointwise_16bit",
                                       "nhwc_taps"};
constexpr const char* kWgradNames[] = {"winograd",    "rows_avx512", "direct",    "pixel_cols",
                                       "window_runs", "interleaved", "im2col",    "depthwise",
                                       "grouped",     "nchw_as_nhwc", "grouped_taps",
                                       "amx_direct"};
static_assert(std::size(kFpropNames) == size_t(FpropStrategy::nhwc_taps) + 1 &&
                  std::size(kDgradNames) == size_t(DgradStrategy::nhwc_taps) + 1 &&
                  std::size(kWgradNames) == size_t(WgradStrategy::amx_direct) + 1,
              "a name for every strategy");
}  // namespace

const char* name(FpropStrategy s) { return kFpropNames[int(s)]; }
const char* name(DgradStrategy s) { return kDgradNames[int(s)]; }
const char* name(WgradStrategy s) { return kWgradNames[int(s)]; }

bool takes_blocks16(FpropStrategy s) {
  return s == FpropStrategy::nchw_via_nhwc || s == FpropStrategy::nchw_im2col || s == FpropStrategy::nchw_direct ||
         s == FpropStrategy::nhwc_rows || s == FpropStrategy::nhwc_interleaved || s == FpropStrategy::nhwc_im2col ||
         s == FpropStrategy::nhwc_direct || s == FpropStrategy::nhwc_taps;
}
bool takes_blocks16(DgradStrategy s) {
  return s == DgradStrategy::nhwc_phases || s == DgradStrategy::nchw_col2im || s == DgradStrategy::nhwc_col2im;
}
bool takes_blocks16(WgradStrategy s) {
  return s == WgradStrategy::direct || s == WgradStrategy::pixel_cols || s == WgradStrategy::window_runs ||
         s == WgradStrategy::interleaved || s == WgradStrategy::im2col;
}

std::vector<std::string> all_conv2d_strategies() {
  std::vector<std::string> out;
  for (const char* n : kFpropNames) out.push_back(std::string("fprop:") + n);
  for (const char* n : kDgradNames) out.push_back(std::string("dgrad:") + n);
  for (const char* n : kWgradNames) out.push_back(std::string("wgrad:") + n);
  return out;
}

}  // namespace cuconv::cpu
