#pragma once
// dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols (transpose_cpu.cpp).
#include <cstdint>

#include "cpu_isa.h"

namespace cuconv::cpu {

void transpose(Isa isa, const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols);
void transpose(Isa isa, const double* src, int64_t lds, double* dst, int64_t ldd, int64_t rows, int64_t cols);

}  // namespace cuconv::cpu
