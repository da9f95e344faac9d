#pragma once
// Geometry of one max_pool2d call, fixed by the argument checks and handed to every runner.
// Plain data, no torch headers.
#include <cstdint>

namespace cuconv {

struct MaxPool2dParams {
  int64_t N, C, H, W;   // input
  int64_t P, Q;         // output height, width
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dil_h, dil_w;
  bool channels_last;   // input, output, indices and grads are NHWC when true, NCHW otherwise
};

// Output length of one pooled dimension, exactly as ATen's pooling_output_shape:
// with ceil_mode the last window must start inside the input or the left padding.
inline int64_t pooled_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation,
                           bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // floor division (span may be negative when the kernel does not fit)
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

}  // namespace cuconv
