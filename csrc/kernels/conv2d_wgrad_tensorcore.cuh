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

// channels_last grad weight with both operands by 16-byte copies along their rows (cp16_mn):
// grad_output's neighbouring output channels at one position (8 16-bit, 4 float), and the input's
// neighbouring channels at one position and tap, are contiguous. The GEMM's columns run in (r, s, c) order, the
// channels innermost, so a run of 8 columns is 8 channels of one tap; the workspace holds them in
// that order and conv2d_wgrad_split_reduce_rsc_kernel writes grad_weight's K x C/groups x R x S.
// Each thread walks one reduction position (n, p, q) through the chunk, kTcBK positions a slice, by
// adds (the steps from the host); no index is divided in the main loop.
template <typename T>
struct Conv2dWgradTcMnProblem : Conv2dWgradProblem<T, true> {
  using Base = Conv2dWgradProblem<T, true>;
  using typename Base::RowCtx;  // gy_base: the output channel's offset within a position's K
  struct ColCtx {
    const T* x_tap = nullptr;  // x + (roff * W + soff) * C + the input channel
    int32_t roff = 0, soff = 0;  // r*dil - pad, s*dil - pad
  };
  CUCONV_DEVICE ColCtx b_col(int64_t g, int64_t col_idx) const {
    const Conv2dIndexParams& p = this->p;
    int64_t rs, c, r, s;
    p.div_cg.divmod(col_idx, rs, c);
    p.div_s.divmod(rs, r, s);
    ColCtx col;
    col.roff = int32_t(r * p.dil_h - p.pad_h);
    col.soff = int32_t(s * p.dil_w - p.pad_w);
    col.x_tap = this->x + ((int64_t(col.roff) * p.W + col.soff) * p.C + g * p.Cg + c);
    return col;
  }
  // A reduction position: output pixel (n, p, q), the offsets of its grad_output row and of input
  // pixel (n, p*stride_h, q*stride_w), and that pixel's row and column.
  struct MnPos {
    int64_t gy_offset = 0, x_offset = 0;
    int32_t p = 0, q = 0, h0 = 0, w0 = 0;
  };
  // kTcBK positions as (images, rows, columns) and the offset steps of mn_pos_next (walk_steps).
  struct Steps {
    int32_t dq = 0, dp = 0, dh_p = 0, dw_q = 0;
    int64_t x_q = 0, x_wrap_q = 0, x_row = 0, x_p = 0, x_wrap_p = 0, x_n = 0;
  } steps;
  void walk_steps() {  // host
    const Conv2dIndexParams& p = this->p;
    const int64_t pq = p.P * p.Q, rest = kTcBK % pq, dn = kTcBK / pq;
    steps.dq = int32_t(rest % p.Q);
    steps.dp = int32_t(rest / p.Q);
    steps.dw_q = int32_t(steps.dq * p.stride_w);
    steps.dh_p = int32_t(steps.dp * p.stride_h);
    steps.x_q = steps.dq * p.stride_w * p.C;
    steps.x_wrap_q = p.Q * p.stride_w * p.C;
    steps.x_row = p.stride_h * p.W * p.C;
    steps.x_p = steps.dp * steps.x_row;
    steps.x_wrap_p = (p.H - p.P * p.stride_h) * p.W * p.C;  // past the last output row: the next image
    steps.x_n = dn * p.H * p.W * p.C;
  }
  CUCONV_DEVICE MnPos mn_pos(int64_t kk) const {
    const Conv2dIndexParams& p = this->p;
    int64_t n, pq, oh, ow;
    p.div_pq.divmod(kk, n, pq);
    p.div_q.divmod(pq, oh, ow);
    MnPos pos;
    pos.p = int32_t(oh);
    pos.q = int32_t(ow);
    pos.h0 = int32_t(oh * p.stride_h);
    pos.w0 = int32_t(ow * p.stride_w);
    pos.gy_offset = kk * p.K;
    pos.x_offset = ((n * p.H + pos.h0) * p.W + pos.w0) * p.C;
    return pos;
  }
  // mn_pos(kk + kTcBK) by adds: columns on by dq (a carry into the rows), rows on by dp (a carry into
  // the images), images on by kTcBK / (P*Q). dq < Q and dp < P, so one compare per carry.
  CUCONV_DEVICE void mn_pos_next(MnPos& pos) const {
    const Conv2dIndexParams& p = this->p;
    pos.gy_offset += kTcBK * p.K;
    pos.q += steps.dq;
    pos.w0 += steps.dw_q;
    pos.x_offset += steps.x_q;
    if (pos.q >= int32_t(p.Q)) {
      pos.q -= int32_t(p.Q);
      pos.w0 -= int32_t(p.Q * p.stride_w);
      pos.x_offset += steps.x_row - steps.x_wrap_q;
      pos.p += 1;
      pos.h0 += int32_t(p.stride_h);
    }
    pos.p += steps.dp;
    pos.h0 += steps.dh_p;
    pos.x_offset += steps.x_p + steps.x_n;
    if (pos.p >= int32_t(p.P)) {
      pos.p -= int32_t(p.P);
      pos.h0 -= int32_t(p.P * p.stride_h);
      pos.x_offset += steps.x_wrap_p;
    }
  }
  CUCONV_DEVICE bool a_at_mn(const RowCtx& row, const MnPos& pos, const T*& src) const {
    src = this->gy + pos.gy_offset + row.gy_base;
    return true;
  }
  CUCONV_DEVICE bool b_at_mn(const ColCtx& col, const MnPos& pos, const T*& src) const {
    // 32-bit rows and columns (Conv2dIndexParams): a negative one wraps to a large unsigned value
    const uint32_t h = uint32_t(pos.h0 + col.roff), ww = uint32_t(pos.w0 + col.soff);
    src = col.x_tap + pos.x_offset;
    return h < uint32_t(this->p.H) && ww < uint32_t(this->p.W);  // else zero padding
  }
};

