#pragma once
// Strided grad input as dense sub-problems, one per output phase. Along one dimension, the input
// positions h with the same phase (h + pad) mod stride are reached only by the taps r with
// r * dil ≡ that phase (mod stride): with stride 2 and dilation 1, the even taps for one half of
// the rows and the odd taps for the other. A phase's implicit GEMM therefore reduces over exactly its
// own taps, and no multiply-add is spent on the zeros a transposed convolution inserts between the
// grad_output pixels (three quarters of the work at stride 2). Each phase is a regular grid:
//   rows  h = first + i * stride,            i < count
//   taps  r = tap0 + t * tap_step,           t < taps      (tap_step = stride / gcd(stride, dil))
//   the grad_output position of (i, t):  oh = out0 + i - t * out_step   (out_step = dil / gcd)
// so the kernels find a tap's source by one subtraction and a range check, with no division by the
// stride. Stride 1 is one phase holding every row and tap.
#include <cstdint>
#include <numeric>

#include "conv2d_index.cuh"

namespace cuconv::kern {

struct Conv2dDgradAxisPhase {
  int64_t first = 0, count = 0;  // input positions first, first + stride, ... (count of them)
  int64_t tap0 = 0, taps = 0, tap_step = 1;
  int64_t out0 = 0, out_step = 0;

  // Phase `phase` (0 <= phase < stride) of a dimension of `size` inputs and `kernel` taps.
  static Conv2dDgradAxisPhase make(int64_t phase, int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                                   int64_t dil) {
    Conv2dDgradAxisPhase a;
    a.first = ((phase - pad) % stride + stride) % stride;
    a.count = a.first < size ? (size - a.first + stride - 1) / stride : 0;
    const int64_t g = std::gcd(stride, dil);
    a.tap_step = stride / g;
    a.out_step = dil / g;
    a.tap0 = -1;
    for (int64_t r = 0; r < kernel && r < a.tap_step; ++r)
      if (r * dil % stride == phase) {
        a.tap0 = r;
        break;
      }
    if (a.tap0 < 0) {  // no tap reaches this phase: its grad input is zero
      a.tap0 = 0;
      a.taps = 0;
    } else {
      a.taps = (kernel - a.tap0 + a.tap_step - 1) / a.tap_step;
    }
    a.out0 = (a.first + pad - a.tap0 * dil) / stride;  // exact: both sides are ≡ phase (mod stride)
    return a;
  }
};

// One phase of a grad input: its two axes and the divisions its rows and reduction index need.
struct Conv2dDgradPhase {
  Conv2dDgradAxisPhase h, w;
  FastDivmod div_w;     // positions per phase row (w.count)
  FastDivmod64 div_hw;  // positions per phase plane, for rows that run over the batch
  FastDivmod div_s;     // taps per phase filter row (w.taps)
  FastDivmod div_rs;    // taps per phase filter
  // Weight element (group g, output channel k, input channel c, phase tap t_r, t_s) is at
  // g * w_g + c * w_c + w_first + k * w_k + t_r * w_tr + t_s * w_ts: the phase's taps are a regular
  // grid of the filter, in either weight layout (weight_crsk).
  int64_t w_g = 0, w_c = 0, w_first = 0, w_k = 0, w_tr = 0, w_ts = 0;

  Conv2dDgradPhase() = default;
  Conv2dDgradPhase(const Conv2dParams& p, int64_t phase_h, int64_t phase_w, bool weight_crsk = false)
      : h(Conv2dDgradAxisPhase::make(phase_h, p.H, p.R, p.stride_h, p.pad_h, p.dil_h)),
        w(Conv2dDgradAxisPhase::make(phase_w, p.W, p.S, p.stride_w, p.pad_w, p.dil_w)),
        div_w(w.count), div_hw(h.count * w.count), div_s(w.taps), div_rs(h.taps * w.taps) {
    const int64_t Cg = p.C / p.groups, Kg = p.K / p.groups, RS = p.R * p.S;
    w_g = Kg * Cg * RS;
    if (weight_crsk) {  // per group C/groups x R x S x K/groups: a tap's output channels are contiguous
      w_c = RS * Kg, w_k = 1, w_first = (h.tap0 * p.S + w.tap0) * Kg, w_tr = h.tap_step * p.S * Kg, w_ts = w.tap_step * Kg;
    } else {  // K x C/groups x R x S, as given
      w_c = RS, w_k = Cg * RS, w_first = h.tap0 * p.S + w.tap0, w_tr = h.tap_step * p.S, w_ts = w.tap_step;
    }
  }

  int64_t rows(const Conv2dParams& p) const { return p.N * h.count * w.count; }  // GEMM M
  int64_t reduction(const Conv2dParams& p) const { return (p.K / p.groups) * h.taps * w.taps; }  // GEMM K
};

// The largest reduction over the phases (the tile chooser's Kdim for the whole pass).
inline int64_t conv2d_dgrad_max_reduction(const Conv2dParams& p) {
  int64_t most = 0;
  for (int64_t ph = 0; ph < p.stride_h; ++ph)
    for (int64_t pw = 0; pw < p.stride_w; ++pw) {
      const int64_t k = Conv2dDgradPhase(p, ph, pw).reduction(p);
      most = k > most ? k : most;
    }
  return most;
}

// Calls fn(phase) for every phase with input positions (an image smaller than the stride has none
// in some phases); phases whose taps are empty are included: their launch writes the zeros.
template <class Fn>
void for_each_conv2d_dgrad_phase(const Conv2dParams& p, bool weight_crsk, Fn&& fn) {
  for (int64_t ph = 0; ph < p.stride_h; ++ph)
    for (int64_t pw = 0; pw < p.stride_w; ++pw) {
      const Conv2dDgradPhase phase(p, ph, pw, weight_crsk);
      if (phase.rows(p) > 0) fn(phase);
    }
}

}  // namespace cuconv::kern
