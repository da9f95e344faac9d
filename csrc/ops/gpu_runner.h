#pragma once
// The simulator and CUDA runners' one body (declared in ops/runner.h), over a device adapter that
// supplies what differs: the device guard and stream, whether TF32 is allowed, device checks and
// error translation (sim/adapter.h, cuda/adapter.cuh). Each pass picks its kernel with the shared
// chooser (kernels/conv2d.cuh), so the simulator runs the CUDA routing rule itself, on its settable
// device. Included only by the per-pass instantiation files of csrc/sim and csrc/cuda.
#include <ATen/ATen.h>

#include "ops/config.h"
#include "ops/kernel_types.h"
#include "ops/runner.h"
// after the torch headers: under g++ the kernel headers define the CUDA keywords away
#include "kernels/conv2d.cuh"
#include "kernels/max_pool2d_bprop.cuh"
#include "kernels/max_pool2d_fprop.cuh"

namespace cuconv::gpu {

template <class Device, typename T>
kern::Conv2dChoice choose(const Conv2dParams& p, typename Device::Stream stream, const KernelOverride& force) {
  const kern::DeviceProps& d = kern::device_props(stream);
  if (!force.tensor_cores) return kern::choose_conv2d<T>(p, d, Device::allow_tf32());
  TORCH_CHECK(d.cc_major >= 8, "cuconv: the tensor-core kernels need an sm_80 or newer device (", Device::kName,
              " device: sm_", d.cc_major, d.cc_minor, ")");
  return {kern::Conv2dKernel::tensorcore, force.config};
}

// Runs f(T tag) for the kernels' storage type of t's dtype, inside the device's error translation.
template <class Device, typename F>
void run_typed(const char* op, const at::Tensor& t, F&& f) {
  dispatch_kernel_type(t, op, Device::kName, [&](auto tag) { Device::run(op, [&] { f(tag); }); });
}

// weight (K x C/groups x R x S) laid out as K x R x S x C/groups, 16-byte aligned for cp.async: a
// channels_last weight is that already.
inline at::Tensor krsc_weight(const at::Tensor& weight) {
  at::Tensor w = weight.contiguous(at::MemoryFormat::ChannelsLast);
  if (reinterpret_cast<uintptr_t>(w.data_ptr()) % 16 != 0) w = w.clone(at::MemoryFormat::ChannelsLast);
  return w;
}

// weight (K x C/groups x R x S, contiguous) laid out per group as C/groups x R x S x K/groups,
// 16-byte aligned for cp.async.
inline at::Tensor crsk_weight(const at::Tensor& weight, int64_t groups) {
  const int64_t K = weight.size(0);
  at::Tensor w = weight.view({groups, K / groups, weight.size(1), weight.size(2), weight.size(3)})
                     .permute({0, 2, 3, 4, 1})
                     .contiguous();
  if (reinterpret_cast<uintptr_t>(w.data_ptr()) % 16 != 0) w = w.clone();
  return w;
}

// weight in any layout (the kernels say which they read).
template <class Device>
void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output, bool relu, const KernelOverride& force) {
  Device::check_devices("conv2d", {&input, &weight, &bias, &output});
  const typename Device::Scope scope(input);
  run_typed<Device>("conv2d", input, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const kern::Conv2dChoice c = choose<Device, T>(p, scope.stream(), force);
    const at::Tensor w = kern::conv2d_fprop_weight_krsc(c, p) ? krsc_weight(weight) : weight.contiguous();
    kern::conv2d_fprop<T>(c, p, ptr<T>(input), ptr<T>(w), ptr<T>(bias), mut_ptr<T>(output), relu, scope.stream());
  });
}

template <class Device>
void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input, const KernelOverride& force) {
  Device::check_devices("conv2d_backward", {&grad_output, &weight, &grad_input});
  const typename Device::Scope scope(grad_output);
  run_typed<Device>("conv2d_backward", grad_output, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const kern::Conv2dChoice c = choose<Device, T>(p, scope.stream(), force);
    const at::Tensor w = kern::conv2d_dgrad_weight_crsk(c, p) ? crsk_weight(weight, p.groups) : weight;
    kern::conv2d_dgrad<T>(c, p, ptr<T>(grad_output), ptr<T>(w), mut_ptr<T>(grad_input), scope.stream());
  });
}

