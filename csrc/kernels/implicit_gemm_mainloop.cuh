#pragma once
// The tiled main loop shared by the three implicit-GEMM convolution kernels (fprop, dgrad, wgrad).
// A block computes a kBM x kBN tile of C = A * B (per group), staging kBK-deep slices of A and B
// through shared memory; each of the 256 threads owns a 4x4 register tile. A and B are never
// materialised: the Problem gathers each element straight from the tensors (implicit im2col).
//
// Problem interface (all indices int64: tensors may pass 2^31 elements):
//   using Acc;  int64_t M, Ncols, Kdim, k_chunk, group_base;
//   RowCtx a_row(g, m);  Acc a_load(const RowCtx&, kk);    // A[m, kk] of group g, 0 outside the input
//   ColCtx b_col(g, n);  Acc b_load(const ColCtx&, kk);    // B[kk, n] of group g
//   void store(g, split, m, n, Acc);                       // epilogue, one element at a time
// or, instead of store, a column epilogue that sees all kTM rows a thread holds for one column:
//   void store_column(g, split, m_first, n, const Acc (&col)[kTM]);  // rows m_first + i * kRowStep
// It gets every column n < Ncols, and must itself skip rows past M (the fused pooling epilogue
// reduces the kTM rows of a column to one output, so it bounds-checks that output instead).
// Grid: x = M tiles, y = groups_in_launch * N tiles, z = split-K chunks of k_chunk (multiple of kBK).
#include <type_traits>

#include "launch.cuh"

