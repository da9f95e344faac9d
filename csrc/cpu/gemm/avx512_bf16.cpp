// AVX512_BF16 GEMM for float operands that hold bfloat16 values: the float32 copies a bfloat16
// convolution runs on (float32_copies.h). vdpbf16ps multiplies 16 pairs of bfloat16 values and adds
// both products of each pair to a float32 sum, so one instruction does the multiply-adds of two
// float FMAs. The products of two bfloat16 values are exact in float32, the sums are float32 and
// the output is rounded to bfloat16 once by the caller, as native's bfloat16 convolutions do.
//
// Both operands are packed per cache block (driver.h's blocking) as bfloat16 pairs along K: a word
// of a packed operand holds A(i, 2q) in its low half and A(i, 2q+1) in its high half (B likewise),
// the layout vdpbf16ps reads. The float values are bfloat16 values, so keeping their upper 16 bits
// (or vcvtneps2bf16's rounding) is exact. An odd K's last pair has a zero high half in both.
//
// The micro-kernel's tile is 8 x 32: 16 zmm sums, two 16-column vectors of B per K pair and 8
// broadcast words of A, so each K pair is 2 loads, 8 broadcasts and 16 dot products. A 32-column
// sliver of 128 pairs is 16 KiB, as the float kernel's 16-column sliver of 256 floats.
//
// Each C element is summed over K in increasing pair order by one instruction chain, so the bits
// do not depend on the thread count. vdpbf16ps treats subnormal inputs and results as zero (its
// definition); bfloat16 values below 2^-126 are that rare.
#include <algorithm>
#include <cstring>

#include "cpu/gemm/driver.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cpu/amx.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // _mm512_max_ps's placeholder, as in avx512.cpp

#define CUCONV_AVX512_BF16 __attribute__((target("avx512f,avx512bf16,avx512vl,avx512bw,avx2,fma")))

namespace cuconv::cpu {

namespace {

constexpr int64_t MR = 8, NR = 32, KC = kGemmKC, MC = MR * 16, NC_TILES = 8;
static_assert(KC % 16 == 0, "A is packed 16 K values at a time");

// Words of two float vectors of bfloat16 values: lo's upper halves low, hi's upper halves high.
CUCONV_AVX512_BF16 CUCONV_INLINE __m512i pair_words(__m512 lo, __m512 hi) {
  return _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(hi), _mm512_set1_epi32(int(0xFFFF0000u))),
                         _mm512_srli_epi32(_mm512_castps_si512(lo), 16));
}
CUCONV_AVX512_BF16 CUCONV_INLINE __m256i pair_words(__m256 lo, __m256 hi) {
  return _mm256_or_si256(_mm256_and_si256(_mm256_castps_si256(hi), _mm256_set1_epi32(int(0xFFFF0000u))),
                         _mm256_srli_epi32(_mm256_castps_si256(lo), 16));
}
inline uint32_t pair_word(float lo, float hi) {
  uint32_t l = 0, h = 0;
  std::memcpy(&l, &lo, 4);
  std::memcpy(&h, &hi, 4);
  return (h & 0xFFFF0000u) | (l >> 16);
}

// Rows p0..p0+kc of B, columns j0.. (tiles of 32), as pair words: for each tile and pair q, 32
// words. Columns past N are zero. B is row-major (ldb) or in the float kernel's packed layout
// (gemm_packed_b_offset: 16-column slivers per kGemmKC block, which this blocking shares).
// `kp` pairs are written per tile (at least (kc + 1) / 2; pairs past K are zero).
CUCONV_AVX512_BF16 void pack_b_pairs(const GemmArgs<float>& g, int64_t p0, int64_t kc, int64_t kp, int64_t j0,
                                     int64_t tiles, uint32_t* out) {
  const int64_t n_pad = (g.N + kGemmNR - 1) / kGemmNR * kGemmNR;
  for (int64_t t = 0; t < tiles; ++t) {
    for (int h = 0; h < 2; ++h) {
      const int64_t j = j0 + t * NR + 16 * h;
      const __mmask16 m = lanes(g.N - j);
      uint32_t* dst = out + t * kp * NR + 16 * h;
      if (m == 0) {
        for (int64_t q = 0; q < kp; ++q) _mm512_store_si512(dst + q * NR, _mm512_setzero_si512());
        continue;
      }
      const float* src = g.b_packed ? g.B + p0 * n_pad + j / kGemmNR * kc * kGemmNR : g.B + p0 * g.ldb + j;
      const int64_t step = g.b_packed ? kGemmNR : g.ldb;
      for (int64_t q = 0; q < kp; ++q) {
        const __m512 lo = 2 * q < kc ? _mm512_maskz_loadu_ps(m, src + 2 * q * step) : _mm512_setzero_ps();
        const __m512 hi = 2 * q + 1 < kc ? _mm512_maskz_loadu_ps(m, src + (2 * q + 1) * step) : _mm512_setzero_ps();
        _mm512_store_si512(dst + q * NR, pair_words(lo, hi));
      }
    }
  }
}

