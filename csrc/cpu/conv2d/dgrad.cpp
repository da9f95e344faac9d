// conv2d grad input on the CPU, one function per strategy of plan.h's DgradStrategy (Winograd and
// the depthwise kernels live in their own files), and the switch over them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "cpu/conv2d/depthwise.h"
#include "cpu/conv2d/grouped.h"
#include "cpu/conv2d/grouped_taps.h"
#include "cpu/conv2d/operands.h"
#include "cpu/conv2d/passes.h"
#include "cpu/conv2d/taps.h"
#include "cpu/conv2d/winograd.h"
#include "cpu/scratch.h"

namespace cuconv::cpu {
namespace {

// NHWC grad input of a strided conv by phases (one group, no dilation), with no col2im: the
// grad_input pixels (h, w) with (h + pad_h) % stride_h == a and (w + pad_w) % stride_w == b receive
// only the taps r = a + j*stride_h, s = b + i*stride_w, each from grad_output pixel (u - j, v - i)
// where u = (h + pad_h) / stride_h, v = (w + pad_w) / stride_w. So each phase (a, b) is a stride-1
// correlation of grad_output with its sub-kernel: per j one GEMM whose A rows are runs of Sb whole
// pixels of a zero-padded grad_output copy (read in place, as the NHWC forward reads its input) and
// whose C rows are the phase's pixels of grad_input (row pointers). col2im instead wrote R*S values
// per position and added them back.
template <typename T>
void backward_input_nhwc_phases(Isa isa, const DgradPlan& plan, const Conv2dParams& p, const T* gy, const T* w, T* gx,
                                const at::TensorOptions& opts, const Blocks16& gy16) {
  const int64_t sh = p.stride_h, sw = p.stride_w, PQ = p.P * p.Q;
  const int64_t Rm = ceil_div(p.R, sh), Sm = ceil_div(p.S, sw);  // taps per phase, at most
  // Phase a's taps along one axis (0 when a >= R). Its pixels are u in [0, U) (phase 0 has the
  // most) with h = u*stride + a - pad inside the image: valid_range.
  auto taps = [](int64_t a, int64_t R, int64_t s) { return a < R ? ceil_div(R - a, s) : int64_t(0); };
  const int64_t Uh = (p.H - 1 + p.pad_h) / sh + 1, Uw = (p.W - 1 + p.pad_w) / sw + 1;
  // grad_output zero-padded by Rm - 1 rows on top and Sm - 1 columns on the left, and down and to the
  // right as far as the phases' last pixels read.
  Conv2dParams q = p;
  q.H = p.P, q.W = p.Q, q.C = p.K, q.pad_h = Rm - 1, q.pad_w = Sm - 1;
  const int64_t Hb = Rm - 1 + std::max(p.P, Uh), Wb = Sm - 1 + std::max(p.Q, Uw);
  const bool padded = Hb != p.P || Wb != p.Q;  // else grad_output is read in place (1x1 shortcuts)
  const bool untapped = p.R < sh || p.S < sw;
  // The weight per phase, one block per j: [i*K + k][c] = w(k, c, a + j*sh, b + (Sb - 1 - i)*sw), so
  // the Sb pixels of an A row (leftmost first) meet their taps.
  std::vector<at::Tensor> wops(sh * sw);
  std::vector<int64_t> wstrides(sh * sw);
  for (int64_t a = 0; a < sh; ++a)
    for (int64_t b = 0; b < sw; ++b) {
      const int64_t Ra = taps(a, p.R, sh), Sb = taps(b, p.S, sw);
      if (Ra == 0 || Sb == 0) continue;
      auto row = [&](int64_t j, int64_t i) {
        const int64_t k = i % p.K, s = b + (Sb - 1 - i / p.K) * sw;
        return std::pair<const T*, int64_t>(w + ((k * p.C) * p.R + a + j * sh) * p.S + s, p.R * p.S);
      };
      wops[a * sw + b] = weight_operand<T>(Ra, Sb * p.K, p.C, opts, wstrides[a * sw + b], row);
    }
  const int64_t per = plan.images_per_gemm;
  const int64_t blocks = ceil_div(p.N, per);
  const bool split = gemm_should_split(blocks);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> arows;
    thread_local std::vector<T*> crows;
    T* buf = padded || gy16 ? scratch<T>(Scratch::input, per * Hb * Wb * p.K) : nullptr;
    // gy16's images widened, then padded from there (in cache)
    T* wide = gy16 && padded ? scratch<T>(Scratch::output, per * PQ * p.K) : nullptr;
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t n0 = blk * per, nb = std::min(per, p.N - n0);
      const T* gyb = gy16 ? nullptr : gy + n0 * PQ * p.K;
      if (gy16) {
        T* dst = padded ? wide : buf;
        gy16.widen(n0 * PQ * p.K, PQ * p.K, nb, PQ * p.K, reinterpret_cast<float*>(dst), PQ * p.K);
        gyb = dst;
      }
      if (padded) pad_nhwc(q, gyb, nb, Hb, Wb, buf), gyb = buf;
      // Phases without taps (stride > kernel: the 1x1 shortcuts' odd rows and columns) are zeros;
      // one fill of the images, since a fill per pixel (256 B) costs a memset call each.
      if (untapped) std::fill(gx + n0 * p.H * p.W * p.C, gx + (n0 + nb) * p.H * p.W * p.C, T(0));
      for (int64_t a = 0; a < sh; ++a)
        for (int64_t b = 0; b < sw; ++b) {
          const int64_t Ra = taps(a, p.R, sh), Sb = taps(b, p.S, sw);
          int64_t u0, u1, v0, v1;
          valid_range(a - p.pad_h, sh, p.H, Uh, u0, u1);
          valid_range(b - p.pad_w, sw, p.W, Uw, v0, v1);
          if (u1 <= u0 || v1 <= v0) continue;
          const int64_t M = nb * (u1 - u0) * (v1 - v0);
          crows.resize(M);
          for (int64_t i = 0, m = 0; i < nb; ++i)
            for (int64_t u = u0; u < u1; ++u)
              for (int64_t v = v0; v < v1; ++v, ++m)
                crows[m] = gx + (((n0 + i) * p.H + u * sh + a - p.pad_h) * p.W + v * sw + b - p.pad_w) * p.C;
          if (Ra == 0 || Sb == 0) continue;  // no tap lands on these pixels: zeroed above
          arows.resize(M);
          for (int64_t j = 0; j < Ra; ++j) {
            for (int64_t i = 0, m = 0; i < nb; ++i)
              for (int64_t u = u0; u < u1; ++u)
                for (int64_t v = v0; v < v1; ++v, ++m)
                  arows[m] = gyb + ((i * Hb + u - j + Rm - 1) * Wb + v - (Sb - 1) + Sm - 1) * p.K;
            GemmArgs<T> g;
            g.M = M, g.N = p.C, g.K = Sb * p.K;
            g.a = GemmA<T>::rows(arows.data());
            set_weight_operand(g, wops[a * sw + b].template const_data_ptr<T>() + j * wstrides[a * sw + b]);
            g.c_rows = crows.data();
            g.init = j == 0 ? GemmInit::zero : GemmInit::accumulate;
            g.parallel = split;
            gemm(isa, g);
          }
        }
    }
  });
}

