#pragma once
// Few-channel NCHW stride-1 convs (first layers: 3 -> 32/64, 3x3) on AVX-512, vectorised along the
// output rows instead of through a GEMM: in NCHW an output row and the input rows under it are
// contiguous, so the kernels read them in place (no im2col, no transposes). The plan (plan.h)
// takes them for float32 NCHW stride-1 undilated single-group convs with C*R*S <= 32 and Q >= 16.
//  - forward: fprop_rows_avx512.cpp
//  - grad weight: wgrad_rows_avx512.cpp
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv2d_params.h"
#include "cpu/isa.h"

namespace cuconv::cpu {

// The input as both row kernels read it, one image at a time: zero-padded to Hp x Wp per channel
// (stride 1, no dilation) in a buffer whose border is zeroed once, or the image itself when there
// is no padding. Tap t = (c, r, s)'s input row for output row 0 starts at tap(image, t); output row
// p's at p * Wp further.
class RowsInput {
 public:
  explicit RowsInput(const Conv2dParams& p)
      : p_(p), Hp_(p.P + p.R - 1), Wp_(p.Q + p.S - 1), buf_(Hp_ != p.H || Wp_ != p.W ? size_t(p.C * Hp_ * Wp_) : 0, 0.f) {}

  // Image n of x (NCHW, contiguous); copied into the border only when n is not the last image asked for.
  const float* image(const float* x, int64_t n) {
    const float* xn = x + n * p_.C * p_.H * p_.W;
    if (buf_.empty()) return xn;
    if (n != copied_)
      for (int64_t c = 0; c < p_.C; ++c)
        for (int64_t h = 0; h < p_.H; ++h)
          std::memcpy(buf_.data() + (c * Hp_ + h + p_.pad_h) * Wp_ + p_.pad_w, xn + (c * p_.H + h) * p_.W,
                      size_t(p_.W) * sizeof(float));
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
void conv2d_fprop_rows_avx512(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y,
                              bool relu);

// gw (K x C x R x S) = the grad weight from gy (N x K x P x Q) and x (N x C x H x W). All contiguous.
void conv2d_wgrad_rows_avx512(const Conv2dParams& p, const float* gy, const float* x, float* gw);

}  // namespace cuconv::cpu