// An 8 x 8 transpose of 32-bit words: r[i] holds row i's words; afterwards r[k] holds word k of
// every row.
CUCONV_AVX512_BF16 CUCONV_INLINE void transpose8(__m256i (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
    t[2 * i + 1] = _mm256_unpackhi_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[4 + k], 0x20));
    r[4 + k] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[4 + k], 0x31));
  }
}

// Rows i0..i0+rows of A (columns p0.., kc of them) into 8-row panels of pair words: panel word
// [q * 8 + r] = pair q of row r; panels `stride` words apart; rows past the end are zero.
CUCONV_AVX512_BF16 void pack_a_pairs(const GemmArgs<float>& g, int64_t i0, int64_t rows, int64_t p0, int64_t kc,
                                     int64_t stride, uint32_t* out) {
  const GemmA<float>& a = g.a;
  const int64_t kp = (kc + 1) / 2;
  for (int64_t i = 0; i < rows; i += MR) {
    const int64_t mv = std::min(MR, rows - i);
    uint32_t* dst = out + i / MR * stride;
    if (a.is_rows() || a.k_contiguous()) {
      // K runs along each row: 16 values of each row become 8 words, then a transpose.
      const float* src[MR];
      for (int64_t r = 0; r < MR; ++r)
        src[r] = r >= mv ? nullptr : (a.is_rows() ? a.ptrs[i0 + i + r] : a.data + (i0 + i + r) * a.rs) + p0;
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        const __mmask16 m = lanes(kc - k0);
        __m256i w[MR];
        for (int r = 0; r < MR; ++r)
          w[r] = src[r] ? (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src[r] + k0)) : _mm256_setzero_si256();
        transpose8(w);
        for (int k = 0; k < 8; ++k) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (k0 / 2 + k) * MR), w[k]);
      }
      continue;
    }
    // A(i, p) = base(p)[off(i)]: with the 8 rows adjacent in every column, a pair is two vector loads.
    int64_t off[MR];
    bool adjacent = true;
    for (int64_t r = 0; r < mv; ++r) {
      const int64_t row = i0 + i + r;
      off[r] = a.is_cols() ? (a.run > 0 ? row / a.run * a.run_stride + row % a.run : row) : row * a.rs;
      adjacent &= off[r] == off[0] + r;
    }
    auto column = [&](int64_t p) { return a.is_cols() ? a.ptrs[p0 + p] : a.data + (p0 + p) * a.cs; };
    if (adjacent) {
      const __mmask8 m = __mmask8(lanes(mv));
      for (int64_t q = 0; q < kp; ++q) {
        const __m256 lo = _mm256_maskz_loadu_ps(m, column(2 * q) + off[0]);
        const __m256 hi = 2 * q + 1 < kc ? _mm256_maskz_loadu_ps(m, column(2 * q + 1) + off[0]) : _mm256_setzero_ps();
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * MR), pair_words(lo, hi));
      }
      continue;
    }
    for (int64_t q = 0; q < kp; ++q) {
      const float* lo = column(2 * q);
      const float* hi = 2 * q + 1 < kc ? column(2 * q + 1) : nullptr;
      for (int64_t r = 0; r < MR; ++r) dst[q * MR + r] = r < mv ? pair_word(lo[off[r]], hi ? hi[off[r]] : 0.f) : 0;
    }
  }
}

