#pragma once
// Cache blocking shared by the GEMM micro-kernels (included by gemm_*.cpp only). Kernel::run
// computes one MR x NR tile of C over kc steps of K from strided operands, Kernel::run_packed the
// same from a packed B sliver (and a packed A panel or MR row pointers); both handle partial tiles
// themselves and apply the ReLU to what they store when told (last K block only).
//
// Operands are packed per cache block (Goto's scheme) into per-thread buffers:
//  - B: a kc x NC block becomes NR-wide slivers, each kc x NR contiguous. Unpacked, a sliver's rows
//    are ldb apart: for ldb of a few hundred floats its 256 rows span 100+ pages (more than the L1
//    TLB holds) and map onto few L1 sets.
//  - A: packed into MR-row panels (kc x MR contiguous) when its K stride is not 1 (a transposed
//    weight, NHWC im2col columns): every K step would otherwise touch a new line and page.
// Packing copies values only, so each C element is still summed over p in increasing order, by one
// thread: results do not depend on the thread count or on whether a block was packed.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/gemm/gemm.h"

namespace cuconv::cpu {

// B[p0.., j0..] (kc rows, tiles NR-wide columns) into kc x NR slivers; columns past N are zero.
template <typename T, int64_t NR>
void pack_b(const T* B, int64_t ldb, int64_t kc, int64_t j0, int64_t tiles, int64_t N, T* out) {
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t j = j0 + t * NR, nv = std::min(NR, N - j);
    T* dst = out + t * kc * NR;
    const T* src = B + j;
    if (nv == NR) {
      for (int64_t p = 0; p < kc; ++p) std::memcpy(dst + p * NR, src + p * ldb, NR * sizeof(T));
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        for (int64_t c = 0; c < nv; ++c) dst[p * NR + c] = src[p * ldb + c];
        for (int64_t c = nv; c < NR; ++c) dst[p * NR + c] = T(0);
      }
    }
  }
}

// Rows i0..i1 of A (columns p0.., kc of them) into kc x MR panels; rows past i1 are zero.
template <typename T, int64_t MR>
void pack_a(const T* A, int64_t rsA, int64_t csA, int64_t kc, int64_t rows, T* out) {
  for (int64_t i = 0; i < rows; i += MR) {
    const int64_t mv = std::min(MR, rows - i);
    T* dst = out + i * kc;
    const T* src = A + i * rsA;
    if (rsA == 1) {  // the MR rows of one K step are adjacent: contiguous MR-element copies
      for (int64_t p = 0; p < kc; ++p) {
        for (int64_t r = 0; r < mv; ++r) dst[p * MR + r] = src[p * csA + r];
        for (int64_t r = mv; r < MR; ++r) dst[p * MR + r] = T(0);
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        for (int64_t r = 0; r < mv; ++r) dst[p * MR + r] = src[r * rsA + p * csA];
        for (int64_t r = mv; r < MR; ++r) dst[p * MR + r] = T(0);
      }
    }
  }
}

// Rows i0..i0+rows of A(i, p) = cols[p][i] (columns p0.., kc of them) into kc x MR panels.
// With runs (run > 0), A(i, p) = cols[p][(i / run) * run_stride + i % run].
template <typename T, int64_t MR>
void pack_a_cols(const T* const* cols, int64_t run, int64_t run_stride, int64_t i0, int64_t p0, int64_t kc,
                 int64_t rows, T* out) {
  for (int64_t i = 0; i < rows; i += MR) {
    const int64_t mv = std::min(MR, rows - i);
    T* dst = out + i * kc;
    int64_t off[MR];
    // When the MR rows are adjacent in every column (no run boundary among them), each column's
    // part is one copy of MR values, which compiles to a vector move instead of MR scalar loads.
    bool adjacent = mv == MR;
    for (int64_t r = 0; r < mv; ++r) {
      const int64_t row = i0 + i + r;
      off[r] = run > 0 ? row / run * run_stride + row % run : row;
      adjacent &= off[r] == off[0] + r;
    }
    if (adjacent) {
      for (int64_t p = 0; p < kc; ++p) std::memcpy(dst + p * MR, cols[p0 + p] + off[0], MR * sizeof(T));
      continue;
    }
    for (int64_t p = 0; p < kc; ++p) {
      const T* src = cols[p0 + p];
      for (int64_t r = 0; r < mv; ++r) dst[p * MR + r] = src[off[r]];
      for (int64_t r = mv; r < MR; ++r) dst[p * MR + r] = T(0);
    }
  }
}

// A per-thread buffer of at least n elements, 64-byte aligned: each row of a packed sliver (16
// floats) is then one cache line, and the micro-kernel's aligned loads never split lines.
template <typename T>
T* gemm_buffer(std::vector<T>& v, size_t n) {
  constexpr size_t pad = 64 / sizeof(T);
  if (v.size() < n + pad) v.resize(n + pad);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<T*>((addr + 63) & ~uintptr_t(63));
}

