// Calls the cuconv operators through the dispatcher, as any C++ caller would, and compares them
// with ATen's own conv2d and max_pool2d (float64, both layouts, forward and backward).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <string>

#include "expect.h"
#include "ops/config.h"

using cuconv::testing::expect;
using cuconv::testing::failures;

namespace {

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

using IntList = c10::IntArrayRef;

void check_conv2d(bool channels_last) {
  auto conv = op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, IntList, IntList,
                            IntList, int64_t)>("cuconv::conv2d");
  auto conv_bwd = op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                     const at::Tensor&, IntList, IntList, IntList,
                                                                     int64_t, std::array<bool, 3>)>(
      "cuconv::conv2d_backward");
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto opts = at::TensorOptions().dtype(at::kDouble);
  at::Tensor x = at::randn({2, 4, 9, 7}, opts).contiguous(fmt);
  at::Tensor w = at::randn({6, 2, 3, 3}, opts);
  at::Tensor b = at::randn({6}, opts);
  const std::vector<int64_t> stride{2, 1}, pad{1, 1}, dil{1, 2};
  at::Tensor y = conv.call(x, w, b, stride, pad, dil, 2);
  at::Tensor ref = at::conv2d(x, w, b, stride, pad, dil, 2);
  const std::string tag = channels_last ? " (channels_last)" : "";
  expect(at::allclose(y, ref, 1e-9, 1e-9), "conv2d forward" + tag);
  expect(y.is_contiguous(fmt), "conv2d output layout" + tag);

  at::Tensor gy = at::randn_like(ref);
  auto [gi, gw, gb] = conv_bwd.call(gy, x, w, stride, pad, dil, 2, {true, true, true});
  auto [rgi, rgw, rgb] = at::convolution_backward(gy, x, w, std::vector<int64_t>{6}, stride, pad, dil, false,
                                                  std::vector<int64_t>{0, 0}, 2, {true, true, true});
  expect(at::allclose(gi, rgi, 1e-9, 1e-9), "conv2d grad_input" + tag);
  expect(at::allclose(gw, rgw, 1e-9, 1e-9), "conv2d grad_weight" + tag);
  expect(at::allclose(gb, rgb, 1e-9, 1e-9), "conv2d grad_bias" + tag);
}

void check_max_pool2d(bool channels_last) {
  auto pool = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, IntList, IntList, IntList, IntList, bool)>(
      "cuconv::max_pool2d");
  auto pool_bwd = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, IntList, IntList, IntList,
                                IntList, bool)>("cuconv::max_pool2d_backward");
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor x = at::randn({2, 3, 9, 8}, at::TensorOptions().dtype(at::kDouble)).contiguous(fmt);
  const std::vector<int64_t> k{3, 2}, s{2, 1}, p{1, 1}, d{1, 1};
  auto [y, idx] = pool.call(x, k, s, p, d, true);
  auto [ref, ridx] = at::max_pool2d_with_indices(x, k, s, p, d, true);
  const std::string tag = channels_last ? " (channels_last)" : "";
  expect(at::equal(y, ref) && at::equal(idx, ridx), "max_pool2d values and indices" + tag);
  at::Tensor gy = at::randn_like(ref);
  at::Tensor gx = pool_bwd.call(gy, x, idx, k, s, p, d, true);
  at::Tensor rgx = at::max_pool2d_with_indices_backward(gy, x, k, s, p, d, true, ridx);
  expect(at::equal(gx, rgx), "max_pool2d backward" + tag);
}

void check_error() {
  auto conv = op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, IntList, IntList,
                            IntList, int64_t)>("cuconv::conv2d");
  bool raised = false;
  try {
    conv.call(at::randn({1, 3, 5, 5}), at::randn({2, 4, 3, 3}), std::nullopt, {1, 1}, {0, 0}, {1, 1}, 1);
  } catch (const c10::Error& e) {
    raised = std::string(e.what()).find("to have 4 channels, but got 3 channels") != std::string::npos;
  }
  expect(raised, "conv2d channel mismatch raises c10::Error");
}

}  // namespace

int main() {
  at::manual_seed(0);
  // Both CPU runners: the fallback, then the CUDA kernel source under the simulator (under the
  // sanitizers, this is where an out-of-bounds access in a kernel shows up).
  for (bool simulate : {false, true}) {
    cuconv::config::set("simulate", simulate ? "1" : "0");
    std::printf("-- %s\n", simulate ? "simulator" : "CPU fallback");
    for (bool cl : {false, true}) {
      check_conv2d(cl);
      check_max_pool2d(cl);
    }
    check_error();
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