// One 8 x 32 tile of C (rows < mv, columns < nv) over kp pairs of a packed A panel and B sliver.
CUCONV_AVX512_BF16 void tile(int64_t kp, const uint32_t* A, const uint32_t* B, int mv, int nv, float* C, int64_t ldc,
                             GemmInit init, const float* bias, bool relu) {
  const __mmask16 m[2] = {lanes(nv), lanes(nv - 16)};
  __m512 c[MR][2];
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m512 bcol = init == GemmInit::bias_col ? _mm512_maskz_loadu_ps(m[h], bias + 16 * h) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      c[i][h] = bcol;
      if (i < mv) {
        if (init == GemmInit::accumulate) c[i][h] = _mm512_maskz_loadu_ps(m[h], C + i * ldc + 16 * h);
        else if (init == GemmInit::bias_row) c[i][h] = _mm512_set1_ps(bias[i]);
      }
    }
  }
  for (int64_t q = 0; q < kp; ++q, A += MR, B += NR) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(B), b1 = (__m512bh)_mm512_load_si512(B + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(int(A[i]));
      c[i][0] = _mm512_dpbf16_ps(c[i][0], ai, b0);
      c[i][1] = _mm512_dpbf16_ps(c[i][1], ai, b1);
    }
  }
  // max(0, x) returns its second operand when either is NaN: a NaN sum stays NaN, as torch.relu.
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h)
      if (m[h]) _mm512_mask_storeu_ps(C + i * ldc + 16 * h, m[h], relu ? _mm512_max_ps(zero, c[i][h]) : c[i][h]);
  }
}

// AMX: the same pair words, multiplied 16 x 16 x 32 per tdpbf16ps on the tile unit. A C block of
// 32 x 32 is four 16 x 16 float tiles (tmm0-3); per 32 K values it loads two A tiles (16 rows x 16
// pairs, tmm4-5) and two B tiles (16 pairs x 16 columns, tmm6-7: the pair-packed B sliver read 128
// bytes per pair) and issues four tile products. A is packed row-major (each row's pairs
// contiguous, as a tile row reads them); K is padded with zero pairs to whole tiles. Each block's
// sums leave the tiles into a float buffer and are added to C's starting values in one epilogue.
constexpr int64_t AMX_MR = 32, AMX_KP = 16;  // rows of a C block; pairs per tile

// Rows i0..i0+rows of A (columns p0.., kc of them) as rows of `kp` pair words (pairs past K zero),
// padded with zero rows to a multiple of AMX_MR.
CUCONV_AMX void pack_a_rows(const GemmArgs<float>& g, int64_t i0, int64_t rows, int64_t p0, int64_t kc, int64_t kp,
                            uint32_t* out) {
  const GemmA<float>& a = g.a;
  const int64_t padded = (rows + AMX_MR - 1) / AMX_MR * AMX_MR;
  if (a.is_rows() || a.k_contiguous()) {
    for (int64_t r = 0; r < padded; ++r) {
      uint32_t* dst = out + r * kp;
      if (r >= rows) {
        std::memset(dst, 0, size_t(kp) * sizeof(uint32_t));
        continue;
      }
      const float* src = (a.is_rows() ? a.ptrs[i0 + r] : a.data + (i0 + r) * a.rs) + p0;
      for (int64_t k0 = 0; k0 < 2 * kp; k0 += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k0 / 2),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes(kc - k0), src + k0)));
    }
    return;
  }
  // A(i, p) = column(p)[off(i)]: 8 rows by 8 pairs at a time, a pair per vector when the rows are
  // adjacent, then a transpose into rows.
  auto column = [&](int64_t p) { return a.is_cols() ? a.ptrs[p0 + p] : a.data + (p0 + p) * a.cs; };
  for (int64_t i = 0; i < padded; i += 8) {
    const int64_t mv = std::clamp<int64_t>(rows - i, 0, 8);
    int64_t off[8] = {};
    bool adjacent = true;
    for (int64_t r = 0; r < mv; ++r) {
      const int64_t row = i0 + i + r;
      off[r] = a.is_cols() ? (a.run > 0 ? row / a.run * a.run_stride + row % a.run : row) : row * a.rs;
      adjacent &= off[r] == off[0] + r;
    }
    const __mmask8 m = __mmask8(lanes(mv));
    for (int64_t q0 = 0; q0 < kp; q0 += 8) {
      __m256i w[8];
      for (int k = 0; k < 8; ++k) {
        const int64_t p = 2 * (q0 + k);
        if (mv == 0 || p >= kc) {
          w[k] = _mm256_setzero_si256();
        } else if (adjacent) {
          const __m256 lo = _mm256_maskz_loadu_ps(m, column(p) + off[0]);
          const __m256 hi = p + 1 < kc ? _mm256_maskz_loadu_ps(m, column(p + 1) + off[0]) : _mm256_setzero_ps();
          w[k] = pair_words(lo, hi);
        } else {
          alignas(32) uint32_t v[8] = {};
          for (int64_t r = 0; r < mv; ++r) v[r] = pair_word(column(p)[off[r]], p + 1 < kc ? column(p + 1)[off[r]] : 0.f);
          w[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(v));
        }
      }
      transpose8(w);
      for (int r = 0; r < 8; ++r) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (i + r) * kp + q0), w[r]);
    }
  }
}

