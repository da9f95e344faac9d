// The CPU runner's GEMM (csrc/cpu/gemm_cpu.h) on its own: checked against a float64 product,
// then timed next to a bare FMA loop, the core's practical peak. This separates the micro-kernel's
// efficiency from what a conv adds around it (im2col, col2im, packing, threads).
//
//   gemm_bench [--threads N] [--isa avx512|avx2|portable] [--rows] M N K [M N K ...]
//   gemm_bench --check        (what ctest runs: odd shapes on every ISA path this CPU has, the
//                              bfloat16 GEMMs on bfloat16 values)
//
// --rows gives A as row pointers and B packed once (gemm_packed_b_offset), as the NHWC forward
// and the Winograd GEMMs call it; the default is plain row-major A and B. The check also gives C
// as row pointers spaced unevenly (as the strided NHWC grad input writes every other pixel), so
// tiles run both in place and through the staging tile, and A as column pointers whose values lie
// in runs (GemmA::cols with runs, as the NHWC grad weight reads a window's kernel rows): runs of 5, which
// split every tile of rows, and of 24, whose tiles of 4, 6 or 8 rows lie within one run (packed by
// vector copies).
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/gemm/gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

// GCC 12's _mm512_reduce_add_ps reads a deliberately uninitialised placeholder (_mm256_undefined_pd).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

using namespace cuconv::cpu;

namespace {


std::vector<Isa> isa_paths() {
  std::vector<Isa> paths{Isa::portable};
  if (cpu_has_avx2()) paths.push_back(Isa::avx2);
  if (cpu_has_avx2() && cpu_has_avx512()) paths.push_back(Isa::avx512);
  // The bfloat16 GEMMs (checked on bfloat16 values, as a bfloat16 conv gives them).
  if (cpu_has_avx2() && cpu_has_avx512_bf16()) paths.push_back(Isa::avx512_bf16);
  if (cpu_has_avx2() && cpu_has_amx_bf16()) paths.push_back(Isa::amx);
  return paths;
}

enum class Mode { plain, rows, c_rows, col_runs, col_runs_long };
const char* mode_name(Mode m) {
  return m == Mode::plain ? "plain" : m == Mode::rows ? "rows" : m == Mode::c_rows ? "c_rows" : m == Mode::col_runs ? "runs" : "runs24";
}

struct Problem {
  int64_t M, N, K;
  bool rows, crows, runs;
  std::vector<float> A, B, Bp, C, Acols;
  std::vector<const float*> a_rows, a_cols;
  std::vector<float*> c_rows;
  float* bp = nullptr;

  // c_rows: row i at i*(N + 3) + (i / 5)*7, so runs of up to 5 rows are evenly spaced and longer
  // ones are not; the gaps stay poisoned.
  int64_t run = 0, run_stride = 0;  // col_runs: 5 values 7 apart; col_runs_long: 24 values 29 apart
  static int64_t c_offset(int64_t i, int64_t N, bool crows) { return crows ? i * (N + 3) + (i / 5) * 7 : i * N; }
  float c_at(int64_t i, int64_t j) const { return C[c_offset(i, N, crows) + j]; }

