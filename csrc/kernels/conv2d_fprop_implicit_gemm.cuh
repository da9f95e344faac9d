#pragma once
// conv2d forward as an implicit GEMM per group: output[(n,oh,ow), k] = sum over (c,r,s) of
// input[n, c, oh*stride-pad+r*dil, ...] * weight[k, c, r, s], plus a fused epilogue (bias, ReLU).
// The reduction index kk runs over (c, r, s) for NCHW and over (r, s, c) for channels_last, so
// neighbouring kk are neighbouring addresses of the input in either layout.
#include "conv2d_index.cuh"
#include "implicit_gemm_mainloop.cuh"

namespace cuconv::kern {

template <typename T, bool CL>
struct Conv2dFpropProblem {
  using Acc = acc_t<T>;
  const T* x;
  const T* w;
  const T* bias;  // nullptr: no bias
  T* y;
  Conv2dIndexParams p;
  bool relu;
  int64_t M, Ncols, Kdim, k_chunk, group_base;

  struct RowCtx {
    int64_t x_base = 0, h0 = 0, w0 = 0;  // input offset of (n, first channel of the group); window origin
  };
  struct ColCtx {
    int64_t w_base = 0;  // weight offset of output channel k
  };

  CUCONV_DEVICE void decode(int64_t kk, int64_t& c, int64_t& r, int64_t& s) const {
    int64_t rs;
    if (CL) p.div_cg.divmod(kk, rs, c);
    else p.div_rs.divmod(kk, c, rs);
    p.div_s.divmod(rs, r, s);
  }
  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t m) const {
    int64_t n, pq, oh, ow;
    p.div_pq.divmod(m, n, pq);
    p.div_q.divmod(pq, oh, ow);
    RowCtx row;
    row.h0 = oh * p.stride_h - p.pad_h;
    row.w0 = ow * p.stride_w - p.pad_w;
    row.x_base = CL ? n * p.H * p.W * p.C + g * p.Cg : (n * p.C + g * p.Cg) * p.H * p.W;
    return row;
  }
  CUCONV_DEVICE Acc a_load(const RowCtx& row, int64_t kk) const {
    int64_t c, r, s;
    decode(kk, c, r, s);
    const int64_t h = row.h0 + r * p.dil_h, ww = row.w0 + s * p.dil_w;
    if (h < 0 || h >= p.H || ww < 0 || ww >= p.W) return Acc(0);  // zero padding
    return to_acc(x[CL ? row.x_base + (h * p.W + ww) * p.C + c : row.x_base + (c * p.H + h) * p.W + ww]);
  }
  CUCONV_DEVICE ColCtx b_col(int64_t g, int64_t k) const {
    ColCtx col;
    col.w_base = (g * p.Kg + k) * p.Cg * p.R * p.S;
    return col;
  }
  CUCONV_DEVICE Acc b_load(const ColCtx& col, int64_t kk) const {
    int64_t c, r, s;
    decode(kk, c, r, s);
    return to_acc(w[col.w_base + (c * p.R + r) * p.S + s]);
  }
  CUCONV_DEVICE void store(int64_t g, int64_t, int64_t m, int64_t k, Acc v) const {
    const int64_t kabs = g * p.Kg + k;
    int64_t n, pq;
    p.div_pq.divmod(m, n, pq);
    if (bias) v += to_acc(bias[kabs]);
    if (relu && v < Acc(0)) v = Acc(0);
    y[CL ? (n * p.P * p.Q + pq) * p.K + kabs : (n * p.K + kabs) * p.P * p.Q + pq] = from_acc<T>(v);
  }
};

template <typename T>
void conv2d_fprop_implicit_gemm(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                                stream_t stream) {
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    Conv2dFpropProblem<T, CL> prob{x, w, bias, y, p, relu, p.N * p.P * p.Q, p.K / p.groups,
                                   (p.C / p.groups) * p.R * p.S, 0, 0};
    prob.k_chunk = ceil_div<int64_t>(prob.Kdim, kBK) * kBK;  // no split: one block owns its outputs
    // NCHW: neighbouring output pixels are neighbouring input addresses; NHWC: neighbouring channels.
    launch_implicit_gemm<!CL, false>(prob, p.groups, 1, stream);
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace cuconv::kern
