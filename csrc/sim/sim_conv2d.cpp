// sim:: conv2d runners: the CUDA kernels of csrc/kernels run on CPU tensors by the simulator.
#include <ATen/ATen.h>

#include "../runners.h"
#include "sim_dispatch.h"
// after the torch headers: the kernel headers define the CUDA keywords away
#include "../kernels/conv2d.cuh"
#include "../kernels/conv2d_dgrad_tensorcore.cuh"
#include "../kernels/conv2d_fprop_tensorcore.cuh"
#include "../kernels/conv2d_wgrad_tensorcore.cuh"

namespace cuconv::sim {

namespace {
// As on the GPU, 16-bit inputs take the tensor-core kernels on sm_80 and newer. float32 stays on the
// exact kernels here (the GPU uses TF32 when allowed), so float32 simulator tests keep float32
// tolerances; the test ops of sim_conv2d_tensorcore.cpp run TF32 on request.
template <typename T>
bool use_tensor_cores(const Conv2dParams& p) {
  if constexpr (std::is_same_v<T, kern::half_t> || std::is_same_v<T, kern::bfloat16_t>)
    return !is_depthwise(p) && kern::simulated_device().cc_major >= 8;
  else
    return false;
}
}  // namespace

void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output, bool relu) {
  dispatch_kernel_type(input, "conv2d", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    run_simulated("conv2d", [&] {
      if constexpr (!std::is_same_v<T, double>) {
        if (use_tensor_cores<T>(p)) {
          kern::conv2d_fprop_tensorcore<T>(p, ptr<T>(input), ptr<T>(weight), ptr<T>(bias), mut_ptr<T>(output), relu,
                                           nullptr);
          return;
        }
      }
      kern::conv2d_fprop<T>(p, ptr<T>(input), ptr<T>(weight), ptr<T>(bias), mut_ptr<T>(output), relu, nullptr);
    });
  });
}

void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input) {
  dispatch_kernel_type(grad_output, "conv2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    run_simulated("conv2d_backward", [&] {
      if constexpr (!std::is_same_v<T, double>) {
        if (use_tensor_cores<T>(p)) {
          kern::conv2d_dgrad_tensorcore<T>(p, ptr<T>(grad_output), ptr<T>(weight), mut_ptr<T>(grad_input), nullptr);
          return;
        }
      }
      kern::conv2d_dgrad<T>(p, ptr<T>(grad_output), ptr<T>(weight), mut_ptr<T>(grad_input), nullptr);
    });
  });
}

void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight) {
  dispatch_kernel_type(grad_output, "conv2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = kern::acc_t<T>;
    if constexpr (!std::is_same_v<T, double>) {
      if (use_tensor_cores<T>(p)) {
        const at::Tensor workspace = at::empty({kern::conv2d_wgrad_tensorcore_workspace(p, int(sizeof(T)), nullptr)},
                                               grad_output.options().dtype(at::kFloat));
        run_simulated("conv2d_backward", [&] {
          kern::conv2d_wgrad_tensorcore<T>(p, ptr<T>(grad_output), ptr<T>(input), mut_ptr<T>(grad_weight),
                                           workspace.data_ptr<float>(), nullptr);
        });
        return;
      }
    }
    const at::Tensor workspace =
        at::empty({kern::conv2d_wgrad_workspace(p, nullptr)}, grad_output.options().dtype(sizeof(Acc) == 8 ? at::kDouble : at::kFloat));
    run_simulated("conv2d_backward", [&] {
      kern::conv2d_wgrad<T>(p, ptr<T>(grad_output), ptr<T>(input), mut_ptr<T>(grad_weight),
                            static_cast<Acc*>(workspace.data_ptr()), nullptr);
    });
  });
}

void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias) {
  dispatch_kernel_type(grad_output, "conv2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    run_simulated("conv2d_backward", [&] { kern::conv2d_bias_grad<T>(p, ptr<T>(grad_output), mut_ptr<T>(grad_bias), nullptr); });
  });
}

}  // namespace cuconv::sim