  // bf16: A and B hold bfloat16 values (float32 with the low 16 bits clear).
  Problem(int64_t m, int64_t n, int64_t k, Mode mode, unsigned seed, bool bf16 = false)
      : M(m), N(n), K(k), rows(mode == Mode::rows), crows(mode == Mode::c_rows), runs(mode == Mode::col_runs || mode == Mode::col_runs_long) {
    if (runs) run = mode == Mode::col_runs ? 5 : 24, run_stride = mode == Mode::col_runs ? 7 : 29;
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    A.resize(M * K), B.resize(K * N);
    C.assign(c_offset(M, N, crows), std::nanf(""));  // poisoned: unwritten fails
    for (float& v : A) v = dist(gen);
    for (float& v : B) v = dist(gen);
    if (bf16)
      for (std::vector<float>* m : {&A, &B})
        for (float& v : *m) {
          uint32_t bits = 0;
          std::memcpy(&bits, &v, 4);
          bits &= 0xFFFF0000u;
          std::memcpy(&v, &bits, 4);
        }
    if (crows)
      for (int64_t i = 0; i < M; ++i) c_rows.push_back(C.data() + c_offset(i, N, true));
    if (runs) {  // column p: runs of `run` values run_stride apart (a conv window's kernel rows)
      const int64_t col = (M + run - 1) / run * run_stride;
      Acols.assign(K * col, std::nanf(""));
      for (int64_t p = 0; p < K; ++p) {
        for (int64_t i = 0; i < M; ++i) Acols[p * col + i / run * run_stride + i % run] = A[i * K + p];
        a_cols.push_back(Acols.data() + p * col);
      }
    }
    if (rows) {
      a_rows.resize(M);
      for (int64_t i = 0; i < M; ++i) a_rows[i] = A.data() + i * K;
      Bp.assign(gemm_packed_b_size(K, N) + 16, 0.f);  // + 16: room to align to 64 bytes
      bp = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(Bp.data()) + 63) & ~uintptr_t(63));
      for (int64_t p = 0; p < K; ++p)
        for (int64_t j = 0; j < N; ++j) bp[gemm_packed_b_offset(p, j, K, N)] = B[p * N + j];
    }
  }

  GemmArgs<float> args(bool parallel) {
    GemmArgs<float> g;
    g.M = M, g.N = N, g.K = K;
    g.a = GemmA<float>::strided(A.data(), K, 1);
    g.B = B.data(), g.ldb = N;
    g.C = C.data(), g.ldc = N;
    g.parallel = parallel;
    if (rows) g.a = GemmA<float>::rows(a_rows.data()), g.B = bp, g.b_packed = true;
    if (crows) g.c_rows = c_rows.data();
    if (runs) g.a = GemmA<float>::cols(a_cols.data(), run, run_stride);
    return g;
  }

  // Largest error against the float64 product, as a share of the bound K * eps * sum |a||b| (a
  // float32 sum of K products errs by at most about (K/2) eps of that sum): <= 1 passes.
  double worst_error_share() const {
    double worst = 0.0;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double ref = 0.0, mag = 0.0;
        for (int64_t p = 0; p < K; ++p) {
          ref += double(A[i * K + p]) * B[p * N + j];
          mag += std::fabs(double(A[i * K + p]) * B[p * N + j]);
        }
        const double bound = double(K) * 1.1920929e-7 * mag + 1e-30;
        const double err = std::fabs(double(c_at(i, j)) - ref);
        worst = std::isnan(c_at(i, j)) ? INFINITY : std::max(worst, err / bound);
      }
    return worst;
  }

  // Whether anything outside C's rows was written (the gaps between c_rows).
  bool gaps_written() const {
    int64_t written = 0;
    for (float v : C) written += !std::isnan(v);
    return written != M * N;
  }
};

// FLOP/s of independent FMA chains in registers, one thread: the most this core's vector unit does.
double fma_peak_gflops(Isa isa);

#if defined(__x86_64__) || defined(__i386__)
CUCONV_AVX512 double fma_loop_avx512(int64_t n) {
  __m512 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm512_set1_ps(float(i));
  const __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(1e-7f);
  for (int64_t k = 0; k < n; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm512_fmadd_ps(a, c[i], b);
  __m512 s = c[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, c[i]);
  return _mm512_reduce_add_ps(s);
}
CUCONV_AVX2 double fma_loop_avx2(int64_t n) {
  __m256 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm256_set1_ps(float(i));
  const __m256 a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(1e-7f);
  for (int64_t k = 0; k < n; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm256_fmadd_ps(a, c[i], b);
  alignas(32) float out[8];
  __m256 s = c[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, c[i]);
  _mm256_store_ps(out, s);
  return out[0];
}
double fma_peak_gflops(Isa isa) {
  if (isa == Isa::portable) return 0.0;
  const int64_t n = 50000000;
  const int lanes = isa == Isa::avx512 ? 16 : 8;
  double best = 0.0;  // the best of 5: other load only slows a run down
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    volatile double sink = isa == Isa::avx512 ? fma_loop_avx512(n) : fma_loop_avx2(n);
    (void)sink;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * lanes * 12 * n / s / 1e9);
  }
  return best;
}
#else
double fma_peak_gflops(Isa) { return 0.0; }
#endif

