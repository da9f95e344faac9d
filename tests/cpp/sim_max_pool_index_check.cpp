// The max-pool kernels' two index widths under the simulator: the 64-bit path (taken only for
// tensors of 2^30 elements or more, which no test can afford) must give the same bits as the
// 32-bit path the Python tests cover, and both the scalar reference's values and indices, over
// strides, padding, dilation, overlapping windows and both layouts.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "expect.h"
#include "kernels/max_pool2d_bprop.cuh"
#include "kernels/max_pool2d_fprop.cuh"

using namespace cuconv;
using namespace cuconv::kern;

using cuconv::testing::expect;
using cuconv::testing::failures;

namespace {
int64_t at(const MaxPool2dParams& p, int64_t n, int64_t c, int64_t h, int64_t w, int64_t H, int64_t W) {
  return p.channels_last ? ((n * H + h) * W + w) * p.C + c : ((n * p.C + c) * H + h) * W + w;
}

void check(MaxPool2dParams p, const char* name) {
  p.P = pooled_size(p.H, p.kernel_h, p.pad_h, p.stride_h, p.dil_h, false);
  p.Q = pooled_size(p.W, p.kernel_w, p.pad_w, p.stride_w, p.dil_w, false);
  const int64_t in = p.N * p.C * p.H * p.W, out = p.N * p.C * p.P * p.Q;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-4, 4);  // ties on purpose
  std::vector<float> x(in), gy(out);
  for (float& v : x) v = float(small(rng));
  for (float& v : gy) v = float(small(rng)) + 0.5f;
  // scalar reference: first maximum in row-major window order
  std::vector<float> y_ref(out);
  std::vector<int64_t> i_ref(out);
  std::vector<float> gx_ref(in, 0.f);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t oh = 0; oh < p.P; ++oh)
        for (int64_t ow = 0; ow < p.Q; ++ow) {
          float best = -INFINITY;
          int64_t idx = -1;
          for (int64_t a = 0; a < p.kernel_h; ++a)
            for (int64_t b = 0; b < p.kernel_w; ++b) {
              const int64_t h = oh * p.stride_h - p.pad_h + a * p.dil_h, w = ow * p.stride_w - p.pad_w + b * p.dil_w;
              if (h < 0 || h >= p.H || w < 0 || w >= p.W) continue;
              const float v = x[at(p, n, c, h, w, p.H, p.W)];
              if (idx < 0 || v > best) best = v, idx = h * p.W + w;
            }
          const int64_t o = at(p, n, c, oh, ow, p.P, p.Q);
          y_ref[o] = best, i_ref[o] = idx;
        }
  for (int64_t n = 0; n < p.N; ++n)  // backward: output order, as the kernels sum
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t oh = 0; oh < p.P; ++oh)
        for (int64_t ow = 0; ow < p.Q; ++ow) {
          const int64_t o = at(p, n, c, oh, ow, p.P, p.Q);
          if (i_ref[o] >= 0) gx_ref[at(p, n, c, i_ref[o] / p.W, i_ref[o] % p.W, p.H, p.W)] += gy[o];
        }
  std::vector<float> y32(out, NAN), y64(out, NAN), gx32(in, NAN), gx64(in, NAN);
  std::vector<int64_t> i32(out, -7), i64(out, -7);
  launch_max_pool2d_fprop<float, int32_t>(p, x.data(), y32.data(), i32.data(), nullptr);
  launch_max_pool2d_fprop<float, int64_t>(p, x.data(), y64.data(), i64.data(), nullptr);
  launch_max_pool2d_bprop<float, int32_t>(p, gy.data(), i_ref.data(), gx32.data(), nullptr);
  launch_max_pool2d_bprop<float, int64_t>(p, gy.data(), i_ref.data(), gx64.data(), nullptr);
  const std::string s = std::string(name) + (p.channels_last ? " nhwc" : " nchw");
  expect(y32 == y_ref && i32 == i_ref, s + ": forward, 32-bit indices");
  expect(y64 == y_ref && i64 == i_ref, s + ": forward, 64-bit indices");
  expect(gx32 == gx_ref, s + ": backward, 32-bit indices");
  expect(gx64 == gx_ref, s + ": backward, 64-bit indices");
}
}  // namespace

int main() {
  for (bool cl : {false, true}) {
    //                 N  C   H   W  kh kw sh sw ph pw dh dw
    check(MaxPool2dParams{2, 3, 11, 13, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, cl}, "3x3 stride 2 pad 1");
    check(MaxPool2dParams{1, 5, 9, 10, 0, 0, 2, 3, 1, 2, 0, 1, 2, 1, cl}, "overlapping, dilated");
    check(MaxPool2dParams{3, 2, 7, 7, 0, 0, 2, 2, 3, 3, 1, 0, 1, 1, cl}, "stride past the kernel");
  }
  std::printf("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