template <class Device>
void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight, const KernelOverride& force) {
  Device::check_devices("conv2d_backward", {&grad_output, &input, &grad_weight});
  const typename Device::Scope scope(grad_output);
  run_typed<Device>("conv2d_backward", grad_output, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const kern::Conv2dChoice c = choose<Device, T>(p, scope.stream(), force);
    // Split-K partial sums, one slice per chunk, added in a fixed order by a second kernel (no float
    // atomics). Poisoned like the outputs: every slice must be written.
    const int64_t bytes = kern::conv2d_wgrad_workspace<T>(c, p, scope.stream()) *
                          kern::conv2d_wgrad_workspace_bytes_per_element<T>(c);
    const at::Tensor workspace = at::empty({bytes}, grad_output.options().dtype(at::kByte));
    if (config::poison() && bytes > 0) workspace.fill_(0xff);  // NaN in float and double
    kern::conv2d_wgrad<T>(c, p, ptr<T>(grad_output), ptr<T>(input), mut_ptr<T>(grad_weight),
                          bytes > 0 ? workspace.data_ptr() : nullptr, scope.stream());
  });
}

template <class Device>
void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias) {
  Device::check_devices("conv2d_backward", {&grad_output, &grad_bias});
  const typename Device::Scope scope(grad_output);
  run_typed<Device>("conv2d_backward", grad_output, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_bias_grad<T>(p, ptr<T>(grad_output), mut_ptr<T>(grad_bias), scope.stream());
  });
}

template <class Device>
bool conv2d_relu_max_pool2d_fuses(const Conv2dParams& p, const at::Tensor& input) {
  const typename Device::Scope scope(input);
  bool fused = true;
  dispatch_kernel_type(input, "conv2d_bias_relu_max_pool2d", Device::kName, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fused = kern::fuse_conv2d_relu_pool<T>(p, kern::device_props(scope.stream()));
  });
  return fused;
}

template <class Device>
void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& output, const at::Tensor& indices) {
  Device::check_devices("conv2d_bias_relu_max_pool2d", {&input, &weight, &bias, &output, &indices});
  const typename Device::Scope scope(input);
  run_typed<Device>("conv2d_bias_relu_max_pool2d", input, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_fprop_relu_pool<T>(p, ptr<T>(input), ptr<T>(weight), ptr<T>(bias), mut_ptr<T>(output),
                                    indices.data_ptr<int64_t>(), scope.stream());
  });
}

template <class Device>
void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices) {
  Device::check_devices("max_pool2d", {&input, &output, &indices});
  const typename Device::Scope scope(input);
  run_typed<Device>("max_pool2d", input, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::max_pool2d_fprop<T>(p, ptr<T>(input), mut_ptr<T>(output), indices.data_ptr<int64_t>(), scope.stream());
  });
}

template <class Device>
void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input) {
  Device::check_devices("max_pool2d_backward", {&grad_output, &indices, &grad_input});
  const typename Device::Scope scope(grad_output);
  run_typed<Device>("max_pool2d_backward", grad_output, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::max_pool2d_bprop<T>(p, ptr<T>(grad_output), indices.const_data_ptr<int64_t>(), mut_ptr<T>(grad_input),
                              scope.stream());
  });
}

template <class Device>
std::vector<int64_t> conv2d_plan(const Conv2dParams& p, const at::Tensor& input, Conv2dPass pass,
                                 const KernelOverride& force) {
  const typename Device::Scope scope(input);
  kern::Conv2dPlan plan{};
  dispatch_kernel_type(input, "_conv2d_plan", Device::kName, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    plan = kern::conv2d_plan<T>(choose<Device, T>(p, scope.stream(), force), pass, p,
                                kern::device_props(scope.stream()));
  });
  return {int64_t(plan.kernel), plan.tc_config, plan.tc_stages, plan.splits};
}

}  // namespace cuconv::gpu
