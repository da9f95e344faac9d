#pragma once
// What the op routers (ops/conv2d.cpp, ops/max_pool2d.cpp) and the test ops (ops/testing.cpp)
// share: which runner takes a tensor, output allocation (poisoned when cuconv.config says so), and
// the router entry points the test ops call with a forced kernel choice.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>
#include <type_traits>
#include <vector>

#include "ops/runner.h"

namespace cuconv {

// CUDA tensors run the CUDA kernels, CPU tensors the CPU fallback, or the simulator when
// cuconv.config's `simulate` is on.
Runner runner_for(const at::Tensor& t);

// Calls cpu() for the CPU runner, else gpu(device) with device a null SimDevice* or CudaDevice*
// naming the GPU runner's adapter: gpu::f<device_of<decltype(device)>>(...).
template <class Cpu, class Gpu>
decltype(auto) on_runner(const at::Tensor& t, Cpu&& cpu, Gpu&& gpu) {
  switch (runner_for(t)) {
    case Runner::cpu: return cpu();
    case Runner::sim: return gpu(static_cast<SimDevice*>(nullptr));
    case Runner::cuda:
#ifdef CUCONV_WITH_CUDA
      return gpu(static_cast<CudaDevice*>(nullptr));
#else
      break;
#endif
  }
  TORCH_CHECK(false, "cuconv: no runner for tensors on ", t.device());
}
template <class DevicePointer>
using device_of = std::remove_pointer_t<DevicePointer>;

inline at::MemoryFormat layout(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// A runner's output, in the given layout; with cuconv.config's `poison` on (the tests), filled so
// that an element the kernel forgets to write fails the comparison: NaN, or -7 for indices.
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format);

inline at::Tensor as_batched(const at::Tensor& t, bool batched) { return batched ? t : t.unsqueeze(0); }
inline at::Tensor as_given(const at::Tensor& t, bool batched) { return batched ? t : t.squeeze(0); }

// max_pool2d's runner calls (ops/max_pool2d.cpp), for tensors already checked, laid out and allocated.
void run_max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                            const at::Tensor& indices);
void run_max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                             const at::Tensor& grad_input);

// conv2d's router with a kernel choice (ops/conv2d.cpp): relu(conv2d(...)) when relu.
at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                          bool relu, const KernelOverride& force);
// conv2d_backward's router with a kernel choice; masked-off gradients are empty tensors.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask,
    const KernelOverride& force);

}  // namespace cuconv
