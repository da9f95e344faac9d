#pragma once
// The properties of the device a launch runs on, from which the launchers choose grids, split-K
// factors and tile configurations. Under nvcc they are queried once per device (cudaDeviceGetAttribute)
// and cached; under the simulator they describe a simulated device, which tests may change
// (cuconv._C._set_sim_device) to check that every choice the properties drive stays correct.
//
// `device_props(stream)` is overloaded on the stream type (cudaStream_t under nvcc, nullptr_t in the
// simulator) rather than #ifdef'd under one name: both builds link into one library, and two inline
// functions with one mangled name but different bodies would be an ODR violation (the linker keeps
// one of them). Every host helper that depends on the device takes the stream for the same reason.
#include <cstddef>
#include <cstdint>

#include "portable.cuh"

namespace cuconv::kern {

struct DeviceProps {
  int sm_count;                    // streaming multiprocessors
  int cc_major, cc_minor;          // compute capability
  int max_threads_per_sm;          // resident threads per SM
  int max_blocks_per_sm;           // resident blocks per SM
  int regs_per_sm;                 // 32-bit registers per SM
  int64_t smem_per_sm;             // shared memory per SM, bytes
  int64_t smem_per_block_optin;    // the most shared memory one block may opt in to, bytes
};

// Blocks of `threads` threads that one SM can hold at once, by the thread and block limits alone
// (registers and shared memory can lower it; a grid a few times this size keeps every SM busy).
inline int64_t resident_blocks_per_sm(const DeviceProps& d, int threads) {
  int64_t b = d.max_threads_per_sm / (threads > 0 ? threads : 1);
  if (b > d.max_blocks_per_sm) b = d.max_blocks_per_sm;
  return b < 1 ? 1 : b;
}

#if defined(__CUDACC__)
// Properties of the current device (the launchers' device guard makes it the stream's), cached per
// device ordinal (up to 64 devices).
inline const DeviceProps& device_props(cudaStream_t) {
  constexpr int kMaxDevices = 64;
  static DeviceProps cache[kMaxDevices];
  static bool filled[kMaxDevices] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) dev = 0;
  if (!filled[dev]) {  // a benign race: every thread writes the same values
    DeviceProps d{};
    int v = 0;
    auto attr = [&](cudaDeviceAttr a, int fallback) {
      return cudaDeviceGetAttribute(&v, a, dev) == cudaSuccess ? v : fallback;
    };
    d.sm_count = attr(cudaDevAttrMultiProcessorCount, 1);
    d.cc_major = attr(cudaDevAttrComputeCapabilityMajor, 0);
    d.cc_minor = attr(cudaDevAttrComputeCapabilityMinor, 0);
    d.max_threads_per_sm = attr(cudaDevAttrMaxThreadsPerMultiProcessor, 1024);
    d.max_blocks_per_sm = attr(cudaDevAttrMaxBlocksPerMultiprocessor, 16);
    d.regs_per_sm = attr(cudaDevAttrMaxRegistersPerMultiprocessor, 65536);
    d.smem_per_sm = attr(cudaDevAttrMaxSharedMemoryPerMultiprocessor, 48 * 1024);
    d.smem_per_block_optin = attr(cudaDevAttrMaxSharedMemoryPerBlockOptin, 48 * 1024);
    cache[dev] = d;
    filled[dev] = true;
  }
  return cache[dev];
}
#else
// The simulated device: sm_80 limits (A100) with a single SM, since the simulator runs one block at
// a time; grid-stride kernels therefore launch few blocks, each covering many elements.
constexpr DeviceProps kDefaultSimDevice{1, 8, 0, 2048, 32, 65536, 164 * 1024, 163 * 1024};
inline DeviceProps& simulated_device() {
  static DeviceProps d = kDefaultSimDevice;
  return d;
}
inline const DeviceProps& device_props(std::nullptr_t) { return simulated_device(); }
#endif

}  // namespace cuconv::kern
