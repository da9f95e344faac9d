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
  using RowCtx = RowWithOriginIf<CL, typename Base::RowCtx, T>;
  // channels_last: the address of grad_output at (n, oh0, ow0, group's channel 0).
  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t m) const {
    const Conv2dIndexParams& p = this->p;
    return with_origin<CL, T>(Base::a_row(g, m),
                              [&](const auto& row) { return this->gy + row.gy_base + (row.oh0 * p.Q + row.ow0) * p.K; });
  }
  // The tap walk (implicit_gemm_tensorcore.cuh, has_tap_walk), channels_last: the position (k, t_r,
  // t_s) of reduction index kk, its tap's grad_output offset from the row's first tap's, and the
  // weight's offset from the column's first tap's.
  struct APos {
    int64_t offset = 0, w_offset = 0;
    int32_t dh = 0, dw = 0, k = 0, ts = 0;
  };
  // The offset steps of a_pos_next: per slice (weight), where the output channel passes the group's
  // last (the tap moves on along t_s) and where t_s passes the phase row's last (on along t_r); set
  // by walk_steps on the host.
  int64_t w_step = 0, step_s = 0, w_step_s = 0, step_r = 0, w_step_r = 0;
  void walk_steps() {
    const Conv2dIndexParams& p = this->p;
    const Conv2dDgradPhase& ph = this->ph;
    w_step = kTcBK * ph.w_k;
    step_s = -(p.Kg + ph.w.out_step * p.K);
    w_step_s = ph.w_ts - p.Kg * ph.w_k;
    step_r = (ph.w.taps * ph.w.out_step - ph.h.out_step * p.Q) * p.K;
    w_step_r = ph.w_tr - ph.w.taps * ph.w_ts;
  }
  CUCONV_DEVICE APos a_pos(int64_t kk) const {
    static_assert(CL, "16-byte runs of grad_output along the reduction exist in channels_last only");
    const Conv2dIndexParams& p = this->p;
    int64_t k, tr, ts;
    this->decode(kk, k, tr, ts);
    APos pos;
    pos.dh = int32_t(tr * this->ph.h.out_step);
    pos.dw = int32_t(ts * this->ph.w.out_step);
    pos.offset = k - (int64_t(pos.dh) * p.Q + pos.dw) * p.K;
    pos.w_offset = k * this->ph.w_k + tr * this->ph.w_tr + ts * this->ph.w_ts;
    pos.k = int32_t(k);
    pos.ts = int32_t(ts);
    return pos;
  }
  // a_pos(kk + kTcBK) from a_pos(kk) by adds (more than one tap on where a slice spans several).
  CUCONV_DEVICE void a_pos_next(APos& pos) const {
    const Conv2dIndexParams& p = this->p;
    pos.k += kTcBK;
    pos.offset += kTcBK;
    pos.w_offset += w_step;
    while (pos.k >= int32_t(p.Kg)) {
      pos.k -= int32_t(p.Kg);
      pos.offset += step_s;
      pos.w_offset += w_step_s;
      pos.dw += int32_t(this->ph.w.out_step);
      if (++pos.ts == int32_t(this->ph.w.taps)) {
        pos.ts = 0;
        pos.offset += step_r;
        pos.w_offset += w_step_r;
        pos.dw = 0;
        pos.dh += int32_t(this->ph.h.out_step);
      }
    }
  }
  CUCONV_DEVICE bool a_at(const RowCtx& row, const APos& pos, const T*& src) const {
    // 32-bit output positions (below 2^31: Conv2dIndexParams); a negative one wraps to a large
    // unsigned value, so one compare per bound
    const uint32_t oh = uint32_t(int32_t(row.oh0) - pos.dh), ow = uint32_t(int32_t(row.ow0) - pos.dw);
    src = row.origin + pos.offset;
    return oh < uint32_t(this->p.P) && ow < uint32_t(this->p.Q);
  }
  // The epilogue by rows (has_row_store): phase row m's grad_input offset at channel 0 of group g;
  // column c of the group is c apart in channels_last, c planes apart in NCHW.
  CUCONV_DEVICE int64_t out_row(int64_t g, int64_t, int64_t m) const { return this->input_offset(m, g * this->p.Cg); }
  CUCONV_DEVICE void store_at(int64_t row, int64_t, int64_t c, float v) const {
    this->gx[row + (CL ? c : c * this->p.H * this->p.W)] = from_acc<T>(typename Base::Acc(v));
  }
  CUCONV_DEVICE const T* b_base(const ColCtx& col) const { return this->w + col.w_base; }
  CUCONV_DEVICE int64_t b_offset(const APos& pos) const { return pos.w_offset; }
  CUCONV_DEVICE int64_t b_col_stride() const { return this->ph.w_c; }
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
// Whether both operands go by 16-byte copies (given 16-byte aligned tensors): channels_last with
// whole 16-byte runs of each group's output channels.
inline bool conv2d_dgrad_tensorcore_async16(const Conv2dParams& p, int elem_bytes) {
  return p.channels_last && (p.K / p.groups) % (16 / elem_bytes) == 0;
}
inline TcPlan conv2d_dgrad_tensorcore_plan(const Conv2dParams& p, int elem_bytes, const DeviceProps& d, int forced = -1) {
  return tc_plan(p.N * p.H * p.W, p.C / p.groups, conv2d_dgrad_max_reduction(p), p.groups, elem_bytes,
                 conv2d_dgrad_tensorcore_async16(p, elem_bytes), d, forced);
}

template <typename T>
void conv2d_dgrad_tensorcore(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t stream, int config = -1) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t>,
                "tensor cores take float (TF32), half or bfloat16");
  const TcPlan plan = conv2d_dgrad_tensorcore_plan(p, int(sizeof(T)), device_props(stream), config);
  const Conv2dIndexParams ip(p);
  auto run = [&](auto cl_tag, const Conv2dDgradPhase& phase) {
    constexpr bool CL = decltype(cl_tag)::value;
    using Problem = Conv2dDgradTcProblem<T, CL>;
    Problem prob{{gy, w, gx, ip, phase, phase.rows(p), p.C / p.groups, phase.reduction(p), 0, 0}};
    prob.k_chunk = ceil_div<int64_t>(prob.Kdim, kTcBK) * kTcBK;
    if constexpr (CL) prob.walk_steps();
    constexpr TcLoad kAScalar = tc_scalar_load<T>(!CL), kBScalar = tc_scalar_load<T>(false);
    if constexpr (CL) {  // only channels_last has contiguous 16-byte runs of grad_output along k
      if (conv2d_dgrad_tensorcore_async16(p, int(sizeof(T))) && tc_aligned16(gy) && tc_aligned16(w)) {
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
