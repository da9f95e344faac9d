#pragma once
// Shared by the CUDA launchers: dtype -> kernel storage type, device checks, the current stream.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include "../kernels/portable.cuh"

namespace cuconv::cuda {

template <typename F>
void dispatch_kernel_type(const at::Tensor& t, const char* op, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(static_cast<float*>(nullptr));
    case at::kDouble: return f(static_cast<double*>(nullptr));
    case at::kHalf: return f(static_cast<kern::half_t*>(nullptr));
    case at::kBFloat16: return f(static_cast<kern::bfloat16_t*>(nullptr));
    default: TORCH_CHECK_NOT_IMPLEMENTED(false, "cuconv::", op, " (CUDA): dtype ", t.scalar_type(), " is not supported");
  }
}

// Every tensor is a CUDA tensor on the first one's device.
inline void check_same_cuda_device(const char* op, std::initializer_list<const at::Tensor*> tensors) {
  const at::Tensor& first = **tensors.begin();
  for (const at::Tensor* t : tensors) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->is_cuda() && t->device() == first.device(), "cuconv::", op,
                ": expected all tensors on ", first.device(), ", but got one on ", t->device());
  }
}

template <typename T> const T* ptr(const at::Tensor& t) { return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr; }
template <typename T> T* mut_ptr(const at::Tensor& t) { return static_cast<T*>(t.data_ptr()); }

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace cuconv::cuda
