#pragma once
// conv2d grad input as an implicit GEMM per group: grad_input[(n,h,w), c] = sum over (k,r,s) of
// grad_output[n, k, oh, ow] * weight[k, c, r, s], where (oh, ow) is the output position whose window
// puts tap (r, s) on (h, w): oh = (h + pad - r*dil) / stride when that divides exactly and is in range.
// A gather: every grad_input element is written once by one thread (no atomics).
#include "conv2d_index.cuh"
#include "implicit_gemm_mainloop.cuh"

namespace cuconv::kern {

template <typename T, bool CL>
struct Conv2dDgradProblem {
  using Acc = acc_t<T>;
  const T* gy;
  const T* w;
  T* gx;
  Conv2dIndexParams p;
  int64_t M, Ncols, Kdim, k_chunk, group_base;

  struct RowCtx {
    int64_t gy_base = 0, hp = 0, wp = 0;  // grad_output offset of (n, first channel of group); h+pad, w+pad
  };
  struct ColCtx {
    int64_t c = 0;  // input channel within the group
    int64_t g = 0;
  };

  // kk runs over (k, r, s) for NCHW and (r, s, k) for channels_last (k contiguous in grad_output).
  CUCONV_DEVICE void decode(int64_t kk, int64_t& k, int64_t& r, int64_t& s) const {
    int64_t rs;
    if (CL) p.div_kg.divmod(kk, rs, k);
    else p.div_rs.divmod(kk, k, rs);
    p.div_s.divmod(rs, r, s);
  }
  // The output position (oh, ow) whose window puts tap (r, s) on the row's pixel; false if none.
  CUCONV_DEVICE bool source(const RowCtx& row, int64_t r, int64_t s, int64_t& oh, int64_t& ow) const {
    const int64_t th = row.hp - r * p.dil_h, tw = row.wp - s * p.dil_w;
    if (th < 0 || tw < 0) return false;
    int64_t rh, rw;
    p.div_stride_h.divmod(th, oh, rh);
    p.div_stride_w.divmod(tw, ow, rw);
    return rh == 0 && rw == 0 && oh < p.P && ow < p.Q;
  }
  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t m) const {
    int64_t n, hw, h, w;
    p.div_hw.divmod(m, n, hw);
    p.div_w.divmod(hw, h, w);
    RowCtx row;
    row.hp = h + p.pad_h;
    row.wp = w + p.pad_w;
    row.gy_base = CL ? n * p.P * p.Q * p.K + g * p.Kg : (n * p.K + g * p.Kg) * p.P * p.Q;
    return row;
  }
  CUCONV_DEVICE Acc a_load(const RowCtx& row, int64_t kk) const {
    int64_t k, r, s, oh, ow;
    decode(kk, k, r, s);
    if (!source(row, r, s, oh, ow)) return Acc(0);
    return to_acc(gy[CL ? row.gy_base + (oh * p.Q + ow) * p.K + k : row.gy_base + (k * p.P + oh) * p.Q + ow]);
  }
  CUCONV_DEVICE ColCtx b_col(int64_t g, int64_t c) const {
    ColCtx col;
    col.c = c;
    col.g = g;
    return col;
  }
  CUCONV_DEVICE Acc b_load(const ColCtx& col, int64_t kk) const {
    int64_t k, r, s;
    decode(kk, k, r, s);
    return to_acc(w[(((col.g * p.Kg + k) * p.Cg + col.c) * p.R + r) * p.S + s]);
  }
  CUCONV_DEVICE void store(int64_t g, int64_t, int64_t m, int64_t c, Acc v) const {
    const int64_t cabs = g * p.Cg + c;
    int64_t n, hw;
    p.div_hw.divmod(m, n, hw);
    gx[CL ? (n * p.H * p.W + hw) * p.C + cabs : (n * p.C + cabs) * p.H * p.W + hw] = from_acc<T>(v);
  }
};

template <typename T>
void conv2d_dgrad_implicit_gemm(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t stream) {
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    Conv2dDgradProblem<T, CL> prob{gy, w, gx, p, p.N * p.H * p.W, p.C / p.groups, (p.K / p.groups) * p.R * p.S, 0, 0};
    prob.k_chunk = ceil_div<int64_t>(prob.Kdim, kBK) * kBK;
    launch_implicit_gemm<!CL, false>(prob, p.groups, 1, stream);
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace cuconv::kern
