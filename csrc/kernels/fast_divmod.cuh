#pragma once
// Division by a divisor fixed at launch, as a multiply-high and shifts; the magic numbers are
// computed once on the host and the kernels read them from their parameters. Why: on the GPU a
// 64-bit `/` or `%` by a run-time value is a subroutine call (CALL.REL.NOINC in the SASS), around
// which ptxas keeps live values on the stack: local-memory traffic in the hottest index decoding.
//  - FastDivmod: 32-bit dividends and divisors below 2^31 (CUTLASS's FastDivmod): one IMAD.HI and a
//    shift. For the small indices: a filter tap, a channel, a pixel in its plane.
//  - FastDivmod64: every uint64 dividend (Granlund and Montgomery, "Division by invariant integers
//    using multiplication", 1994, figure 4.1): a 64-bit multiply-high, a subtract and two shifts.
//    For the indices that run over the whole batch.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "portable.cuh"

namespace cuconv::kern {

struct FastDivmod {
  int32_t divisor = 1;
  uint32_t magic = 0, shift = 0;  // magic 0: divisor 1

  FastDivmod() = default;
  // Host only. A divisor < 1 never divides anything that runs (an empty dimension launches no
  // work); it is kept as 1 so that the struct stays well defined.
  explicit FastDivmod(int64_t d) {
    if (d >= (int64_t(1) << 31)) throw std::length_error("FastDivmod: divisor " + std::to_string(d) + " >= 2^31");
    divisor = d < 1 ? 1 : int32_t(d);
    if (divisor == 1) return;
    uint32_t l = 0;  // ceil(log2 d)
    while ((uint32_t(1) << l) < uint32_t(divisor)) ++l;
    const uint32_t p = 31 + l;  // magic = ceil(2^p / d) < 2^32
    magic = uint32_t(((uint64_t(1) << p) + uint64_t(divisor) - 1) / uint64_t(divisor));
    shift = p - 32;
  }
  // n / divisor for 0 <= n < 2^31.
  CUCONV_DEVICE int32_t div(int32_t n) const {
#if defined(__CUDACC__)
    const uint32_t hi = __umulhi(uint32_t(n), magic);
#else
    const uint32_t hi = uint32_t((uint64_t(uint32_t(n)) * magic) >> 32);
#endif
    return magic ? int32_t(hi >> shift) : n;
  }
  // q = n / divisor, r = n % divisor for 0 <= n < 2^31.
  template <typename I>
  CUCONV_DEVICE void divmod(I n, I& q, I& r) const {
    const int32_t q32 = div(int32_t(n));
    q = I(q32);
    r = I(int32_t(n) - q32 * divisor);
  }
};

struct FastDivmod64 {
  int64_t divisor = 1;
  uint64_t magic = 1;
  uint32_t shift1 = 0, shift2 = 0;

  FastDivmod64() = default;
  explicit FastDivmod64(int64_t d) {  // host only (128-bit arithmetic)
    divisor = d < 1 ? 1 : d;
    uint32_t l = 0;  // ceil(log2 d)
    while (l < 63 && (uint64_t(1) << l) < uint64_t(divisor)) ++l;
    // m' = floor(2^64 * (2^l - d) / d) + 1 < 2^64
    magic = uint64_t(((unsigned __int128)((uint64_t(1) << l) - uint64_t(divisor)) << 64) / uint64_t(divisor)) + 1;
    shift1 = l < 1 ? l : 1;
    shift2 = l > 0 ? l - 1 : 0;
  }
  // n / divisor for n >= 0.
  CUCONV_DEVICE int64_t div(int64_t n) const {
    const uint64_t u = uint64_t(n);
#if defined(__CUDACC__)
    const uint64_t t = __umul64hi(u, magic);
#else
    const uint64_t t = uint64_t(((unsigned __int128)u * magic) >> 64);
#endif
    return int64_t((t + ((u - t) >> shift1)) >> shift2);
  }
  // q = n / divisor, r = n % divisor for n >= 0.
  CUCONV_DEVICE void divmod(int64_t n, int64_t& q, int64_t& r) const {
    q = div(n);
    r = n - q * divisor;
  }
};

}  // namespace cuconv::kern
