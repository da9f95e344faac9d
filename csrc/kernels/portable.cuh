#pragma once
// The one place where the kernel sources differ between nvcc (the GPU) and g++ (the simulator):
// qualifiers, shared memory, the 16-bit float types and their conversions, alignment-checked
// vector access. Kernel files include this header (and launch.cuh) and need no other #ifdef.
// No torch headers here: the simulator's C++ test targets build without libtorch.
#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define CUCONV_HD __host__ __device__ __forceinline__
#define CUCONV_DEVICE __device__ __forceinline__
#define CUCONV_UNROLL _Pragma("unroll")
// Static block-shared array of N elements of T.
#define CUCONV_SHARED(T, name, N) __shared__ __align__(16) T name[N]

namespace cuconv::kern {
using half_t = __half;
using bfloat16_t = __nv_bfloat16;
CUCONV_DEVICE float to_float(half_t v) { return __half2float(v); }
CUCONV_DEVICE float to_float(bfloat16_t v) { return __bfloat162float(v); }
template <typename T> CUCONV_DEVICE T from_float(float v);
template <> CUCONV_DEVICE half_t from_float<half_t>(float v) { return __float2half_rn(v); }
template <> CUCONV_DEVICE bfloat16_t from_float<bfloat16_t>(float v) { return __float2bfloat16_rn(v); }
// Dynamic shared memory as T*: one untyped extern buffer, reinterpreted (the usual fix for
// "extern __shared__ declared with different types" across template instantiations).
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char cuconv_dynamic_smem[];
  return reinterpret_cast<T*>(cuconv_dynamic_smem);
}
// Vector load/store; the GPU faults on a misaligned address, the simulator checks it.
template <typename V> CUCONV_DEVICE V load_vec(const V* p) { return *p; }
template <typename V> CUCONV_DEVICE void store_vec(V* p, V v) { *p = v; }
// The simulator's counters (sim/runtime.h): nothing on the GPU. Kernels call them under
// `if constexpr (kSimulator)`, so not even their arguments are computed in the nvcc build.
inline constexpr bool kSimulator = false;
CUCONV_DEVICE void sim_count_global_load(const void*, size_t) {}
CUCONV_DEVICE void sim_count_shared_store(const void*, size_t) {}
}  // namespace cuconv::kern

#else  // the simulator: plain C++ on top of csrc/sim/runtime.h
#include <bit>
#include <cstring>

#include "../sim/runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define CUCONV_HD inline
#define CUCONV_DEVICE inline
#define CUCONV_UNROLL
// `static`: one array per kernel instantiation, correct because the simulator runs one block at a
// time; registered so the launch checks its size and poisons it between blocks.
#define CUCONV_SHARED(T, name, N) \
  alignas(16) static T name[N];   \
  ::cuconv_sim::note_static_shared(name, sizeof(name))

namespace cuconv::kern {
// Storage-only 16-bit floats with the GPU's conversions (round to nearest even).
struct half_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};
inline float to_float(half_t v) { return float(std::bit_cast<_Float16>(v.bits)); }
inline float to_float(bfloat16_t v) { return std::bit_cast<float>(uint32_t(v.bits) << 16); }
template <typename T> inline T from_float(float v);
template <> inline half_t from_float<half_t>(float v) { return half_t{std::bit_cast<uint16_t>(_Float16(v))}; }
template <> inline bfloat16_t from_float<bfloat16_t>(float v) {
  uint32_t u = std::bit_cast<uint32_t>(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                                     // nearest even
  return bfloat16_t{uint16_t(u >> 16)};
}
template <typename T> inline T* dynamic_smem() { return static_cast<T*>(::cuconv_sim::dynamic_shared_memory()); }
template <typename V> inline V load_vec(const V* p) {
  ::cuconv_sim::check_aligned(p, sizeof(V), "vector load");
  return *p;
}
template <typename V> inline void store_vec(V* p, V v) {
  ::cuconv_sim::check_aligned(p, sizeof(V), "vector store");
  *p = v;
}
// Counting hooks for what the emulated instructions cannot see themselves: a register-staged global
// load (nullptr: zero padding, nothing read) and a plain shared-memory store, as the SASS issues it.
inline constexpr bool kSimulator = true;
inline void sim_count_global_load(const void* src, size_t bytes) { ::cuconv_sim::count_global_load(src, bytes); }
inline void sim_count_shared_store(const void* dst, size_t bytes) { ::cuconv_sim::count_shared_store(dst, bytes); }
}  // namespace cuconv::kern
#endif

namespace cuconv::kern {

// Accumulation type: float for the 16-bit types and float32, double for float64.
template <typename T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };
template <typename T> using acc_t = typename acc_type<T>::type;

CUCONV_HD float to_acc(float v) { return v; }
CUCONV_HD double to_acc(double v) { return v; }
#if defined(__CUDACC__)
CUCONV_DEVICE float to_acc(half_t v) { return to_float(v); }
CUCONV_DEVICE float to_acc(bfloat16_t v) { return to_float(v); }
#else
inline float to_acc(half_t v) { return to_float(v); }
inline float to_acc(bfloat16_t v) { return to_float(v); }
#endif

template <typename T> struct Store {
  template <typename A> static CUCONV_HD T cvt(A v) { return T(v); }
};
template <> struct Store<half_t> {
  static CUCONV_DEVICE half_t cvt(float v) { return from_float<half_t>(v); }
};
template <> struct Store<bfloat16_t> {
  static CUCONV_DEVICE bfloat16_t cvt(float v) { return from_float<bfloat16_t>(v); }
};
// Converts an accumulator to the storage type T (rounding to nearest even for 16-bit types).
template <typename T, typename A> CUCONV_DEVICE T from_acc(A v) { return Store<T>::cvt(v); }

template <typename T> CUCONV_HD T ceil_div(T a, T b) { return (a + b - 1) / b; }

}  // namespace cuconv::kern
