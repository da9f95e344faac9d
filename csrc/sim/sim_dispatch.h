#pragma once
// Maps a tensor's dtype to the kernels' storage type and calls f with a typed null pointer tag.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "../kernels/portable.cuh"

namespace cuconv::sim {

template <typename F>
void dispatch_kernel_type(const at::Tensor& t, const char* op, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(static_cast<float*>(nullptr));
    case at::kDouble: return f(static_cast<double*>(nullptr));
    case at::kHalf: return f(static_cast<kern::half_t*>(nullptr));
    case at::kBFloat16: return f(static_cast<kern::bfloat16_t*>(nullptr));
    default: TORCH_CHECK_NOT_IMPLEMENTED(false, "cuconv::", op, " (simulator): dtype ", t.scalar_type(), " is not supported");
  }
}

template <typename T> const T* ptr(const at::Tensor& t) { return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr; }
template <typename T> T* mut_ptr(const at::Tensor& t) { return static_cast<T*>(t.data_ptr()); }

// Runs a simulated launch; simulator errors become c10::Error (RuntimeError in Python).
template <typename F>
void run_simulated(const char* op, F&& f) {
  try {
    f();
  } catch (const cuconv_sim::SimError& e) {
    TORCH_CHECK(false, "cuconv::", op, ": ", e.what());
  }
}

}  // namespace cuconv::sim
