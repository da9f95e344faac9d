// The simulator's own checks, each planted once: threads waiting at different barriers, a block that
// cannot make progress, bad launch configurations, misaligned vector access, mismatched warp masks;
// and the warp intrinsics' lane and width rules. Prints one line per check; exits 1 if any failed.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "expect.h"
#include "kernels/launch.cuh"

using namespace cuconv::kern;

using cuconv::testing::expect;
using cuconv::testing::failures;

namespace {
template <typename F>
void expect_error(F&& f, const char* needle, const std::string& what) {
  try {
    f();
    expect(false, what + " (no error raised)");
  } catch (const cuconv_sim::SimError& e) {
    const bool found = std::strstr(e.what(), needle) != nullptr;
    if (!found) std::printf("  message was: %s\n", e.what());
    expect(found, what);
  }
}
}  // namespace

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();  // a different barrier: undefined on the GPU
  }
  out[threadIdx.x] = 1;
}

__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x >= 40) return;  // exited threads do not hold the barrier back (PTX exit)
  CUCONV_SHARED(int, tile, 64);
  tile[threadIdx.x] = int(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = tile[39 - threadIdx.x];
}

__global__ void warp_waits_for_barrier_kernel(int* out) {
  if (threadIdx.x == 0) __syncthreads();  // lane 0 waits here ...
  else out[threadIdx.x] = __shfl_sync(0xffffffffu, int(threadIdx.x), 0);  // ... its warp waits for lane 0
}

__global__ void mask_mismatch_kernel(int* out) {
  const unsigned mask = threadIdx.x < 8 ? 0xffu : 0xffffffffu;
  out[threadIdx.x] = __shfl_sync(mask, int(threadIdx.x), 0);
}

__global__ void shuffle_rules_kernel(int* out) {
  const int lane = int(threadIdx.x) % 32, v = 100 + int(threadIdx.x);
  int* o = out + threadIdx.x * 6;
  o[0] = __shfl_sync(0xffffffffu, v, lane + 3, 8);         // within segments of 8, wrapping
  o[1] = __shfl_up_sync(0xffffffffu, v, 2, 16);            // lanes 0,1 of each 16 keep their value
  o[2] = __shfl_down_sync(0xffffffffu, v, 5);              // lanes 27.. keep their value
  o[3] = __shfl_xor_sync(0xffffffffu, v, 9, 8);            // partner in a later segment: keep own
  o[4] = int(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[5] = __all_sync(0xffffffffu, lane < 32) * 2 + __any_sync(0xffffffffu, lane == 31);
}

__global__ void vector_load_kernel(const float* p, float* out) {
  struct alignas(16) f4 { float v[4]; };
  out[0] = load_vec(reinterpret_cast<const f4*>(p)).v[0];
}

__global__ void noop_kernel() {}

int main() {
  std::vector<int> out(64 * 6, 0);
  expect_error([&] { launch_kernel(&divergent_barrier_kernel, dim3(1), dim3(32), 0, nullptr, out.data()); },
               "different __syncthreads", "threads waiting at different barriers are reported");
  expect_error([&] { launch_kernel(&warp_waits_for_barrier_kernel, dim3(1), dim3(32), 0, nullptr, out.data()); },
               "deadlock", "a warp operation waiting for a lane that waits at a barrier is reported");
  expect_error([&] { launch_kernel(&mask_mismatch_kernel, dim3(1), dim3(32), 0, nullptr, out.data()); },
               "different", "lanes with different masks are reported");
  expect_error([&] { launch_kernel(&noop_kernel, dim3(1), dim3(1025), 0, nullptr); }, "1024 threads",
               "blocks above 1024 threads are refused");
  expect_error([&] { launch_kernel(&noop_kernel, dim3(1, 65536), dim3(32), 0, nullptr); }, "gridDim",
               "gridDim.y above 65535 is refused");
  expect_error([&] { launch_kernel(&noop_kernel, dim3(1), dim3(1, 1, 65), 0, nullptr); }, "blockDim",
               "blockDim.z above 64 is refused");
  expect_error([&] { launch_kernel(&noop_kernel, dim3(0), dim3(32), 0, nullptr); }, "zero-sized",
               "an empty grid is refused");
  expect_error([&] { launch_kernel(&noop_kernel, dim3(1), dim3(32), 49 * 1024, nullptr); }, "48 KiB",
               "dynamic shared memory above 48 KiB is refused");
  alignas(16) float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float got = 0;
  expect_error([&] { launch_kernel(&vector_load_kernel, dim3(1), dim3(1), 0, nullptr, data + 1, &got); },
               "misaligned", "a misaligned vector load is refused");
  launch_kernel(&vector_load_kernel, dim3(1), dim3(1), 0, nullptr, data + 4, &got);
  expect(got == 5.f, "an aligned vector load works");

  std::fill(out.begin(), out.end(), -1);
  launch_kernel(&early_exit_kernel, dim3(2), dim3(64), 0, nullptr, out.data());
  bool ok = true;
  for (int t = 0; t < 40; ++t) ok &= out[t] == 39 - t;
  expect(ok, "threads that exit before a barrier do not block it");

  launch_kernel(&shuffle_rules_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
  ok = true;
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32, warp0 = t - lane, *o = out.data() + t * 6;
    ok &= o[0] == 100 + warp0 + lane / 8 * 8 + (lane + 3) % 8;
    ok &= o[1] == 100 + (lane % 16 < 2 ? t : t - 2);
    ok &= o[2] == 100 + (lane + 5 >= 32 ? t : t + 5);
    ok &= o[3] == 100 + ((lane ^ 9) >= lane / 8 * 8 + 8 ? t : warp0 + (lane ^ 9));
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
    ok &= unsigned(o[4]) == ballot;
    ok &= o[5] == 3;
  }
  expect(ok, "shuffle, ballot, any and all follow CUDA's lane and width rules");
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
