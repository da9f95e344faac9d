// The nhwc_taps strategy (taps.h): one GEMM per kernel tap (r, s) over only the output positions
// whose window has that tap inside the input. A rows point at the input pixels, C rows at the
// outputs (or the item's float32 stage), and the reduction is over the input channels alone.
#include "cpu/conv2d/taps.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

#include "cpu/conv2d/operands.h"
#include "cpu/conv2d/plan.h"
#include "cpu/scratch.h"

namespace cuconv::cpu {
namespace {

// The B operand of each tap t of conv p (w OIHW, K x C x RS), wstride apart: the forward's
// (c, k) = w[k][c][t] (C x K), packed by weight_operand (one transposed span per sliver serves
// every tap); or transposed for the grad input, (k, c) = w[k][c][t] (K x C), where each row k of
// B is a run of C*RS values of one filter, transposed per k into [t][c] and copied as 64-byte runs
// (weight_operand's span would be the whole weight per sliver).
template <typename T>
at::Tensor tap_weights(Isa isa, const Conv2dParams& p, const T* w, bool transposed, const at::TensorOptions& opts,
                       int64_t& wstride) {
  const int64_t RS = p.R * p.S, rows = transposed ? p.K : p.C, cols = transposed ? p.C : p.K;
  if (!transposed || !std::is_same_v<T, float>)
    return weight_operand<T>(RS, rows, cols, opts, wstride, [&](int64_t tap, int64_t i) {
      return transposed ? std::pair<const T*, int64_t>(w + i * p.C * RS + tap, RS)
                        : std::pair<const T*, int64_t>(w + i * RS + tap, p.C * RS);
    });
  wstride = gemm_packed_b_size(rows, cols);
  at::Tensor out = at::empty({RS * wstride}, opts);
  T* o = out.data_ptr<T>();
  const int64_t slivers = ceil_div(cols, kGemmNR), cols_pad = slivers * kGemmNR;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<T> block;
    for (int64_t k = begin; k < end; ++k) {
      block.assign(RS * cols_pad, T(0));
      transpose(isa, w + k * cols * RS, RS, block.data(), cols_pad, cols, RS);
      for (int64_t j = 0; j < slivers; ++j) {
        T* d = o + gemm_packed_b_offset(k, j * kGemmNR, rows, cols);
        for (int64_t tap = 0; tap < RS; ++tap)
          std::memcpy(d + tap * wstride, block.data() + tap * cols_pad + j * kGemmNR, kGemmNR * sizeof(T));
      }
    }
  });
  return out;
}

