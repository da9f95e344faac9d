// Source of tests/data/audit/small_*.txt: nvcc -cubin -arch=sm_80 -O3, then cuobjdump -res-usage / -sass /
// -elf and nvdisasm -c; SASS trimmed to the first instructions of each kernel plus the counted ones.
// Sample kernels for the audit parser tests: one tensor-core MMA with 128-bit loads, one with local memory.
#include <cstdint>
__global__ void __launch_bounds__(128) tc_sample(const float4* in, float* out) {
  __shared__ float4 tile[128];
  tile[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  float4 v = tile[(threadIdx.x + 1) % 128];
  uint32_t a0 = __float_as_uint(v.x), a1 = __float_as_uint(v.y), a2 = __float_as_uint(v.z), a3 = __float_as_uint(v.w);
  float d0, d1, d2, d3;
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
      : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(a0), "r"(a1),
        "f"(0.f), "f"(0.f), "f"(0.f), "f"(0.f));
  out[threadIdx.x] = d0 + d1 + d2 + d3;
}
__global__ void local_sample(const int* idx, float* out) {
  float scratch[256];
  for (int i = 0; i < 256; ++i) scratch[i] = out[i * blockDim.x + threadIdx.x];
  out[threadIdx.x] = scratch[idx[threadIdx.x] & 255];
}
