#pragma once
// The CUDA device adapter for the shared GPU runner (ops/gpu_runner.h): every tensor on one CUDA
// device, that device made current and its current stream used, TF32 as torch allows it for
// convolutions. Launch errors are checked after every launch (kernels/launch.cuh, launch_check.cu).
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <initializer_list>

#include "ops/runner.h"

namespace cuconv {

struct CudaDevice {
  static constexpr const char* kName = "CUDA";
  using Stream = cudaStream_t;
  struct Scope {
    explicit Scope(const at::Tensor& t) : guard(t.device()) {}
    Stream stream() const { return c10::cuda::getCurrentCUDAStream().stream(); }
    c10::cuda::CUDAGuard guard;
  };
  static bool allow_tf32() { return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV); }
  // Every defined tensor is a CUDA tensor on the first one's device.
  static void check_devices(const char* op, std::initializer_list<const at::Tensor*> tensors) {
    const at::Tensor& first = **tensors.begin();
    for (const at::Tensor* t : tensors) {
      if (!t->defined()) continue;
      TORCH_CHECK(t->is_cuda() && t->device() == first.device(), "cuconv::", op, ": expected all tensors on ",
                  first.device(), ", but got one on ", t->device());
    }
  }
  template <typename F>
  static void run(const char*, F&& f) {
    f();
  }
};

}  // namespace cuconv
