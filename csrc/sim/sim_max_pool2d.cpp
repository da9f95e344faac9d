// sim:: max_pool2d runners: the CUDA kernels of csrc/kernels run on CPU tensors by the simulator.
#include <ATen/ATen.h>

#include "../runners.h"
#include "sim_dispatch.h"
// after the torch headers: the kernel headers define the CUDA keywords away
#include "../kernels/max_pool2d_bprop.cuh"
#include "../kernels/max_pool2d_fprop.cuh"

namespace cuconv::sim {

void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices) {
  dispatch_kernel_type(input, "max_pool2d", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    run_simulated("max_pool2d", [&] {
      kern::max_pool2d_fprop<T>(p, ptr<T>(input), mut_ptr<T>(output), indices.data_ptr<int64_t>(), nullptr);
    });
  });
}

void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input) {
  dispatch_kernel_type(grad_output, "max_pool2d_backward", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    run_simulated("max_pool2d_backward", [&] {
      kern::max_pool2d_bprop<T>(p, ptr<T>(grad_output), indices.const_data_ptr<int64_t>(), mut_ptr<T>(grad_input), nullptr);
    });
  });
}

}  // namespace cuconv::sim
