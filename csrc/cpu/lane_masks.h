#pragma once
// Masks of the first n lanes of an AVX-512 register, for partial rows loaded and stored with masks
// (x86 sources only).
#include <immintrin.h>

#include <cstdint>

namespace cuconv::cpu {

// The first n of 16 lanes (none for n <= 0, all for n >= 16): a partial row of 16 floats.
inline __mmask16 lanes(int64_t n) { return n <= 0 ? 0 : n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }
// The first n of 32 lanes: a partial row of 32 bfloat16 values.
inline __mmask32 lanes32(int64_t n) { return n <= 0 ? 0 : n >= 32 ? ~__mmask32(0) : __mmask32((1u << n) - 1); }

}  // namespace cuconv::cpu
