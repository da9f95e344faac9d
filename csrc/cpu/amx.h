#pragma once
// AMX tile setup (with bfloat16 rounding and a register transpose) shared by the bfloat16 GEMM
// (gemm/avx512_bf16.cpp), the direct bfloat16 conv (conv2d/amx_direct.cpp) and grad weight
// (conv2d/amx_wgrad.cpp). Included by x86 sources only; cpu_has_amx_bf16() (isa.h) says whether
// this CPU and OS run them.
#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "cpu/lane_masks.h"

// GCC 12's AVX-512 headers start unmasked intrinsics from an "undefined" register, which
// -Wmaybe-uninitialized (or -Wuninitialized, depending on where they are inlined) reports in the AMX
// sources (a false positive: GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define CUCONV_AMX \
  __attribute__((target("avx512f,avx512bf16,avx512vl,avx512bw,avx512vbmi2,avx2,fma,amx-tile,amx-bf16")))

namespace cuconv::cpu {

// Eight 16-row tiles of 64 bytes: four C tiles of 16 x 16 floats (tmm0-3), two A tiles of 16 rows
// x 16 bfloat16 pairs (tmm4-5), two B tiles of 16 pairs x 16 columns (tmm6-7). A static object:
// GCC's ldtilecfg asm names only the config's first bytes as its input, so the stores that fill a
// local config would be dropped as dead.
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
inline constexpr TileConfig kTileConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

// bfloat16 bits of 16 floats, rounded to nearest even; a NaN stays a (quiet) NaN.
CUCONV_AMX inline __m256i to_bfloat16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f), top = _mm512_srli_epi32(u, 16);
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(top, _mm512_set1_epi32(1))));
  r = _mm512_mask_mov_epi32(_mm512_srli_epi32(r, 16), _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q),
                            _mm512_or_si512(top, _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

// bfloat16 bits of 32 floats (lo's 16, then hi's) or of 16 by vcvtne2ps2bf16 / vcvtneps2bf16:
// rounded to nearest even, a NaN quiet, and a subnormal float taken as zero (denormals are zero:
// the instructions' definition; the tile products take subnormal inputs as zero too).
CUCONV_AMX inline __m512i to_bfloat16_daz(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }
CUCONV_AMX inline __m256i to_bfloat16_daz(__m512 f) { return (__m256i)_mm512_cvtneps_pbh(f); }

// Sum tiles 0-3 += A tiles (4: a0, 5: a1) x B tiles (6: b0, 7: b1), as (a0 b0, a0 b1, a1 b0, a1 b1),
// each product issued right after the loads it needs: no tile is renamed, so a load waits for the
// products still reading its register, and the next ones wait for it. B tiles are 64-byte rows.
CUCONV_AMX inline void tile_products_2x2(const void* a0, int64_t lda0, const void* a1, int64_t lda1, const void* b0,
                                         const void* b1) {
  _tile_loadd(4, a0, lda0);
  _tile_loadd(6, b0, 64);
  _tile_dpbf16ps(0, 4, 6);
  _tile_loadd(7, b1, 64);
  _tile_dpbf16ps(1, 4, 7);
  _tile_loadd(5, a1, lda1);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

// Sum tiles 0 and 2 += A tiles (4: a0, 5: a1) x B tile (6: b0): tile_products_2x2 without its second
// column of products, for blocks whose second 16 columns are past the output.
CUCONV_AMX inline void tile_products_2x1(const void* a0, int64_t lda0, const void* a1, int64_t lda1, const void* b0) {
  _tile_loadd(4, a0, lda0);
  _tile_loadd(6, b0, 64);
  _tile_dpbf16ps(0, 4, 6);
  _tile_loadd(5, a1, lda1);
  _tile_dpbf16ps(2, 5, 6);
}

// Lanes e < 16 (low) or 16 + e (high) of two vectors a, b joined into pair word e: a's value in
// the low half, b's in the high (the pair layout of the tiles), by one vpermt2w.
alignas(64) inline constexpr uint16_t kJoinLow[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) inline constexpr uint16_t kJoinHigh[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                       24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};

// 32 groups of n consecutive values (a weight's taps per input channel, an NHWC pixel's channels)
// split into n vectors of 32: out[t] lane c = src[c * n + t], by masked two-vector permutes of the
// loaded vectors, from tables made once per n.
constexpr int64_t kMaxDeinterleave = 25;
struct Deinterleave {
  int64_t n, pairs;              // values per group; loaded vector pairs (n / 2 rounded up)
  std::vector<uint16_t> index;   // [t][v][32]: lane c's source lane in vectors 2v, 2v + 1
  std::vector<__mmask32> lanes;  // [t][v]: the lanes c whose source lies there
};

inline Deinterleave deinterleave_tables(int64_t n) {
  Deinterleave d{n, (n + 1) / 2, std::vector<uint16_t>(size_t(n * ((n + 1) / 2) * 32)),
                 std::vector<__mmask32>(size_t(n * ((n + 1) / 2)))};
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < 32; ++c) {
      const int64_t e = c * n + t, v = e / 64;
      d.index[size_t((t * d.pairs + v) * 32 + c)] = uint16_t(e % 64);
      d.lanes[size_t(t * d.pairs + v)] |= __mmask32(1u) << c;
    }
  return d;
}

// out[0 .. n): the first `count` values of src (the rest zero, not read) split as above.
CUCONV_AMX inline void deinterleave(const Deinterleave& d, const uint16_t* src, int64_t count, __m512i* out) {
  __m512i v[kMaxDeinterleave + 1];
  for (int64_t i = 0; i < 2 * d.pairs; ++i) v[i] = _mm512_maskz_loadu_epi16(lanes32(count - 32 * i), src + 32 * i);
  for (int64_t t = 0; t < d.n; ++t) {
    __m512i r = _mm512_setzero_si512();
    for (int64_t s = 0; s < d.pairs; ++s) {
      const size_t e = size_t(t * d.pairs + s);
      r = _mm512_or_si512(r, _mm512_maskz_permutex2var_epi16(d.lanes[e], v[2 * s],
                                                            _mm512_loadu_si512(&d.index[e * 32]), v[2 * s + 1]));
    }
    out[t] = r;
  }
}

// r[j] lane i <- r[i] lane j: 16 registers of 16 32-bit words transposed (bfloat16 pairs move as one word).
CUCONV_AMX inline void transpose16x16(__m512i* r) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i + j], 128-bit lane L: column 4L + j of rows 4i .. 4i + 3
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i a = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88), b = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xDD);
    const __m512i c = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
    const __m512i d = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xDD);
    t[j] = _mm512_shuffle_i32x4(a, c, 0x88), t[8 + j] = _mm512_shuffle_i32x4(a, c, 0xDD);
    t[4 + j] = _mm512_shuffle_i32x4(b, d, 0x88), t[12 + j] = _mm512_shuffle_i32x4(b, d, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Per thread, before its first tile instruction and after its last.
CUCONV_AMX inline void amx_configure() { _tile_loadconfig(&kTileConfig); }
CUCONV_AMX inline void amx_release() { _tile_release(); }

}  // namespace cuconv::cpu