// The sizes both col2im strategies work with: per group, the columns' CRS rows, and blocks of
// `per` images.
struct Col2imSizes {
  int64_t G, Cg, Kg, PQ, HW, CRS, per, blocks;
  Col2imSizes(const Conv2dParams& p, const DgradPlan& plan)
      : G(p.groups), Cg(p.C_per_group()), Kg(p.K_per_group()), PQ(p.P * p.Q), HW(p.H * p.W),
        CRS(Cg * p.R * p.S), per(plan.images_per_gemm), blocks(ceil_div(p.N, per)) {}
};

// nchw_col2im: dcol = W^T * grad_output, then col2im adds dcol into grad_input (faster here than
// a forward conv of grad_output with the flipped weight, even at stride 1).
template <typename T>
void backward_input_nchw_col2im(Isa isa, const DgradPlan& plan, const Conv2dParams& p, const T* gy, const T* w, T* gx,
                                 const at::TensorOptions& opts, const Blocks16& gy16) {
  const Col2imSizes z(p, plan);
  const int64_t G = z.G, Cg = z.Cg, Kg = z.Kg, PQ = z.PQ, HW = z.HW, CRS = z.CRS, per = z.per, blocks = z.blocks;
  // W^T per group, [g][c*R*S + rs][k]: the GEMM's A then runs along K in memory (no per-call packing).
  at::Tensor wt_t = at::empty({G * CRS * Kg}, opts);
  T* wt = wt_t.data_ptr<T>();
  // In 16 x 16 blocks, so both the reads and the writes stay within a few cache lines.
  const int64_t iblocks = ceil_div(CRS, 16);
  at::parallel_for(0, G * iblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / iblocks, i0 = (item % iblocks) * 16, i1 = std::min(i0 + 16, CRS);
      for (int64_t k0 = 0; k0 < Kg; k0 += 16)
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t k = k0; k < std::min(k0 + 16, Kg); ++k)
            wt[(g * CRS + i) * Kg + k] = w[(g * Kg + k) * CRS + i];
    }
  });
  // A 1x1 stride-1 unpadded conv of one image per GEMM: dcol is the group's grad_input planes, which
  // the GEMM writes directly (no col2im pass).
  const bool pointwise = per == 1 && p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
                         p.pad_w == 0;
  const bool split = gemm_should_split(blocks * G);
  at::parallel_for(0, blocks * G, 1, [&](int64_t begin, int64_t end) {
    T* dcol = pointwise ? nullptr : scratch<T>(Scratch::output, CRS * per * PQ);
    const bool joined = per > 1 || gy16;
    T* gyb = joined ? scratch<T>(Scratch::extra, Kg * per * PQ) : nullptr;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n0 = (item / G) * per, nb = std::min(per, p.N - n0), g = item % G;
      const int64_t at = (n0 * p.K + g * Kg) * PQ;
      // the images' [Kg][PQ] blocks side by side: gyb[k][i*PQ + j]
      for (int64_t i = 0; i < nb && gy16; ++i)
        gy16.widen(at + i * p.K * PQ, PQ, Kg, PQ, reinterpret_cast<float*>(gyb + i * PQ), nb * PQ);
      for (int64_t k = 0; k < Kg && joined && !gy16; ++k)
        for (int64_t i = 0; i < nb; ++i)
          std::memcpy(gyb + k * nb * PQ + i * PQ, gy + at + (i * p.K + k) * PQ, PQ * sizeof(T));
      GemmArgs<T> a;
      a.M = CRS, a.N = nb * PQ, a.K = Kg;
      a.a = GemmA<T>::strided(wt + g * CRS * Kg, Kg, 1);
      a.B = joined ? gyb : gy + at, a.ldb = nb * PQ;
      a.C = pointwise ? gx + (n0 * p.C + g * Cg) * HW : dcol, a.ldc = nb * PQ;
      a.parallel = split;
      gemm(isa, a);
      for (int64_t i = 0; i < nb && !pointwise; ++i) {
        T* gxg = gx + ((n0 + i) * p.C + g * Cg) * HW;
        std::fill(gxg, gxg + Cg * HW, T(0));
        col2im_nchw(p, dcol + i * PQ, nb * PQ, gxg);
      }
    }
  });
}

