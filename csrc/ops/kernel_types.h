#pragma once
// Shared by the CUDA and the simulator launchers: a tensor's dtype -> the kernels' storage type,
// passed to f as a typed null pointer tag; typed data pointers.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "kernels/portable.cuh"

namespace cuconv {

// `runner` names the runner in the error ("CUDA", "simulator").
template <typename F>
void dispatch_kernel_type(const at::Tensor& t, const char* op, const char* runner, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(static_cast<float*>(nullptr));
    case at::kDouble: return f(static_cast<double*>(nullptr));
    case at::kHalf: return f(static_cast<kern::half_t*>(nullptr));
    case at::kBFloat16: return f(static_cast<kern::bfloat16_t*>(nullptr));
    default: TORCH_CHECK_NOT_IMPLEMENTED(false, "cuconv::", op, " (", runner, "): dtype ", t.scalar_type(), " is not supported");
  }
}

template <typename T> const T* ptr(const at::Tensor& t) { return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr; }
template <typename T> T* mut_ptr(const at::Tensor& t) { return static_cast<T*>(t.data_ptr()); }

}  // namespace cuconv
