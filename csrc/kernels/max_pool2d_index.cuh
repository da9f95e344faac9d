#pragma once
// Index math of the max-pool kernels: a flat element index decoded into (plane, row, column) and
// the window arithmetic, with every divisor's magic numbers computed on the host once per call.
// 32-bit indices where every tensor of the call has fewer than 2^31 elements, 64-bit otherwise: on
// the GPU a 64-bit `/` or `%` by a run-time value is a subroutine call and a 32-bit one a dozen
// instructions, where a fast divmod is a multiply-high and a shift.
#include <cstdint>
#include <type_traits>

#include "../max_pool2d_params.h"
#include "fast_divmod.cuh"

namespace cuconv::kern {

template <typename I>
using IndexDivmod = std::conditional_t<sizeof(I) == 4, FastDivmod, FastDivmod64>;

// The divisors of one pass: the flat index runs over (n, outer, inner, c) in NHWC and
// (n*c, outer, inner) in NCHW, where (outer, inner) is (P, Q) for the forward (one thread per
// output) and (H, W) for the backward (one thread per input element).
template <typename I>
struct PoolDivisors {
  IndexDivmod<I> channels, inner, outer, stride_h, stride_w;
};

template <typename I>
PoolDivisors<I> pool_divisors(const MaxPool2dParams& p, int64_t outer, int64_t inner) {
  return {IndexDivmod<I>(p.C), IndexDivmod<I>(inner), IndexDivmod<I>(outer), IndexDivmod<I>(p.stride_h),
          IndexDivmod<I>(p.stride_w)};
}

// Whether 32-bit indices hold the call: element counts (input and output) below 2^30, so that a
// grid-stride step past the last element (at most one grid, no more threads than elements) stays
// below 2^31.
inline bool pool_fits_int32(const MaxPool2dParams& p) {
  const int64_t limit = int64_t(1) << 30;
  const int64_t plane_in = p.H * p.W, plane_out = p.P * p.Q;
  return p.N * p.C * plane_in < limit && p.N * p.C * plane_out < limit && p.H + p.pad_h < limit &&
         p.W + p.pad_w < limit;
}

// Element i of an (N, C, outer, inner) tensor: its image n and channel c (NHWC), or its plane n*C + c
// as `image` with c = 0 (NCHW), and its row and column.
template <typename I>
CUCONV_DEVICE void pool_decode(I i, bool channels_last, const PoolDivisors<I>& d, I& image, I& c, I& row, I& col) {
  I rows = 0;
  if (channels_last) {
    I pixel = 0;
    d.channels.divmod(i, pixel, c);
    d.inner.divmod(pixel, rows, col);
  } else {
    c = 0;
    d.inner.divmod(i, rows, col);
  }
  d.outer.divmod(rows, image, row);
}

// The offset of the first element of (image, c)'s plane in a tensor of `rows` x `cols` planes, and
// the stride between a plane's elements (C in NHWC, 1 in NCHW).
template <typename I>
CUCONV_DEVICE I pool_plane_base(bool channels_last, I image, I c, I rows, I cols, I channels) {
  return channels_last ? image * rows * cols * channels + c : image * rows * cols;
}

}  // namespace cuconv::kern