// Odd shapes around the tile edges (8x16, 6x16, 4x16 tiles; K blocks of 256), every operand mode,
// every ISA path, and 1 against 2 threads (the bits must not change). Returns the failure count.
int check() {
  const int64_t shapes[][3] = {{1, 1, 1},     {7, 13, 5},    {9, 17, 64},  {67, 45, 300},
                               {33, 70, 257}, {256, 96, 128}, {40, 300, 71}};
  int failures = 0;
  for (Isa isa : isa_paths())
    for (Mode mode : {Mode::plain, Mode::rows, Mode::c_rows, Mode::col_runs, Mode::col_runs_long})
      for (const auto& s : shapes) {
        const bool bf16 = isa == Isa::avx512_bf16 || isa == Isa::amx;
        Problem one(s[0], s[1], s[2], mode, 7, bf16), two(s[0], s[1], s[2], mode, 7, bf16);
        at::set_num_threads(1);
        gemm(isa, one.args(false));
        at::set_num_threads(2);
        gemm(isa, two.args(true));
        const double share = one.worst_error_share();
        const bool same = std::memcmp(one.C.data(), two.C.data(), one.C.size() * sizeof(float)) == 0;
        const bool gaps = one.gaps_written() || two.gaps_written();
        const bool ok = share <= 1.0 && same && !gaps;
        failures += !ok;
        std::printf("%-8s %-6s M=%-4ld N=%-4ld K=%-4ld error/bound %.2e, 1 vs 2 threads %s%s  %s\n", isa_name(isa),
                    mode_name(mode), long(s[0]), long(s[1]), long(s[2]), share, same ? "same bits" : "DIFFER",
                    gaps ? ", wrote outside C" : "", ok ? "ok" : "FAIL");
      }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  bool rows = false;
  std::vector<Isa> paths = isa_paths();
  std::vector<int64_t> dims;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") return check() ? 1 : 0;
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--rows") rows = true;
    else if (a == "--isa" && i + 1 < argc) {
      const std::string want = argv[++i];
      std::vector<Isa> keep;
      for (Isa isa : paths)
        if (want == isa_name(isa)) keep.push_back(isa);
      if (keep.empty()) return std::fprintf(stderr, "this CPU has no %s path\n", want.c_str()), 2;
      paths = keep;
    } else dims.push_back(std::atoll(a.c_str()));
  }
  if (dims.empty() || dims.size() % 3) {
    std::fprintf(stderr, "usage: %s [--threads N] [--isa avx512|avx2|portable] [--rows] M N K [M N K ...] | --check\n",
                 argv[0]);
    return 2;
  }
  at::set_num_threads(threads);
  for (Isa isa : paths) {
    const double peak = fma_peak_gflops(isa);
    std::printf("%s: FMA loop %.1f GFLOP/s per thread\n", isa_name(isa), peak);
    for (size_t d = 0; d < dims.size(); d += 3) {
      Problem pr(dims[d], dims[d + 1], dims[d + 2], rows ? Mode::rows : Mode::plain, 1);
      const GemmArgs<float> g = pr.args(threads > 1);
      gemm(isa, g);
      const double share = pr.worst_error_share();
      const double flop = 2.0 * pr.M * pr.N * pr.K;
      const int reps = int(std::max(1.0, 1e9 / flop));
      std::vector<double> t;
      for (int r = 0; r < 7; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) gemm(isa, g);
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
      }
      std::sort(t.begin(), t.end());
      const double gflops = flop / t[t.size() / 2] / 1e9;
      std::printf("  M=%ld N=%ld K=%ld %s, %d thread(s): %.1f GFLOP/s (median of 7)%s, error/bound %.2e %s\n",
                  long(pr.M), long(pr.N), long(pr.K), rows ? "rows" : "plain", threads, gflops,
                  peak > 0 ? (" = " + std::to_string(int(100 * gflops / (peak * threads) + 0.5)) + "% of the FMA loop").c_str()
                           : "",
                  share, share <= 1.0 ? "ok" : "FAIL");
    }
  }
  return 0;
}
