// conv2d grad weight on the CPU. The GEMM strategies of plan.h's WgradStrategy share one frame: the
// batch is split into the plan's fixed chunks; each chunk sums partial[CRS, K] = sum over its
// images of A_n * grad_output_n, with A (the input's windows, as the GEMM's rows) in the form the
// strategy gives it; then every output element is summed over the chunk partials in order by one
// thread. The chunking depends on the shapes only, so the bits do not depend on the thread count.
// Winograd, the AVX-512 row kernel and the depthwise kernels have their own files.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "cpu/conv2d/depthwise.h"
#include "cpu/conv2d/grouped.h"
#include "cpu/conv2d/grouped_taps.h"
#include "cpu/conv2d/operands.h"
#include "cpu/conv2d/passes.h"
#include "cpu/conv2d/rows_avx512.h"
#include "cpu/conv2d/winograd.h"
#include "cpu/scratch.h"

namespace cuconv::cpu {
namespace {

// The GEMM strategies' shared geometry, and each worker's buffers.
template <typename T>
struct WgradFrame {
  const WgradPlan& plan;
  const Conv2dParams& p;
  const Blocks16& gy16;  // grad_output when 16-bit (gy is then null)
  int64_t G, Cg, Kg, PQ, HW, CRS;
  int64_t most;         // images in one GEMM at most
  int64_t ldcol, ldg;   // row pitches of NCHW im2col columns and of a copied grad_output
  int64_t Hb, Wb;       // the zero-padded copy of window_runs (undilated windows)

