// conv2d grad bias on the CPU: each channel's sum over images and positions, in a fixed order (the
// same bits for any thread count).
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu/conv2d/passes.h"
#include "cpu/sizes.h"

namespace cuconv::cpu {
namespace {

// Sums in 16 fixed lanes then folds them in a fixed order: vectorisable and deterministic.
template <typename T>
T sum_fixed_order(const T* v, int64_t n) {
  T lanes[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lanes[j] += v[i + j];
  for (int j = 0; i < n; ++i, ++j) lanes[j] += v[i];
  T acc = 0;
  for (int j = 0; j < 16; ++j) acc += lanes[j];
  return acc;
}

}  // namespace

template <typename T>
void conv2d_bias_grad(const Conv2dParams& p, const T* gy, T* gb) {
  const int64_t PQ = p.P * p.Q;
  if (!p.channels_last) {
    at::parallel_for(0, p.K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        T acc = 0;
        for (int64_t n = 0; n < p.N; ++n) acc += sum_fixed_order(gy + (n * p.K + k) * PQ, PQ);
        gb[k] = acc;
      }
    });
  } else {
    // Channels are contiguous: each thread owns a fixed block of channels and adds rows in order.
    constexpr int64_t kBlock = 64;
    at::parallel_for(0, ceil_div(p.K, kBlock), 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t k0 = b * kBlock, kn = std::min(kBlock, p.K - k0);
        T acc[kBlock] = {};
        for (int64_t row = 0; row < p.N * PQ; ++row) {
          const T* v = gy + row * p.K + k0;
          for (int64_t k = 0; k < kn; ++k) acc[k] += v[k];
        }
        for (int64_t k = 0; k < kn; ++k) gb[k0 + k] = acc[k];
      }
    });
  }
}

template decltype(conv2d_bias_grad<float>) conv2d_bias_grad<float>;
template decltype(conv2d_bias_grad<double>) conv2d_bias_grad<double>;

}  // namespace cuconv::cpu