// nhwc_col2im: dcol[positions, RSC] = grad_output * W, then col2im per image. A 1x1 stride-1
// unpadded conv has dcol == grad_input and W's K x C rows as they are: the GEMM reads the weight in
// place and writes grad_input, with no copy of either and no col2im pass.
template <typename T>
void backward_input_nhwc_col2im(Isa isa, const DgradPlan& plan, const Conv2dParams& p, const T* gy, const T* w, T* gx,
                                 const at::TensorOptions& opts, const Blocks16& gy16) {
  const Col2imSizes z(p, plan);
  const int64_t G = z.G, Kg = z.Kg, PQ = z.PQ, HW = z.HW, CRS = z.CRS, per = z.per, blocks = z.blocks;
  const bool pointwise = p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
  const int64_t ldw = pointwise ? CRS : pitch(CRS);
  const at::Tensor wk = pointwise ? at::Tensor() : weight_rsc(p, w, /*k_major=*/true, ldw, opts);
  const T* wk_ptr = pointwise ? w : wk.const_data_ptr<T>();
  const bool split = gemm_should_split(blocks);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    T* dcol = pointwise ? nullptr : scratch<T>(Scratch::output, per * PQ * CRS);
    T* wide = gy16 ? scratch<T>(Scratch::extra, per * PQ * Kg) : nullptr;  // a group's grad_output, widened
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t n0 = blk * per, nb = std::min(per, p.N - n0);
      T* gxn = gx + n0 * HW * p.C;
      if (!pointwise) std::fill(gxn, gxn + nb * HW * p.C, T(0));
      for (int64_t g = 0; g < G; ++g) {
        GemmArgs<T> a;
        a.M = nb * PQ, a.N = CRS, a.K = Kg;
        if (gy16) {
          gy16.widen(n0 * PQ * p.K + g * Kg, p.K, nb * PQ, Kg, reinterpret_cast<float*>(wide), Kg);
          a.a = GemmA<T>::strided(wide, Kg, 1);
        } else {
          a.a = GemmA<T>::strided(gy + n0 * PQ * p.K + g * Kg, p.K, 1);
        }
        a.B = wk_ptr + g * Kg * ldw, a.ldb = ldw;
        a.C = pointwise ? gxn + g * CRS : dcol, a.ldc = pointwise ? p.C : CRS;
        a.parallel = split;
        gemm(isa, a);
        if (!pointwise)
          for (int64_t i = 0; i < nb; ++i) col2im_nhwc(p, dcol + i * PQ * CRS, g, gxn + i * HW * p.C);
      }
    }
  });
}

}  // namespace

