// The grad weight of grouped_taps' convs (grouped_taps.h). AVX-512: per (group or pack of groups,
// kernel row, 8 input channels, 16 output channels) the row's three taps at once where the stride
// along the rows is 1x or 2x the dilation (wgrad_row_taps), else per (group, tap, 16 x 16 channels)
// (wgrad_block), over the zero-padded group planes (grouped_taps_planes.h) and grad_output split
// per group. AVX2: read in place (wgrad_in_place_avx2). Every weight is one FMA chain over the
// output pixels in order, whatever the thread count or path.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/conv2d/grouped_taps.h"
#include "cpu/conv2d/grouped_taps_planes.h"
#include "cpu/isa.h"
#include "cpu/scratch.h"
#include "cpu/sizes.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's _mm512_permutexvar_ps and _mm512_broadcast_f32x4 pass a deliberately uninitialised
// placeholder (_mm512_undefined_ps), which -Wmaybe-uninitialized reports once per use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace cuconv::cpu {

#if defined(__x86_64__) || defined(__i386__)

using namespace grouped_taps_detail;

namespace {

// Rows m0..m1 of the NHWC matrix src (M x G * Kg) as G matrices M x Kg, one after the other.
CUCONV_AVX2 void split_groups(const float* src, int64_t m0, int64_t m1, int64_t G, int64_t Kg, int64_t M, float* dst) {
  for (int64_t g = 0; g < G; ++g) copy_runs(src + (m0 * G + g) * Kg, G * Kg, m1 - m0, Kg, dst + (g * M + m0) * Kg);
}

// Rows m0..m1 of the NHWC matrix src (M x G * Kg, Kg = 16 / P) as packs of P groups, one M x 16
// matrix per pack after the other, each row in the packed order (the last pack's missing groups zero).
template <int P>
CUCONV_AVX512 void split_packs(const float* src, int64_t m0, int64_t m1, int64_t G, int64_t M, float* dst) {
  const int64_t K = G * (16 / P), packs = ceil_div(G, int64_t(P));
  const __m512i order = to_packed_order<P>();
  for (int64_t v = 0; v < packs; ++v) {
    const int valid = int(std::min<int64_t>(P, G - v * P)) * (16 / P);
    const __mmask16 lanes = __mmask16(valid == 16 ? 0xFFFF : (1u << valid) - 1);
    for (int64_t m = m0; m < m1; ++m)
      _mm512_storeu_ps(dst + (v * M + m) * 16,
                       _mm512_permutexvar_ps(order, _mm512_maskz_loadu_ps(lanes, src + m * K + v * 16)));
  }
}

// The grad weight's block of 16 input channels (c0.., of tap `tap`) x 16 output channels: per pixel
// m, one vector of grad_output times 16 broadcasts of the input channels under the tap, summed over
// m in order. x points at the group's plane plus the tap's offset plus c0; gy at the pixel-0 value
// of the block's first output channel, pixels ld apart. out: [c][16 output channels].
CUCONV_AVX512 __attribute__((noinline)) void wgrad_block(const float* x, const int64_t* origin, int64_t M,
                                                          const float* gy, int64_t ld, __mmask16 lanes, float* out) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t m = 0; m < M; ++m) {
    const float* a = x + origin[m];
    const __m512 b = _mm512_maskz_loadu_ps(lanes, gy + m * ld);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), b, acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(out + 16 * i, acc[i]);
}

// The grad weight's block of 8 input channels x 16 output channels for the three taps of one kernel
// row at once, where the stride along the rows is the dilation: input pixel u of an output row is
// under tap s for output pixel u - s, so its 8 broadcasts feed 24 FMAs against the last three
// grad_output vectors (24 sums, 3 vectors and a broadcast in the 32 registers), where wgrad_block
// loads 17 values per 16 FMAs. Every weight is still one FMA chain over the output pixels in order,
// so the bits are wgrad_block's. MASK: the taps that have an output pixel for this u.
// Packed groups (P > 1, NC = Cg channels): lanes k * P + i, grad_output in the packed order, the
// input broadcast P values at a time.
template <int MASK, int P, int NC>
CUCONV_AVX512 CUCONV_INLINE void wgrad_row_pixel(const float* x, __m512 g0, __m512 g1, __m512 g2,
                                                 __m512 (&acc)[3][NC]) {
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    const __m512 b = broadcast_groups<P>(x + c * P);
    if (MASK & 1) acc[0][c] = _mm512_fmadd_ps(b, g0, acc[0][c]);
    if (MASK & 2) acc[1][c] = _mm512_fmadd_ps(b, g1, acc[1][c]);
    if (MASK & 4) acc[2][c] = _mm512_fmadd_ps(b, g2, acc[2][c]);
  }
}

