#pragma once
// conv2d grad weight as an implicit GEMM per group: grad_weight[k, (c,r,s)] = sum over (n,oh,ow) of
// grad_output[n, k, oh, ow] * input[n, c, oh*stride-pad+r*dil, ...]. The long reduction over batch
// and space is split into fixed chunks (split-K, blockIdx.z): each chunk writes its partial sums to
// its own slice of a workspace, and a second kernel adds the slices in a fixed order. No float
// atomics, so the result is bitwise reproducible.
#include "conv2d_index.cuh"
#include "implicit_gemm_mainloop.cuh"

namespace cuconv::kern {

template <typename T, bool CL>
struct Conv2dWgradProblem {
  using Acc = acc_t<T>;
  const T* gy;
  const T* x;
  Acc* workspace;  // [splits][K][Cg*R*S]
  Conv2dIndexParams p;
  int64_t M, Ncols, Kdim, k_chunk, group_base;

  struct RowCtx {
    int64_t gy_base = 0;  // grad_output offset of channel k in image 0, position 0
  };
  struct ColCtx {
    int64_t x_base = 0, roff = 0, soff = 0;  // input channel offset; r*dil - pad, s*dil - pad
  };

  CUCONV_DEVICE RowCtx a_row(int64_t g, int64_t k) const {
    RowCtx row;
    const int64_t kabs = g * p.Kg + k;
    row.gy_base = CL ? kabs : kabs * p.P * p.Q;
    return row;
  }
  CUCONV_DEVICE Acc a_load(const RowCtx& row, int64_t kk) const {
    int64_t n, pq;
    p.div_pq.divmod(kk, n, pq);
    return to_acc(gy[CL ? row.gy_base + (n * p.P * p.Q + pq) * p.K : row.gy_base + n * p.K * p.P * p.Q + pq]);
  }
  CUCONV_DEVICE ColCtx b_col(int64_t g, int64_t col_idx) const {
    int64_t c, rs, r, s;
    p.div_rs.divmod(col_idx, c, rs);
    p.div_s.divmod(rs, r, s);
    const int64_t cabs = g * p.Cg + c;
    ColCtx col;
    col.x_base = CL ? cabs : cabs * p.H * p.W;
    col.roff = r * p.dil_h - p.pad_h;
    col.soff = s * p.dil_w - p.pad_w;
    return col;
  }
  // Input row and column under output position pq's tap of column ctx col.
  CUCONV_DEVICE void tap(const ColCtx& col, int64_t pq, int64_t& h, int64_t& ww) const {
    int64_t oh, ow;
    p.div_q.divmod(pq, oh, ow);
    h = oh * p.stride_h + col.roff;
    ww = ow * p.stride_w + col.soff;
  }
  CUCONV_DEVICE Acc b_load(const ColCtx& col, int64_t kk) const {
    int64_t n, pq, h, ww;
    p.div_pq.divmod(kk, n, pq);
    tap(col, pq, h, ww);
    if (h < 0 || h >= p.H || ww < 0 || ww >= p.W) return Acc(0);
    return to_acc(x[CL ? col.x_base + ((n * p.H + h) * p.W + ww) * p.C : col.x_base + n * p.C * p.H * p.W + h * p.W + ww]);
  }
  CUCONV_DEVICE void store(int64_t g, int64_t split, int64_t k, int64_t col, Acc v) const {
    const int64_t kabs = g * p.Kg + k;
    workspace[(split * p.K + kabs) * Ncols + col] = v;
  }
};

// grad_weight[i] = sum over splits, in split order, of workspace[split][i].
template <typename T>
__global__ void __launch_bounds__(256)
    conv2d_wgrad_split_reduce_kernel(const acc_t<T>* workspace, T* gw, int64_t count, int64_t splits) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> acc = acc_t<T>(0);
    for (int64_t s = 0; s < splits; ++s) acc += workspace[s * count + i];
    gw[i] = from_acc<T>(acc);
  }
}

// Split-K plan: chunks of the batch*space reduction, each a multiple of kBK. Enough chunks that the
// grid fills the device twice over (output tiles alone rarely do: a weight is small), but none shorter
// than kWgradMinChunk, below which the workspace traffic outweighs the parallelism. Fixed by the shape
// and the device, so the same inputs on the same device give the same bits.
constexpr int64_t kWgradMinChunk = 256, kWgradMaxSplits = 64;
struct WgradSplit {
  int64_t splits, k_chunk;
};
inline WgradSplit conv2d_wgrad_split(const Conv2dParams& p, const DeviceProps& d) {
  const int64_t kdim = p.N * p.P * p.Q;
  const int64_t tiles = p.groups * ceil_div<int64_t>(p.K / p.groups, kBM) *
                        ceil_div<int64_t>((p.C / p.groups) * p.R * p.S, kBN);
  int64_t splits = ceil_div<int64_t>(2 * d.sm_count * resident_blocks_per_sm(d, kGemmThreads), tiles);
  const int64_t by_length = ceil_div<int64_t>(kdim, kWgradMinChunk);
  if (splits > by_length) splits = by_length;
  if (splits > kWgradMaxSplits) splits = kWgradMaxSplits;
  if (splits < 1) splits = 1;
  const int64_t chunk = ceil_div<int64_t>(ceil_div<int64_t>(kdim, splits), kBK) * kBK;
  return {ceil_div<int64_t>(kdim, chunk), chunk};
}
// Workspace elements (of acc_t<T>) that conv2d_wgrad_implicit_gemm needs on the stream's device.
inline int64_t conv2d_wgrad_workspace_elements(const Conv2dParams& p, stream_t stream) {
  return conv2d_wgrad_split(p, device_props(stream)).splits * p.K * (p.C / p.groups) * p.R * p.S;
}

template <typename T>
void conv2d_wgrad_implicit_gemm(const Conv2dParams& p, const T* gy, const T* x, T* gw, acc_t<T>* workspace,
                                stream_t stream) {
  const WgradSplit split = conv2d_wgrad_split(p, device_props(stream));
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    Conv2dWgradProblem<T, CL> prob{gy, x, workspace, p, p.K / p.groups, (p.C / p.groups) * p.R * p.S,
                                   p.N * p.P * p.Q, split.k_chunk, 0};
    // NCHW: neighbouring kk (output positions) are contiguous in both operands; NHWC: channels are.
    launch_implicit_gemm<CL, false>(prob, p.groups, split.splits, stream);
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
  const int64_t count = p.K * (p.C / p.groups) * p.R * p.S;
  launch_kernel(&conv2d_wgrad_split_reduce_kernel<T>, dim3(grid_stride_blocks(count, 256, stream)), dim3(256), 0,
                stream, workspace, gw, count, split.splits);
}

}  // namespace cuconv::kern
