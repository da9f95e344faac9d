// Source of tests/data/audit/loops_*.txt: nvcc -cubin -arch=sm_90 -O3 loops.cu (CUDA 13.0), then
// nvdisasm -c -ndf (loops_nvdisasm.txt) and cuobjdump -sass (loops_sass.txt, without the encodings).
// Loops are kept rolled (#pragma unroll 1) so the samples stay small.
// Sample kernels for the main-loop analysis: two loops with HMMA (one barrier and two barriers per
// iteration: the pipelined and the one-stage shapes), a grid-stride loop with a 32-bit and a 64-bit
// division, and a SIMT loop of FFMAs.
#include <cstdint>
__device__ __forceinline__ void mma(float (&d)[4], uint32_t a, uint32_t b) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a), "r"(a), "r"(b), "r"(b), "r"(a), "r"(b));
}
__global__ void __launch_bounds__(128) mma_loops(const uint32_t* a, float* out, int n, unsigned d, long long d64) {
  __shared__ uint32_t tile[128];
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (n & 1) {
#pragma unroll 1
    for (int i = 0; i < n; ++i) {  // two barriers per iteration
      tile[threadIdx.x] = a[i * 128 + threadIdx.x];
      __syncthreads();
      mma(acc, tile[threadIdx.x ^ 1], tile[threadIdx.x ^ 2]);
      __syncthreads();
    }
  } else {
#pragma unroll 1
    for (int i = 0; i < n; ++i) {  // one barrier per iteration, two MMAs
      __syncthreads();
      tile[(i & 1) * 64 + threadIdx.x % 64] = a[i * 128 + threadIdx.x];
      mma(acc, tile[threadIdx.x ^ 1], tile[threadIdx.x ^ 3]);
      mma(acc, tile[threadIdx.x ^ 2], tile[threadIdx.x ^ 5]);
    }
  }
  out[threadIdx.x] = acc[0] + acc[1] + acc[2] + acc[3];
#pragma unroll 1
  for (long long i = threadIdx.x; i < n; i += blockDim.x)  // a 64-bit and a 32-bit division per element
    out[i / d64] += float(unsigned(i) % d);
}
__global__ void ffma_loop(const float4* a, float4* out, int n) {
  float4 acc = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 1
  for (int i = 0; i < n; ++i) {
    const float4 v = a[i * blockDim.x + threadIdx.x];
    acc.x = fmaf(v.x, v.y, acc.x);
    acc.y = fmaf(v.y, v.z, acc.y);
    acc.z = fmaf(v.z, v.w, acc.z);
    acc.w = fmaf(v.w, v.x, acc.w);
  }
  out[threadIdx.x] = acc;
}
