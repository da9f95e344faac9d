// Placeholder until the simulator runtime lands: the sim:: runner refuses to run.
#include <c10/util/Exception.h>

#include "../runners.h"

namespace cuconv::sim {
#define CUCONV_SIM_MISSING TORCH_CHECK_NOT_IMPLEMENTED(false, "the cuconv simulator is not built yet")
void conv2d_forward(const Conv2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&) { CUCONV_SIM_MISSING; }
void conv2d_backward_input(const Conv2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&) { CUCONV_SIM_MISSING; }
void conv2d_backward_weight(const Conv2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&) { CUCONV_SIM_MISSING; }
void conv2d_backward_bias(const Conv2dParams&, const at::Tensor&, const at::Tensor&) { CUCONV_SIM_MISSING; }
void max_pool2d_forward(const MaxPool2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&) { CUCONV_SIM_MISSING; }
void max_pool2d_backward(const MaxPool2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&) { CUCONV_SIM_MISSING; }
}  // namespace cuconv::sim
