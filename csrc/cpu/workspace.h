#pragma once
// Small helpers shared by the CPU conv kernels: integer rounding and per-thread workspaces.
#include <ATen/ATen.h>

#include <cstdint>

namespace cuconv::cpu {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Row pitch (elements) of a matrix the GEMM reads or writes down its rows: an odd number of
// 16-element blocks. The micro-kernel walks a 16-wide column strip down up to 256 rows, and a
// pitch of an even number of blocks (e.g. 1 KiB, 4 KiB) maps those rows onto few L1 sets, which
// then thrash; whole blocks keep 64-byte rows of float on one cache line each (an AVX-512 load or
// store across two lines costs two). pitch_ok tells whether a given pitch avoids the set conflicts.
inline int64_t pitch(int64_t n) {
  const int64_t blocks = ceil_div(n, 16);
  return (blocks % 2 ? blocks : blocks + 1) * 16;
}
inline bool pitch_ok(int64_t ld) { return ld % 32 != 0; }

// A per-thread scratch buffer of at least n elements, kept between calls: fresh large allocations
// are page-faulted in (and zeroed by the kernel) on every call, which costs as much as the GEMM
// for small layers. Buffers in use at once must have different slots: inside a parallel region
// the kernels use 0-2 on every thread (the calling thread included), so a buffer the calling
// thread fills before the region and the workers read during it uses slot 3, or slot 4 when 3 is
// taken too (Winograd's channels-last copy of its input, beside its transformed filter in 3).
template <typename T>
T* scratch(int slot, int64_t n) {
  thread_local at::Tensor cache[5];
  const int64_t bytes = n * int64_t(sizeof(T));
  if (!cache[slot].defined() || cache[slot].numel() < bytes) cache[slot] = at::empty({bytes}, at::kByte);
  return reinterpret_cast<T*>(cache[slot].data_ptr());
}

}  // namespace cuconv::cpu
