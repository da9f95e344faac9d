#pragma once
// float16 and bfloat16 on the CPU: the float32 kernels run on float32 copies of the inputs, and each
// output is rounded to the 16-bit type once, from float32 sums (the precision of native's 16-bit
// convolutions, which accumulate in float32 too). The results are as deterministic as float32's.
// The copies live in per-thread buffers kept between calls (scratch.h), and the conversions are
// vector loops (a shift for bfloat16, F16C for float16; rounding to nearest even; a NaN keeps its
// bits through a round trip).
#include <ATen/ATen.h>

#include "cpu/gemm/gemm.h"
#include "cpu/scratch.h"

namespace cuconv::cpu {

inline bool is_16bit(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// A float32 copy of t (contiguous in its layout, as the runners' tensors are), in `slot`;
// undefined stays undefined.
at::Tensor float32_copy(const at::Tensor& t, Scratch slot);

// A float32 tensor shaped and laid out as `out`, in `slot`, for a kernel to write before round_into.
at::Tensor float32_like(const at::Tensor& out, Scratch slot);

// out (16-bit) = out32 rounded to nearest even.
void round_into(const at::Tensor& out, const at::Tensor& out32);

// The same conversions on one run of n values, in the calling thread, on the active ISA path (for
// kernels that convert their operands chunk by chunk, in cache).
void widen_run(const c10::BFloat16* src, float* dst, int64_t n);
void widen_run(const c10::Half* src, float* dst, int64_t n);
void narrow_run(const float* src, c10::BFloat16* dst, int64_t n);
void narrow_run(const float* src, c10::Half* dst, int64_t n);

// A 16-bit activation that a float32 strategy converts one block at a time, in cache, instead of
// through a whole-tensor float32 copy, whose write and re-read of four bytes per value through memory
// is what such a pass costs over float32 where the pass itself is cheap (few-channel first layers,
// strided layers). The GEMM strategies take one for the tensor they stream: the forward's output
// (each block's sums rounded into it), the grad input's and grad weight's grad_output (each block
// widened as it is read). Values in row-major blocks: element (i, j) at offset + i * ld + j.
struct Blocks16 {
  void* data = nullptr;
  bool bf16 = false;
  explicit operator bool() const { return data != nullptr; }
  // dst[i * ld_dst + j] = this(i, j), exactly.
  void widen(int64_t offset, int64_t ld, int64_t rows, int64_t cols, float* dst, int64_t ld_dst) const;
  // this(i, j) = src[i * ld_src + j] rounded to nearest even, as round_into.
  void narrow(const float* src, int64_t ld_src, int64_t offset, int64_t ld, int64_t rows, int64_t cols) const;
  // f(data typed as the block's elements: c10::BFloat16* or c10::Half*).
  template <class F>
  void visit(F f) const {
    if (bf16) f(static_cast<c10::BFloat16*>(data));
    else f(static_cast<c10::Half*>(data));
  }
  // The block at offset with row pitch ld as a GEMM's 16-bit C (its sums rounded as they are stored).
  GemmOut16 gemm_out(int64_t offset, int64_t ld) const {
    return {static_cast<uint16_t*>(data) + offset, bf16, ld};
  }
};
// The 16-bit tensor t as Blocks16; empty for any other dtype.
Blocks16 blocks16(const at::Tensor& t);

}  // namespace cuconv::cpu
