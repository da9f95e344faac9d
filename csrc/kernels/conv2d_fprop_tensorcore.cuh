#pragma once
// conv2d forward on tensor cores: the implicit GEMM of conv2d_fprop_implicit_gemm.cuh (same Problem:
// gather, zero padding, groups, both layouts, bias/ReLU epilogue) through the tensor-core main loop
// (implicit_gemm_tensorcore.cuh): float16 / bfloat16 with float accumulation, float32 as TF32.
// Loads: channels_last input whose channels per group are a multiple of 16 bytes' worth goes by
// 16-byte cp.async (a filter tap's channels are contiguous); NCHW weights (contiguous along the
// whole (c, r, s) reduction) likewise when its length allows; the rest element-wise.
// channels_last takes its weight as K x R x S x C/groups (a channels_last weight as it is; the
// runner lays out any other once per call): the reduction index (r, s, c) is then the weight's own
// order, so the weight goes by 16-byte cp.async too, where K x C x R x S would have to be gathered
// element by element, R*S apart.
#include "conv2d_fprop_implicit_gemm.cuh"
#include "implicit_gemm_tensorcore.cuh"

namespace cuconv::kern {

template <typename T, bool CL>
struct Conv2dFpropTcProblem : Conv2dFpropProblem<T, CL> {
  using Base = Conv2dFpropProblem<T, CL>;
  using typename Base::Acc;
  using typename Base::ColCtx;
  using RowCtx = RowWithOriginIf<CL, typename Base::RowCtx, T>;
  // channels_last: the address of the window origin (n, h0, w0, group's channel 0).
  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t m) const {
    const Conv2dIndexParams& p = this->p;
    return with_origin<CL, T>(Base::a_row(g, m),
                              [&](const auto& row) { return this->x + row.x_base + (row.h0 * p.W + row.w0) * p.C; });
  }
  // The tap walk (implicit_gemm_tensorcore.cuh, has_tap_walk), channels_last: the position (c, r, s)
  // of reduction index kk, its tap's offset from the window origin, and kk itself (the weight's
  // offset within an output channel's K x R x S x C/groups filter).
  struct APos {
    int64_t offset = 0;
    int32_t kk = 0, dh = 0, dw = 0, c = 0, s = 0;  // kk < 2^31: one filter (Conv2dIndexParams)
  };
  // The offset steps of a_pos_next where the channel passes the group's last (the tap moves on
  // along s) and where s passes the filter row's last (on along r), set by walk_steps on the host.
  int64_t step_s = 0, step_r = 0;
  void walk_steps() {
    const Conv2dIndexParams& p = this->p;
    step_s = p.dil_w * p.C - p.Cg;
    step_r = (p.dil_h * p.W - p.S * p.dil_w) * p.C;
  }
  CUCONV_DEVICE APos a_pos(int64_t kk) const {
    static_assert(CL, "16-byte runs of the input along the reduction exist in channels_last only");
    const Conv2dIndexParams& p = this->p;
    int64_t c, r, s;
    this->decode(kk, c, r, s);
    APos pos;
    pos.dh = int32_t(r * p.dil_h);
    pos.dw = int32_t(s * p.dil_w);
    pos.offset = (pos.dh * p.W + pos.dw) * p.C + c;
    pos.kk = int32_t(kk);
    pos.c = int32_t(c);
    pos.s = int32_t(s);
    return pos;
  }
  // a_pos(pos.kk + kTcBK) by adds (more than one tap on where a slice spans several).
  CUCONV_DEVICE void a_pos_next(APos& pos) const {
    const Conv2dIndexParams& p = this->p;
    pos.kk += kTcBK;
    pos.c += kTcBK;
    pos.offset += kTcBK;
    while (pos.c >= int32_t(p.Cg)) {
      pos.c -= int32_t(p.Cg);
      pos.offset += step_s;
      pos.dw += int32_t(p.dil_w);
      if (++pos.s == int32_t(p.S)) {
        pos.s = 0;
        pos.offset += step_r;
        pos.dw = 0;
        pos.dh += int32_t(p.dil_h);
      }
    }
  }
  CUCONV_DEVICE bool a_at(const RowCtx& row, const APos& pos, const T*& src) const {
    // 32-bit rows and columns: window origins and tap offsets stay below 2^31 (Conv2dIndexParams),
    // and a negative one wraps to a large unsigned value, so one compare per bound
    const uint32_t h = uint32_t(int32_t(row.h0) + pos.dh), ww = uint32_t(int32_t(row.w0) + pos.dw);
    src = row.origin + pos.offset;
    return h < uint32_t(this->p.H) && ww < uint32_t(this->p.W);  // else zero padding
  }
  CUCONV_DEVICE const T* b_base(const ColCtx& col) const { return this->w + col.w_base; }
  CUCONV_DEVICE int64_t b_offset(const APos& pos) const { return pos.kk; }
  CUCONV_DEVICE int64_t b_col_stride() const { return this->p.Cg * this->p.R * this->p.S; }
  // channels_last: output row m (n, p, q) starts at m * K, so no division.
  CUCONV_DEVICE void store(int64_t g, int64_t split, int64_t m, int64_t k, typename Base::Acc v) const {
    static_assert(CL, "NCHW stores by rows (out_row)");
    const int64_t kabs = g * this->p.Kg + k;
    if (this->bias) v += to_acc(this->bias[kabs]);
    if (this->relu && v < typename Base::Acc(0)) v = typename Base::Acc(0);
    this->y[m * this->p.K + kabs] = from_acc<T>(v);
  }
  // NCHW: the epilogue by rows (has_row_store), image and position divided once per output row;
  // channel k of group g is k planes from the row's offset at the group's channel 0.
  CUCONV_DEVICE int64_t out_row(int64_t g, int64_t, int64_t m) const
    requires(!CL)
  {
    const Conv2dIndexParams& p = this->p;
    int64_t n, pq;
    p.div_pq.divmod(m, n, pq);
    return (n * p.K + g * p.Kg) * p.P * p.Q + pq;
  }
  CUCONV_DEVICE void store_at(int64_t row, int64_t g, int64_t k, float acc) const
    requires(!CL)
  {
    using Acc = typename Base::Acc;
    Acc v = Acc(acc);
    if (this->bias) v += to_acc(this->bias[g * this->p.Kg + k]);
    if (this->relu && v < Acc(0)) v = Acc(0);
    this->y[row + k * this->p.P * this->p.Q] = from_acc<T>(v);
  }
  CUCONV_DEVICE const T* a_src(const RowCtx& row, int64_t kk) const {
    const Conv2dIndexParams& p = this->p;
    int64_t c, r, s;
    this->decode(kk, c, r, s);
    const int64_t h = row.h0 + r * p.dil_h, ww = row.w0 + s * p.dil_w;
    if (h < 0 || h >= p.H || ww < 0 || ww >= p.W) return nullptr;  // zero padding
    return this->x + (CL ? row.x_base + (h * p.W + ww) * p.C + c : row.x_base + (c * p.H + h) * p.W + ww);
  }
  CUCONV_DEVICE const T* b_src(const ColCtx& col, int64_t kk) const {
    if constexpr (CL) {  // K x R x S x C/groups: kk is the offset within output channel k's filter
      return this->w + col.w_base + kk;
    } else {
      int64_t c, r, s;
      this->decode(kk, c, r, s);
      return this->w + col.w_base + (c * this->p.R + r) * this->p.S + s;
    }
  }
  CUCONV_DEVICE Acc b_load(const ColCtx& col, int64_t kk) const { return to_acc(*b_src(col, kk)); }
};

