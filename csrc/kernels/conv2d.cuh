#pragma once
// The GPU kernels' one routing rule, shared by the CUDA and the simulator runners (ops/gpu_runner.h):
// which conv2d kernel runs a pass (depthwise, SIMT implicit GEMM or tensor cores) and whether the
// fused conv+bias+ReLU+2x2 max-pool kernel runs, from the problem, the storage type, the device and
// whether TF32 is allowed; then the launch of the chosen kernel. The tensor-core tile configuration
// is chosen by tc_plan (implicit_gemm_tensorcore.cuh) from the same inputs, unless a test forces one.
#include "conv2d_bias_grad.cuh"
#include "conv2d_depthwise.cuh"
#include "conv2d_dgrad_implicit_gemm.cuh"
#include "conv2d_dgrad_tensorcore.cuh"
#include "conv2d_fprop_implicit_gemm.cuh"
#include "conv2d_fprop_relu_pool.cuh"
#include "conv2d_fprop_tensorcore.cuh"
#include "conv2d_wgrad_implicit_gemm.cuh"
#include "conv2d_wgrad_tensorcore.cuh"

namespace cuconv::kern {

enum class Conv2dKernel : int { depthwise = 0, simt = 1, tensorcore = 2 };

// The kernel of every pass of a conv, and the tile configuration the tensor cores use (-1: tc_plan
// chooses per pass).
struct Conv2dChoice {
  Conv2dKernel kernel;
  int tc_config = -1;
};

// Storage types the tensor cores take: float16, bfloat16, and float32 as TF32.
template <typename T>
constexpr bool tc_storage = std::is_same_v<T, float> || std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t>;

// Depthwise convs (one input channel per group) have their own kernel: tensor-core tiles would be
// almost empty. Otherwise tensor cores as cuDNN uses them, on sm_80 and newer: 16-bit inputs, and
// float32 as TF32 when allowed (torch.backends.cudnn.allow_tf32, PyTorch's default for convs).
template <typename T>
Conv2dChoice choose_conv2d(const Conv2dParams& p, const DeviceProps& d, bool allow_tf32) {
  if (p.groups > 1 && p.C == p.groups) return {Conv2dKernel::depthwise};
  const bool tc_type = std::is_same_v<T, half_t> || std::is_same_v<T, bfloat16_t> ||
                       (std::is_same_v<T, float> && allow_tf32);
  return {tc_type && d.cc_major >= 8 ? Conv2dKernel::tensorcore : Conv2dKernel::simt};
}

// Whether conv+bias+ReLU+2x2 max-pool runs as the fused kernel (SIMT, float32 without TF32): where
// the conv would take tensor cores, the fused kernel would give them up to save one pass, so the
// conv (with its ReLU) and the pooling kernel run instead.
template <typename T>
bool fuse_conv2d_relu_pool(const Conv2dParams& p, const DeviceProps& d) {
  return choose_conv2d<T>(p, d, /*allow_tf32=*/false).kernel != Conv2dKernel::tensorcore;
}

// ------------------------------------------------------------------ launches of the chosen kernel

// The weight layout conv2d_fprop's chosen kernel reads: K x R x S x C/groups (true) or K x C/groups x R x S.
inline bool conv2d_fprop_weight_krsc(const Conv2dChoice& c, const Conv2dParams& p) {
  return c.kernel == Conv2dKernel::tensorcore && conv2d_fprop_tensorcore_weight_krsc(p);
}

// The weight layout conv2d_dgrad's chosen kernel reads: per group C/groups x R x S x K/groups (true)
// or K x C/groups x R x S.
inline bool conv2d_dgrad_weight_crsk(const Conv2dChoice& c, const Conv2dParams& p) {
  return c.kernel == Conv2dKernel::tensorcore && conv2d_dgrad_tensorcore_weight_crsk(p);
}

// w is laid out as conv2d_fprop_weight_krsc says.
template <typename T>
void conv2d_fprop(const Conv2dChoice& c, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y,
                  bool relu, stream_t st) {
  if constexpr (tc_storage<T>)
    if (c.kernel == Conv2dKernel::tensorcore) return conv2d_fprop_tensorcore<T>(p, x, w, bias, y, relu, st, c.tc_config);
  if (c.kernel == Conv2dKernel::depthwise) conv2d_depthwise_fprop(p, x, w, bias, y, relu, st);
  else conv2d_fprop_implicit_gemm(p, x, w, bias, y, relu, st);
}

// w is laid out as conv2d_dgrad_weight_crsk says.
template <typename T>
void conv2d_dgrad(const Conv2dChoice& c, const Conv2dParams& p, const T* gy, const T* w, T* gx, stream_t st) {
  if constexpr (tc_storage<T>)
    if (c.kernel == Conv2dKernel::tensorcore) return conv2d_dgrad_tensorcore<T>(p, gy, w, gx, st, c.tc_config);
  if (c.kernel == Conv2dKernel::depthwise) conv2d_depthwise_dgrad(p, gy, w, gx, st);
  else conv2d_dgrad_implicit_gemm(p, gy, w, gx, st);
}

// Grad weight's split-K workspace: elements, and whether they are float (tensor cores) or acc_t<T>.
template <typename T>
int64_t conv2d_wgrad_workspace(const Conv2dChoice& c, const Conv2dParams& p, stream_t st) {
  if (c.kernel == Conv2dKernel::tensorcore) return conv2d_wgrad_tensorcore_workspace(p, int(sizeof(T)), st, c.tc_config);
  if (c.kernel == Conv2dKernel::depthwise) return 0;
  return conv2d_wgrad_workspace_elements(p, st);
}
template <typename T>
int conv2d_wgrad_workspace_bytes_per_element(const Conv2dChoice& c) {
  return c.kernel == Conv2dKernel::tensorcore ? int(sizeof(float)) : int(sizeof(acc_t<T>));
}

template <typename T>
void conv2d_wgrad(const Conv2dChoice& c, const Conv2dParams& p, const T* gy, const T* x, T* gw, void* workspace,
                  stream_t st) {
  if constexpr (tc_storage<T>)
    if (c.kernel == Conv2dKernel::tensorcore)
      return conv2d_wgrad_tensorcore<T>(p, gy, x, gw, static_cast<float*>(workspace), st, c.tc_config);
  if (c.kernel == Conv2dKernel::depthwise) conv2d_depthwise_wgrad(p, gy, x, gw, st);
  else conv2d_wgrad_implicit_gemm(p, gy, x, gw, static_cast<acc_t<T>*>(workspace), st);
}

// ------------------------------------------------------------------ the plan, for tests and tools

// What a pass runs: the kernel, the tensor-core tile configuration and pipeline depth (-1 and 0
// for the other kernels), and the grad weight's split-K chunks (1 for the other passes).
struct Conv2dPlan {
  Conv2dKernel kernel;
  int tc_config, tc_stages;
  int64_t splits;
};
template <typename T>
Conv2dPlan conv2d_plan(const Conv2dChoice& c, Conv2dPass pass, const Conv2dParams& p, const DeviceProps& d) {
  if (c.kernel == Conv2dKernel::tensorcore) {
    const int elem = int(sizeof(T));
    if (pass == Conv2dPass::fprop) {
      const TcPlan t = conv2d_fprop_tensorcore_plan(p, elem, d, c.tc_config);
      return {c.kernel, t.config, t.stages, 1};
    }
    if (pass == Conv2dPass::dgrad) {
      const TcPlan t = conv2d_dgrad_tensorcore_plan(p, elem, d, c.tc_config);
      return {c.kernel, t.config, t.stages, 1};
    }
    const TcWgradPlan w = conv2d_wgrad_tensorcore_plan(p, elem, d, c.tc_config);
    return {c.kernel, w.tile.config, w.tile.stages, w.splits};
  }
  const bool simt_wgrad = c.kernel == Conv2dKernel::simt && pass == Conv2dPass::wgrad;
  return {c.kernel, -1, 0, simt_wgrad ? conv2d_wgrad_split(p, d).splits : 1};
}

}  // namespace cuconv::kern
