#pragma once
// conv2d grad input as an implicit GEMM per group and phase (conv2d_dgrad_phase.cuh):
// grad_input[(n,h,w), c] = sum over the phase's taps (k,r,s) of grad_output[n, k, oh, ow] *
// weight[k, c, r, s], where (oh, ow) is the output position whose window puts tap (r, s) on (h, w).
// A gather: every grad_input element is written once by one thread (no atomics).
#include "conv2d_dgrad_phase.cuh"
#include "implicit_gemm_mainloop.cuh"

namespace cuconv::kern {

template <typename T, bool CL>
struct Conv2dDgradProblem {
  using Acc = acc_t<T>;
  const T* gy;
  const T* w;
  T* gx;
  Conv2dIndexParams p;
  Conv2dDgradPhase ph;
  int64_t M, Ncols, Kdim, k_chunk, group_base;

  struct RowCtx {
    int64_t gy_base = 0;  // grad_output offset of (n, first channel of group)
    int64_t oh0 = 0, ow0 = 0;  // the output position of the phase's first tap
  };
  struct ColCtx {
    int64_t w_base = 0;  // weight offset of (first output channel of the group, input channel, first tap)
  };

  // kk runs over (k, t_r, t_s) for NCHW and (t_r, t_s, k) for channels_last (k contiguous in
  // grad_output), t_r and t_s the phase's tap numbers.
  CUCONV_DEVICE void decode(int64_t kk, int64_t& k, int64_t& tr, int64_t& ts) const {
    int64_t rs;
    if (CL) p.div_kg.divmod(kk, rs, k);
    else ph.div_rs.divmod(kk, k, rs);
    ph.div_s.divmod(rs, tr, ts);
  }
  // The output position (oh, ow) that tap (t_r, t_s) reads for the row; false where it is outside.
  CUCONV_DEVICE bool source(const RowCtx& row, int64_t tr, int64_t ts, int64_t& oh, int64_t& ow) const {
    oh = row.oh0 - tr * ph.h.out_step;
    ow = row.ow0 - ts * ph.w.out_step;
    return oh >= 0 && ow >= 0 && oh < p.P && ow < p.Q;
  }
  CUCONV_DEVICE int64_t weight_offset(const ColCtx& col, int64_t k, int64_t tr, int64_t ts) const {
    return col.w_base + k * ph.w_k + tr * ph.w_tr + ts * ph.w_ts;
  }
  // grad_input offset of phase row m, channel cabs.
  CUCONV_DEVICE int64_t input_offset(int64_t m, int64_t cabs) const {
    int64_t n, ij, i, j;
    ph.div_hw.divmod(m, n, ij);
    ph.div_w.divmod(ij, i, j);
    const int64_t h = ph.h.first + i * p.stride_h, w = ph.w.first + j * p.stride_w;
    return CL ? ((n * p.H + h) * p.W + w) * p.C + cabs : ((n * p.C + cabs) * p.H + h) * p.W + w;
  }
  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t m) const {
    int64_t n, ij, i, j;
    ph.div_hw.divmod(m, n, ij);
    ph.div_w.divmod(ij, i, j);
    RowCtx row;
    row.oh0 = ph.h.out0 + i;
    row.ow0 = ph.w.out0 + j;
    row.gy_base = CL ? n * p.P * p.Q * p.K + g * p.Kg : (n * p.K + g * p.Kg) * p.P * p.Q;
    return row;
  }
  CUCONV_DEVICE Acc a_load(const RowCtx& row, int64_t kk) const {
    int64_t k, tr, ts, oh, ow;
    decode(kk, k, tr, ts);
    if (!source(row, tr, ts, oh, ow)) return Acc(0);
    return to_acc(gy[CL ? row.gy_base + (oh * p.Q + ow) * p.K + k : row.gy_base + (k * p.P + oh) * p.Q + ow]);
  }
  CUCONV_DEVICE ColCtx b_col(int64_t g, int64_t c) const {
    ColCtx col;
    col.w_base = g * ph.w_g + c * ph.w_c + ph.w_first;
    return col;
  }
  CUCONV_DEVICE Acc b_load(const ColCtx& col, int64_t kk) const {
    int64_t k, tr, ts;
    decode(kk, k, tr, ts);
    return to_acc(w[weight_offset(col, k, tr, ts)]);
  }
  CUCONV_DEVICE void store(int64_t g, int64_t, int64_t m, int64_t c, Acc v) const {
    gx[input_offset(m, g * p.Cg + c)] = from_acc<T>(v);
  }
};

template <typename T>
void conv2d_dgrad_implicit_gemm(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t stream) {
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    const Conv2dIndexParams ip(p);
    for_each_conv2d_dgrad_phase(p, /*weight_crsk=*/false, [&](const Conv2dDgradPhase& phase) {
      Conv2dDgradProblem<T, CL> prob{gy, w, gx, ip, phase, phase.rows(p), p.C / p.groups, phase.reduction(p), 0, 0};
      prob.k_chunk = ceil_div<int64_t>(prob.Kdim, kBK) * kBK;
      launch_implicit_gemm<!CL, false>(prob, p.groups, 1, stream);
    });
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace cuconv::kern
