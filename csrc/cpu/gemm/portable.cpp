// Portable GEMM micro-kernel: plain C++ with fixed tile sizes that the compiler vectorises for
// whatever the baseline ISA is (SSE2 on x86-64, NEON on aarch64). Also the float64 path.
#include <algorithm>

#include "cpu/gemm/driver.h"

namespace cuconv::cpu {

namespace {

template <typename T, int MR_, int NR_>
struct PortableKernel {
  static constexpr int MR = MR_, NR = NR_;
  static constexpr Isa kIsa = Isa::portable;

  static void run(int64_t kc, const T* A, int64_t rsA, int64_t csA, int mv, const T* B, int64_t ldb, int nv, T* C,
                  int64_t ldc, GemmInit init, const T* bias, bool relu) {
    // Rows past the edge recompute the last valid row (always readable); they are not stored.
    const T* a[MR];
    for (int i = 0; i < MR; ++i) a[i] = A + std::min(i, mv - 1) * rsA;
    tile(kc, a, csA, B, ldb, nv, C, ldc, mv, init, bias, relu);
  }

  // The tile over rows a[0..MR) (K stride csA), with C's initial values per init.
  static void tile(int64_t kc, const T* const* a, int64_t csA, const T* B, int64_t ldb, int nv, T* C, int64_t ldc,
                   int mv, GemmInit init, const T* bias, bool relu) {
    T acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
    if (init == GemmInit::accumulate) {
      for (int i = 0; i < mv; ++i)
        for (int j = 0; j < nv; ++j) acc[i][j] = C[i * ldc + j];
    } else if (init == GemmInit::bias_row) {
      for (int i = 0; i < mv; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] = bias[i];
    } else if (init == GemmInit::bias_col) {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < nv; ++j) acc[i][j] = bias[j];
    }
    if (nv == NR) {
      for (int64_t p = 0; p < kc; ++p) {
        const T* b = B + p * ldb;
        for (int i = 0; i < MR; ++i) {
          const T av = a[i][p * csA];
          for (int j = 0; j < NR; ++j) acc[i][j] += av * b[j];
        }
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        const T* b = B + p * ldb;
        for (int i = 0; i < MR; ++i) {
          const T av = a[i][p * csA];
          for (int j = 0; j < nv; ++j) acc[i][j] += av * b[j];
        }
      }
    }
    if (relu)  // a select, not a branch; NaN < 0 is false, so NaN stays NaN (as torch.relu)
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] = acc[i][j] < T(0) ? T(0) : acc[i][j];
    for (int i = 0; i < mv; ++i)
      for (int j = 0; j < nv; ++j) C[i * ldc + j] = acc[i][j];
  }

  // B packed (kc x NR slivers); A a packed kc x MR panel, or else MR row pointers with unit K stride.
  static void run_packed(int64_t kc, const T* panel, const T* const* rows, int mv, const T* B, int nv, T* C,
                         int64_t ldc, GemmInit init, const T* bias, bool relu) {
    if (panel) {
      run(kc, panel, 1, MR, mv, B, NR, nv, C, ldc, init, bias, relu);
      return;
    }
    const T* a[MR];
    for (int i = 0; i < MR; ++i) a[i] = rows[i];
    tile(kc, a, 1, B, NR, nv, C, ldc, mv, init, bias, relu);
  }
};

}  // namespace

void gemm_portable(const GemmArgs<float>& g) { gemm_blocked<PortableKernel<float, 4, 16>>(g); }
void gemm_portable(const GemmArgs<double>& g) { gemm_blocked<PortableKernel<double, 4, 8>>(g); }

}  // namespace cuconv::cpu
