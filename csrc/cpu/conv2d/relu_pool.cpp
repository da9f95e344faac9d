// The CPU runner's fused conv2d + bias + ReLU + 2x2 max-pool. The conv (with its ReLU fused into the GEMM epilogue) writes a
// few images at a time into a per-thread scratch the size of the core's L2, and the CPU max-pool reads it
// back from there: the conv output never makes the round trip through memory that the unfused pair pays.
#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include <unistd.h>

#include <algorithm>

#include "ops/runner.h"

namespace cuconv::cpu {

namespace {

// Conv output bytes per chunk: the core's L2 as the OS reports it (256 KiB where it does not say).
// Each chunk is one conv call, which prepares the weight again (packs it, or transforms the
// Winograd filter), so chunks much smaller than L2 cost more than the cache saves.
int64_t chunk_bytes() {
  static const int64_t bytes = [] {
    long l2 = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return l2 > 0 ? std::clamp<int64_t>(l2, int64_t(256) << 10, int64_t(4) << 20) : int64_t(256) << 10;
  }();
  return bytes;
}

// Images per chunk and chunks: enough chunks that each one's conv output fits the scratch, a
// multiple of the thread count so the threads get even shares, and of equal size.
struct Chunks {
  int64_t per, count;
};
Chunks chunks_of(const Conv2dParams& p, const at::Tensor& input) {
  const int64_t image_bytes = p.K * p.P * p.Q * int64_t(input.element_size());
  const int64_t threads = at::get_num_threads();
  const int64_t fit = (p.N * image_bytes + chunk_bytes() - 1) / chunk_bytes();
  const int64_t wanted = std::max<int64_t>(1, (fit + threads - 1) / threads) * threads;
  const int64_t per = std::max<int64_t>(1, (p.N + wanted - 1) / wanted);
  return {per, (p.N + per - 1) / per};
}

}  // namespace

// With fewer images than threads, the conv and the pool each split their own work across the
// threads instead (the router composes them).
bool conv2d_relu_max_pool2d_fuses(const Conv2dParams& p, const at::Tensor& input) {
  return chunks_of(p, input).count >= at::get_num_threads();
}

void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& output, const at::Tensor& indices) {
  const auto [per, chunks] = chunks_of(p, input);
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  // Each thread runs whole chunks; the conv and pool calls inside run on that thread (nested
  // at::parallel_for is sequential), so a chunk's scratch is written and read by one core.
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor scratch = at::empty({per, p.K, p.P, p.Q}, input.options().memory_format(format));
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t n0 = chunk * per, nb = std::min(per, p.N - n0);
      Conv2dParams cp = p;
      cp.N = nb;
      // Slices along the batch keep either layout contiguous.
      const at::Tensor conv_out = scratch.narrow(0, 0, nb);
      conv2d_forward(cp, input.narrow(0, n0, nb), weight, bias, conv_out, /*relu=*/true);
      max_pool2d_forward(relu_pool_params(cp), conv_out, output.narrow(0, n0, nb), indices.narrow(0, n0, nb));
    }
  });
}

}  // namespace cuconv::cpu
