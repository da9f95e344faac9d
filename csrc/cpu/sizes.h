#pragma once
// Integer rounding, the row pitch of the matrices the CPU GEMM walks, and the outputs whose window
// position lies inside the input.
#include <algorithm>
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

// The outputs o in [lo, hi) of a count-long row whose input position o*stride + offset lies in [0, limit).
inline void valid_range(int64_t offset, int64_t stride, int64_t limit, int64_t count, int64_t& lo, int64_t& hi) {
  lo = offset >= 0 ? 0 : ceil_div(-offset, stride);
  hi = limit - offset <= 0 ? 0 : ceil_div(limit - offset, stride);
  lo = std::min(lo, count);
  hi = std::max(lo, std::min(hi, count));
}

// The outputs in [lo, hi) for which every one of `taps` kernel positions first, first + 1, ...
// (dil apart, the window starting at o*stride - pad) lies in [0, limit): the intersection of their
// valid_range's, empty (lo == hi) when there is none.
inline void inside_range(int64_t first, int64_t taps, int64_t dil, int64_t pad, int64_t stride, int64_t limit,
                         int64_t count, int64_t& lo, int64_t& hi) {
  lo = 0, hi = count;
  for (int64_t t = first; t < first + taps; ++t) {
    int64_t l = 0, h = 0;
    valid_range(t * dil - pad, stride, limit, count, l, h);
    lo = std::max(lo, l), hi = std::min(hi, h);
  }
  hi = std::max(lo, hi);
}

}  // namespace cuconv::cpu
