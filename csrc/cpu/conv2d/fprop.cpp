// conv2d forward on the CPU, one function per strategy of plan.h's FpropStrategy (Winograd, the
// AVX-512 row kernels and the depthwise kernels live in their own files), and the switch over them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "cpu/conv2d/depthwise.h"
#include "cpu/conv2d/grouped.h"
#include "cpu/conv2d/grouped_taps.h"
#include "cpu/conv2d/operands.h"
#include "cpu/conv2d/passes.h"
#include "cpu/conv2d/rows_avx512.h"
#include "cpu/conv2d/taps.h"
#include "cpu/conv2d/winograd.h"
#include "cpu/float32_copies.h"
#include "cpu/scratch.h"

namespace cuconv::cpu {
namespace {

// The weight as forward_nhwc_rows' GEMMs read it, per (g, pass): [s*Cg + c][k] for kernel row
// r = pass in place, [(s*R + r)*Cg + c][k] interleaved.
template <typename T>
at::Tensor nhwc_rows_weight(const Conv2dParams& p, const T* w, const at::TensorOptions& opts, int64_t& wstride) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), RS = p.R * p.S, RC = p.R * Cg;
  const bool in_place = nhwc_reads_rows_in_place(p);
  const int64_t passes = in_place ? p.R : 1, Kd = in_place ? p.S * Cg : p.S * RC;
  return weight_operand<T>(p.groups * passes, Kd, Kg, opts, wstride, [&](int64_t b, int64_t i) {
    const int64_t g = b / passes, c = i % Cg;
    const int64_t r = in_place ? b % passes : (i / Cg) % p.R, s = in_place ? i / Cg : i / RC;
    return std::pair<const T*, int64_t>(w + ((g * Kg) * Cg + c) * RS + r * p.S + s, Cg * RS);
  });
}

// nhwc_rows / nhwc_interleaved: GEMMs whose A rows are pointers, one per kernel row into the input
// in place (or a zero-padded copy when the windows leave it), or one over the row-interleaved buffer.
template <typename T>
void forward_nhwc_rows(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                       const at::TensorOptions& opts, const Blocks16& y16) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t RC = p.R * Cg;
  const bool in_place = nhwc_reads_rows_in_place(p);
  const int64_t passes = in_place ? p.R : 1, Kd = in_place ? p.S * Cg : p.S * RC;  // GEMMs per item, their K
  // The input rows and columns the windows cover, from -pad; in place needs a padded copy only when
  // they leave the image.
  int64_t Hp = 0, Wp = 0;
  window_extent(p, Hp, Wp);
  const bool padded = in_place && (p.pad_h > 0 || p.pad_w > 0 || Hp > p.H || Wp > p.W);
  const int64_t Hb = padded ? Hp : p.H, Wb = padded ? Wp : p.W;
  int64_t wstride = 0;
  const at::Tensor wop = nhwc_rows_weight(p, w, opts, wstride);
  const int64_t per = images_per_gemm(p.N, PQ);
  const int64_t blocks = ceil_div(p.N, per);
  const bool split = gemm_should_split(blocks * G);
  at::parallel_for(0, blocks * G, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> rows;
    rows.resize(per * PQ);
    T* buf = !in_place ? scratch<T>(Scratch::input, per * p.P * Wp * RC)
             : padded  ? scratch<T>(Scratch::input, per * Hb * Wb * p.C)
                       : nullptr;
    // With y16, the earlier passes' sums; the last pass rounds its tiles into y16.
    T* stage = y16 ? scratch<T>(Scratch::output, per * PQ * Kg) : nullptr;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n0 = (item / G) * per, nb = std::min(per, p.N - n0), g = item % G;
      const T* base = x + n0 * HW * p.C;
      if (!in_place) interleave_rows(p, base, nb, g, buf, rows.data());
      if (padded) pad_nhwc(p, base, nb, Hb, Wb, buf), base = buf;
      for (int64_t r = 0; r < passes; ++r) {
        if (in_place) window_row_starts(p, base, nb, Hb, Wb, r, g * Cg, rows.data());
        GemmArgs<T> a;
        a.M = nb * PQ, a.N = Kg, a.K = Kd;
        a.a = GemmA<T>::rows(rows.data());
        set_weight_operand(a, wop.const_data_ptr<T>() + (g * passes + r) * wstride);
        if (stage) a.C = stage, a.ldc = Kg;
        else a.C = y + n0 * PQ * p.K + g * Kg, a.ldc = p.K;
        a.init = r > 0 ? GemmInit::accumulate : bias ? GemmInit::bias_col : GemmInit::zero;
        a.bias = bias ? bias + g * Kg : nullptr;
        a.relu = relu && r == passes - 1;  // only the final sums are clamped
        if constexpr (std::is_same_v<T, float>)
          if (stage && r == passes - 1) a.c16 = y16.gemm_out(n0 * PQ * p.K + g * Kg, p.K);
        a.parallel = split;
        gemm(isa, a);
      }
    }
  });
}

