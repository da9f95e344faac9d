// AVX-512 GEMM micro-kernel for float: an 8x32 tile of C (two 16-wide B slivers) lives in 16 zmm
// registers; each K step loads one 16-float row of each sliver and multiplies it by 8 elements of
// A, each broadcast from memory as part of the FMA itself (the {1to16} operand), so a K step is 10
// loads and 16 FMAs (an 8x16 tile, used for a last odd sliver, needs 9 loads for 8 FMAs: more than
// two load ports feed two 512-bit FMA pipes). Partial columns use lane masks (no staging copies).
// With 32 vector registers the K loop stays in intrinsics without spills. Compiled for AVX-512 per
// function (target attribute) and called only when the CPU and OS support it (cpu_isa.h).
//
// 8 rows make 8 independent FMA chains per sliver and divide the channel counts conv layers use
// (32, 64, ...), so a 32-row GEMM has no padded rows (the 6-row AVX2 tile computes 36). B's
// slivers are kGemmKC = 256 rows: two of them (32 KiB) sit in L1 while MC rows of A stream past.
//
// Each C element is summed over K in increasing order by one FMA chain, as in the AVX2 kernel, so
// the two kernels give the same bits whatever the tile width.
#include <algorithm>

#include "cpu/gemm/driver.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/convert16.h"

// GCC 12's _mm512_max_ps passes a deliberately uninitialised placeholder (_mm512_undefined_ps),
// which -Wmaybe-uninitialized reports once per use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace cuconv::cpu {

namespace {

struct Avx512Kernel8x32 {
  static constexpr int MR = 8, NR = 16;
  static constexpr Isa kIsa = Isa::avx512;
  // Packed B is read two slivers at a time (an 8 x 32 tile, 16 accumulators): a K step is then 2
  // loads of B and 8 broadcasts for 16 FMAs, where one sliver needs 9 loads for 8, more than two
  // load ports feed two 512-bit FMA pipes.
  static constexpr int kSlivers = 2;

  // C's starting values for rows < mv (the columns under each vector's mask), per init.
  template <int NV>
  CUCONV_AVX512 static inline void init_tile(__m512 (&c)[MR][NV], int mv, const __mmask16 (&m)[NV], const float* C,
                                             int64_t ldc, GemmInit init, const float* bias) {
    __m512 bcol[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      bcol[v] = init == GemmInit::bias_col ? _mm512_maskz_loadu_ps(m[v], bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        c[i][v] = bcol[v];
        if (i < mv) {
          if (init == GemmInit::accumulate) c[i][v] = _mm512_maskz_loadu_ps(m[v], C + i * ldc + 16 * v);
          else if (init == GemmInit::bias_row) c[i][v] = _mm512_set1_ps(bias[i]);
        }
      }
  }

  // max(0, x) returns its second operand when either is NaN, so a NaN sum stays NaN (and -0 stays
  // -0), as torch.relu and the AVX2 kernel.
  template <int NV>
  CUCONV_AVX512 static inline void store_tile(__m512 (&c)[MR][NV], int mv, const __mmask16 (&m)[NV], float* C,
                                              int64_t ldc, bool relu) {
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      if (i >= mv) break;
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const __m512 x = relu ? _mm512_max_ps(zero, c[i][v]) : c[i][v];
        if (m[v] == 0xFFFF) _mm512_storeu_ps(C + i * ldc + 16 * v, x);
        else _mm512_mask_storeu_ps(C + i * ldc + 16 * v, m[v], x);
      }
    }
  }