template <typename T>
void conv2d_dgrad(Isa isa, const DgradPlan& plan, const Conv2dParams& p, const T* gy, const T* w, T* gx,
                  const at::TensorOptions& opts, const Blocks16& gy16) {
  TORCH_INTERNAL_ASSERT(!gy16 || (std::is_same_v<T, float> && takes_blocks16(plan.strategy)));
  switch (plan.strategy) {
    case DgradStrategy::winograd:
      if constexpr (std::is_same_v<T, float>) return winograd_conv2d_dgrad(isa, p, gy, w, gx);
      break;  // float32 only: the plan never picks it for other types
    case DgradStrategy::nhwc_phases: return backward_input_nhwc_phases(isa, plan, p, gy, w, gx, opts, gy16);
    case DgradStrategy::nchw_col2im: return backward_input_nchw_col2im(isa, plan, p, gy, w, gx, opts, gy16);
    case DgradStrategy::nhwc_col2im: return backward_input_nhwc_col2im(isa, plan, p, gy, w, gx, opts, gy16);
    case DgradStrategy::depthwise: return depthwise_dgrad(isa, p, gy, w, gx);
    case DgradStrategy::grouped: return grouped_dgrad(isa, p, gy, w, gx);
    case DgradStrategy::nchw_as_nhwc: break;  // runner.cpp transposes the tensors and plans again
    case DgradStrategy::as_forward: break;    // runner.cpp runs the forward
    case DgradStrategy::nhwc_taps: return nhwc_taps_dgrad(isa, p, gy, w, gx, opts);
    case DgradStrategy::amx_phases: break;    // runner.cpp runs it on the bfloat16 tensors
    case DgradStrategy::pointwise_16bit: break;  // runner.cpp runs it on the 16-bit tensors
    case DgradStrategy::grouped_taps:
      if constexpr (std::is_same_v<T, float>) return grouped_taps_dgrad(isa, p, gy, w, gx);
      break;  // float32 only (plan.cpp)
  }
  TORCH_CHECK(false, "cuconv: CPU grad-input strategy ", name(plan.strategy), " does not take ",
              c10::CppTypeToScalarType<T>::value);
}

template decltype(conv2d_dgrad<float>) conv2d_dgrad<float>;
template decltype(conv2d_dgrad<double>) conv2d_dgrad<double>;

}  // namespace cuconv::cpu
