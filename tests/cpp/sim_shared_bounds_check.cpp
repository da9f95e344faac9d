// AddressSanitizer target: a kernel that reads its shared tile one past the end when
// -DCUCONV_PLANT_SHARED_OOB is set. The correct build must run clean; the planted build must be
// reported as a global-buffer-overflow on the shared array.
#include <cstdio>
#include <vector>

#include "kernels/launch.cuh"

using namespace cuconv::kern;

__global__ void reverse_kernel(const int* in, int* out) {
  CUCONV_SHARED(int, tile, 64);
  const int t = int(threadIdx.x);
  tile[t] = in[t];
  __syncthreads();
#ifdef CUCONV_PLANT_SHARED_OOB
  out[t] = tile[64 - t];  // off by one: thread 0 reads tile[64]
#else
  out[t] = tile[63 - t];
#endif
}

int main() {
  std::vector<int> in(64), out(64);
  for (int i = 0; i < 64; ++i) in[i] = i;
  launch_kernel(&reverse_kernel, dim3(1), dim3(64), 0, nullptr, in.data(), out.data());
  int wrong = 0;
  for (int i = 0; i < 64; ++i) wrong += out[i] != 63 - i;
  std::printf("%d wrong values\n", wrong);
  return wrong ? 1 : 0;
}
