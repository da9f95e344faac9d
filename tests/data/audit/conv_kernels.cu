// Source of tests/data/audit/conv_*.txt: nvcc -std=c++20 -O3 --expt-relaxed-constexpr -Icsrc
// -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -c (CUDA 13.0), then
// cuobjdump -res-usage / -sass (triton's CUDA 13.1 tools), SASS trimmed to the counted instructions.
#include "kernels/conv2d_fprop_tensorcore.cuh"
#include "kernels/conv2d_fprop_implicit_gemm.cuh"
namespace cuconv::kern {
void check_last_launch(const char*) {}
void instantiate(const Conv2dParams& p, const half_t* h, const bfloat16_t* b, const float* f, void* y) {
  conv2d_fprop_tensorcore<half_t>(p, h, h, h, (half_t*)y, false, 0);
  conv2d_fprop_tensorcore<bfloat16_t>(p, b, b, b, (bfloat16_t*)y, false, 0);
  conv2d_fprop_tensorcore<float>(p, f, f, f, (float*)y, false, 0);
  conv2d_fprop_implicit_gemm<float>(p, f, f, f, (float*)y, false, 0);
}
}