// rows: per output row (n, oh) in order, its pixel 0's window origin, from x (the group's plane plus
// the kernel row's offset and the block's first channel), Q >= 2 pixels each; an input pixel is step
// further along;
// gy at the block's first output channel of pixel 0, pixels ld apart. out: [s][c][16].
// ST: the stride along the rows in dilation steps (1 or 2). At ST = 2 output pixel t reads input
// pixels 2t, 2t + 1 and 2t + 2: pixel 2t is under tap 0 for t and tap 2 for t - 1, pixel 2t + 1
// under tap 1 for t, so two input pixels' 16 broadcasts feed 24 FMAs.
template <int P, int NC, int ST>
CUCONV_AVX512 __attribute__((noinline)) void wgrad_row_taps(const float* x, const int64_t* rows, int64_t nrows,
                                                             int64_t Q, int64_t step, const float* gy, int64_t ld,
                                                             __mmask16 lanes, float* out) {
  __m512 acc[3][NC];
#pragma GCC unroll 3
  for (int s = 0; s < 3; ++s)
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) acc[s][c] = _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t row = 0; row < nrows; ++row) {
    const float* xr = x + rows[row];
    const float* gr = gy + row * Q * ld;
    if constexpr (ST == 2) {
      __m512 cur = _mm512_maskz_loadu_ps(lanes, gr), prev;
      wgrad_row_pixel<1, P, NC>(xr, cur, zero, zero, acc);
      wgrad_row_pixel<2, P, NC>(xr + step, zero, cur, zero, acc);
      for (int64_t t = 1; t < Q; ++t) {
        prev = cur, cur = _mm512_maskz_loadu_ps(lanes, gr + t * ld);
        wgrad_row_pixel<5, P, NC>(xr + 2 * t * step, cur, zero, prev, acc);
        wgrad_row_pixel<2, P, NC>(xr + (2 * t + 1) * step, zero, cur, zero, acc);
      }
      wgrad_row_pixel<4, P, NC>(xr + 2 * Q * step, zero, zero, cur, acc);
      continue;
    }
    // The row's ends in straight-line code (a switch on the taps present ran a third of the time in
    // its jumps): u = 0 and 1, then every tap, then u = Q and Q + 1.
    __m512 g0 = _mm512_maskz_loadu_ps(lanes, gr), g1 = zero, g2 = zero;
    wgrad_row_pixel<1, P, NC>(xr, g0, g1, g2, acc);
    g1 = g0;
    g0 = _mm512_maskz_loadu_ps(lanes, gr + ld);
    wgrad_row_pixel<3, P, NC>(xr + step, g0, g1, g2, acc);
    for (int64_t u = 2; u < Q; ++u) {
      g2 = g1, g1 = g0, g0 = _mm512_maskz_loadu_ps(lanes, gr + u * ld);
      wgrad_row_pixel<7, P, NC>(xr + u * step, g0, g1, g2, acc);
    }
    g2 = g1, g1 = g0;
    wgrad_row_pixel<6, P, NC>(xr + Q * step, g0, g1, g2, acc);
    wgrad_row_pixel<4, P, NC>(xr + (Q + 1) * step, g0, g1, g1, acc);
  }
#pragma GCC unroll 3
  for (int s = 0; s < 3; ++s)
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) _mm512_storeu_ps(out + (s * NC + c) * 16, acc[s][c]);
}

