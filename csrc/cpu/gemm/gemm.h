#pragma once
// The CPU runner's matrix product: C[M,N] = init + A[M,K] * B[K,N], with
//   A in one of three forms (GemmA: strided, row pointers or column pointers),
//   B(p,j) = B[p*ldb + j]      (rows contiguous in j),
//   C(i,j) = C[i*ldc + j]      (or c_rows[i][j]).
// Each C element is summed over p in increasing order by exactly one thread, so results do not
// depend on the thread count. Register-blocked micro-kernels (AVX-512 8x32 or AVX2+FMA 6x16 for
// float, portable C++ otherwise) walk K in cache-sized blocks, with B (and a K-strided A) packed
// per block into per-thread buffers (gemm/driver.h); small outputs over a long K skip the packing
// on AVX-512 (gemm_small_output). An optional ReLU is applied in the micro-kernel's store of the
// last K block, while the tile is still in registers; so is the rounding into a 16-bit C
// (GemmOut16) on AVX2, which the other paths do a block of rows at a time.
#include <algorithm>
#include <cstdint>

#include "cpu/isa.h"

namespace cuconv::cpu {

enum class GemmInit {
  zero,        // C = A*B
  accumulate,  // C += A*B
  bias_row,    // C(i,j) = bias[i] + A*B
  bias_col,    // C(i,j) = bias[j] + A*B
};

// The A operand, in exactly one of three forms (made by the named constructors):
//  - strided: A(i, p) = data[i*rs + p*cs] (plain rows, a transposed matrix, im2col columns);
//  - rows: A(i, p) = ptrs[i][p], M row pointers, so a conv reads its input rows in place where
//    an im2col copy would otherwise gather them;
//  - cols: A(i, p) = ptrs[p][i], K column pointers, for a GEMM that reduces over positions whose
//    values sit in per-position runs; with run > 0 a column's values lie in runs of `run` values,
//    run_stride apart: A(i, p) = ptrs[p][(i / run) * run_stride + i % run] (a conv window's kernel
//    rows in an NHWC image).
template <typename T>
struct GemmA {
  enum class Form { strided, rows, cols };
  Form form = Form::strided;
  const T* data = nullptr;
  int64_t rs = 0, cs = 0;
  const T* const* ptrs = nullptr;
  int64_t run = 0, run_stride = 0;

