#pragma once
// conv2d grad input on tensor cores: the gather GEMM of conv2d_dgrad_implicit_gemm.cuh (every
// grad_input element written once, no atomics) through the tensor-core main loop. channels_last
// grad_output whose channels per group are a multiple of 16 bytes' worth is loaded by 16-byte
// cp.async (a tap's output channels are contiguous); the rest element-wise.
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
    int64_t k, r, s, oh, ow;
    this->decode(kk, k, r, s);
    if (!this->source(row, r, s, oh, ow)) return nullptr;
    return this->gy + (CL ? row.gy_base + (oh * p.Q + ow) * p.K + k : row.gy_base + (k * p.P + oh) * p.Q + ow);
  }
  CUCONV_DEVICE const T* b_src(const ColCtx& col, int64_t kk) const {
    const Conv2dIndexParams& p = this->p;
    int64_t k, r, s;
    this->decode(kk, k, r, s);
    return this->w + (((col.g * p.Kg + k) * p.Cg + col.c) * p.R + r) * p.S + s;
  }
};

// M = N*H*W, Ncols = C/groups, Kdim = K/groups*R*S.
inline TcPlan conv2d_dgrad_tensorcore_plan(const Conv2dParams& p, int elem_bytes, const DeviceProps& d, int forced = -1) {
  return tc_plan(p.N * p.H * p.W, p.C / p.groups, (p.K / p.groups) * p.R * p.S, p.groups, elem_bytes, d, forced);
}

template <typename T>
void conv2d_dgrad_tensorcore(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t stream, int config = -1) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t>,
                "tensor cores take float (TF32), half or bfloat16");
  constexpr int64_t V = 16 / sizeof(T);
  const TcPlan plan = conv2d_dgrad_tensorcore_plan(p, int(sizeof(T)), device_props(stream), config);
  const int64_t Kg = p.K / p.groups, Kdim = Kg * p.R * p.S;
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    using Problem = Conv2dDgradTcProblem<T, CL>;
    Problem prob{{gy, w, gx, p, p.N * p.H * p.W, p.C / p.groups, Kdim, 0, 0}};
    prob.k_chunk = ceil_div<int64_t>(Kdim, kTcBK) * kTcBK;
    constexpr TcLoad kAScalar = tc_scalar_load<T>(!CL), kBScalar = tc_scalar_load<T>(false);
    if constexpr (CL) {  // only channels_last has contiguous 16-byte runs of grad_output along k
      if (Kg % V == 0 && tc_aligned16(gy)) {
        launch_implicit_gemm_tensorcore<TcLoad::cp16, kBScalar>(prob, gy, w, p.groups, 1, plan, stream);
        return;
      }
    }
    launch_implicit_gemm_tensorcore<kAScalar, kBScalar>(prob, gy, w, p.groups, 1, plan, stream);
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace cuconv::kern
