#pragma once
// Shared by the CUDA launchers: dtype dispatch (kernel_dispatch.h), device checks, the current stream.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include "../kernel_dispatch.h"

namespace cuconv::cuda {

template <typename F>
void dispatch_kernel_type(const at::Tensor& t, const char* op, F&& f) {
  cuconv::dispatch_kernel_type(t, op, "CUDA", std::forward<F>(f));
}
using cuconv::mut_ptr;
using cuconv::ptr;

// Every tensor is a CUDA tensor on the first one's device.
inline void check_same_cuda_device(const char* op, std::initializer_list<const at::Tensor*> tensors) {
  const at::Tensor& first = **tensors.begin();
  for (const at::Tensor* t : tensors) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->is_cuda() && t->device() == first.device(), "cuconv::", op,
                ": expected all tensors on ", first.device(), ", but got one on ", t->device());
  }
}


inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace cuconv::cuda
