#pragma once
// conv2d grad input on tensor cores: the gather GEMM of conv2d_dgrad_implicit_gemm.cuh (every
// grad_input element written once, no atomics; one launch per stride phase, so no MMA multiplies a
// zero inserted by the stride) through the tensor-core main loop. channels_last
// grad_output whose channels per group are a multiple of 16 bytes' worth is loaded by 16-byte
// cp.async (a tap's output channels are contiguous), and so is the weight, which channels_last takes
// as C/groups x R x S x K/groups per group (the runner lays it out once per call); the rest element-wise.
#include "conv2d_dgrad_implicit_gemm.cuh"
#include "implicit_gemm_tensorcore.cuh"

namespace cuconv::kern {

template <typename T, bool CL>
struct Conv2dDgradTcProblem : Conv2dDgradProblem<T, CL> {
  using Base = Conv2dDgradProblem<T, CL>;
  using typename Base::ColCtx;
  using typename Base::RowCtx;
  CUCONV_DEVICE const T* a_src(const RowCtx& row, int64_t kk) const {
    const Conv2dIndexParams& p = this->p;
    int64_t k, tr, ts, oh, ow;
    this->decode(kk, k, tr, ts);
    if (!this->source(row, tr, ts, oh, ow)) return nullptr;
    return this->gy + (CL ? row.gy_base + (oh * p.Q + ow) * p.K + k : row.gy_base + (k * p.P + oh) * p.Q + ow);
  }
  CUCONV_DEVICE const T* b_src(const ColCtx& col, int64_t kk) const {
    int64_t k, tr, ts;
    this->decode(kk, k, tr, ts);
    return this->w + this->weight_offset(col, k, tr, ts);
  }
};

// Whether the tensor-core grad input reads its weight per group as C/groups x R x S x K/groups
// (channels_last), where the reduction's runs of output channels are contiguous.
inline bool conv2d_dgrad_tensorcore_weight_crsk(const Conv2dParams& p) { return p.channels_last; }

// One plan for every phase: M = N*H*W (the phases' rows together), Ncols = C/groups, Kdim = the
// largest phase's K/groups x taps.
inline TcPlan conv2d_dgrad_tensorcore_plan(const Conv2dParams& p, int elem_bytes, const DeviceProps& d, int forced = -1) {
  return tc_plan(p.N * p.H * p.W, p.C / p.groups, conv2d_dgrad_max_reduction(p), p.groups, elem_bytes, d, forced);
}

template <typename T>
void conv2d_dgrad_tensorcore(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t stream, int config = -1) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t>,
                "tensor cores take float (TF32), half or bfloat16");
  constexpr int64_t V = 16 / sizeof(T);
  const TcPlan plan = conv2d_dgrad_tensorcore_plan(p, int(sizeof(T)), device_props(stream), config);
  const int64_t Kg = p.K / p.groups;
  const Conv2dIndexParams ip(p);
  auto run = [&](auto cl_tag, const Conv2dDgradPhase& phase) {
    constexpr bool CL = decltype(cl_tag)::value;
    using Problem = Conv2dDgradTcProblem<T, CL>;
    Problem prob{{gy, w, gx, ip, phase, phase.rows(p), p.C / p.groups, phase.reduction(p), 0, 0}};
    prob.k_chunk = ceil_div<int64_t>(prob.Kdim, kTcBK) * kTcBK;
    constexpr TcLoad kAScalar = tc_scalar_load<T>(!CL), kBScalar = tc_scalar_load<T>(false);
    if constexpr (CL) {  // only channels_last has contiguous 16-byte runs of grad_output along k
      if (Kg % V == 0 && tc_aligned16(gy) && tc_aligned16(w)) {
        launch_implicit_gemm_tensorcore<TcLoad::cp16, TcLoad::cp16>(prob, gy, w, p.groups, 1, plan, stream);
        return;
      }
    }
    launch_implicit_gemm_tensorcore<kAScalar, kBScalar>(prob, gy, w, p.groups, 1, plan, stream);
  };
  for_each_conv2d_dgrad_phase(p, conv2d_dgrad_tensorcore_weight_crsk(p), [&](const Conv2dDgradPhase& phase) {
    if (p.channels_last) run(std::true_type{}, phase);
    else run(std::false_type{}, phase);
  });
}

}  // namespace cuconv::kern