namespace cuconv::kern {

constexpr int kGemmThreads = 256, kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;
static_assert((kBM / kTM) * (kBN / kTN) == kGemmThreads, "one 4x4 register tile per thread");
// The rows of one thread's register tile are kRowStep apart: m0 + tx + i * kRowStep.
constexpr int kRowStep = kBM / kTM;

// Whether Problem has the column epilogue (store_column) rather than the per-element store.
template <class Problem, class = void>
struct has_column_epilogue : std::false_type {};
template <class Problem>
struct has_column_epilogue<Problem, std::void_t<decltype(&Problem::store_column)>> : std::true_type {};

// A_M_FAST / B_N_FAST: neighbouring threads load neighbouring rows (columns) when true, neighbouring
// kk otherwise; the launcher picks whichever is contiguous in memory, so loads coalesce.
template <class Problem, bool A_M_FAST, bool B_N_FAST>
__global__ void __launch_bounds__(kGemmThreads) implicit_gemm_kernel(const Problem prob) {
  using Acc = typename Problem::Acc;
  constexpr int kAStride = kBM + 1, kBStride = kBN + 1;  // +1: no bank conflicts on the transposed stores
  CUCONV_SHARED(Acc, As, kBK * kAStride);
  CUCONV_SHARED(Acc, Bs, kBK * kBStride);
  constexpr int kALoads = kBK * kBM / kGemmThreads, kBLoads = kBK * kBN / kGemmThreads;

  const int tid = int(threadIdx.x), tx = tid % kRowStep, ty = tid / kRowStep;
  // 32-bit: a 64-bit division is a subroutine call on the GPU (see fast_divmod.cuh); gridDim.y < 2^16.
  const uint32_t n_tiles = uint32_t(ceil_div<int64_t>(prob.Ncols, kBN));
  const int64_t g = prob.group_base + int64_t(blockIdx.y / n_tiles);
  const int64_t m0 = int64_t(blockIdx.x) * kBM, n0 = int64_t(blockIdx.y % n_tiles) * kBN;
  const int64_t k_begin = int64_t(blockIdx.z) * prob.k_chunk;
  const int64_t k_end = prob.Kdim < k_begin + prob.k_chunk ? prob.Kdim : k_begin + prob.k_chunk;

  typename Problem::RowCtx rows[kALoads];
  typename Problem::ColCtx cols[kBLoads];
  int a_m[kALoads], a_k[kALoads], b_n[kBLoads], b_k[kBLoads];
  bool a_ok[kALoads], b_ok[kBLoads];
  CUCONV_UNROLL
  for (int i = 0; i < kALoads; ++i) {
    const int idx = tid + i * kGemmThreads;
    a_m[i] = A_M_FAST ? idx % kBM : idx / kBK;
    a_k[i] = A_M_FAST ? idx / kBM : idx % kBK;
    a_ok[i] = m0 + a_m[i] < prob.M;
    if (a_ok[i]) rows[i] = prob.a_row(g, m0 + a_m[i]);
  }
  CUCONV_UNROLL
  for (int i = 0; i < kBLoads; ++i) {
    const int idx = tid + i * kGemmThreads;
    b_n[i] = B_N_FAST ? idx % kBN : idx / kBK;
    b_k[i] = B_N_FAST ? idx / kBN : idx % kBK;
    b_ok[i] = n0 + b_n[i] < prob.Ncols;
    if (b_ok[i]) cols[i] = prob.b_col(g, n0 + b_n[i]);
  }

  Acc acc[kTM][kTN];
  CUCONV_UNROLL
  for (int i = 0; i < kTM; ++i)
    CUCONV_UNROLL
    for (int j = 0; j < kTN; ++j) acc[i][j] = Acc(0);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
    CUCONV_UNROLL
    for (int i = 0; i < kALoads; ++i) {
      const int64_t kk = k0 + a_k[i];
      As[a_k[i] * kAStride + a_m[i]] = (a_ok[i] && kk < k_end) ? prob.a_load(rows[i], kk) : Acc(0);
    }
    CUCONV_UNROLL
    for (int i = 0; i < kBLoads; ++i) {
      const int64_t kk = k0 + b_k[i];
      Bs[b_k[i] * kBStride + b_n[i]] = (b_ok[i] && kk < k_end) ? prob.b_load(cols[i], kk) : Acc(0);
    }
    __syncthreads();  // the tile is complete before anyone reads it
    CUCONV_UNROLL
    for (int kk = 0; kk < kBK; ++kk) {
      Acc a[kTM], b[kTN];
      CUCONV_UNROLL
      for (int i = 0; i < kTM; ++i) a[i] = As[kk * kAStride + tx + i * kRowStep];
      CUCONV_UNROLL
      for (int j = 0; j < kTN; ++j) b[j] = Bs[kk * kBStride + ty + j * (kBN / kTN)];
      CUCONV_UNROLL
      for (int i = 0; i < kTM; ++i)
        CUCONV_UNROLL
        for (int j = 0; j < kTN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();  // everyone is done reading before the next slice overwrites the tile
  }

  if constexpr (has_column_epilogue<Problem>::value) {
    CUCONV_UNROLL
    for (int j = 0; j < kTN; ++j) {
      const int64_t n = n0 + ty + j * (kBN / kTN);
      if (n >= prob.Ncols) continue;
      Acc col[kTM];
      CUCONV_UNROLL
      for (int i = 0; i < kTM; ++i) col[i] = acc[i][j];
      prob.store_column(g, int64_t(blockIdx.z), m0 + tx, n, col);
    }
  } else {
    // Thread tx owns rows tx, tx+16, ...: neighbouring threads store neighbouring rows (coalesced NCHW).
    CUCONV_UNROLL
    for (int i = 0; i < kTM; ++i) {
      const int64_t m = m0 + tx + i * kRowStep;
      if (m >= prob.M) continue;
      CUCONV_UNROLL
      for (int j = 0; j < kTN; ++j) {
        const int64_t n = n0 + ty + j * (kBN / kTN);
        if (n < prob.Ncols) prob.store(g, int64_t(blockIdx.z), m, n, acc[i][j]);
      }
    }
  }
}

// Launches `prob` over all groups, in chunks of groups that keep gridDim.y <= 65535.
template <bool A_M_FAST, bool B_N_FAST, class Problem>
void launch_implicit_gemm(Problem prob, int64_t groups, int64_t splits, stream_t stream) {
  const int64_t m_tiles = ceil_div<int64_t>(prob.M, kBM), n_tiles = ceil_div<int64_t>(prob.Ncols, kBN);
  const int64_t groups_per_launch = 65535 / n_tiles;
  for (int64_t g0 = 0; g0 < groups; g0 += groups_per_launch) {
    const int64_t ng = groups - g0 < groups_per_launch ? groups - g0 : groups_per_launch;
    prob.group_base = g0;
    launch_kernel(&implicit_gemm_kernel<Problem, A_M_FAST, B_N_FAST>, dim3(unsigned(m_tiles), unsigned(ng * n_tiles), unsigned(splits)),
                  dim3(kGemmThreads), 0, stream, prob);
  }
}

}  // namespace cuconv::kern
