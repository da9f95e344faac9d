#pragma once
// Picks the conv2d kernel for a shape: the depthwise kernels when each group has one input channel,
// the implicit GEMMs otherwise. Shared by the CUDA and the simulator launchers.
#include "conv2d_bias_grad.cuh"
#include "conv2d_depthwise.cuh"
#include "conv2d_dgrad_implicit_gemm.cuh"
#include "conv2d_fprop_implicit_gemm.cuh"
#include "conv2d_wgrad_implicit_gemm.cuh"

namespace cuconv::kern {

inline bool conv2d_is_depthwise(const Conv2dParams& p) { return p.groups > 1 && p.C == p.groups; }

template <typename T>
void conv2d_fprop(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu, stream_t st) {
  if (conv2d_is_depthwise(p)) conv2d_depthwise_fprop(p, x, w, bias, y, relu, st);
  else conv2d_fprop_implicit_gemm(p, x, w, bias, y, relu, st);
}
template <typename T>
void conv2d_dgrad(const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t st) {
  if (conv2d_is_depthwise(p)) conv2d_depthwise_dgrad(p, gy, w, gx, st);
  else conv2d_dgrad_implicit_gemm(p, gy, w, gx, st);
}
// Workspace elements of acc_t<T> that conv2d_wgrad needs on the stream's device (0 for depthwise).
inline int64_t conv2d_wgrad_workspace(const Conv2dParams& p, stream_t stream) {
  return conv2d_is_depthwise(p) ? 0 : conv2d_wgrad_workspace_elements(p, stream);
}
template <typename T>
void conv2d_wgrad(const Conv2dParams& p, const T* gy, const T* x, T* gw, acc_t<T>* workspace, stream_t st) {
  if (conv2d_is_depthwise(p)) conv2d_depthwise_wgrad(p, gy, x, gw, st);
  else conv2d_wgrad_implicit_gemm(p, gy, x, gw, workspace, st);
}

}  // namespace cuconv::kern
