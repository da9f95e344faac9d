// cpu:: fused conv2d + bias + ReLU + 2x2 max-pool. The conv (with its ReLU fused into the GEMM epilogue) writes a
// few images at a time into a per-thread scratch small enough to stay in cache, and the CPU max-pool reads it
// back from there: the conv output never makes the round trip through memory that the unfused pair pays.
#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "../runners.h"

namespace cuconv::cpu {

namespace {

// Scratch bytes per chunk: part of a per-core L2, which also holds the chunk's input and pooled output.
constexpr int64_t kScratchBytes = int64_t(256) << 10;

}  // namespace

void conv2d_relu_max_pool2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& output, const at::Tensor& indices) {
  const int64_t image_bytes = p.K * p.P * p.Q * int64_t(input.element_size());
  // Chunks: enough that each one's conv output fits the scratch, a multiple of the thread count so the
  // threads get even shares, and of equal size.
  const int64_t threads = at::get_num_threads();
  const int64_t fit = (p.N * image_bytes + kScratchBytes - 1) / kScratchBytes;
  const int64_t wanted = std::max<int64_t>(1, (fit + threads - 1) / threads) * threads;
  const int64_t per = std::max<int64_t>(1, (p.N + wanted - 1) / wanted);
  const int64_t chunks = (p.N + per - 1) / per;
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (chunks < threads) {
    // Fewer images than threads: the conv and the pool each split their own work across the threads.
    const at::Tensor conv_out = at::empty({p.N, p.K, p.P, p.Q}, input.options().memory_format(format));
    conv2d_forward(p, input, weight, bias, conv_out, /*relu=*/true);
    max_pool2d_forward(relu_pool_params(p), conv_out, output, indices);
    return;
  }
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