// AVX2 grad weight, read in place: the vector lanes are 8 input channels of a group (one pixel's
// run in the NHWC input, at most 8 valid: masked loads for a partial block), times broadcasts of 4
// output channels of grad_output, for up to 3 taps of one kernel row at once: 12 accumulators fed
// by 3 vector loads and 4 broadcasts per pixel, where an 8 x 8 block of the kind above took 9 loads
// per 8 FMAs over a zero-padded copy of the whole input that cost as much as its products.
// A run is `count` consecutive output pixels of one row: tap t's input pixel at offset x[t] from the
// item's input base, step[t] apart (x[t] < 0: the tap lies outside the input for every pixel of the
// run, which reads the zero vector), grad_output's at offset gy from its base, K apart. Offsets, so
// that one list serves every group and channel block.
struct TapRun {
  int64_t x[3], step[3], gy, count;
};

alignas(32) const float kZeros[8] = {};

// The lanes of an item: 8 input channels of one group, fewer (masked), or the 4 input channels of
// each of two adjacent groups of 4 -> 4 channels (ResNeXt 32x4d), whose 8 output channels of
// grad_output are one load, spread per output channel j to lanes by group (j, j, j, j, 4 + j, ...).
enum class WgradLanes { full, masked, pair };

template <int NT, WgradLanes kLanes>
CUCONV_AVX2 __attribute__((noinline)) void wgrad_runs_avx2(const TapRun* runs, int64_t nruns, const float* xb,
                                                             const float* gyb, int64_t ld, int cn, float* acc,
                                                             int64_t tap_ld) {
  constexpr bool kMasked = kLanes == WgradLanes::masked, kPair = kLanes == WgradLanes::pair;
  const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(cn), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i spread[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) spread[j] = _mm256_setr_epi32(j, j, j, j, 4 + j, 4 + j, 4 + j, 4 + j);
  __m256 a[NT][4];
#pragma GCC unroll 3
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) a[t][j] = _mm256_loadu_ps(acc + t * tap_ld + 8 * j);
  for (const TapRun* run = runs; run < runs + nruns; ++run) {
    const float* x[NT];
    int64_t step[NT];
#pragma GCC unroll 3
    for (int t = 0; t < NT; ++t) {
      x[t] = run->x[t] < 0 ? kZeros : xb + run->x[t];
      step[t] = run->x[t] < 0 ? 0 : run->step[t];
    }
    const float* gy = gyb + run->gy;
    for (int64_t i = 0; i < run->count; ++i, gy += ld) {
      __m256 xv[NT];
#pragma GCC unroll 3
      for (int t = 0; t < NT; ++t) {
        xv[t] = kMasked ? _mm256_maskload_ps(x[t], lanes) : _mm256_loadu_ps(x[t]);
        x[t] += step[t];
      }
      const __m256 gy8 = kPair ? _mm256_loadu_ps(gy) : _mm256_setzero_ps();
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256 b = kPair ? _mm256_permutevar8x32_ps(gy8, spread[j]) : _mm256_broadcast_ss(gy + j);
#pragma GCC unroll 3
        for (int t = 0; t < NT; ++t) a[t][j] = _mm256_fmadd_ps(xv[t], b, a[t][j]);
      }
    }
  }
#pragma GCC unroll 3
  for (int t = 0; t < NT; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(acc + t * tap_ld + 8 * j, a[t][j]);
}