// One 32 x 32 block of C (rows < mv, columns < nv) over kp pairs (a multiple of 16) of a packed A
// (rows of kp words) and a packed B sliver (kp rows of 32 words).
CUCONV_AMX void amx_block(int64_t kp, const uint32_t* A, const uint32_t* B, int mv, int nv, float* C, int64_t ldc,
                          GemmInit init, const float* bias, bool relu) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t lda = kp * sizeof(uint32_t), ldb = NR * sizeof(uint32_t);
  for (int64_t q = 0; q < kp; q += AMX_KP) {
    _tile_loadd(4, A + q, lda);
    _tile_loadd(5, A + 16 * kp + q, lda);
    _tile_loadd(6, B + q * NR, ldb);
    _tile_loadd(7, B + q * NR + 16, ldb);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float sums[AMX_MR * NR];
  _tile_stored(0, sums, NR * sizeof(float));
  _tile_stored(1, sums + 16, NR * sizeof(float));
  _tile_stored(2, sums + 16 * NR, NR * sizeof(float));
  _tile_stored(3, sums + 16 * NR + 16, NR * sizeof(float));
  const __mmask16 m[2] = {lanes(nv), lanes(nv - 16)};
  const __m512 zero = _mm512_setzero_ps();
  for (int i = 0; i < mv; ++i) {
    for (int h = 0; h < 2; ++h) {
      if (!m[h]) continue;
      float* c = C + i * ldc + 16 * h;
      __m512 v = _mm512_load_ps(sums + i * NR + 16 * h);
      if (init == GemmInit::accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m[h], c), v);
      else if (init == GemmInit::bias_row) v = _mm512_add_ps(_mm512_set1_ps(bias[i]), v);
      else if (init == GemmInit::bias_col) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m[h], bias + 16 * h), v);
      _mm512_mask_storeu_ps(c, m[h], relu ? _mm512_max_ps(zero, v) : v);
    }
  }
}

}  // namespace

bool cpu_has_amx_bf16() {
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!cpu_has_avx512_bf16() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool tile = edx & (1u << 24), bf16 = edx & (1u << 22);
    // Linux hands out the tile data state only on request (arch_prctl ARCH_REQ_XCOMP_PERM for
    // XFEATURE_XTILEDATA); a kernel that refuses it, or has no such request, means no AMX here.
    constexpr int kReqXcompPerm = 0x1023, kXtileData = 18;
    return tile && bf16 && syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return has;
}