  WgradFrame(const WgradPlan& plan_, const Conv2dParams& p_, const Blocks16& gy16_) : plan(plan_), p(p_), gy16(gy16_) {
    G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
    CRS = Cg * p.R * p.S;
    most = std::min(plan.images_per_gemm, ceil_div(p.N, plan.chunks));
    ldcol = pitch(most * PQ), ldg = pitch(Kg);
    window_extent(p, Hb, Wb);
  }
  // window_runs reads the NHWC input in place when no window leaves it, as the forward does.
  bool window_copy() const {
    return !p.channels_last || p.pad_h > 0 || p.pad_w > 0 || Hb > p.H || Wb > p.W;
  }
  // The worker's A buffer (null when A is read in place).
  T* a_buffer() const {
    switch (plan.strategy) {
      case WgradStrategy::interleaved: return scratch<T>(Scratch::input, most * p.P * Wb * p.R * Cg);
      case WgradStrategy::window_runs: return scratch<T>(Scratch::input, most * Hb * Wb * p.C);
      case WgradStrategy::im2col:
        return scratch<T>(Scratch::input, CRS * (p.channels_last ? most * PQ : ldcol));
      default: return nullptr;
    }
  }
  // The worker's grad_output buffer: NCHW transposes it, NHWC copies it only to a better pitch
  // (or to widen it).
  T* b_buffer() const {
    return p.channels_last && !plan.copy_grad_output && !gy16 ? nullptr : scratch<T>(Scratch::output, most * PQ * ldg);
  }
};

// B: grad_output of images n.. (nb of them), group g, as [positions][Kg].
template <typename T>
void set_grad_output(Isa isa, const WgradFrame<T>& f, const T* gy, int64_t n, int64_t nb, int64_t g, T* gyt,
                     GemmArgs<T>& a) {
  const Conv2dParams& p = f.p;
  if (!p.channels_last) {  // [nb][K][PQ] -> gyt[nb*PQ][Kg], transposed in 8x8 register blocks
    const int64_t at = (n * p.K + g * f.Kg) * f.PQ;
    for (int64_t i = 0; i < nb; ++i) {
      T* dst = gyt + i * f.PQ * f.ldg;
      if constexpr (std::is_same_v<T, float>)
        if (f.gy16) {  // widened as the transpose loads it
          f.gy16.visit([&](const auto* gy_16) { transpose(isa, gy_16 + at + i * p.K * f.PQ, f.PQ, dst, f.ldg, f.Kg, f.PQ); });
          continue;
        }
      transpose(isa, gy + at + i * p.K * f.PQ, f.PQ, dst, f.ldg, f.Kg, f.PQ);
    }
    a.B = gyt, a.ldb = f.ldg;
    return;
  }
  if (f.gy16) {
    // One widening run where grad_output's rows are the group's whole rows and the float32 path would
    // read them in place (its pitch); else row by row into the padded pitch.
    const int64_t ld = f.Kg == p.K && !f.plan.copy_grad_output ? f.Kg : f.ldg;
    f.gy16.widen(n * f.PQ * p.K + g * f.Kg, p.K, nb * f.PQ, f.Kg, reinterpret_cast<float*>(gyt), ld);
    a.B = gyt, a.ldb = ld;
    return;
  }
  const T* gyg = gy + n * f.PQ * p.K + g * f.Kg;
  if (f.plan.copy_grad_output)
    for (int64_t i = 0; i < nb * f.PQ; ++i)
      for (int64_t k = 0; k < f.Kg; ++k) gyt[i * f.ldg + k] = gyg[i * p.K + k];
  a.B = f.plan.copy_grad_output ? gyt : gyg, a.ldb = f.plan.copy_grad_output ? f.ldg : p.K;
}

// A: the windows of images n.. (nb of them), group g, as the strategy reads them. `col` is the
// worker's A buffer; `pos` holds column pointers.
template <typename T>
void set_windows(Isa isa, const WgradFrame<T>& f, const T* x, int64_t n, int64_t nb, int64_t g, T* col,
                 std::vector<const T*>& pos, GemmArgs<T>& a) {
  const Conv2dParams& p = f.p;
  const int64_t HW = f.HW, Cg = f.Cg, PQ = f.PQ, CRS = f.CRS;
  switch (f.plan.strategy) {
    case WgradStrategy::direct:  // 1x1: the input itself, positions along K
      a.a = p.channels_last ? GemmA<T>::strided(x + n * HW * p.C + g * Cg, 1, p.C)
                            : GemmA<T>::strided(x + (n * p.C + g * Cg) * HW, HW, 1);
      return;
    case WgradStrategy::pixel_cols: {  // each position's Cg channels are one run of the input
      const T* xn = x + n * HW * p.C;
      for (int64_t i = 0, m = 0; i < nb; ++i)
        for (int64_t oh = 0; oh < p.P; ++oh)
          for (int64_t ow = 0; ow < p.Q; ++ow, ++m)
            pos[m] = xn + ((i * p.H + oh * p.stride_h) * p.W + ow * p.stride_w) * p.C + g * Cg;
      a.a = GemmA<T>::cols(pos.data());
      return;
    }
    case WgradStrategy::window_runs: {  // one GEMM, each A column the window's R runs of S*C values
      const bool copy = f.window_copy();
      const int64_t ih = copy ? f.Hb : p.H, iw = copy ? f.Wb : p.W;
      for (int64_t i = 0; i < nb && copy; ++i) {
        T* img = col + i * f.Hb * f.Wb * p.C;
        if (p.channels_last) pad_nhwc(p, x + (n + i) * HW * p.C, 1, f.Hb, f.Wb, img);
        else pad_nchw_to_nhwc(isa, p, x + (n + i) * p.C * HW, f.Hb, f.Wb, img);
      }
      window_row_starts(p, copy ? col : x + n * HW * p.C, nb, ih, iw, 0, 0, pos.data());
      a.a = GemmA<T>::cols(pos.data(), p.S * p.C, iw * p.C);
      return;
    }
    case WgradStrategy::interleaved:  // R copies of the input rows, each window one run of S*R*Cg values
      interleave_rows(p, x + n * p.C * HW, nb, g, col, pos.data());
      a.a = GemmA<T>::cols(pos.data());
      return;
    case WgradStrategy::im2col:
      if (!p.channels_last) {
        const T* xg = x + (n * p.C + g * Cg) * HW;
        for (int64_t i = 0; i < nb; ++i) im2col_nchw(p, xg + i * p.C * HW, col + i * PQ, f.ldcol);
        a.a = GemmA<T>::strided(col, f.ldcol, 1);
      } else {
        const T* xn = x + n * HW * p.C;
        for (int64_t i = 0; i < nb; ++i) im2col_nhwc(p, xn + i * HW * p.C, g, col + i * PQ * CRS);
        a.a = GemmA<T>::strided(col, 1, CRS);
      }
      return;
    default: TORCH_CHECK(false, "cuconv: not a GEMM grad-weight strategy: ", name(f.plan.strategy));
  }
}

// gw[g*Kg + k][c][r][s] = sum over chunks in order of partial[chunk][g][i][k]. Walked in blocks of
// kBlock k's down all rows i, so each partial is read in contiguous runs (not one line per element)
// and the kBlock output rows being written stay in cache.
template <typename T>
void sum_partials(const WgradFrame<T>& f, const T* part, T* gw) {
  const Conv2dParams& p = f.p;
  const int64_t G = f.G, Kg = f.Kg, CRS = f.CRS, Cg = f.Cg, RS = p.R * p.S, chunks = f.plan.chunks;
  const WgradPlan::Rows rows = f.plan.rows;
  constexpr int64_t kBlock = 16;
  const int64_t kblocks = ceil_div(Kg, kBlock);
  at::parallel_for(0, G * kblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / kblocks, k0 = (item % kblocks) * kBlock, kn = std::min(kBlock, Kg - k0);
      const T* part_g = part + g * CRS * Kg + k0;
      T* gw_g = gw + (g * Kg + k0) * CRS;
      for (int64_t i = 0; i < CRS; ++i) {
        T acc[kBlock];
        for (int64_t k = 0; k < kn; ++k) acc[k] = part_g[i * Kg + k];
        for (int64_t chunk = 1; chunk < chunks; ++chunk) {
          const T* src = part_g + chunk * G * CRS * Kg + i * Kg;
          for (int64_t k = 0; k < kn; ++k) acc[k] += src[k];
        }
        // Row i is (c, rs) = (i / RS, i % RS) in (c, r, s) order, (i % Cg, i / Cg) in (r, s, c) order,
        // and (c, r, s) = (i % Cg, (i / Cg) % R, i / (R*Cg)) in the row-interleaved (s, r, c) order.
        const int64_t o = rows == WgradPlan::Rows::src ? (i % Cg) * RS + ((i / Cg) % p.R) * p.S + i / (p.R * Cg)
                          : rows == WgradPlan::Rows::rsc ? (i % Cg) * RS + i / Cg
                                                          : i;
        for (int64_t k = 0; k < kn; ++k) gw_g[k * CRS + o] = acc[k];
      }
    }
  });
}

