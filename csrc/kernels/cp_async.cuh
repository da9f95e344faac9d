#pragma once
// cp.async (sm_80+): asynchronous global -> shared copies that bypass registers, so a block can have
// the next slices of a GEMM in flight while its warps compute on the current one.
//   copy<16>(dst, src, valid)   cp.async.cg.shared.global [dst], [src], 16, src-size   (L2 only)
//   copy<4>(dst, src, valid)    cp.async.ca.shared.global [dst], [src], 4, src-size
// src-size is cp-size when `valid`, else 0: the destination is zero-filled without reading `src`
// (the implicit GEMM's zero padding). commit() closes this thread's group of copies; wait<N>()
// blocks until at most the N newest committed groups are still in flight. A wait covers only the
// calling thread's copies: a __syncthreads after it makes every thread's landed copies visible.
// Under the simulator (csrc/sim/runtime.cpp) the destination is poison until the wait that
// covers its group, so a kernel that reads a tile before waiting for it fails its tests.
#include "portable.cuh"

namespace cuconv::kern::async {

#if defined(__CUDACC__)
template <int kBytes>
CUCONV_DEVICE void copy(void* smem_dst, const void* gmem_src, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // the launchers never select this path below sm_80
#else
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_size = valid ? kBytes : 0;
  if constexpr (kBytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_size) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gmem_src), "n"(kBytes), "r"(src_size)
                 : "memory");
#endif
}
CUCONV_DEVICE void commit() {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
CUCONV_DEVICE void wait() {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
#else
template <int kBytes>
inline void copy(void* smem_dst, const void* gmem_src, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  ::cuconv_sim::cp_async(smem_dst, gmem_src, kBytes, valid ? kBytes : 0);
}
inline void commit() { ::cuconv_sim::cp_async_commit(); }
template <int N>
inline void wait() {
#if defined(CUCONV_PLANT_MISSING_CP_ASYNC_WAIT)
  return;  // planted bug (tests/cpp/sim_tests.cmake): tiles are read before their copies land
#endif
  ::cuconv_sim::cp_async_wait(N);
}
#endif

// wait<N> for a pipeline depth known only at run time (N <= 2).
CUCONV_DEVICE void wait_dynamic(int n) {
  if (n <= 0) wait<0>();
  else if (n == 1) wait<1>();
  else wait<2>();
}

}  // namespace cuconv::kern::async
