#pragma once
// conv2d forward on tensor cores: the implicit GEMM of conv2d_fprop_implicit_gemm.cuh (same
// Problem: gather, zero padding, groups, both layouts, bias/ReLU epilogue), with the inner product
// done by mma.sync: float16 / bfloat16 inputs with float accumulation (m16n8k16), float32 inputs
// rounded to TF32 (m16n8k8, float accumulation).
//
// A block of 4 warps computes a 64 (output pixels) x 32 (output channels) tile; each warp a 32x16
// sub-tile = 2 x 2 MMA tiles. Each 16-deep slice of the reduction is staged in shared memory as
// the tensor core's operand type: A as [m][k] (row-major A), B as [n][k] (column-major B), so a
// fragment register is one (tf32) or one pair of (16-bit) neighbouring k of one row.
#include "conv2d_fprop_implicit_gemm.cuh"
#include "mma_sync.cuh"

namespace cuconv::kern {

constexpr int kTcThreads = 128, kTcBM = 64, kTcBN = 32, kTcBK = 16, kTcWarpM = 32, kTcWarpN = 16;
static_assert((kTcBM / kTcWarpM) * (kTcBN / kTcWarpN) * 32 == kTcThreads, "one warp per warp tile");

// The tensor-core kind for a storage type (float runs as TF32).
template <typename T> constexpr mma::Kind tc_kind() {
  if constexpr (std::is_same_v<T, half_t>) return mma::Kind::f16;
  else if constexpr (std::is_same_v<T, bfloat16_t>) return mma::Kind::bf16;
  else return mma::Kind::tf32;
}

// 32 bits from two neighbouring 16-bit shared-memory elements (4-byte aligned).
#if defined(__CUDACC__)
CUCONV_DEVICE uint32_t load_pair(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
#else
inline uint32_t load_pair(const uint16_t* p) {
  ::cuconv_sim::check_aligned(p, 4, "fragment load");
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
#endif

template <class Problem, typename T, bool A_M_FAST>
__global__ void __launch_bounds__(kTcThreads) conv2d_fprop_tensorcore_kernel(const Problem prob) {
  constexpr mma::Kind K = tc_kind<T>();
  constexpr bool kTf32 = K == mma::Kind::tf32;
  using Elem = std::conditional_t<kTf32, uint32_t, uint16_t>;  // tf32 bit pattern, or f16/bf16 bits
  // Row padding keeps the 32 lanes' fragment loads on 32 different banks (rows 20 or 12 words apart).
  constexpr int kStride = kTcBK + (kTf32 ? 4 : 8);
  CUCONV_SHARED(Elem, As, kTcBM * kStride);
  CUCONV_SHARED(Elem, Bs, kTcBN * kStride);
  constexpr int kALoads = kTcBM * kTcBK / kTcThreads, kBLoads = kTcBN * kTcBK / kTcThreads;

  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int g = lane >> 2, t = lane & 3;  // groupID, threadID_in_group of the fragment layouts
  const int wm = (warp % (kTcBM / kTcWarpM)) * kTcWarpM, wn = (warp / (kTcBM / kTcWarpM)) * kTcWarpN;
  const int64_t n_tiles = ceil_div<int64_t>(prob.Ncols, kTcBN);
  const int64_t grp = prob.group_base + int64_t(blockIdx.y) / n_tiles;
  const int64_t m0 = int64_t(blockIdx.x) * kTcBM, n0 = (int64_t(blockIdx.y) % n_tiles) * kTcBN;

  // A loads: with A_M_FAST (NCHW) a thread fills one A row (m = tid % 64) at k = tid / 64 + 2i,
  // so neighbouring threads read neighbouring output pixels; otherwise (NHWC) neighbouring threads
  // read neighbouring k (= channels) of rows m = tid / 16 + 8i. B loads (k = tid % 16,
  // n = tid / 16 + 8i) run along the weight's contiguous reduction index.
  constexpr int kARows = A_M_FAST ? 1 : kALoads;  // distinct A rows per thread
  typename Problem::RowCtx rows[kARows];
  bool a_ok[kARows];
  CUCONV_UNROLL
  for (int i = 0; i < kARows; ++i) {
    const int m = A_M_FAST ? tid % kTcBM : tid / kTcBK + i * (kTcThreads / kTcBK);
    a_ok[i] = m0 + m < prob.M;
    if (a_ok[i]) rows[i] = prob.a_row(grp, m0 + m);
  }
  const int b_k = tid % kTcBK;
  typename Problem::ColCtx cols[kBLoads];
  bool b_ok[kBLoads];
  CUCONV_UNROLL
  for (int i = 0; i < kBLoads; ++i) {
    const int n = tid / kTcBK + i * (kTcThreads / kTcBK);
    b_ok[i] = n0 + n < prob.Ncols;
    if (b_ok[i]) cols[i] = prob.b_col(grp, n0 + n);
  }
  auto to_elem = [](float v) -> Elem {
    if constexpr (kTf32) return mma::to_tf32(v);
    else return mma::bits16(from_float<T>(v));  // exact: v is a T widened to float
  };

  mma::FragC acc[2][2];
  CUCONV_UNROLL
  for (int i = 0; i < 2; ++i)
    CUCONV_UNROLL
    for (int j = 0; j < 2; ++j)
      CUCONV_UNROLL
      for (int e = 0; e < 4; ++e) acc[i][j].x[e] = 0.f;

  for (int64_t k0 = 0; k0 < prob.Kdim; k0 += kTcBK) {
    CUCONV_UNROLL
    for (int i = 0; i < kALoads; ++i) {
      const int r = A_M_FAST ? 0 : i;
      const int m = A_M_FAST ? tid % kTcBM : tid / kTcBK + i * (kTcThreads / kTcBK);
      const int k = A_M_FAST ? tid / kTcBM + i * (kTcThreads / kTcBM) : tid % kTcBK;
      const int64_t kk = k0 + k;
      As[m * kStride + k] = to_elem((a_ok[r] && kk < prob.Kdim) ? float(prob.a_load(rows[r], kk)) : 0.f);
    }
    CUCONV_UNROLL
    for (int i = 0; i < kBLoads; ++i) {
      const int n = tid / kTcBK + i * (kTcThreads / kTcBK);
      const int64_t kk = k0 + b_k;
      Bs[n * kStride + b_k] = to_elem((b_ok[i] && kk < prob.Kdim) ? float(prob.b_load(cols[i], kk)) : 0.f);
    }
    __syncthreads();  // the slice is complete before any warp reads fragments
    constexpr int kMmaK = kTf32 ? 8 : 16;
    CUCONV_UNROLL
    for (int ks = 0; ks < kTcBK; ks += kMmaK) {
      mma::FragA a[2];
      mma::FragB b[2];
      CUCONV_UNROLL
      for (int i = 0; i < 2; ++i) {
        const Elem* r0 = As + (wm + 16 * i + g) * kStride + ks;  // row g of this MMA tile
        const Elem* r8 = r0 + 8 * kStride;                        // row g + 8
        if constexpr (kTf32) {  // a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
          a[i].x[0] = r0[t];
          a[i].x[1] = r8[t];
          a[i].x[2] = r0[t + 4];
          a[i].x[3] = r8[t + 4];
        } else {  // registers: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
          a[i].x[0] = load_pair(r0 + 2 * t);
          a[i].x[1] = load_pair(r8 + 2 * t);
          a[i].x[2] = load_pair(r0 + 2 * t + 8);
          a[i].x[3] = load_pair(r8 + 2 * t + 8);
        }
      }
      CUCONV_UNROLL
      for (int j = 0; j < 2; ++j) {
        const Elem* c = Bs + (wn + 8 * j + g) * kStride + ks;  // column n = g, along k
        if constexpr (kTf32) {  // b0 (k = t), b1 (k = t+4)
          b[j].x[0] = c[t];
          b[j].x[1] = c[t + 4];
        } else {  // (k = 2t..2t+1), (k = 2t+8..2t+9)
          b[j].x[0] = load_pair(c + 2 * t);
          b[j].x[1] = load_pair(c + 2 * t + 8);
        }
      }
      CUCONV_UNROLL
      for (int i = 0; i < 2; ++i)
        CUCONV_UNROLL
        for (int j = 0; j < 2; ++j) mma::mma_sync<K>(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();  // all fragments are read before the next slice overwrites the tile
  }

  // c0, c1 at (g, 2t), (g, 2t+1); c2, c3 at (g+8, 2t), (g+8, 2t+1).
  CUCONV_UNROLL
  for (int i = 0; i < 2; ++i)
    CUCONV_UNROLL
    for (int j = 0; j < 2; ++j)
      CUCONV_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int64_t m = m0 + wm + 16 * i + g + ((e & 2) ? 8 : 0);
        const int64_t n = n0 + wn + 8 * j + 2 * t + (e & 1);
        if (m < prob.M && n < prob.Ncols) prob.store(grp, 0, m, n, acc[i][j].x[e]);
      }
}

// Tensor-core conv2d forward for float (as TF32), half and bfloat16; needs sm_80 or newer on the GPU.
template <typename T>
void conv2d_fprop_tensorcore(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                             stream_t stream) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t>,
                "tensor cores take float (TF32), half or bfloat16");
  auto run = [&](auto cl_tag) {
    constexpr bool CL = decltype(cl_tag)::value;
    using Problem = Conv2dFpropProblem<T, CL>;
    Problem prob{x, w, bias, y, p, relu, p.N * p.P * p.Q, p.K / p.groups, (p.C / p.groups) * p.R * p.S, 0, 0};
    const int64_t m_tiles = ceil_div<int64_t>(prob.M, kTcBM), n_tiles = ceil_div<int64_t>(prob.Ncols, kTcBN);
    const int64_t groups_per_launch = 65535 / n_tiles;  // gridDim.y <= 65535
    for (int64_t g0 = 0; g0 < p.groups; g0 += groups_per_launch) {
      const int64_t ng = p.groups - g0 < groups_per_launch ? p.groups - g0 : groups_per_launch;
      prob.group_base = g0;
      launch_kernel(&conv2d_fprop_tensorcore_kernel<Problem, T, !CL>, dim3(unsigned(m_tiles), unsigned(ng * n_tiles)),
                    dim3(kTcThreads), 0, stream, prob);
    }
  };
  if (p.channels_last) run(std::true_type{});
  else run(std::false_type{});
}

}  // namespace cuconv::kern