// nchw_via_nhwc: one image at a time, transposed into a zero-padded NHWC copy; each kernel row is
// a GEMM whose A rows point into it, and the PQ x K result, still in cache, is transposed into y.
template <typename T>
void forward_nchw_via_nhwc(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                           const at::TensorOptions& opts, const Blocks16& y16) {
  Conv2dParams q = p;
  q.channels_last = true;
  const int64_t C = p.C, K = p.K, PQ = p.P * p.Q, HW = p.H * p.W;
  int64_t Hb = 0, Wb = 0;
  window_extent(p, Hb, Wb);
  int64_t wstride = 0;
  const at::Tensor wop = nhwc_rows_weight(q, w, opts, wstride);
  const int64_t ldo = pitch(K);
  const bool split = gemm_should_split(p.N);  // same bits: every C element is one thread's FMA chain
  at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> rows;
    rows.resize(PQ);
    T* in = scratch<T>(Scratch::input, Hb * Wb * C);
    T* out = scratch<T>(Scratch::output, PQ * ldo);
    for (int64_t n = begin; n < end; ++n) {
      pad_nchw_to_nhwc(isa, p, x + n * C * HW, Hb, Wb, in);
      for (int64_t r = 0; r < p.R; ++r) {
        window_row_starts(p, in, 1, Hb, Wb, r, 0, rows.data());
        GemmArgs<T> a;
        a.M = PQ, a.N = K, a.K = p.S * C;
        a.a = GemmA<T>::rows(rows.data());
        set_weight_operand(a, wop.const_data_ptr<T>() + r * wstride);
        a.C = out, a.ldc = ldo;
        a.init = r > 0 ? GemmInit::accumulate : bias ? GemmInit::bias_col : GemmInit::zero;
        a.bias = bias;
        a.relu = relu && r == p.R - 1;  // only the final sums are clamped
        a.parallel = split;
        gemm(isa, a);
      }
      if constexpr (std::is_same_v<T, float>) {
        if (y16) {  // rounded into the 16-bit output as the transpose stores it
          y16.visit([&](auto* y_16) { transpose(isa, out, ldo, y_16 + n * K * PQ, PQ, PQ, K); });
          continue;
        }
      }
      transpose(isa, out, ldo, y + n * K * PQ, PQ, PQ, K);
    }
  });
}

// nchw_im2col / nchw_direct: y_n[K, PQ] = W[K, CRS] * col_n[CRS, PQ] (+ bias per row), one image
// per GEMM; 1x1 stride-1 unpadded convs read the input as col_n.
template <typename T>
void forward_nchw_gemm(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                       const Blocks16& y16) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t CRS = Cg * p.R * p.S;
  const bool direct = reads_input_directly(p);
  // An image's columns in chunks of output rows whose im2col stays within 256 KiB, so the GEMM packs
  // them from L2 (a 7x7 3-channel stem at 64x64: 588 KiB per image). Each output is summed over the
  // same K in the same order whatever the chunk: the same bits.
  const int64_t chunk_rows = direct ? p.P
                                    : std::clamp<int64_t>((int64_t(256) << 10) / (CRS * int64_t(sizeof(T)) * p.Q), 1, p.P);
  const int64_t ldcol = pitch(chunk_rows * p.Q);
  const bool split = gemm_should_split(p.N * G);
  at::parallel_for(0, p.N * G, 1, [&](int64_t begin, int64_t end) {
    // Columns past PQ are never read (the GEMM masks its edge tiles), so no zeroing is needed.
    T* col = direct ? nullptr : scratch<T>(Scratch::input, CRS * ldcol);
    T* stage = y16 ? scratch<T>(Scratch::output, Kg * PQ) : nullptr;  // with y16: sums of K blocks before the last
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / G, g = item % G;
      const T* xg = x + (n * p.C + g * Cg) * HW;
      for (int64_t oh0 = 0; oh0 < p.P; oh0 += chunk_rows) {
        const int64_t oh1 = std::min(p.P, oh0 + chunk_rows);
        if (!direct) im2col_nchw(p, xg, col, ldcol, oh0, oh1);
        GemmArgs<T> a;
        a.M = Kg, a.N = (oh1 - oh0) * p.Q, a.K = CRS;
        a.a = GemmA<T>::strided(w + g * Kg * CRS, CRS, 1);
        a.B = direct ? xg : col, a.ldb = direct ? HW : ldcol;
        a.C = (stage ? stage : y + (n * p.K + g * Kg) * PQ) + oh0 * p.Q, a.ldc = PQ;
        a.init = bias ? GemmInit::bias_row : GemmInit::zero;
        a.bias = bias ? bias + g * Kg : nullptr;
        a.relu = relu;  // applied in the micro-kernel's final store
        if constexpr (std::is_same_v<T, float>)
          if (stage) a.c16 = y16.gemm_out((n * p.K + g * Kg) * PQ + oh0 * p.Q, PQ);
        a.parallel = split;
        gemm(isa, a);
      }
    }
  });
}

