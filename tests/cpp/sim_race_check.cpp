// ThreadSanitizer target: a shared-memory tile kernel whose __syncthreads can be planted away
// (-DCUCONV_PLANT_MISSING_SYNCTHREADS), plus the real implicit-GEMM conv forward on a small shape.
// Built with -fsanitize=thread; the correct build must run clean, the planted build must be
// reported as a data race on the shared tile.
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernels/conv2d.cuh"

using namespace cuconv::kern;

// out[i] = in[i] + in[i+1] within a block, through a shared tile.
__global__ void neighbour_sum_kernel(const float* in, float* out, int n) {
  CUCONV_SHARED(float, tile, 128);
  const int t = int(threadIdx.x), i = int(blockIdx.x) * 128 + t;
  tile[t] = i < n ? in[i] : 0.f;
#ifndef CUCONV_PLANT_MISSING_SYNCTHREADS
  __syncthreads();  // the tile is complete before neighbours read it
#endif
  if (i < n) out[i] = tile[t] + (t + 1 < 128 ? tile[t + 1] : 0.f);
}

int main() {
  const int n = 300;
  std::vector<float> in(n), out(n);
  for (int i = 0; i < n; ++i) in[i] = float(i % 7);
  launch_kernel(&neighbour_sum_kernel, dim3((n + 127) / 128), dim3(128), 0, nullptr, in.data(), out.data(), n);
  int wrong = 0;
  for (int i = 0; i < n; ++i) {
    const float expect = in[i] + ((i % 128) + 1 < 128 && i + 1 < n ? in[i + 1] : 0.f);
    wrong += out[i] != expect;
  }
  // The real conv forward kernel (two M tiles, partial K slice) must be race-free too.
  cuconv::Conv2dParams p{1, 3, 9, 8, 5, 3, 3, 9, 8, 1, 1, 1, 1, 1, 1, 1, false};
  std::vector<float> x(p.N * p.C * p.H * p.W), w(p.K * p.C * p.R * p.S), y(p.N * p.K * p.P * p.Q);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 5) - 2.f;
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(i % 3) - 1.f;
  conv2d_fprop_implicit_gemm<float>(p, x.data(), w.data(), nullptr, y.data(), false, nullptr);
  for (int k = 0; k < p.K; ++k)
    for (int oh = 0; oh < p.P; ++oh)
      for (int ow = 0; ow < p.Q; ++ow) {
        float acc = 0;
        for (int c = 0; c < p.C; ++c)
          for (int r = 0; r < 3; ++r)
            for (int s = 0; s < 3; ++s) {
              const int h = oh - 1 + r, ww = ow - 1 + s;
              if (h >= 0 && h < p.H && ww >= 0 && ww < p.W) acc += x[(c * p.H + h) * p.W + ww] * w[((k * p.C + c) * 3 + r) * 3 + s];
            }
        wrong += std::fabs(y[(k * p.P + oh) * p.Q + ow] - acc) > 1e-4f;
      }
  std::printf("%d wrong values\n", wrong);
  return wrong ? 1 : 0;
}