template <WgradLanes kLanes>
void wgrad_runs_avx2_nt(int nt, const TapRun* runs, int64_t nruns, const float* xb, const float* gyb, int64_t ld,
                        int cn, float* acc, int64_t tap_ld) {
  if (nt == 3) wgrad_runs_avx2<3, kLanes>(runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else if (nt == 2) wgrad_runs_avx2<2, kLanes>(runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else wgrad_runs_avx2<1, kLanes>(runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
}

void wgrad_runs_avx2_on(WgradLanes mode, int nt, const TapRun* runs, int64_t nruns, const float* xb,
                        const float* gyb, int64_t ld, int cn, float* acc, int64_t tap_ld) {
  if (mode == WgradLanes::full) wgrad_runs_avx2_nt<WgradLanes::full>(nt, runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else if (mode == WgradLanes::pair) wgrad_runs_avx2_nt<WgradLanes::pair>(nt, runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
  else wgrad_runs_avx2_nt<WgradLanes::masked>(nt, runs, nruns, xb, gyb, ld, cn, acc, tap_ld);
}

// The runs of output rows row0..row1 for kernel row r and taps s0..s0+nt-1: per row whose input row
// lies inside, the pixels whose taps all lie inside as one run, each edge pixel as its own.
void tap_runs(const Conv2dParams& p, int64_t row0, int64_t row1, int64_t r, int64_t s0, int nt,
              std::vector<TapRun>& runs) {
  const int64_t Q = p.Q, C = p.C, K = p.K;
  int64_t lo = 0, hi = 0;
  inside_range(s0, nt, p.dil_w, p.pad_w, p.stride_w, p.W, Q, lo, hi);
  runs.clear();
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t n = row / p.P, oh = row % p.P, ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
    if (ih < 0 || ih >= p.H) continue;  // every product of this row is with padding
    const auto add_run = [&](int64_t ow, int64_t count) {
      TapRun run{};
      run.gy = (row * Q + ow) * K, run.count = count;
      for (int t = 0; t < nt; ++t) {
        const int64_t iw = ow * p.stride_w - p.pad_w + (s0 + t) * p.dil_w;
        run.x[t] = iw >= 0 && iw < p.W ? ((n * p.H + ih) * p.W + iw) * C : -1;
        run.step[t] = p.stride_w * C;
      }
      runs.push_back(run);
    };
    for (int64_t ow = 0; ow < lo; ++ow) add_run(ow, 1);
    if (lo < hi) add_run(lo, hi - lo);
    for (int64_t ow = hi; ow < Q; ++ow) add_run(ow, 1);
  }
}

// The AVX2 grad weight (grouped_taps_wgrad): items of one group and 8 input channels (or of two
// groups of 4 -> 4 channels, WgradLanes::pair), each thread's items in one range whose accumulators ([tap][Kg][8] per item) stay in memory between chunks of
// output rows; per chunk, kernel row and up to 3 taps of it, the runs of each output row (tap_runs)
// in pixel order for every item of the range, so a chunk's input pixels are read for all of the
// thread's groups while they are in cache. Every weight is one FMA chain over the output pixels in
// order, as on AVX-512 (the zero products it skips on padding add +0 to a sum that starts at +0 and
// so is never -0: the same bits for finite inputs).
void wgrad_in_place_avx2(const Conv2dParams& p, const float* gy, const float* x, float* gw) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), K = p.K;
  const int64_t R = p.R, S = p.S, taps = R * S, item_acc = taps * Kg * 8, rows = p.N * p.P;
  // Items: (group, 8 input channels), or pairs of groups of 4 -> 4 (the last one alone for odd G).
  const bool pairs = Cg == 4 && Kg == 4;
  const int64_t cblocks = ceil_div(Cg, 8), items = pairs ? ceil_div(G, 2) : G * cblocks;
  struct Item {
    int64_t g, c0, groups;
    int cn;
    WgradLanes lanes;
  };
  const auto item_of = [&](int64_t item) {
    if (pairs) {
      const int64_t g = 2 * item, groups = std::min<int64_t>(2, G - g);
      return Item{g, 0, groups, int(4 * groups), groups == 2 ? WgradLanes::pair : WgradLanes::masked};
    }
    const int64_t c0 = item % cblocks * 8, cn = std::min<int64_t>(8, Cg - c0);
    return Item{item / cblocks, c0, 1, int(cn), cn == 8 ? WgradLanes::full : WgradLanes::masked};
  };
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    // Output rows per chunk: the input rows under them, across this range's channels, in 128 KiB.
    const int64_t chunk_bytes = p.stride_h * p.W * (end - begin) * 8 * int64_t(sizeof(float));
    const int64_t chunk_rows = std::clamp<int64_t>((int64_t(128) << 10) / std::max<int64_t>(1, chunk_bytes), 1, p.P);
    std::vector<float> acc((end - begin) * item_acc, 0.f);
    std::vector<TapRun> runs;
    for (int64_t row0 = 0; row0 < rows; row0 += chunk_rows) {
      const int64_t row1 = std::min(rows, row0 + chunk_rows);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s0 = 0; s0 < S; s0 += 3) {
          const int nt = int(std::min<int64_t>(3, S - s0));
          tap_runs(p, row0, row1, r, s0, nt, runs);
          if (runs.empty()) continue;
          for (int64_t item = begin; item < end; ++item) {
            const Item it = item_of(item);
            const float* xb = x + it.g * Cg + it.c0;
            for (int64_t k0 = 0; k0 < Kg; k0 += 4) {
              float* a = acc.data() + (item - begin) * item_acc + ((r * S + s0) * Kg + k0) * 8;
              wgrad_runs_avx2_on(it.lanes, nt, runs.data(), int64_t(runs.size()), xb, gy + it.g * Kg + k0, K, it.cn, a,
                                 Kg * 8);
            }
          }
        }
    }
    for (int64_t item = begin; item < end; ++item) {
      const Item it = item_of(item);
      const float* a = acc.data() + (item - begin) * item_acc;
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t l = 0; l < it.cn; ++l) {
          // lane l: input channel c0 + l of group g, or (pairs) channel l % 4 of group g + l / 4
          const int64_t g = pairs ? it.g + l / 4 : it.g, c = pairs ? l % 4 : it.c0 + l;
          for (int64_t tap = 0; tap < taps; ++tap) gw[((g * Kg + k) * Cg + c) * taps + tap] = a[(tap * Kg + k) * 8 + l];
        }
    }
  });
}

}  // namespace