  // store_tile into a 16-bit C (row pitch ld_out), the first nv columns of each row rounded from
  // the registers (convert16.h's store16: one 32-byte store per 16 values).
  template <int NV, typename Out>
  CUCONV_AVX512 static inline void store_tile16(__m512 (&c)[MR][NV], int mv, int nv, Out* out, int64_t ld_out,
                                                bool relu) {
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      if (i >= mv) break;
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
        store16(out + i * ld_out + 16 * v, relu ? _mm512_max_ps(zero, c[i][v]) : c[i][v], nv - 16 * v);
    }
  }

  static __mmask16 mask(int nv) { return nv <= 0 ? 0 : nv >= NR ? __mmask16(0xFFFF) : __mmask16((1u << nv) - 1); }

  // Unpacked B (rows ldb apart; GEMMs of at most 8 rows) and A with any strides. Rows past mv
  // recompute the last valid row (always readable); they are not stored.
  CUCONV_AVX512 static void run(int64_t kc, const float* A, int64_t rsA, int64_t csA, int mv, const float* B,
                                int64_t ldb, int nv, float* C, int64_t ldc, GemmInit init, const float* bias,
                                bool relu) {
    const __mmask16 m[1] = {mask(nv)};
    __m512 c[MR][1];
    init_tile<1>(c, mv, m, C, ldc, init, bias);
    const float* a[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a[i] = A + std::min(i, mv - 1) * rsA;
    int64_t off = 0;
    for (int64_t p = 0; p < kc; ++p, off += csA, B += ldb) {
      const __m512 b = _mm512_maskz_loadu_ps(m[0], B);  // masked-off lanes are never read
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) c[i][0] = _mm512_fmadd_ps(_mm512_set1_ps(a[i][off]), b, c[i][0]);
    }
    store_tile<1>(c, mv, m, C, ldc, relu);
  }

  // The K loop over NV packed B slivers (each kc x 16, 64-byte aligned, kc * 16 apart, columns
  // past nv zero) and A as a packed panel (kc x 8, rows past mv zero) or 8 row pointers with unit
  // K stride (rows past mv repeat a valid row). Unrolled by 4 so every address is a base register
  // plus a constant.
  template <int NV, bool kPackedA>
  CUCONV_AVX512 static inline __attribute__((always_inline)) void k_loop(__m512 (&c)[MR][NV], int64_t kc,
                                                                          const float* panel,
                                                                          const float* const* rows,
                                                                          const float* B) {
    const float* a[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a[i] = kPackedA ? panel + i : rows[i];
    constexpr int64_t kStep = kPackedA ? MR : 1;  // A's K stride
    int64_t p = 0;
    for (; p + 4 <= kc; p += 4) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) k_step<NV, kStep>(c, a, B, kc * NR, p + u);
    }
    for (; p < kc; ++p) k_step<NV, kStep>(c, a, B, kc * NR, p);
  }

  // One K step: NV vectors of B (slivers `sliver` apart), each row's A value broadcast into the FMAs.
  template <int NV, int64_t kStep>
  CUCONV_AVX512 static inline __attribute__((always_inline)) void k_step(__m512 (&c)[MR][NV], const float* const (&a)[MR],
                                                                          const float* B, int64_t sliver, int64_t p) {
    __m512 b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = _mm512_load_ps(B + v * sliver + p * NR);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i][p * kStep]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) c[i][v] = _mm512_fmadd_ps(ai, b[v], c[i][v]);
    }
  }

  template <int NV, typename Out>
  CUCONV_AVX512 static inline __attribute__((always_inline)) void tile_packed(
      int64_t kc, const float* panel, const float* const* rows, int mv, const float* B, int nv, float* C,
      int64_t ldc, GemmInit init, const float* bias, bool relu, Out* out, int64_t ld_out) {
    __mmask16 m[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) m[v] = mask(nv - 16 * v);
    __m512 c[MR][NV];
    init_tile<NV>(c, mv, m, C, ldc, init, bias);
    if (panel) k_loop<NV, true>(c, kc, panel, rows, B);
    else k_loop<NV, false>(c, kc, panel, rows, B);
    if constexpr (std::is_same_v<Out, float>) store_tile<NV>(c, mv, m, C, ldc, relu);
    else store_tile16<NV>(c, mv, nv, out, ld_out, relu);
  }

  // B packed (64-byte aligned slivers; two of them when nv > 16); A a packed panel, or else 8 row
  // pointers (panel null). With a 16-bit Out (the last K block of a GEMM with c16), the tile's sums
  // are rounded into out + i * ld_out + j instead of stored in C, which is read only to accumulate onto.
  template <typename Out = float>
  CUCONV_AVX512 static void run_packed(int64_t kc, const float* panel, const float* const* rows, int mv,
                                       const float* B, int nv, float* C, int64_t ldc, GemmInit init,
                                       const float* bias, bool relu, Out* out = nullptr, int64_t ld_out = 0) {
    if (nv > NR) tile_packed<2>(kc, panel, rows, mv, B, nv, C, ldc, init, bias, relu, out, ld_out);
    else tile_packed<1>(kc, panel, rows, mv, B, nv, C, ldc, init, bias, relu, out, ld_out);
  }
  // run_packed's tiles round into a 16-bit C themselves (driver.h).
  static constexpr bool kRounds16 = true;
};

