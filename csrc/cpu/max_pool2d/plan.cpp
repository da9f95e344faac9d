// Every threshold of the CPU max-pool's kernel choice, each with its reason.
#include "cpu/max_pool2d/plan.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <iterator>

#include "ops/runner.h"

namespace cuconv::cpu {

bool is_2x2_stride2_inside(const MaxPool2dParams& p) {
  return p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2 && p.pad_h == 0 && p.pad_w == 0 &&
         p.dil_h == 1 && p.dil_w == 1 && 2 * p.P <= p.H && 2 * p.Q <= p.W && p.H * p.W < (int64_t(1) << 31);
}

// planes_as_pixels_avx2 fills all 8 lanes of every load whatever the row length, and beats
// planes_avx2 on every NCHW window measured, planes of 2x2 to 448x448 (docs/experiments.md); its
// per-thread stage (8 planes in float32) and list of window elements are bounded to 8 MiB each.
bool planes_as_pixels_fit(const MaxPool2dParams& p) {
  return p.H * p.W * 8 * 4 <= (int64_t(8) << 20) && p.P * p.Q * p.kernel_h * p.kernel_w * 4 <= (int64_t(8) << 20);
}

MaxPool2dPlan plan_max_pool2d(const MaxPool2dParams& p, Isa isa, at::ScalarType dtype) {
  // bfloat16 2x2 windows on AVX-512 run on the bfloat16 values (NCHW backward: rows of 8 outputs or
  // more; shorter ones scatter, as float32's, which is faster on them); every other 16-bit pool runs
  // the float32 plan, on the 16-bit values where its kernel widens them, else on float32 copies.
  // NHWC forwards with whole zmm registers of channels take the float32 kernel, widening as it loads
  // (it steps through the pixels where pixels_2x2_bf16 divides out each one's position).
  if (dtype == at::kBFloat16 && is_2x2_stride2_inside(p) && is_avx512(isa) && cpu_has_avx512bw())
    return {!p.channels_last     ? PoolFpropStrategy::planes_2x2_bf16
            : p.C % 16 == 0      ? PoolFpropStrategy::pixels_2x2_avx512
                                 : PoolFpropStrategy::pixels_2x2_bf16,
            p.channels_last || p.Q >= 8 ? PoolBpropStrategy::windows_2x2_bf16 : PoolBpropStrategy::scatter};
  if (dtype == at::kHalf || dtype == at::kBFloat16) dtype = at::kFloat;
  const bool vector_f32 = dtype == at::kFloat && uses_avx2(isa);  // double runs the portable loops
  const bool two_by_two = is_2x2_stride2_inside(p);
  MaxPool2dPlan plan{};
  // Flat positions are tracked in int32 lanes next to float: planes past 2^31 elements need int64.
  if (dtype == at::kFloat && !(p.H * p.W < (int64_t(1) << 31) && p.Q < (int64_t(1) << 31)))
    plan.forward = PoolFpropStrategy::large_planes;
  else if (!p.channels_last)
    plan.forward = !vector_f32                ? PoolFpropStrategy::planes
                   : two_by_two                 ? PoolFpropStrategy::planes_2x2_avx2
                   : planes_as_pixels_fit(p)    ? PoolFpropStrategy::planes_as_pixels_avx2
                                                : PoolFpropStrategy::planes_avx2;
  else if (!vector_f32)
    plan.forward = PoolFpropStrategy::pixels;
  else if (two_by_two && isa == Isa::avx512 && p.C % 16 == 0)  // whole zmm registers of channels
    plan.forward = PoolFpropStrategy::pixels_2x2_avx512;
  else if (two_by_two && p.C % 8 == 0)  // whole ymm registers of channels
    plan.forward = PoolFpropStrategy::pixels_2x2_avx2;
  else if (isa == Isa::avx512 && p.C >= 16)  // twice the channels per step; fewer are one masked step
    plan.forward = PoolFpropStrategy::pixels_avx512;
  else
    plan.forward = PoolFpropStrategy::pixels_avx2;
  // The windows-written-whole backward needs NCHW rows of 8 outputs or more, or NHWC C a multiple of
  // 8; shorter rows, float64 and the portable path scatter, which is as fast there (a plane that
  // small is zeroed and scattered into within L1).
  plan.backward = vector_f32 && two_by_two && (p.channels_last ? p.C % 8 == 0 : p.Q >= 8)
                      ? PoolBpropStrategy::windows_2x2_avx2
                      : PoolBpropStrategy::scatter;
  return plan;
}

namespace {
// The names of plan.h's enums, in their order (what _cpu_max_pool2d_plan reports).
constexpr const char* kForwardNames[] = {"large_planes", "planes",          "planes_avx2",       "planes_2x2_avx2",
                                         "pixels",       "pixels_avx2",     "pixels_2x2_avx2",   "pixels_2x2_avx512",
                                         "pixels_avx512", "planes_2x2_bf16", "pixels_2x2_bf16",
                                         "planes_as_pixels_avx2"};
constexpr const char* kBackwardNames[] = {"scatter", "windows_2x2_avx2", "windows_2x2_bf16"};
static_assert(std::size(kForwardNames) == size_t(PoolFpropStrategy::planes_as_pixels_avx2) + 1 &&
                  std::size(kBackwardNames) == size_t(PoolBpropStrategy::windows_2x2_bf16) + 1,
              "a name for every strategy");
}  // namespace

const char* name(PoolFpropStrategy s) { return kForwardNames[int(s)]; }
const char* name(PoolBpropStrategy s) { return kBackwardNames[int(s)]; }

std::vector<std::string> all_max_pool2d_strategies() {
  std::vector<std::string> out;
  for (const char* n : kForwardNames) out.push_back(std::string("forward:") + n);
  for (const char* n : kBackwardNames) out.push_back(std::string("backward:") + n);
  return out;
}

std::vector<std::string> max_pool2d_plan(const MaxPool2dParams& p, const at::Tensor& input) {
  const MaxPool2dPlan plan = plan_max_pool2d(p, active_isa(), input.scalar_type());
  return {name(plan.forward), name(plan.backward)};
}

}  // namespace cuconv::cpu
