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
  using RowCtx = RowWithOriginIf<CL, typename Base::RowCtx>;
  // channels_last: the grad_output offset of (n, oh0, ow0, group's channel 0).
  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t m) const {
    const Conv2dIndexParams& p = this->p;
    return with_origin<CL>(Base::a_row(g, m),
                           [&](const auto& row) { return row.gy_base + (row.oh0 * p.Q + row.ow0) * p.K; });
  }
  // channels_last 16-byte runs (implicit_gemm_tensorcore.cuh, has_a_pos): a tap's grad_output
  // offset from the row's first tap, decoded once per slice.
  struct APos {
    int64_t dh = 0, dw = 0, offset = 0;
  };
  CUCONV_DEVICE APos a_pos(int64_t kk) const {
    static_assert(CL, "16-byte runs of grad_output along the reduction exist in channels_last only");
    const Conv2dIndexParams& p = this->p;
    int64_t k, tr, ts;
    this->decode(kk, k, tr, ts);
    APos pos;
    pos.dh = tr * this->ph.h.out_step;
    pos.dw = ts * this->ph.w.out_step;
    pos.offset = k - (pos.dh * p.Q + pos.dw) * p.K;
    return pos;
  }
  CUCONV_DEVICE bool a_at(const RowCtx& row, const APos& pos, const T*& src) const {
    // 32-bit output positions (below 2^31: Conv2dIndexParams); a negative one wraps to a large
    // unsigned value, so one compare per bound
    const uint32_t oh = uint32_t(int32_t(row.oh0) - int32_t(pos.dh)), ow = uint32_t(int32_t(row.ow0) - int32_t(pos.dw));
    src = this->gy + (row.origin + pos.offset);
    return oh < uint32_t(this->p.P) && ow < uint32_t(this->p.Q);
  }
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