// Small C, long K (a first layer's grad weight: 27 x 32 summed over ~1000 positions per image):
// packing A and B per K block would copy about as many values as the FMAs use, so here the C tile
// (up to 14 x 32 in 28 zmm registers) stays in registers over the whole of K while A's columns
// (unit row stride: column pointers, or a strided A with unit row stride) and B's rows (ldb apart) are read in place. Each C
// element is still one FMA chain over K in increasing order, so the bits equal the blocked path's.
template <int MR, int NV, bool kCols>
CUCONV_AVX512 void small_output_panel(const GemmArgs<float>& g, int64_t i0, int64_t j0, int nv) {
  const __mmask16 m0 = Avx512Kernel8x32::mask(nv), m1 = Avx512Kernel8x32::mask(nv - 16);
  __m512 c[MR][NV];
  const float* bias_col = g.init == GemmInit::bias_col ? g.bias + j0 : nullptr;
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v ? m1 : m0;
      float* row = g.C + (i0 + i) * g.ldc + j0 + 16 * v;
      c[i][v] = g.init == GemmInit::accumulate ? _mm512_maskz_loadu_ps(m, row)
                : g.init == GemmInit::bias_row ? _mm512_set1_ps(g.bias[i0 + i])
                : bias_col                      ? _mm512_maskz_loadu_ps(m, bias_col + 16 * v)
                                                : _mm512_setzero_ps();
    }
  const float* B = g.B + j0;
  if (kCols && g.a.run > 0) {
    // Column values in runs: row i0 + i sits at off[i] from the column's start.
    int64_t off[MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) off[i] = (i0 + i) / g.a.run * g.a.run_stride + (i0 + i) % g.a.run;
    for (int64_t p = 0; p < g.K; ++p, B += g.ldb) {
      const float* a = g.a.ptrs[p];
      __m512 b[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) b[v] = _mm512_maskz_loadu_ps(v ? m1 : m0, B + 16 * v);
#pragma GCC unroll 14
      for (int i = 0; i < MR; ++i) {
        const __m512 ai = _mm512_set1_ps(a[off[i]]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) c[i][v] = _mm512_fmadd_ps(ai, b[v], c[i][v]);
      }
    }
  } else {
    for (int64_t p = 0; p < g.K; ++p, B += g.ldb) {
      const float* a = (kCols ? g.a.ptrs[p] : g.a.data + p * g.a.cs) + i0;
      __m512 b[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) b[v] = _mm512_maskz_loadu_ps(v ? m1 : m0, B + 16 * v);
#pragma GCC unroll 14
      for (int i = 0; i < MR; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) c[i][v] = _mm512_fmadd_ps(ai, b[v], c[i][v]);
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(g.C + (i0 + i) * g.ldc + j0 + 16 * v, v ? m1 : m0,
                            g.relu ? _mm512_max_ps(zero, c[i][v]) : c[i][v]);
}

template <int MR, int NV, bool kCols>
void small_output_rows(const GemmArgs<float>& g, int64_t i0, int64_t j0, int nv, int rows) {
  if constexpr (MR > 1) {
    if (rows < MR) return small_output_rows<MR - 1, NV, kCols>(g, i0, j0, nv, rows);
  }
  small_output_panel<MR, NV, kCols>(g, i0, j0, nv);
}

template <int NV, bool kCols>
void small_output_columns(const GemmArgs<float>& g, int64_t j0, int nv) {
  // Row panels of at most 14, as even as possible (27 rows: 14 + 13), each size compiled, so no
  // row is computed twice and every panel keeps many FMA chains in flight.
  const int64_t panels = (g.M + 13) / 14;
  for (int64_t k = 0, i0 = 0; k < panels; ++k) {
    const int64_t i1 = (k + 1) * g.M / panels;
    small_output_rows<14, NV, kCols>(g, i0, j0, nv, int(i1 - i0));
    i0 = i1;
  }
}

template <bool kCols>
void gemm_small_output_avx512(const GemmArgs<float>& g) {
  for (int64_t j0 = 0; j0 < g.N; j0 += 32) {
    const int nv = int(std::min<int64_t>(32, g.N - j0));
    if (nv > 16) small_output_columns<2, kCols>(g, j0, nv);
    else small_output_columns<1, kCols>(g, j0, nv);
  }
}

}  // namespace

// Up to 64 x 128 (5 row panels x 4 column blocks, each streaming K), where packing B and A per K
// block costs more than re-reading them (a 1x1 shortcut's or a Winograd grad weight); larger C
// tiles re-read A and B too often and run slower than the blocked GEMM (docs/experiments.md).
bool gemm_small_output(Isa isa, const GemmArgs<float>& g) {
  return isa == Isa::avx512 && !g.parallel && !g.c_rows && !g.c16 && !g.b_packed &&
         (g.a.is_cols() || (g.a.form == GemmA<float>::Form::strided && g.a.rs == 1)) &&
         g.M <= 64 && g.N <= 128 && g.K >= 64;
}

void gemm_avx512(const GemmArgs<float>& g) {
  if (gemm_small_output(Isa::avx512, g)) {
    if (g.a.is_cols()) gemm_small_output_avx512<true>(g);
    else gemm_small_output_avx512<false>(g);
    return;
  }
  gemm_blocked<Avx512Kernel8x32>(g);
}

}  // namespace cuconv::cpu

#else  // not x86: active_isa() never picks AVX-512 here

namespace cuconv::cpu {
bool gemm_small_output(Isa, const GemmArgs<float>&) { return false; }
void gemm_avx512(const GemmArgs<float>& g) { gemm_portable(g); }
}  // namespace cuconv::cpu

#endif
