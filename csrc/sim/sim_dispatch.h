#pragma once
// The simulator launchers' dtype dispatch (kernel_dispatch.h), and simulator errors as c10::Error.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "../kernel_dispatch.h"

namespace cuconv::sim {

template <typename F>
void dispatch_kernel_type(const at::Tensor& t, const char* op, F&& f) {
  cuconv::dispatch_kernel_type(t, op, "simulator", std::forward<F>(f));
}
using cuconv::mut_ptr;
using cuconv::ptr;

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