// One GEMM per kernel tap (r, s) of conv p, over only the output positions (oh, ow) whose window
// has that tap inside the input, i.e. the pairs of an output position and the input pixel
// (oh*stride_h - pad_h + r*dil_h, ow*stride_w - pad_w + s*dil_w) that the tap multiplies:
//  - forward: the output row gathers the input row times W_t (K = C, N = K);
//  - grad input (kGrad): the input pixel's row of gx gathers grad_output's row times W_t^T
//    (K = p.K, N = p.C); a tap pairs each pixel with at most one position, so rows are distinct.
// On small maps much of a window is padding (a 3x3 map with padding 1: 49 of 81 products), which
// the kernel-row GEMMs multiply as zeros. A tap that reaches every destination row starts the sums
// (with the bias); otherwise they start from the bias or zero. Each destination sums its taps in
// (r, s) order, that tap first, whatever the blocking.
template <bool kGrad, typename T>
void tap_gemms(Isa isa, const Conv2dParams& p, const T* src, const T* w, const T* bias, T* dst, bool relu,
               const at::TensorOptions& opts, const Blocks16& y16) {
  const int64_t RS = p.R * p.S, PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t Cin = kGrad ? p.K : p.C, Cout = kGrad ? p.C : p.K;  // the GEMMs' K and N
  const int64_t src_pixels = kGrad ? PQ : HW, dst_pixels = kGrad ? HW : PQ;
  if (p.N == 0) return;
  int64_t wstride = 0;
  const at::Tensor wop = tap_weights(isa, p, w, kGrad, opts, wstride);
  // Each tap's output rectangle [p_lo, p_hi) x [q_lo, q_hi); `first`: a tap that reaches every
  // destination row (its rectangle is every output, or pairs with every input pixel).
  std::vector<int64_t> span(4 * RS);
  int64_t first = -1;
  const int64_t dst_h = kGrad ? p.H : p.P, dst_w = kGrad ? p.W : p.Q;
  for (int64_t tap = 0; tap < RS; ++tap) {
    const int64_t r = tap / p.S, s = tap % p.S;
    int64_t* t = span.data() + 4 * tap;
    valid_range(r * p.dil_h - p.pad_h, p.stride_h, p.H, p.P, t[0], t[1]);
    valid_range(s * p.dil_w - p.pad_w, p.stride_w, p.W, p.Q, t[2], t[3]);
    if (first < 0 && t[1] - t[0] == dst_h && t[3] - t[2] == dst_w) first = tap;
  }
  // Images per item: about 256 rows per tap GEMM, the batch in equal items for the threads.
  const int64_t threads = at::get_num_threads();
  int64_t blocks = ceil_div(p.N, images_per_gemm(p.N, dst_pixels));
  if (blocks < 4 * threads) blocks = std::min(p.N, round_up(blocks, threads));
  const int64_t per = ceil_div(p.N, std::max<int64_t>(1, blocks));
  blocks = ceil_div(p.N, per);
  const bool split = gemm_should_split(blocks);
  const int64_t rows_max = per * std::max(PQ, HW);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> a_rows;
    thread_local std::vector<T*> c_rows;
    a_rows.resize(rows_max), c_rows.resize(rows_max);
    T* stage = y16 ? scratch<T>(Scratch::output, per * dst_pixels * Cout) : nullptr;  // the item's sums, then y16
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n0 = item * per, nb = std::min(per, p.N - n0);
      T* out = stage ? stage : dst + n0 * dst_pixels * Cout;
      const T* in = src + n0 * src_pixels * Cin;
      if (first < 0)
        for (int64_t m = 0; m < nb * dst_pixels; ++m)
          for (int64_t k = 0; k < Cout; ++k) out[m * Cout + k] = bias ? bias[k] : T(0);
      for (int64_t i = 0; i < RS; ++i) {
        const int64_t tap = first < 0 ? i : i == 0 ? first : i <= first ? i - 1 : i;
        const int64_t* t = span.data() + 4 * tap;
        const int64_t r = tap / p.S, s = tap % p.S;
        int64_t m = 0;
        for (int64_t n = 0; n < nb; ++n)
          for (int64_t oh = t[0]; oh < t[1]; ++oh) {
            const int64_t pixel_row = (n * p.H + oh * p.stride_h + r * p.dil_h - p.pad_h) * p.W;
            for (int64_t ow = t[2]; ow < t[3]; ++ow, ++m) {
              const int64_t pixel = pixel_row + ow * p.stride_w + s * p.dil_w - p.pad_w;
              const int64_t position = (n * p.P + oh) * p.Q + ow;
              a_rows[m] = in + (kGrad ? position : pixel) * Cin;
              c_rows[m] = out + (kGrad ? pixel : position) * Cout;
            }
          }
        if (m == 0) continue;
        GemmArgs<T> a;
        a.M = m, a.N = Cout, a.K = Cin;
        a.a = GemmA<T>::rows(a_rows.data());
        a.c_rows = c_rows.data();
        set_weight_operand(a, wop.const_data_ptr<T>() + tap * wstride);
        a.init = tap != first ? GemmInit::accumulate : bias ? GemmInit::bias_col : GemmInit::zero;
        a.bias = bias;
        a.parallel = split;
        gemm(isa, a);
      }
      if (relu)  // after the last tap, which need not reach every output (NaN stays NaN, -0 stays -0)
        for (int64_t m = 0; m < nb * dst_pixels * Cout; ++m) out[m] = out[m] < T(0) ? T(0) : out[m];
      if (stage) y16.narrow(reinterpret_cast<const float*>(stage), Cout, n0 * dst_pixels * Cout, Cout, nb * dst_pixels, Cout);
    }
  });
}

}  // namespace

template <typename T>
void nhwc_taps_fprop(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                     const at::TensorOptions& opts, const Blocks16& y16) {
  tap_gemms</*kGrad=*/false>(isa, p, x, w, bias, y, relu, opts, y16);
}

template <typename T>
void nhwc_taps_dgrad(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx, const at::TensorOptions& opts) {
  tap_gemms</*kGrad=*/true>(isa, p, gy, w, static_cast<const T*>(nullptr), gx, false, opts, Blocks16{});
}

template void nhwc_taps_fprop<float>(Isa, const Conv2dParams&, const float*, const float*, const float*, float*, bool,
                                     const at::TensorOptions&, const Blocks16&);
template void nhwc_taps_fprop<double>(Isa, const Conv2dParams&, const double*, const double*, const double*, double*,
                                      bool, const at::TensorOptions&, const Blocks16&);
template void nhwc_taps_dgrad<float>(Isa, const Conv2dParams&, const float*, const float*, float*,
                                     const at::TensorOptions&);
template void nhwc_taps_dgrad<double>(Isa, const Conv2dParams&, const double*, const double*, double*,
                                      const at::TensorOptions&);

}  // namespace cuconv::cpu
