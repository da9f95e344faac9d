#pragma once
// float16 and bfloat16 on the CPU: the float32 kernels run on float32 copies of the inputs, and each
// output is rounded to the 16-bit type once, from float32 sums (the precision of native's 16-bit
// convolutions, which accumulate in float32 too). The results are as deterministic as float32's.
#include <ATen/ATen.h>

namespace cuconv::cpu {

inline bool is_16bit(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// A float32 copy in the same layout (undefined stays undefined).
inline at::Tensor float32_copy(const at::Tensor& t) {
  return t.defined() ? t.to(at::kFloat, /*non_blocking=*/false, /*copy=*/false, at::MemoryFormat::Preserve) : t;
}

// A float32 tensor shaped and laid out as `out`, for a kernel to write before round_into(out).
inline at::Tensor float32_like(const at::Tensor& out) {
  return at::empty_like(out, out.options().dtype(at::kFloat), at::MemoryFormat::Preserve);
}

inline void round_into(const at::Tensor& out, const at::Tensor& out32) { out.copy_(out32); }

}  // namespace cuconv::cpu