// Calls kernel(c, ldc) for the C tile of rows i..i+mv, columns j..j+nv: in place when its rows are
// evenly spaced (always, unless C is given as row pointers), else on a staging tile whose rows are
// copied in first (when accumulating) and out after.
template <int64_t MR, int64_t NR, typename T, class F>
inline void on_c_tile(const GemmArgs<T>& g, int64_t i, int mv, int64_t j, int nv, GemmInit init, F kernel) {
  if (!g.c_rows) return kernel(g.C + i * g.ldc + j, g.ldc);
  T* const* r = g.c_rows + i;
  const int64_t ld = mv > 1 ? r[1] - r[0] : 0;
  bool even = true;
  for (int k = 2; k < mv; ++k) even &= r[k] == r[0] + k * ld;
  if (even) return kernel(r[0] + j, ld);
  alignas(64) T tile[MR * NR];
  // Whole tiles move by fixed-size copies (inlined as vector moves, where a run-time length is a
  // library call per row).
  const bool whole = nv == NR;
  if (init == GemmInit::accumulate)
    for (int k = 0; k < mv; ++k) {
      if (whole) std::memcpy(tile + k * NR, r[k] + j, NR * sizeof(T));
      else std::copy(r[k] + j, r[k] + j + nv, tile + k * NR);
    }
  kernel(tile, NR);
  for (int k = 0; k < mv; ++k) {
    if (whole) std::memcpy(r[k] + j, tile + k * NR, NR * sizeof(T));
    else std::copy(tile + k * NR, tile + k * NR + nv, r[k] + j);
  }
}

// How many adjacent packed B slivers Kernel::run_packed takes at once (Kernel::kSlivers, else 1):
// given nv > NR columns it reads the next sliver kc * NR values after the first.
template <class Kernel, class = void>
struct SliversPerTile : std::integral_constant<int64_t, 1> {};
template <class Kernel>
struct SliversPerTile<Kernel, std::void_t<decltype(Kernel::kSlivers)>>
    : std::integral_constant<int64_t, Kernel::kSlivers> {};

// Whether Kernel::run_packed rounds a tile into a 16-bit C itself (Kernel::kRounds16: its extra
// arguments out, ld_out); for other kernels the driver rounds each block of rows after they store it.
template <class Kernel, class = void>
struct Rounds16 : std::false_type {};
template <class Kernel>
struct Rounds16<Kernel, std::void_t<decltype(Kernel::kRounds16)>> : std::bool_constant<Kernel::kRounds16> {};

