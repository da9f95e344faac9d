// Every schema of the cuconv operator library, public and private, in one place. The routers
// (ops/conv2d.cpp, ops/max_pool2d.cpp) implement the public ops for the CPU and CUDA keys; the
// private ops, which exist for tests and tools, are implemented in ops/testing.cpp (forced kernel
// choices and plans, through the same routers), sim/instructions.cpp (single simulated
// tensor-core instructions) and sim/counters.cpp (the simulator's counters). Autograd:
// ops/conv2d_autograd.cpp and ops/max_pool2d_autograd.cpp; fake kernels and the functional API:
// pyext/cuconv/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(cuconv, m) {
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, int[2] dilation, "
        "int groups) -> Tensor");
  m.def("conv2d_bias_relu(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, int[2] dilation, "
        "int groups) -> Tensor");
  m.def("conv2d_bias_relu_max_pool2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, "
        "int[2] dilation, int groups) -> (Tensor output, Tensor indices)");
  m.def("conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[] padding, "
        "int[2] dilation, int groups, bool[3] output_mask) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
  m.def("conv2d_bias_relu_max_pool2d_backward(Tensor grad_output, Tensor output, Tensor indices, Tensor input, "
        "Tensor weight, int[2] stride, int[] padding, int[2] dilation, int groups, bool[3] output_mask) -> "
        "(Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
  m.def("max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> (Tensor output, Tensor indices)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, int[2] stride, "
        "int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");

  // Private: the tensor-core kernels forced on (float32 as TF32 when tf32 is true), with a tile
  // configuration (-1: the chooser's), for the simulator (inside cuconv.simulate()) and CUDA.
  m.def("_conv2d_tensorcore(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, "
        "int[2] dilation, int groups, bool tf32, int config=-1) -> Tensor");
  m.def("_conv2d_backward_input_tensorcore(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
        "int[] padding, int[2] dilation, int groups, bool tf32, int config=-1) -> Tensor");
  m.def("_conv2d_backward_weight_tensorcore(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
        "int[] padding, int[2] dilation, int groups, bool tf32, int config=-1) -> Tensor");
  // Private: the plans the runners choose, for tests that assert the path a case reaches.
  // GPU (simulator or CUDA): [kernel (0 depthwise, 1 SIMT, 2 tensor cores), tile configuration,
  // pipeline stages, split-K chunks] of pass "fprop", "dgrad" or "wgrad"; tensor_cores forces them.
  m.def("_gpu_conv2d_plan(Tensor input, Tensor weight, int[2] stride, int[] padding, int[2] dilation, int groups, "
        "str conv_pass, bool tensor_cores=False) -> int[]");
  // CPU: the strategy names of [forward, grad input, grad weight] / [forward, backward].
  m.def("_cpu_conv2d_plan(Tensor input, Tensor weight, int[2] stride, int[] padding, int[2] dilation, "
        "int groups) -> str[]");
  m.def("_cpu_plan_strategies() -> str[]");  // every strategy the CPU plans can name, "<op>.<pass>:<name>"
  m.def("_cpu_max_pool2d_plan(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> str[]");
  // Private: single tensor-core instructions in the simulator (sim/instructions.cpp).
  m.def("_ldmatrix_sim(Tensor smem, Tensor offsets, int num, bool trans=False) -> Tensor");
  m.def("_mma_sync_sim(Tensor a, Tensor b, Tensor c, str kind) -> Tensor");
  m.def("_tf32_round_sim(Tensor x) -> Tensor");
  // Private: the simulator's counters (sim/runtime.h) as JSON, optionally reset (sim/counters.cpp).
  m.def("_sim_counters(bool reset=False) -> str");
}