// nhwc_im2col / nhwc_direct: y[PQ, K] = col[PQ, RSC] * Wt[RSC, K] (+ bias per column); NHWC rows
// of consecutive images are consecutive, so small maps join images until a GEMM has ~256 rows
// and the weight is read once for all.
template <typename T>
void forward_nhwc_gemm(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                       const at::TensorOptions& opts, const Blocks16& y16) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t CRS = Cg * p.R * p.S;
  const bool direct = reads_input_directly(p);
  const int64_t ldw = pitch(Kg);
  const at::Tensor wt = weight_rsc(p, w, /*k_major=*/false, ldw, opts);
  const T* wt_ptr = wt.const_data_ptr<T>();
  // Images per GEMM: NHWC rows of consecutive images are consecutive, so small feature maps
  // (deep layers) join images until a GEMM has ~256 rows and the weight is read once for all.
  const int64_t per = images_per_gemm(p.N, PQ);
  const int64_t blocks = ceil_div(p.N, per);
  const bool split_b = gemm_should_split(blocks * G);
  at::parallel_for(0, blocks * G, 1, [&](int64_t begin, int64_t end) {
    T* col = direct ? nullptr : scratch<T>(Scratch::input, per * PQ * CRS);
    T* stage = y16 ? scratch<T>(Scratch::output, per * PQ * Kg) : nullptr;  // with y16: sums of K blocks before the last
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n0 = (item / G) * per, nb = std::min(per, p.N - n0), g = item % G;
      const T* xn = x + n0 * HW * p.C;
      if (!direct)
        for (int64_t i = 0; i < nb; ++i) im2col_nhwc(p, xn + i * HW * p.C, g, col + i * PQ * CRS);
      GemmArgs<T> a;
      a.M = nb * PQ, a.N = Kg, a.K = CRS;
      a.a = direct ? GemmA<T>::strided(xn + g * Cg, p.C, 1) : GemmA<T>::strided(col, CRS, 1);
      a.B = wt_ptr + g * CRS * ldw, a.ldb = ldw;
      if (stage) a.C = stage, a.ldc = Kg;
      else a.C = y + n0 * PQ * p.K + g * Kg, a.ldc = p.K;
      a.init = bias ? GemmInit::bias_col : GemmInit::zero;
      a.bias = bias ? bias + g * Kg : nullptr;
      a.relu = relu;
      if constexpr (std::is_same_v<T, float>)
        if (stage) a.c16 = y16.gemm_out(n0 * PQ * p.K + g * Kg, p.K);
      a.parallel = split_b;
      gemm(isa, a);
    }
  });
}

}  // namespace

template <typename T>
void conv2d_fprop(Isa isa, const FpropPlan& plan, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y,
                  bool relu, const at::TensorOptions& opts, const Blocks16& y16) {
  TORCH_INTERNAL_ASSERT(!y16 || (std::is_same_v<T, float> && takes_blocks16(plan.strategy)));
  switch (plan.strategy) {
    case FpropStrategy::winograd:
    case FpropStrategy::rows_avx512:
      if constexpr (std::is_same_v<T, float>) {
        if (plan.strategy == FpropStrategy::winograd) return winograd_conv2d_fprop(isa, p, x, w, bias, y, relu);
        return conv2d_fprop_rows_avx512(p, x, w, bias, y, relu);
      }
      break;  // float32 only: the plan never picks them for other types
    case FpropStrategy::nchw_via_nhwc: return forward_nchw_via_nhwc(isa, p, x, w, bias, y, relu, opts, y16);
    case FpropStrategy::nchw_im2col:
    case FpropStrategy::nchw_direct: return forward_nchw_gemm(isa, p, x, w, bias, y, relu, y16);
    case FpropStrategy::nhwc_rows:
    case FpropStrategy::nhwc_interleaved: return forward_nhwc_rows(isa, p, x, w, bias, y, relu, opts, y16);
    case FpropStrategy::nhwc_im2col:
    case FpropStrategy::nhwc_direct: return forward_nhwc_gemm(isa, p, x, w, bias, y, relu, opts, y16);
    case FpropStrategy::nhwc_taps: return nhwc_taps_fprop(isa, p, x, w, bias, y, relu, opts, y16);
    case FpropStrategy::depthwise: return depthwise_fprop(isa, p, x, w, bias, y, relu);
    case FpropStrategy::grouped: return grouped_fprop(isa, p, x, w, bias, y, relu);
    case FpropStrategy::nchw_as_nhwc: break;  // runner.cpp transposes the tensors and plans again
    case FpropStrategy::amx_direct: break;    // runner.cpp runs it on the bfloat16 tensors
    case FpropStrategy::pointwise_16bit: break;  // runner.cpp runs it on the 16-bit tensors
    case FpropStrategy::grouped_taps:
      if constexpr (std::is_same_v<T, float>) return grouped_taps_fprop(isa, p, x, w, bias, y, relu);
      break;  // float32 only (plan.cpp)
  }
  TORCH_CHECK(false, "cuconv: CPU forward strategy ", name(plan.strategy), " does not take ", c10::CppTypeToScalarType<T>::value);
}

template decltype(conv2d_fprop<float>) conv2d_fprop<float>;
template decltype(conv2d_fprop<double>) conv2d_fprop<double>;

}  // namespace cuconv::cpu