namespace {
// wgrad_row_taps' shapes: 3 taps per kernel row, the stride along the rows the dilation or twice
// it, rows of at least 4 pixels (on 2-pixel rows, 1024 in 32 groups at 2x2, the 16 x 16 blocks ran
// faster).
bool wgrad_rows_fit(const Conv2dParams& p) {
  return p.S == 3 && (p.stride_w == p.dil_w || p.stride_w == 2 * p.dil_w) && p.Q >= 4;
}
}  // namespace

bool grouped_taps_wgrad_fits(const Conv2dParams& p, Isa isa) {
  const int64_t Kg = p.K_per_group();
  return group_pack(p, isa) == 1 || wgrad_rows_fit(p) || Kg % 16 == 0 || (Kg % 8 == 0 && p.P * p.Q <= 4);
}

void grouped_taps_wgrad(Isa isa, const Conv2dParams& p, const float* gy, const float* x, float* gw) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), K = p.K;
  const int64_t taps = p.R * p.S, M = p.N * p.P * p.Q;
  if (M == 0) {
    std::fill(gw, gw + K * Cg * taps, 0.f);
    return;
  }
  if (isa == Isa::avx2) return wgrad_in_place_avx2(p, gy, x, gw);
  // AVX-512: a block is 16 input x 16 output channels.
  const int64_t blk = 16, cblocks = ceil_div(Cg, blk), kblocks = ceil_div(Kg, blk);
  if (wgrad_rows_fit(p)) {
    // One item per (group or pack of groups, kernel row, 8 input channels, 16 output channels), its
    // three taps at once (wgrad_row_taps); each weight summed by one thread over every pixel in
    // order. Packed groups (group_pack): all of a pack's channels in one item.
    const int P = group_pack(p, isa);
    const int64_t packs = ceil_div(G, int64_t(P)), NC = P > 1 ? Cg : 8, cb_n = P > 1 ? 1 : ceil_div(Cg, NC);
    const int64_t kb_n = P > 1 ? 1 : kblocks, ld = P > 1 ? 16 : Kg, rows = p.N * p.P;
    const GroupPlanes in(p, x, P);
    // grad_output split per group (or pack, in the packed order), as below
    float* gyp = scratch<float>(Scratch::call, packs * M * ld);
    at::parallel_for(0, M, 256, [&](int64_t m0, int64_t m1) {
      if (P == 2) split_packs<2>(gy, m0, m1, G, M, gyp);
      else if (P == 4) split_packs<4>(gy, m0, m1, G, M, gyp);
      else split_groups(gy, m0, m1, G, Kg, M, gyp);
    });
    std::vector<int64_t> row_origin(rows);
    for (int64_t row = 0; row < rows; ++row) row_origin[row] = in.origin[row * p.Q];
    at::parallel_for(0, packs * p.R * cb_n * kb_n, 1, [&](int64_t begin, int64_t end) {
      alignas(64) float block[3 * 8 * 16];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t kb = item % kb_n, cb = item / kb_n % cb_n, r = item / (kb_n * cb_n) % p.R;
        const int64_t v = item / (kb_n * cb_n * p.R), c0 = cb * NC;
        const int64_t kn = P > 1 ? 16 : std::min(blk, Kg - kb * blk);
        const float* xv = in.xp + v * in.plane + in.off[r * p.S] + c0;
        const float* gyv = gyp + v * M * ld + kb * blk;
        const __mmask16 lanes = __mmask16(kn == 16 ? 0xFFFF : (1u << kn) - 1);
        const int64_t step = p.dil_w * Cg * P;
        const auto run = [&](auto st) {
          constexpr int ST = decltype(st)::value;
          if (P == 2) wgrad_row_taps<2, 8, ST>(xv, row_origin.data(), rows, p.Q, step, gyv, ld, lanes, block);
          else if (P == 4) wgrad_row_taps<4, 4, ST>(xv, row_origin.data(), rows, p.Q, step, gyv, ld, lanes, block);
          else wgrad_row_taps<1, 8, ST>(xv, row_origin.data(), rows, p.Q, step, gyv, ld, lanes, block);
        };
        if (p.stride_w == p.dil_w) run(std::integral_constant<int, 1>{});
        else run(std::integral_constant<int, 2>{});
        // block[(s * NC + c) * 16 + lane]: lane k * P + i is group v * P + i's output channel k
        // (P = 1: kb * 16 + lane)
        for (int64_t lane = 0; lane < kn; ++lane) {
          const int64_t g = v * P + lane % P, k = P > 1 ? lane / P : kb * blk + lane;
          if (g >= G) continue;
          for (int64_t s = 0; s < 3; ++s)
            for (int64_t c = c0; c < std::min(c0 + NC, Cg); ++c)
              gw[((g * Kg + k) * Cg + c) * taps + r * 3 + s] = block[(s * NC + c - c0) * 16 + lane];
        }
      }
    });
    return;
  }
  const GroupPlanes in(p, x);
  // grad_output group by group, [g][m][Kg]: NHWC rows are K apart (a page for 1024 channels), and
  // each block walks all of them once per tap and channel block.
  float* gyp = scratch<float>(Scratch::call, G * M * Kg);
  at::parallel_for(0, M, 256, [&](int64_t m0, int64_t m1) { split_groups(gy, m0, m1, G, Kg, M, gyp); });
  // One item per (group, tap, 16 input channels, 16 output channels): each weight is summed by one
  // thread over every pixel in order, whatever the thread count.
  at::parallel_for(0, G * taps * cblocks * kblocks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float block[16 * 16];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kb = item % kblocks, cb = item / kblocks % cblocks, tap = item / (kblocks * cblocks) % taps;
      const int64_t g = item / (kblocks * cblocks * taps), c0 = cb * blk, k0 = g * Kg + kb * blk;
      const int64_t kn = std::min(blk, Kg - kb * blk);
      const float* xg = in.xp + g * in.plane + in.off[tap] + c0;
      const float* gyg = gyp + g * M * Kg + kb * blk;
      wgrad_block(xg, in.origin.data(), M, gyg, Kg, __mmask16((1u << kn) - 1), block);
      for (int64_t c = c0; c < std::min(c0 + blk, Cg); ++c)
        for (int64_t k = 0; k < kn; ++k) gw[((k0 + k) * Cg + c) * taps + tap] = block[(c - c0) * blk + k];
    }
  });
}

#else  // not x86: the plan never picks grouped_taps here

void grouped_taps_wgrad(Isa, const Conv2dParams&, const float*, const float*, float*) {
  TORCH_CHECK(false, "cuconv: grouped_taps is an AVX2/AVX-512 kernel");
}
bool grouped_taps_wgrad_fits(const Conv2dParams&, Isa) { return false; }

#endif

}  // namespace cuconv::cpu
