#pragma once
// The simulator's device adapter for the shared GPU runner (ops/gpu_runner.h): CPU tensors, no
// stream (launches run synchronously), the simulated device's properties (kern::simulated_device),
// and simulator errors as c10::Error (RuntimeError in Python).
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <initializer_list>

#include "ops/config.h"
#include "ops/runner.h"
#include "sim/runtime.h"

namespace cuconv {

struct SimDevice {
  static constexpr const char* kName = "simulator";
  using Stream = std::nullptr_t;
  struct Scope {
    explicit Scope(const at::Tensor&) {}
    Stream stream() const { return nullptr; }
  };
  // float32 convs run as TF32 only when asked for (cuconv.config sim_tf32) and torch allows it, so
  // float32 simulator results keep float32 accuracy by default.
  static bool allow_tf32() {
    return config::sim_tf32() && at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
  }
  static void check_devices(const char*, std::initializer_list<const at::Tensor*>) {}
  template <typename F>
  static void run(const char* op, F&& f) {
    try {
      f();
    } catch (const cuconv_sim::SimError& e) {
      TORCH_CHECK(false, "cuconv::", op, ": ", e.what());
    }
  }
};

}  // namespace cuconv