// Whether the tensor-core forward reads its weight as K x R x S x C/groups (channels_last input).
inline bool conv2d_fprop_tensorcore_weight_krsc(const Conv2dParams& p) { return p.channels_last; }

// Whether both forward operands go by 16-byte copies (given 16-byte aligned tensors): channels_last
// with whole 16-byte runs of each group's channels.
inline bool conv2d_fprop_tensorcore_async16(const Conv2dParams& p, int elem_bytes) {
  return p.channels_last && (p.C / p.groups) % (16 / elem_bytes) == 0;
}

// Problem dimensions of the forward GEMM (per group): M = N*P*Q, Ncols = K/groups, Kdim = C/groups*R*S.
inline TcPlan conv2d_fprop_tensorcore_plan(const Conv2dParams& p, int elem_bytes, const DeviceProps& d, int forced = -1) {
  return tc_plan(p.N * p.P * p.Q, p.K / p.groups, (p.C / p.groups) * p.R * p.S, p.groups, elem_bytes,
                 conv2d_fprop_tensorcore_async16(p, elem_bytes), d, forced);
}

// Tensor-core conv2d forward for float (as TF32), half and bfloat16; needs sm_80 or newer on the GPU.
// `config` >= 0 forces an entry of kTcConfigs (tests); otherwise tc_plan chooses.
template <typename T>
void conv2d_fprop_tensorcore(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                             stream_t stream, int config = -1) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t>,
                "tensor cores take float (TF32), half or bfloat16");
  constexpr int64_t V = 16 / sizeof(T);
  const TcPlan plan = conv2d_fprop_tensorcore_plan(p, int(sizeof(T)), device_props(stream), config);
  const int64_t Cg = p.C / p.groups, Kdim = Cg * p.R * p.S;
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    using Problem = Conv2dFpropTcProblem<T, CL>;
    Problem prob{{x, w, bias, y, p, relu, p.N * p.P * p.Q, p.K / p.groups, Kdim, 0, 0}};
    prob.k_chunk = ceil_div<int64_t>(Kdim, kTcBK) * kTcBK;  // no split: one block owns its outputs
    if constexpr (CL) prob.walk_steps();
    constexpr TcLoad kAScalar = tc_scalar_load<T>(!CL), kBScalar = tc_scalar_load<T>(false);
    if constexpr (CL) {  // A along channels: 16-byte runs stay inside one tap when Cg is a multiple of V
      if (conv2d_fprop_tensorcore_async16(p, int(sizeof(T))) && tc_aligned16(x) && tc_aligned16(w))
        launch_implicit_gemm_tensorcore<TcLoad::cp16, TcLoad::cp16>(prob, x, w, p.groups, 1, plan, stream);
      else
        launch_implicit_gemm_tensorcore<kAScalar, kBScalar>(prob, x, w, p.groups, 1, plan, stream);
    } else {  // B rows (one output channel's weights) are contiguous along the whole reduction
      if (Kdim % V == 0 && tc_aligned16(w))
        launch_implicit_gemm_tensorcore<kAScalar, TcLoad::cp16>(prob, x, w, p.groups, 1, plan, stream);
      else
        launch_implicit_gemm_tensorcore<kAScalar, kBScalar>(prob, x, w, p.groups, 1, plan, stream);
    }
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace cuconv::kern
