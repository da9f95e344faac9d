#pragma once
// Per-thread scratch buffers of the CPU kernels, kept between calls: fresh large allocations are
// page-faulted in (and zeroed by the kernel) on every call, which costs as much as the GEMM for
// small layers. Buffers in use at the same time take different slots.
#include <ATen/ATen.h>

#include <cstdint>

#include "cpu/sizes.h"

namespace cuconv::cpu {

enum class Scratch : int {
  // A worker's own buffers inside a parallel region (the calling thread is one of the workers):
  input,   // a pass's copy of its input: im2col columns, a padded or interleaved image, Winograd's V
  output,  // a GEMM's result or other operand: col2im's columns, a transposed grad_output, Winograd's M
  extra,   // a third buffer: joined grad_output blocks, Winograd's U in the grad weight
  // The calling thread's buffers that a whole parallel region shares, so never a worker's slot:
  call,        // the grad weight's chunk partials, Winograd's transformed filter
  call_input,  // Winograd's channels-last copy of its input, beside `call`
  // The float32 copies of a 16-bit call's tensors (float32_copies.h), around the float32 call that
  // uses the slots above (amx_direct's padded input, packed weight and bias in the first three):
  wide_a,    // its first input
  wide_b,    // its second input
  wide_c,    // its bias
  wide_out,  // its output, before rounding
  // nchw_as_nhwc's channels-last copies of an NCHW call's tensors, around the NHWC pass (which uses
  // the slots above):
  nhwc_a,  // its input (forward), grad_output (grad input, grad weight)
  nhwc_b,  // its output (forward, grad input), input (grad weight)
  kCount,
};

// A buffer of at least n elements in this thread's slot.
template <typename T>
T* scratch(Scratch slot, int64_t n) {
  thread_local at::Tensor cache[int(Scratch::kCount)];
  at::Tensor& buf = cache[int(slot)];
  const int64_t bytes = n * int64_t(sizeof(T));
  if (!buf.defined() || buf.numel() < bytes) buf = at::empty({bytes}, at::kByte);
  return reinterpret_cast<T*>(buf.data_ptr());
}

}  // namespace cuconv::cpu