  static GemmA strided(const T* data, int64_t rs, int64_t cs) {
    GemmA a;
    a.data = data, a.rs = rs, a.cs = cs;
    return a;
  }
  static GemmA rows(const T* const* ptrs) {
    GemmA a;
    a.form = Form::rows, a.ptrs = ptrs;
    return a;
  }
  static GemmA cols(const T* const* ptrs, int64_t run = 0, int64_t run_stride = 0) {
    GemmA a;
    a.form = Form::cols, a.ptrs = ptrs, a.run = run, a.run_stride = run_stride;
    return a;
  }
  bool is_rows() const { return form == Form::rows; }
  bool is_cols() const { return form == Form::cols; }
  // Strided with unit K stride: each row's values are contiguous.
  bool k_contiguous() const { return form == Form::strided && cs == 1; }
};

// A bfloat16 or float16 C (the final sums rounded to nearest even, as float32_copies.h rounds) for
// a GEMM on float32 operands, instead of a whole float32 result rounded by a pass of its own: the
// AVX2 and AVX-512 micro-kernels round the last K block's tiles from their registers
// (Kernel::kRounds16); with the other kernels each block of rows of the last K block is rounded
// right after they store it in C (float32, still in cache). Element (i, j) at data[i * ld + j]; with block_cols, the columns lie
// in blocks of that many, block_stride apart (joined images' NCHW planes): element (i, j) at
// data[(j / block_cols) * block_stride + i * ld + j % block_cols].
struct GemmOut16 {
  void* data = nullptr;
  bool bf16 = false;
  int64_t ld = 0;
  int64_t block_cols = 0, block_stride = 0;
  explicit operator bool() const { return data != nullptr; }
  int64_t offset(int64_t i, int64_t j) const {
    return block_cols ? (j / block_cols) * block_stride + i * ld + j % block_cols : i * ld + j;
  }
};

// Rows i.. and columns j.. of a 16-bit C from a float32 block (float32_copies.cpp), on `isa`'s vectors.
void gemm_store16(Isa isa, const GemmOut16& out, const float* block, int64_t ld_block, int64_t i, int64_t j, int rows,
                  int cols);

template <typename T>
struct GemmArgs {
  int64_t M, N, K;
  GemmA<T> a;
  const T* B;
  int64_t ldb;
  T* C;
  int64_t ldc;
  GemmInit init = GemmInit::zero;
  const T* bias = nullptr;
  bool relu = false;      // C = max(C, 0) as the final result is stored (NaN stays NaN, as torch.relu)
  bool parallel = false;  // split the columns over threads (for calls not already inside a parallel region)
  bool b_packed = false;  // B is already in the micro-kernel's packed layout (gemm_packed_b_offset); ldb unused
  // C given as M row pointers: C(i, j) = c_rows[i][j] (C and ldc unused). Lets a conv write an
  // output whose rows are not evenly spaced (every other pixel of every other row) in place.
  T* const* c_rows = nullptr;
  // float only, with C (not c_rows): the final sums go to c16. C is then a float32 stage: it holds
  // the sums of the K blocks before the last (and those accumulated onto); what it holds after the
  // call depends on the path.
  GemmOut16 c16;
};

// The float micro-kernels' blocking: K in blocks of kGemmKC rows, B columns in slivers kGemmNR wide.
// A B operand used by many GEMMs (a transformed weight) can be packed once by its producer: element
// (p, j) of a K x N matrix then lives at gemm_packed_b_offset(p, j, K, N) of a 64-byte aligned
// buffer of gemm_packed_b_size(K, N) floats whose columns N..round_up(N, 16) are zero.
constexpr int64_t kGemmKC = 256, kGemmNR = 16;
inline int64_t gemm_packed_b_size(int64_t K, int64_t N) { return K * ((N + kGemmNR - 1) / kGemmNR * kGemmNR); }
inline int64_t gemm_packed_b_offset(int64_t p, int64_t j, int64_t K, int64_t N) {
  const int64_t p0 = p / kGemmKC * kGemmKC, kc = std::min(kGemmKC, K - p0);
  const int64_t n_pad = (N + kGemmNR - 1) / kGemmNR * kGemmNR;
  return p0 * n_pad + (j / kGemmNR) * kc * kGemmNR + (p - p0) * kGemmNR + j % kGemmNR;
}

void gemm_portable(const GemmArgs<float>& g);
void gemm_portable(const GemmArgs<double>& g);
void gemm_avx2(const GemmArgs<float>& g);
void gemm_avx512(const GemmArgs<float>& g);
// For A and B holding bfloat16 values (float32 copies of bfloat16 tensors): AVX512_BF16 dot
// products on the operands packed as bfloat16 pairs (gemm/avx512_bf16.cpp). Isa::avx512_bf16.
void gemm_avx512_bf16(const GemmArgs<float>& g);
// The same on AMX tiles (tdpbf16ps; the same file). Isa::amx.
void gemm_amx_bf16(const GemmArgs<float>& g);
// Whether gemm(isa, g) takes the small-output path: C (M <= 64, N <= 128) kept in registers, 14 x 32
// at a time, over a long K, A's columns and B's rows read in place without packing (AVX-512 only;
// never on the bfloat16 paths, whose sums it would not reproduce: a plan that picks it by thread
// count keeps its bits only because both float kernels sum alike).
bool gemm_small_output(Isa isa, const GemmArgs<float>& g);

inline void gemm(Isa isa, const GemmArgs<float>& g) {
  if (isa == Isa::amx) gemm_amx_bf16(g);
  else if (isa == Isa::avx512_bf16) gemm_avx512_bf16(g);
  else if (is_avx512(isa)) gemm_avx512(g);
  else if (isa == Isa::avx2) gemm_avx2(g);
  else gemm_portable(g);
}
// Rows of the float micro-kernel's tile on this path (work split into multiples of it wastes none).
inline int64_t gemm_mr(Isa isa) { return is_avx512(isa) ? 8 : 6; }
inline void gemm(Isa, const GemmArgs<double>& g) { gemm_portable(g); }

}  // namespace cuconv::cpu