template <class Kernel, typename T>
void gemm_blocked(const GemmArgs<T>& g) {
  constexpr int64_t MR = Kernel::MR, NR = Kernel::NR, kSlivers = SliversPerTile<Kernel>::value;
  constexpr int64_t KC = kGemmKC;    // a kc x NR sliver of B stays in L1
  constexpr int64_t MC = MR * 16;    // an MC x kc block of A stays in L2
  constexpr int64_t NC_TILES = 16;   // a kc x NC block of packed B (NC = 16 NR) stays in L2
  const int64_t n_tiles = (g.N + NR - 1) / NR;
  // Packing B pays off once its block is reused by more than one row tile. A only when strided in K:
  // with unit K stride its rows stream well from L2, and packing them costs more than it saves.
  const bool pack_B = g.M > MR || g.b_packed || g.a.is_rows();
  // Whether the micro-kernel rounds the last K block's tiles into a 16-bit C itself: a tile's columns
  // must then lie in one of its column blocks.
  const bool kernel_rounds = Rounds16<Kernel>::value && pack_B &&
                             (!g.c16.block_cols || g.c16.block_cols % (kSlivers * NR) == 0);
  const int64_t n_pad = n_tiles * NR;  // row length of a packed-by-the-caller B block
  static_assert(!std::is_same_v<T, float> || (NR == kGemmNR && KC == kGemmKC), "gemm_packed_b_offset's layout");
  auto run_columns = [&](int64_t t_begin, int64_t t_end) {
    thread_local std::vector<T> a_buf, b_buf;
    thread_local std::vector<const T*> row_buf;
    const bool pack_A = (g.a.form == GemmA<T>::Form::strided && g.a.cs != 1) || g.a.is_cols();
    T* bp = pack_B && !g.b_packed ? gemm_buffer(b_buf, size_t(KC * NC_TILES * NR)) : nullptr;
    T* ap = pack_A ? gemm_buffer(a_buf, size_t(KC * MC)) : nullptr;
    // Unpacked A with packed B: the rows of the current MC x kc block, padded to whole MR tiles with
    // the last row (rows past the edge are computed, never stored).
    const T** rows = !pack_A && pack_B ? (row_buf.resize(MC), row_buf.data()) : nullptr;
    for (int64_t tb = t_begin; tb < t_end; tb += NC_TILES) {
      const int64_t te = std::min(tb + NC_TILES, t_end);
      for (int64_t p0 = 0; p0 < g.K; p0 += KC) {
        const int64_t kc = std::min(KC, g.K - p0);
        const GemmInit init = p0 == 0 ? g.init : GemmInit::accumulate;
        const bool last = p0 + kc == g.K;
        const bool relu = g.relu && last;  // only the final sums are clamped
        if (g.b_packed) bp = const_cast<T*>(g.B) + p0 * n_pad + tb * kc * NR;
        else if (pack_B) pack_b<T, NR>(g.B + p0 * g.ldb, g.ldb, kc, tb * NR, te - tb, g.N, bp);
        for (int64_t i0 = 0; i0 < g.M; i0 += MC) {
          const int64_t i1 = std::min(i0 + MC, g.M);
          if (g.a.is_cols()) pack_a_cols<T, MR>(g.a.ptrs, g.a.run, g.a.run_stride, i0, p0, kc, i1 - i0, ap);
          else if (pack_A) pack_a<T, MR>(g.a.data + i0 * g.a.rs + p0 * g.a.cs, g.a.rs, g.a.cs, kc, i1 - i0, ap);
          if (rows) {
            for (int64_t i = i0; i < i1; ++i) rows[i - i0] = (g.a.is_rows() ? g.a.ptrs[i] : g.a.data + i * g.a.rs) + p0;
            for (int64_t i = i1; i < i0 + (i1 - i0 + MR - 1) / MR * MR; ++i) rows[i - i0] = rows[i1 - 1 - i0];
          }
          for (int64_t t = tb; t < te; ++t) {
            const int64_t j = t * NR;
            const T* bias_col = init == GemmInit::bias_col ? g.bias + j : nullptr;
            if (pack_B) {  // the common case: no strides left in the micro-kernel's loop
              const int64_t slivers = std::min(kSlivers, te - t);
              const int nv = int(std::min(slivers * NR, g.N - j));
              const T* b = bp + (t - tb) * kc * NR;
              for (int64_t i = i0; i < i1; i += MR) {
                const int mv = int(std::min(MR, g.M - i));
                const T* bias = init == GemmInit::bias_row ? g.bias + i : bias_col;
                const T* panel = pack_A ? ap + (i - i0) * kc : nullptr;
                const T* const* tile_rows = rows ? rows + (i - i0) : nullptr;
                if constexpr (std::is_same_v<T, float> && Rounds16<Kernel>::value)
                  if (g.c16 && last && kernel_rounds) {
                    T* c = g.C + i * g.ldc + j;
                    const int64_t at = g.c16.offset(i, j);
                    if (g.c16.bf16)
                      Kernel::run_packed(kc, panel, tile_rows, mv, b, nv, c, g.ldc, init, bias, relu,
                                         static_cast<c10::BFloat16*>(g.c16.data) + at, g.c16.ld);
                    else
                      Kernel::run_packed(kc, panel, tile_rows, mv, b, nv, c, g.ldc, init, bias, relu,
                                         static_cast<c10::Half*>(g.c16.data) + at, g.c16.ld);
                    continue;
                  }
                on_c_tile<MR, kSlivers * NR>(g, i, mv, j, nv, init, [&](T* c, int64_t ldc) {
                  Kernel::run_packed(kc, panel, tile_rows, mv, b, nv, c, ldc, init, bias, relu);
                });
              }
              t += slivers - 1;
              continue;
            }
            const int nv = int(std::min(NR, g.N - j));
            const T* b = g.B + p0 * g.ldb + j;
            for (int64_t i = i0; i < i1; i += MR) {
              const int mv = int(std::min(MR, g.M - i));
              const T* bias = init == GemmInit::bias_row ? g.bias + i : bias_col;
              on_c_tile<MR, NR>(g, i, mv, j, nv, init, [&](T* c, int64_t ldc) {
                if (pack_A) Kernel::run(kc, ap + (i - i0) * kc, 1, MR, mv, b, g.ldb, nv, c, ldc, init, bias, relu);
                else
                  Kernel::run(kc, g.a.data + i * g.a.rs + p0 * g.a.cs, g.a.rs, g.a.cs, mv, b, g.ldb, nv, c, ldc, init, bias,
                              relu);
              });
            }
          }
          // A 16-bit C that the kernel does not round into: the block's final sums, just stored (in
          // L2 at most), rounded into it row by row.
          if constexpr (std::is_same_v<T, float>)
            if (g.c16 && last && !kernel_rounds)
              gemm_store16(Kernel::kIsa, g.c16, g.C + i0 * g.ldc + tb * NR, g.ldc, i0, tb * NR, int(i1 - i0),
                           int(std::min(te * NR, g.N) - tb * NR));
        }
      }
    }
  };
  if (g.parallel && n_tiles > 1) at::parallel_for(0, n_tiles, 1, run_columns);
  else run_columns(0, n_tiles);
}

}  // namespace cuconv::cpu
