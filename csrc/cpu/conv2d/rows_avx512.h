#pragma once
// Few-channel NCHW stride-1 convs (first layers: 3 -> 32/64, 3x3) on AVX-512, vectorised along the
// output rows instead of through a GEMM: in NCHW an output row and the input rows under it are
// contiguous, so the kernels read them in place (no im2col, no transposes). The plan (plan.h)
// takes them for NCHW stride-1 undilated single-group convs with C*R*S <= 32 and Q >= 16 (float32,
// and 16-bit convs, whose float32 plan they are).
//  - forward: fprop_rows_avx512.cpp
//  - grad weight: wgrad_rows_avx512.cpp
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv2d_params.h"
#include "cpu/float32_copies.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

// The input as both row kernels read it, one image at a time, as float32: zero-padded to Hp x Wp per
// channel (stride 1, no dilation) in a buffer whose border is zeroed once, or the image itself when
// there is no padding and nothing to widen (a 16-bit x is widened into the buffer). Tap t = (c, r, s)'s
// input row for output row 0 starts at tap(image, t); output row p's at p * Wp further.
template <typename A = float>
class RowsInput {
  static constexpr bool kWiden = !std::is_same_v<A, float>;

 public:
  explicit RowsInput(const Conv2dParams& p)
      : p_(p), Hp_(p.P + p.R - 1), Wp_(p.Q + p.S - 1),
        buf_(kWiden || Hp_ != p.H || Wp_ != p.W ? size_t(p.C * Hp_ * Wp_) : 0, 0.f) {}

  // Image n of x (NCHW, contiguous); copied into the buffer only when n is not the last image asked for.
  const float* image(const A* x, int64_t n) {
    const int64_t CHW = p_.C * p_.H * p_.W;
    if constexpr (!kWiden)
      if (buf_.empty()) return x + n * CHW;
    if (n != copied_)
      for (int64_t c = 0; c < p_.C; ++c) {
        float* dst = buf_.data() + (c * Hp_ + p_.pad_h) * Wp_ + p_.pad_w;
        if constexpr (kWiden) {  // one widening run per channel (per row when padded)
          const Blocks16 x16{const_cast<A*>(x), std::is_same_v<A, c10::BFloat16>};
          x16.widen(n * CHW + c * p_.H * p_.W, p_.W, p_.H, p_.W, dst, Wp_);
        } else {
          for (int64_t h = 0; h < p_.H; ++h)
            std::memcpy(dst + h * Wp_, x + n * CHW + (c * p_.H + h) * p_.W, size_t(p_.W) * sizeof(float));
        }
      }
    copied_ = n;
    return buf_.data();
  }

  const float* tap(const float* image, int64_t t) const {
    const int64_t RS = p_.R * p_.S;
    return image + ((t / RS) * Hp_ + t % RS / p_.S) * Wp_ + t % p_.S;
  }

  int64_t row_pitch() const { return Wp_; }

 private:
  const Conv2dParams& p_;
  const int64_t Hp_, Wp_;
  std::vector<float> buf_;
  int64_t copied_ = -1;
};

// y (N x K x P x Q) = conv(x, w) + bias (bias may be null), then max(., 0) when relu. All contiguous.
// A is float, or a 16-bit type: x widened per image, the sums rounded into y as they are stored.
template <typename A>
void conv2d_fprop_rows_avx512(const Conv2dParams& p, const A* x, const float* w, const float* bias, A* y, bool relu);

// gw (K x C x R x S) = the grad weight from gy (N x K x P x Q) and x (N x C x H x W). All contiguous.
// A is float, or a 16-bit type: x and each image's block of gy widened before the sums.
template <typename A>
void conv2d_wgrad_rows_avx512(const Conv2dParams& p, const A* gy, const A* x, float* gw);

}  // namespace cuconv::cpu
