#pragma once
// Geometry of one conv2d call, fixed by the argument checks and handed to every runner
// (CPU fallback, simulator, CUDA). Plain data, no torch headers: kernels may take it by value.
#include <cstdint>

namespace cuconv {

struct Conv2dParams {
  int64_t N, C, H, W;   // input: batch, channels, height, width
  int64_t K, R, S;      // weight: output channels, kernel height, kernel width
  int64_t P, Q;         // output height, width
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w; // top and left padding; bottom/right padding only shapes P and Q
  int64_t dil_h, dil_w;
  int64_t groups;
  bool channels_last;   // input, output and their gradients are NHWC when true, NCHW otherwise

  int64_t C_per_group() const { return C / groups; }
  int64_t K_per_group() const { return K / groups; }
  // Multiply-adds of one forward pass (the backward passes do as many each).
  double macs() const { return double(N) * K * P * Q * C_per_group() * R * S; }
};

// The three passes of a convolution: forward, grad input, grad weight.
enum class Conv2dPass { fprop, dgrad, wgrad };

}  // namespace cuconv
