#pragma once
// max_pool2d(relu(conv2d(x, w) + bias), kernel 2, stride 2) with its indices, in one implicit GEMM.
// The GEMM rows are ordered so that the kTM = 4 rows of a thread's register tile (m0 + tx + i * 16)
// are the four members of one pooling window: row m of tile t = m / 64 is member (m % 64) / 16 of
// pooled pixel t * 16 + m % 16, and member i is conv output pixel (2 ph + i / 2, 2 pw + i % 2), the
// order in which max_pool2d scans a window. The column epilogue then adds the bias, applies the ReLU,
// rounds to T (the composition compares T values) and keeps the maximum as max_pool2d does: a NaN
// always wins (the last NaN's index is reported) and a tie keeps the first maximum. Conv outputs the
// pooling drops (an odd last row or column) are never computed. Indices are flat in the conv output
// plane: h * Q + w.
#include "../conv2d_params.h"
#include "conv2d_fprop_implicit_gemm.cuh"
#include "implicit_gemm_mainloop.cuh"

namespace cuconv::kern {

static_assert(kTM == 4, "one 2x2 pooling window per register-tile column");

template <typename T, bool CL>
struct Conv2dFpropReluPoolProblem {
  using Conv = Conv2dFpropProblem<T, CL>;
  using Acc = typename Conv::Acc;
  using RowCtx = typename Conv::RowCtx;
  using ColCtx = typename Conv::ColCtx;
  Conv conv;  // its loads and geometry; its y, relu and store are unused
  T* y;
  int64_t* indices;
  int64_t PP, QQ;  // pooled output height, width
  int64_t M, Ncols, Kdim, k_chunk, group_base;

  CUCONV_DEVICE int64_t pooled_pixels() const { return conv.p.N * PP * QQ; }

  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t m) const {
    const int64_t pooled = (m / kBM) * kRowStep + m % kRowStep, member = (m % kBM) / kRowStep;
    const Conv2dParams& p = conv.p;
    if (pooled >= pooled_pixels()) {
      // Rows past the last window (the tail of the last tile): every tap lands in the top padding, so
      // the row reads as zeros without a check in the loads.
      RowCtx row;
      row.h0 = -1 - (p.R - 1) * p.dil_h;
      return row;
    }
    const int64_t n = pooled / (PP * QQ), pq = pooled % (PP * QQ);
    const int64_t oh = 2 * (pq / QQ) + member / 2, ow = 2 * (pq % QQ) + member % 2;
    return conv.a_row(g, (n * p.P + oh) * p.Q + ow);
  }
  CUCONV_DEVICE Acc a_load(const RowCtx& row, int64_t kk) const { return conv.a_load(row, kk); }
  CUCONV_DEVICE ColCtx b_col(int64_t g, int64_t k) const { return conv.b_col(g, k); }
  CUCONV_DEVICE Acc b_load(const ColCtx& col, int64_t kk) const { return conv.b_load(col, kk); }

  // col[i]: conv output of window member i of pooled pixel m_first's window, output channel k of group g.
  CUCONV_DEVICE void store_column(int64_t g, int64_t, int64_t m_first, int64_t k, const Acc (&col)[kTM]) const {
    const int64_t pooled = (m_first / kBM) * kRowStep + m_first % kBM;
    if (pooled >= pooled_pixels()) return;
    const Conv2dParams& p = conv.p;
    const int64_t kabs = g * (p.K / p.groups) + k, n = pooled / (PP * QQ), pq = pooled % (PP * QQ);
    const Acc b = conv.bias ? to_acc(conv.bias[kabs]) : Acc(0);
    T best{};
    Acc best_acc = Acc(0);
    int best_member = 0;
    CUCONV_UNROLL
    for (int i = 0; i < kTM; ++i) {
      Acc v = col[i] + b;
      if (v < Acc(0)) v = Acc(0);  // ReLU; a NaN stays NaN
      const T vt = from_acc<T>(v);
      const Acc va = to_acc(vt);
      // strict > keeps the first maximum; every NaN replaces, so the last NaN is reported
      if (i == 0 || va > best_acc || va != va) {
        best = vt;
        best_acc = va;
        best_member = i;
      }
    }
    const int64_t out = CL ? (n * PP * QQ + pq) * p.K + kabs : (n * p.K + kabs) * PP * QQ + pq;
    y[out] = best;
    indices[out] = (2 * (pq / QQ) + best_member / 2) * p.Q + 2 * (pq % QQ) + best_member % 2;
  }
};

// y, indices: N x K x (P / 2) x (Q / 2), in the input's layout.
template <typename T>
void conv2d_fprop_relu_pool(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, int64_t* indices,
                            stream_t stream) {
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    using Problem = Conv2dFpropReluPoolProblem<T, CL>;
    const int64_t PP = p.P / 2, QQ = p.Q / 2;
    Problem prob{{x, w, bias, nullptr, p, true, 0, 0, 0, 0, 0}, y, indices, PP, QQ, 0, p.K / p.groups,
                 (p.C / p.groups) * p.R * p.S, 0, 0};
    // Whole tiles: each covers kRowStep pooled pixels; rows past the last window read zeros.
    prob.M = ceil_div<int64_t>(p.N * PP * QQ, kRowStep) * kBM;
    prob.k_chunk = ceil_div<int64_t>(prob.Kdim, kBK) * kBK;  // no split: one block owns its outputs
    launch_implicit_gemm<!CL, false>(prob, p.groups, 1, stream);
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace cuconv::kern
