// FastDivmod and FastDivmod64 (csrc/kernels/fast_divmod.cuh) against the `/` and `%` operators:
// small divisors, powers of two and their neighbours, random divisors, each with dividends at and
// around its multiples, the extremes of the valid range and random values. Every index the conv
// kernels decode goes through them.
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/fast_divmod.cuh"

using cuconv::kern::FastDivmod;
using cuconv::kern::FastDivmod64;

static long failures = 0, checks = 0;

template <class F>
static void check(int64_t d, int64_t n) {
  const F f(d);
  int64_t q, r;
  f.divmod(n, q, r);
  ++checks;
  if (q != n / d || r != n % d) {
    if (++failures <= 10)
      std::printf("FAIL (%d-bit): %lld / %lld gives %lld r %lld, expected %lld r %lld\n", int(sizeof(f.divisor) * 8),
                  (long long)n, (long long)d, (long long)q, (long long)r, (long long)(n / d), (long long)(n % d));
  }
}

// Divisors and dividends below 2^bits.
template <class F>
static void sweep(int bits, std::mt19937_64& rng) {
  const int64_t top = bits == 63 ? INT64_MAX : (int64_t(1) << bits) - 1;
  std::vector<int64_t> divisors;
  for (int64_t d = 1; d <= 1024; ++d) divisors.push_back(d);
  for (int b = 10; b < bits; ++b)
    for (int64_t e : {-1, 0, 1})
      if ((int64_t(1) << b) + e <= top) divisors.push_back((int64_t(1) << b) + e);
  for (int i = 0; i < 2000; ++i) divisors.push_back(int64_t(rng() >> (64 - bits + rng() % (bits - 1))) | 1);
  divisors.push_back(top);
  for (int64_t d : divisors) {
    for (int64_t n : {int64_t(0), int64_t(1), d - 1, d, d + 1, top, top - 1, top - d})
      if (n >= 0 && n <= top) check<F>(d, n);
    for (int64_t k : {int64_t(2), int64_t(3), int64_t(1000), int64_t(65537)})
      if (d <= top / (k + 1))
        for (int64_t e : {-1, 0, 1}) check<F>(d, k * d + e);
    for (int i = 0; i < 64; ++i) check<F>(d, int64_t(rng() >> (64 - bits + rng() % bits)));
  }
}

int main() {
  std::mt19937_64 rng(12345);
  sweep<FastDivmod>(31, rng);
  sweep<FastDivmod64>(63, rng);
  std::printf("fast_divmod: %ld checks, %ld failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