// grad_weight[k][c][r][s] = sum over splits, in split order, of workspace[split][k][(r*S + s)*C/groups + c].
template <typename T>
__global__ void __launch_bounds__(256)
    conv2d_wgrad_split_reduce_rsc_kernel(const float* workspace, T* gw, int64_t count, int64_t splits,
                                         FastDivmod64 div_filter, FastDivmod div_cg, int32_t rs_count) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    for (int64_t s = 0; s < splits; ++s) acc += workspace[s * count + i];
    int64_t k, in_filter;
    div_filter.divmod(i, k, in_filter);
    int32_t rs, c;
    div_cg.divmod(int32_t(in_filter), rs, c);
    gw[k * div_filter.divisor + int64_t(c) * rs_count + rs] = from_acc<T>(acc);
  }
}

// Whether grad weight takes cp16_mn (given 16-byte aligned tensors): channels_last with whole 16-byte
// runs of each group's input and output channels.
inline bool conv2d_wgrad_tensorcore_row_copies(const Conv2dParams& p, int elem_bytes) {
  const int64_t v = 16 / elem_bytes;
  return p.channels_last && (p.C / p.groups) % v == 0 && (p.K / p.groups) % v == 0;
}

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
  const TcPlan tile = tc_plan(M, Ncols, kdim, p.groups * max_splits, elem_bytes,
                              conv2d_wgrad_tensorcore_row_copies(p, elem_bytes), d, forced);
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
  const int64_t count = p.K * (p.C / p.groups) * p.R * p.S;
  // The narrow tile's 32 columns are too few 16-bit runs for cp16_mn's bank swizzle: element-wise loads.
  if (conv2d_wgrad_tensorcore_row_copies(p, int(sizeof(T))) && plan.tile.config != kTcNarrow && tc_aligned16(gy) &&
      tc_aligned16(x)) {
    using Problem = Conv2dWgradTcMnProblem<T>;
    Problem prob{{gy, x, workspace, p, p.K / p.groups, (p.C / p.groups) * p.R * p.S, p.N * p.P * p.Q, plan.k_chunk, 0}};
    prob.walk_steps();
    launch_implicit_gemm_tensorcore<TcLoad::cp16_mn, TcLoad::cp16_mn>(prob, gy, x, p.groups, plan.splits, plan.tile,
                                                                     stream);
    const int64_t filter = (p.C / p.groups) * p.R * p.S;
    launch_kernel(&conv2d_wgrad_split_reduce_rsc_kernel<T>, dim3(grid_stride_blocks(count, 256, stream)), dim3(256),
                  0, stream, static_cast<const float*>(workspace), gw, count, plan.splits, FastDivmod64(filter),
                  FastDivmod(p.C / p.groups), int32_t(p.R * p.S));
    return;
  }
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
  launch_kernel(&conv2d_wgrad_split_reduce_kernel<T>, dim3(grid_stride_blocks(count, 256, stream)), dim3(256), 0,
                stream, static_cast<const float*>(workspace), gw, count, plan.splits);
}

}  // namespace cuconv::kern
