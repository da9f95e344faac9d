// The check kernels/launch.cuh runs after every kernel launch on the GPU. A launch error (bad
// configuration, no kernel image) is reported at once. A fault while the kernel runs (an illegal
// address, a misaligned copy) surfaces only at a later synchronisation, in unrelated code, so with
// cuconv.config sync_launches the stream is synchronised after each launch and the kernel that
// faulted is named.
#include <c10/util/Exception.h>
#include <cuda_runtime.h>
#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "kernels/launch.cuh"
#include "ops/config.h"

namespace cuconv::kern {
namespace {

std::string kernel_name(const void* kernel) {
  const char* mangled = nullptr;
  if (cudaFuncGetName(&mangled, kernel) != cudaSuccess || !mangled) return "(unknown kernel)";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && demangled ? demangled.get() : mangled;
}

}  // namespace

void check_launch(const void* kernel, cudaStream_t stream) {
  cudaError_t err = cudaGetLastError();
  const bool sync = err == cudaSuccess && config::sync_launches();
  if (sync) err = cudaStreamSynchronize(stream);
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error, so the next launch reports its own
  TORCH_CHECK(false, "cuconv: CUDA kernel ", kernel_name(kernel), sync ? " faulted while running: " : " failed to launch: ",
              cudaGetErrorString(err));
}

}  // namespace cuconv::kern
