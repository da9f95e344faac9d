// Test-only entry points of the tensor-core path, run by the simulator on CPU tensors:
//   cuconv::_conv2d_tensorcore    conv2d forward through conv2d_fprop_tensorcore.cuh (the CUDA
//                                 launcher registers the same op for CUDA tensors)
//   cuconv::_mma_sync_sim         one warp's mma.sync on given per-lane fragment registers
//   cuconv::_tf32_round_sim       cvt.rna.tf32.f32 of every element
// They sit outside the router (ops.cpp) until the lead wires the tensor-core path in.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "../runners.h"
#include "sim_dispatch.h"
// after the torch headers: the kernel headers define the CUDA keywords away
#include "../kernels/conv2d_fprop_tensorcore.cuh"
#include "../kernels/mma_sync.cuh"

namespace cuconv::sim {
namespace {

at::Tensor conv2d_tensorcore(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             bool tf32) {
  TORCH_CHECK(simulate_enabled(), "cuconv::_conv2d_tensorcore: CPU tensors run in the simulator; use cuconv.simulate()");
  TORCH_CHECK(input.dim() == 4, "cuconv::_conv2d_tensorcore: expected 4-D input, got ", input.dim(), "-D");
  const Conv2dParams p = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const auto st = input.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || (st == at::kFloat && tf32),
              "cuconv::_conv2d_tensorcore: tensor cores take float16, bfloat16, or float32 with tf32=True; got ", st,
              " with tf32=", tf32);
  TORCH_CHECK(p.C > 0, "cuconv::_conv2d_tensorcore: needs at least one input channel");
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor output = at::empty({p.N, p.K, p.P, p.Q}, input.options().memory_format(format));
  if (poison_enabled()) output.fill_(std::numeric_limits<double>::quiet_NaN());
  if (output.numel() == 0) return output;
  const at::Tensor x = input.contiguous(format), w = weight.contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  dispatch_kernel_type(x, "_conv2d_tensorcore", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (!std::is_same_v<T, double>) {
      run_simulated("_conv2d_tensorcore", [&] {
        kern::conv2d_fprop_tensorcore<T>(p, ptr<T>(x), ptr<T>(w), ptr<T>(b), mut_ptr<T>(output), false, nullptr);
      });
    }
  });
  return output;
}

// One warp: lane l loads its registers from row l of a [32, 4], b [32, 2] (int32 bit patterns)
// and c [32, 4] (float), and writes its D fragment to row l of d.
template <kern::mma::Kind K>
void mma_one_warp(const int32_t* a, const int32_t* b, const float* c, float* d) {
  const int lane = int(threadIdx.x);
  kern::mma::FragA fa;
  kern::mma::FragB fb;
  kern::mma::FragC fc, fd;
  for (int i = 0; i < 4; ++i) fa.x[i] = uint32_t(a[lane * 4 + i]);
  for (int i = 0; i < 2; ++i) fb.x[i] = uint32_t(b[lane * 2 + i]);
  for (int i = 0; i < 4; ++i) fc.x[i] = c[lane * 4 + i];
  kern::mma::mma_sync<K>(fd, fa, fb, fc);
  for (int i = 0; i < 4; ++i) d[lane * 4 + i] = fd.x[i];
}

at::Tensor mma_sync_sim(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, c10::string_view kind) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu() && c.device().is_cpu(), "_mma_sync_sim: CPU tensors only");
  TORCH_CHECK(a.scalar_type() == at::kInt && a.sizes() == at::IntArrayRef({32, 4}), "_mma_sync_sim: a must be int32 [32, 4]");
  TORCH_CHECK(b.scalar_type() == at::kInt && b.sizes() == at::IntArrayRef({32, 2}), "_mma_sync_sim: b must be int32 [32, 2]");
  TORCH_CHECK(c.scalar_type() == at::kFloat && c.sizes() == at::IntArrayRef({32, 4}), "_mma_sync_sim: c must be float32 [32, 4]");
  const at::Tensor ac = a.contiguous(), bc = b.contiguous(), cc = c.contiguous();
  at::Tensor d = at::empty({32, 4}, c.options());
  const auto* pa = ac.const_data_ptr<int32_t>();
  const auto* pb = bc.const_data_ptr<int32_t>();
  const auto* pc = cc.const_data_ptr<float>();
  float* pd = d.data_ptr<float>();
  auto run = [&](auto kernel) {
    run_simulated("_mma_sync_sim", [&] { kern::launch_kernel(kernel, dim3(1), dim3(32), 0, nullptr, pa, pb, pc, pd); });
  };
  if (kind == "tf32") run(&mma_one_warp<kern::mma::Kind::tf32>);
  else if (kind == "f16") run(&mma_one_warp<kern::mma::Kind::f16>);
  else if (kind == "bf16") run(&mma_one_warp<kern::mma::Kind::bf16>);
  else TORCH_CHECK(false, "_mma_sync_sim: kind must be tf32, f16 or bf16, got ", kind);
  return d;
}

at::Tensor tf32_round_sim(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "_tf32_round_sim: float32 CPU tensor expected");
  at::Tensor in = x.contiguous(), out = at::empty_like(in);
  const float* src = in.const_data_ptr<float>();
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < in.numel(); ++i) dst[i] = std::bit_cast<float>(kern::mma::to_tf32(src[i]));
  return out;
}

}  // namespace
}  // namespace cuconv::sim

TORCH_LIBRARY_FRAGMENT(cuconv, m) {
  m.def("_conv2d_tensorcore(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, "
        "int[2] dilation, int groups, bool tf32) -> Tensor");
  m.def("_mma_sync_sim(Tensor a, Tensor b, Tensor c, str kind) -> Tensor");
  m.def("_tf32_round_sim(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(cuconv, CPU, m) {
  m.impl("_conv2d_tensorcore", &cuconv::sim::conv2d_tensorcore);
  m.impl("_mma_sync_sim", &cuconv::sim::mma_sync_sim);
  m.impl("_tf32_round_sim", &cuconv::sim::tf32_round_sim);
}