template <typename T>
void backward_weight_gemm(Isa isa, const WgradPlan& plan, const Conv2dParams& p, const T* gy, const T* x, T* gw,
                          const Blocks16& gy16) {
  const WgradFrame<T> f(plan, p, gy16);
  const int64_t G = f.G, CRS = f.CRS, Kg = f.Kg, chunks = plan.chunks, per = plan.images_per_gemm;
  T* part = scratch<T>(Scratch::call, chunks * G * CRS * Kg);
  const bool split = gemm_should_split(chunks);
  const bool uses_pos = plan.strategy == WgradStrategy::interleaved || plan.strategy == WgradStrategy::pixel_cols ||
                        plan.strategy == WgradStrategy::window_runs;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> pos;
    if (uses_pos) pos.resize(f.most * f.PQ);
    T* col = f.a_buffer();
    T* gyt = f.b_buffer();
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t n0 = chunk * p.N / chunks, n1 = (chunk + 1) * p.N / chunks;
      for (int64_t n = n0; n < n1; n += per)
        for (int64_t g = 0; g < G; ++g) {
          const int64_t nb = std::min(per, n1 - n);
          GemmArgs<T> a;
          a.M = CRS, a.N = Kg, a.K = nb * f.PQ;
          a.C = part + (chunk * G + g) * CRS * Kg, a.ldc = Kg;
          a.init = n == n0 ? GemmInit::zero : GemmInit::accumulate;
          a.parallel = split;
          set_grad_output(isa, f, gy, n, nb, g, gyt, a);
          set_windows(isa, f, x, n, nb, g, col, pos, a);
          gemm(isa, a);
        }
    }
  });
  sum_partials(f, part, gw);
}

}  // namespace

template <typename T>
void conv2d_wgrad(Isa isa, const WgradPlan& plan, const Conv2dParams& p, const T* gy, const T* x, T* gw,
                  const Blocks16& gy16) {
  TORCH_INTERNAL_ASSERT(!gy16 || (std::is_same_v<T, float> && takes_blocks16(plan.strategy)));
  switch (plan.strategy) {
    case WgradStrategy::winograd:
    case WgradStrategy::rows_avx512:
    case WgradStrategy::grouped_taps:
      if constexpr (std::is_same_v<T, float>) {
        if (plan.strategy == WgradStrategy::winograd) return winograd_conv2d_wgrad(isa, p, gy, x, gw);
        if (plan.strategy == WgradStrategy::grouped_taps) return grouped_taps_wgrad(isa, p, gy, x, gw);
        return conv2d_wgrad_rows_avx512(p, gy, x, gw);
      }
      TORCH_CHECK(false, "cuconv: CPU grad-weight strategy ", name(plan.strategy), " takes float32 only");
    case WgradStrategy::depthwise: return depthwise_wgrad(isa, p, plan.chunks, gy, x, gw);
    case WgradStrategy::grouped: return grouped_wgrad(isa, p, plan.chunks, gy, x, gw);
    case WgradStrategy::nchw_as_nhwc:
      TORCH_CHECK(false, "cuconv: the nchw_as_nhwc grad weight transposes its tensors in runner.cpp");
    case WgradStrategy::amx_direct:
      TORCH_CHECK(false, "cuconv: runner.cpp runs amx_direct's grad weight on the bfloat16 tensors");
    default: return backward_weight_gemm(isa, plan, p, gy, x, gw, gy16);
  }
}

template decltype(conv2d_wgrad<float>) conv2d_wgrad<float>;
template decltype(conv2d_wgrad<double>) conv2d_wgrad<double>;

}  // namespace cuconv::cpu
