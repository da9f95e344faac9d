#pragma once
// ldmatrix (sm_75+): a warp loads N (1, 2, 4) 8x8 matrices of 16-bit elements from shared memory,
// each row 16 contiguous bytes. Lanes 8i..8i+7 give the row addresses of matrix i (rows 0..7);
// every lane then receives, in register i, row lane/4 and elements 2*(lane%4), 2*(lane%4)+1 of
// matrix i (PTX ISA, "Warp-level matrix load instruction: ldmatrix"). That is the register layout of
// the mma.m16n8k16 A and B fragments, and, reading each 32-bit word as one element, of the tf32
// m16n8k8 fragments too. The .trans form hands out the transposed matrices: register i of a lane
// then holds elements (2*(lane%4), lane/4) and (2*(lane%4)+1, lane/4) of matrix i (row, element),
// which is the fragment layout of an operand stored with the M or N dimension contiguous (16-bit
// only: it transposes 16-bit elements). Under the simulator the warp exchanges its row addresses and
// each lane reads its words from the rows the layout gives it, so a wrong address is a wrong result.
#include "portable.cuh"

namespace cuconv::kern {

#if defined(__CUDACC__)
template <int N, bool TRANS = false>
CUCONV_DEVICE void ldmatrix(uint32_t (&r)[N], const void* row_addr) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row_addr));
  if constexpr (TRANS) {
    static_assert(N == 4, "the kernels load transposed fragments four matrices at a time");
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  } else if constexpr (N == 4)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else if constexpr (N == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
}
#else
// Warp-collective: every lane of the full warp calls it, as on the GPU.
template <int N, bool TRANS = false>
inline void ldmatrix(uint32_t (&r)[N], const void* row_addr) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
  const unsigned lane = (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32;
  if (lane < 8u * N) {  // the addresses of lanes past 8N are ignored
    ::cuconv_sim::check_aligned(row_addr, 16, "ldmatrix row address");
    ::cuconv_sim::check_shared(row_addr, 16, "ldmatrix row");
  }
  const uint64_t mine = uint64_t(reinterpret_cast<uintptr_t>(row_addr));
  uint64_t rows[32];
  ::cuconv_sim::warp_exchange(&mine, sizeof(mine), rows);  // every lane's row address
  ::cuconv_sim::count_ldmatrix(rows, N);
  for (int i = 0; i < N; ++i) {
    if constexpr (TRANS) {  // element lane/4 of rows 2*(lane%4) and 2*(lane%4)+1
      uint16_t lo, hi;
      std::memcpy(&lo, reinterpret_cast<const unsigned char*>(uintptr_t(rows[8 * i + 2 * (lane % 4)])) + 2 * (lane / 4), 2);
      std::memcpy(&hi, reinterpret_cast<const unsigned char*>(uintptr_t(rows[8 * i + 2 * (lane % 4) + 1])) + 2 * (lane / 4), 2);
      r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
    } else {
      std::memcpy(&r[i], reinterpret_cast<const unsigned char*>(uintptr_t(rows[8 * i + lane / 4])) + 4 * (lane % 4), 4);
    }
  }
}
#endif

}  // namespace cuconv::kern
