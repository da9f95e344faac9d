#pragma once
// Cache blocking shared by the GEMM micro-kernels (included by gemm_*.cpp only). Kernel::run
// computes one MR x NR tile of C over kc steps of K, handling partial tiles itself, and applies
// the ReLU to what it stores when told (last K block only).
#include <ATen/Parallel.h>

#include <algorithm>

#include "gemm_cpu.h"

namespace cuconv::cpu {

template <class Kernel, typename T>
void gemm_blocked(const GemmArgs<T>& g) {
  constexpr int64_t MR = Kernel::MR, NR = Kernel::NR;
  constexpr int64_t KC = 256;       // a kc x NR sliver of B stays in L1
  constexpr int64_t MC = MR * 16;   // an MC x kc block of A stays in L2
  const int64_t n_tiles = (g.N + NR - 1) / NR;
  auto run_columns = [&](int64_t t_begin, int64_t t_end) {
    for (int64_t p0 = 0; p0 < g.K; p0 += KC) {
      const int64_t kc = std::min(KC, g.K - p0);
      const GemmInit init = p0 == 0 ? g.init : GemmInit::accumulate;
      const bool relu = g.relu && p0 + kc == g.K;  // only the final sums are clamped
      for (int64_t i0 = 0; i0 < g.M; i0 += MC) {
        const int64_t i1 = std::min(i0 + MC, g.M);
        for (int64_t t = t_begin; t < t_end; ++t) {
          const int64_t j = t * NR;
          const int nv = int(std::min(NR, g.N - j));
          for (int64_t i = i0; i < i1; i += MR) {
            const int mv = int(std::min(MR, g.M - i));
            const T* bias = init == GemmInit::bias_row ? g.bias + i : init == GemmInit::bias_col ? g.bias + j : nullptr;
            Kernel::run(kc, g.A + i * g.rsA + p0 * g.csA, g.rsA, g.csA, mv, g.B + p0 * g.ldb + j, g.ldb, nv,
                        g.C + i * g.ldc + j, g.ldc, init, bias, relu);
          }
        }
      }
    }
  };
  if (g.parallel && n_tiles > 1) at::parallel_for(0, n_tiles, 1, run_columns);
  else run_columns(0, n_tiles);
}

}  // namespace cuconv::cpu