namespace {

// The two kernels as gemm_pairs runs them: how many pairs a K block packs, how A is packed and
// where a row tile's part of it starts, the per-thread setup, and the tile itself.
struct DotKernel {
  static constexpr int64_t kRows = MR;
  static int64_t pairs(int64_t kc) { return (kc + 1) / 2; }
  static int64_t panel(int64_t kc) { return (kc + 15) / 16 * 8 * MR; }  // words per packed A panel
  static void pack_a(const GemmArgs<float>& g, int64_t i0, int64_t rows, int64_t p0, int64_t kc, uint32_t* out) {
    pack_a_pairs(g, i0, rows, p0, kc, panel(kc), out);
  }
  static const uint32_t* a_tile(const uint32_t* a, int64_t i, int64_t kc) { return a + i / MR * panel(kc); }
  static void begin() {}
  static void end() {}
  static void run(int64_t kp, const uint32_t* a, const uint32_t* b, int mv, int nv, float* c, int64_t ldc,
                  GemmInit init, const float* bias, bool relu) {
    tile(kp, a, b, mv, nv, c, ldc, init, bias, relu);
  }
};

struct TileKernel {
  static constexpr int64_t kRows = AMX_MR;
  static int64_t pairs(int64_t kc) { return ((kc + 1) / 2 + AMX_KP - 1) / AMX_KP * AMX_KP; }
  static void pack_a(const GemmArgs<float>& g, int64_t i0, int64_t rows, int64_t p0, int64_t kc, uint32_t* out) {
    pack_a_rows(g, i0, rows, p0, kc, pairs(kc), out);
  }
  static const uint32_t* a_tile(const uint32_t* a, int64_t i, int64_t kc) { return a + i * pairs(kc); }
  static void begin() { amx_configure(); }
  static void end() { amx_release(); }
  static void run(int64_t kp, const uint32_t* a, const uint32_t* b, int mv, int nv, float* c, int64_t ldc,
                  GemmInit init, const float* bias, bool relu) {
    amx_block(kp, a, b, mv, nv, c, ldc, init, bias, relu);
  }
};

// driver.h's blocking for the pair-packed operands: B packed per K block and 256 columns, A per
// K block and 128 rows, both always (their float values become bfloat16 pairs).
template <class Kernel>
void gemm_pairs(const GemmArgs<float>& g) {
  constexpr int64_t kRows = Kernel::kRows;
  const int64_t n_tiles = (g.N + NR - 1) / NR;
  auto run_columns = [&](int64_t t_begin, int64_t t_end) {
    thread_local std::vector<uint32_t> a_buf, b_buf;
    uint32_t* bp = gemm_buffer(b_buf, size_t(KC / 2 * NC_TILES * NR));
    uint32_t* ap = gemm_buffer(a_buf, size_t(KC / 2 * MC));
    Kernel::begin();
    for (int64_t tb = t_begin; tb < t_end; tb += NC_TILES) {
      const int64_t te = std::min(tb + NC_TILES, t_end);
      for (int64_t p0 = 0; p0 < g.K; p0 += KC) {
        const int64_t kc = std::min(KC, g.K - p0), kp = Kernel::pairs(kc);
        const GemmInit init = p0 == 0 ? g.init : GemmInit::accumulate;
        const bool last = p0 + kc == g.K;
        const bool relu = g.relu && last;  // only the final sums are clamped
        pack_b_pairs(g, p0, kc, kp, tb * NR, te - tb, bp);
        for (int64_t i0 = 0; i0 < g.M; i0 += MC) {
          const int64_t i1 = std::min(i0 + MC, g.M);
          Kernel::pack_a(g, i0, i1 - i0, p0, kc, ap);
          for (int64_t t = tb; t < te; ++t) {
            const int64_t j = t * NR;
            const int nv = int(std::min(NR, g.N - j));
            const uint32_t* b = bp + (t - tb) * kp * NR;
            for (int64_t i = i0; i < i1; i += kRows) {
              const int mv = int(std::min(kRows, g.M - i));
              const float* bias = init == GemmInit::bias_row ? g.bias + i
                                  : init == GemmInit::bias_col ? g.bias + j
                                                               : nullptr;
              const uint32_t* a = Kernel::a_tile(ap, i - i0, kc);
              on_c_tile<kRows, NR>(g, i, mv, j, nv, init, [&](float* c, int64_t ldc) {
                Kernel::run(kp, a, b, mv, nv, c, ldc, init, bias, relu);
              });
            }
          }
          if (g.c16 && last)  // as in gemm_blocked
            gemm_store16(Isa::avx512, g.c16, g.C + i0 * g.ldc + tb * NR, g.ldc, i0, tb * NR, int(i1 - i0),
                         int(std::min(te * NR, g.N) - tb * NR));
        }
      }
    }
    Kernel::end();
  };
  if (g.parallel && n_tiles > 1) at::parallel_for(0, n_tiles, 1, run_columns);
  else run_columns(0, n_tiles);
}

}  // namespace

void gemm_amx_bf16(const GemmArgs<float>& g) { gemm_pairs<TileKernel>(g); }
void gemm_avx512_bf16(const GemmArgs<float>& g) { gemm_pairs<DotKernel>(g); }

}  // namespace cuconv::cpu

#else  // not x86: conv_isa() never picks avx512_bf16 or amx here

namespace cuconv::cpu {
bool cpu_has_amx_bf16() { return false; }
void gemm_avx512_bf16(const GemmArgs<float>& g) { gemm_portable(g); }
void gemm_amx_bf16(const GemmArgs<float>& g) { gemm_portable(g); }
}  // namespace cuconv::cpu

#endif
