#pragma once
// conv2d grad weight on tensor cores: the GEMM of conv2d_wgrad_implicit_gemm.cuh through the
// tensor-core main loop, keeping its deterministic split-K: each chunk of the batch*space reduction
// writes float partial sums to its own workspace slice, and conv2d_wgrad_split_reduce_kernel adds
// the slices in split order (no float atomics: the same inputs on the same device give the same bits).
// NCHW grad_output rows (one output channel of one image) are contiguous: 16-byte cp.async when an
// image's P*Q is a multiple of 16 bytes' worth; the rest element-wise.
#include "conv2d_wgrad_implicit_gemm.cuh"
#include "implicit_gemm_tensorcore.cuh"

namespace cuconv::kern {

template <typename T, bool CL>
struct Conv2dWgradTcProblem : Conv2dWgradProblem<T, CL> {
  using Base = Conv2dWgradProblem<T, CL>;
  using typename Base::ColCtx;
  using typename Base::RowCtx;
  CUCONV_DEVICE const T* a_src(const RowCtx& row, int64_t kk) const {
    const Conv2dIndexParams& p = this->p;
    int64_t n, pq;
    p.div_pq.divmod(kk, n, pq);
    return this->gy + (CL ? row.gy_base + (n * p.P * p.Q + pq) * p.K : row.gy_base + n * p.K * p.P * p.Q + pq);
  }
  CUCONV_DEVICE const T* b_src(const ColCtx& col, int64_t kk) const {
    const Conv2dIndexParams& p = this->p;
    int64_t n, pq, h, ww;
    p.div_pq.divmod(kk, n, pq);
    this->tap(col, pq, h, ww);
    if (h < 0 || h >= p.H || ww < 0 || ww >= p.W) return nullptr;
    return this->x + (CL ? col.x_base + ((n * p.H + h) * p.W + ww) * p.C : col.x_base + n * p.C * p.H * p.W + h * p.W + ww);
  }
};

// Tile plan and split-K of the tensor-core grad weight (M = K/groups, Ncols = C/groups*R*S, Kdim = N*P*Q),
// as conv2d_wgrad_split does for the SIMT kernel: enough chunks to fill the device twice over, none
// shorter than kWgradMinChunk, chunks a multiple of the 32-deep slice.
struct TcWgradPlan {
  TcPlan tile;
  int64_t splits, k_chunk;
};
inline TcWgradPlan conv2d_wgrad_tensorcore_plan(const Conv2dParams& p, int elem_bytes, const DeviceProps& d,
                                                int forced = -1) {
  const int64_t M = p.K / p.groups, Ncols = (p.C / p.groups) * p.R * p.S, kdim = p.N * p.P * p.Q;
  int64_t max_splits = ceil_div<int64_t>(kdim, kWgradMinChunk);
  if (max_splits > kWgradMaxSplits) max_splits = kWgradMaxSplits;
  if (max_splits < 1) max_splits = 1;
  // Never both operands by 16-byte copies: grad_output's rows along N*P*Q are K apart (channels_last)
  // and the input's are gathered.
  const TcPlan tile = tc_plan(M, Ncols, kdim, p.groups * max_splits, elem_bytes, /*async16=*/false, d, forced);
  const TcConfig& c = kTcConfigs[tile.config];
  const int64_t tiles = p.groups * ceil_div<int64_t>(M, c.bm) * ceil_div<int64_t>(Ncols, c.bn);
  int64_t splits = ceil_div<int64_t>(2 * d.sm_count * resident_blocks_per_sm(d, 32 * c.warps_m * c.warps_n), tiles);
  if (splits > max_splits) splits = max_splits;
  if (splits < 1) splits = 1;
  const int64_t chunk = kdim > 0 ? ceil_div<int64_t>(ceil_div<int64_t>(kdim, splits), kTcBK) * kTcBK : kTcBK;
  return {tile, kdim > 0 ? ceil_div<int64_t>(kdim, chunk) : 1, chunk};
}
// Workspace elements (float) that conv2d_wgrad_tensorcore needs on the stream's device.
inline int64_t conv2d_wgrad_tensorcore_workspace(const Conv2dParams& p, int elem_bytes, stream_t stream, int forced = -1) {
  return conv2d_wgrad_tensorcore_plan(p, elem_bytes, device_props(stream), forced).splits * p.K * (p.C / p.groups) *
         p.R * p.S;
}

template <typename T>
void conv2d_wgrad_tensorcore(const Conv2dParams& p, const T* gy, const T* x, T* gw, float* workspace, stream_t stream,
                             int config = -1) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t>,
                "tensor cores take float (TF32), half or bfloat16");
  constexpr int64_t V = 16 / sizeof(T);
  const TcWgradPlan plan = conv2d_wgrad_tensorcore_plan(p, int(sizeof(T)), device_props(stream), config);
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    using Problem = Conv2dWgradTcProblem<T, CL>;
    Problem prob{{gy, x, workspace, p, p.K / p.groups, (p.C / p.groups) * p.R * p.S, p.N * p.P * p.Q, plan.k_chunk, 0}};
    // NCHW: neighbouring kk (output positions) are contiguous in grad_output; NHWC: neighbouring
    // rows (output channels) are.
    constexpr TcLoad kAScalar = tc_scalar_load<T>(CL), kBScalar = tc_scalar_load<T>(false);
    if constexpr (!CL) {  // only NCHW has contiguous 16-byte runs of grad_output along k
      if ((p.P * p.Q) % V == 0 && tc_aligned16(gy)) {
        launch_implicit_gemm_tensorcore<TcLoad::cp16, kBScalar>(prob, gy, x, p.groups, plan.splits, plan.tile, stream);
        return;
      }
    }
    launch_implicit_gemm_tensorcore<kAScalar, kBScalar>(prob, gy, x, p.groups, plan.splits, plan.tile, stream);
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
  const int64_t count = p.K * (p.C / p.groups) * p.R * p.S;
  launch_kernel(&conv2d_wgrad_split_reduce_kernel<T>, dim3(grid_stride_blocks(count, 256, stream)), dim3(256), 0,
                stream, static_cast<const float*>(workspace), gw, count, plan.splits);
}

}  // namespace cuconv::kern
