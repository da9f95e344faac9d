// Test-only entry points of the tensor-core path, run by the simulator on CPU tensors:
//   cuconv::_conv2d_tensorcore                  conv2d forward through conv2d_fprop_tensorcore.cuh
//   cuconv::_conv2d_backward_input_tensorcore   grad input through conv2d_dgrad_tensorcore.cuh
//   cuconv::_conv2d_backward_weight_tensorcore  grad weight through conv2d_wgrad_tensorcore.cuh
//       (the CUDA launchers register the same three ops for CUDA tensors). `tf32` admits float32 (as
//       TF32); `config` >= 0 forces an entry of the configuration table (kTcConfigs), -1 lets the
//       chooser pick for the shape and the (simulated) device.
//   cuconv::_conv2d_tensorcore_plan   [config, stages, splits] the chooser picks on the simulated device
//   cuconv::_mma_sync_sim             one warp's mma.sync on given per-lane fragment registers
//   cuconv::_ldmatrix_sim             one warp's ldmatrix.x1/x2/x4 on given shared memory and row addresses
//   cuconv::_tf32_round_sim           cvt.rna.tf32.f32 of every element
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "../runners.h"
#include "sim_dispatch.h"
// after the torch headers: the kernel headers define the CUDA keywords away
#include "../kernels/conv2d_dgrad_tensorcore.cuh"
#include "../kernels/conv2d_fprop_tensorcore.cuh"
#include "../kernels/conv2d_wgrad_tensorcore.cuh"
#include "../kernels/ldmatrix.cuh"
#include "../kernels/mma_sync.cuh"

namespace cuconv::sim {
namespace {

void check_tc_request(const char* op, const at::Tensor& input, bool tf32, int64_t config) {
  TORCH_CHECK(simulate_enabled(), "cuconv::", op, ": CPU tensors run in the simulator; use cuconv.simulate()");
  TORCH_CHECK(input.dim() == 4, "cuconv::", op, ": expected 4-D input, got ", input.dim(), "-D");
  const auto st = input.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || (st == at::kFloat && tf32), "cuconv::", op,
              ": tensor cores take float16, bfloat16, or float32 with tf32=True; got ", st, " with tf32=", tf32);
  TORCH_CHECK(config >= -1 && config < kern::kTcConfigCount, "cuconv::", op, ": config must be -1 or in [0, ",
              int(kern::kTcConfigCount), "), got ", config);
}

// Runs f(T tag) for the tensor-core storage types.
template <typename F>
void dispatch_tc(const at::Tensor& t, const char* op, F&& f) {
  dispatch_kernel_type(t, op, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (!std::is_same_v<T, double>) run_simulated(op, [&] { f(tag); });
  });
}

at::Tensor conv2d_tensorcore(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             bool tf32, int64_t config) {
  check_tc_request("_conv2d_tensorcore", input, tf32, config);
  const Conv2dParams p = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  TORCH_CHECK(p.C > 0, "cuconv::_conv2d_tensorcore: needs at least one input channel");
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor output = at::empty({p.N, p.K, p.P, p.Q}, input.options().memory_format(format));
  if (poison_enabled()) output.fill_(std::numeric_limits<double>::quiet_NaN());
  if (output.numel() == 0) return output;
  const at::Tensor x = input.contiguous(format), w = weight.contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  dispatch_tc(x, "_conv2d_tensorcore", [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_fprop_tensorcore<T>(p, ptr<T>(x), ptr<T>(w), ptr<T>(b), mut_ptr<T>(output), false, nullptr, int(config));
  });
  return output;
}

// Geometry of a backward request: grad_output must have the forward output's shape and input's dtype.
Conv2dParams check_tc_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups, bool tf32, int64_t config) {
  check_tc_request(op, input, tf32, config);
  const Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), "cuconv::", op, ": grad_output must have the input's dtype");
  check_grad_output(op, grad_output, {p.N, p.K, p.P, p.Q});
  TORCH_CHECK(p.N * p.P * p.Q > 0 && p.C > 0 && p.K > 0, "cuconv::", op, ": empty reductions are the router's job");
  return p;
}

at::Tensor conv2d_backward_input_tensorcore(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef dilation, int64_t groups, bool tf32, int64_t config) {
  const char* op = "_conv2d_backward_input_tensorcore";
  const Conv2dParams p = check_tc_backward(op, grad_output, input, weight, stride, padding, dilation, groups, tf32, config);
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor grad_input = at::empty({p.N, p.C, p.H, p.W}, input.options().memory_format(format));
  if (poison_enabled()) grad_input.fill_(std::numeric_limits<double>::quiet_NaN());
  const at::Tensor gy = grad_output.contiguous(format), w = weight.contiguous();
  dispatch_tc(gy, op, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_dgrad_tensorcore<T>(p, ptr<T>(gy), ptr<T>(w), mut_ptr<T>(grad_input), nullptr, int(config));
  });
  return grad_input;
}

at::Tensor conv2d_backward_weight_tensorcore(const at::Tensor& grad_output, const at::Tensor& input,
                                             const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                             at::IntArrayRef dilation, int64_t groups, bool tf32, int64_t config) {
  const char* op = "_conv2d_backward_weight_tensorcore";
  const Conv2dParams p = check_tc_backward(op, grad_output, input, weight, stride, padding, dilation, groups, tf32, config);
  const auto format = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options());
  if (poison_enabled()) grad_weight.fill_(std::numeric_limits<double>::quiet_NaN());
  const at::Tensor gy = grad_output.contiguous(format), x = input.contiguous(format);
  const at::Tensor workspace = at::empty(
      {kern::conv2d_wgrad_tensorcore_workspace(p, int(input.element_size()), nullptr, int(config))},
      input.options().dtype(at::kFloat));
  if (poison_enabled()) workspace.fill_(std::numeric_limits<float>::quiet_NaN());  // every slice is written
  dispatch_tc(gy, op, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    kern::conv2d_wgrad_tensorcore<T>(p, ptr<T>(gy), ptr<T>(x), mut_ptr<T>(grad_weight), workspace.data_ptr<float>(),
                                     nullptr, int(config));
  });
  return grad_weight;
}

// [config, stages, splits] the chooser picks for `op` (fprop, dgrad, wgrad) on the simulated device.
std::vector<int64_t> conv2d_tensorcore_plan(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                            c10::string_view op) {
  const Conv2dParams p = check_conv2d(input, weight, std::nullopt, stride, padding, dilation, groups);
  const int elem = int(input.element_size());
  const kern::DeviceProps& d = kern::simulated_device();
  if (op == "fprop") {
    const kern::TcPlan t = kern::conv2d_fprop_tensorcore_plan(p, elem, d);
    return {t.config, t.stages, 1};
  }
  if (op == "dgrad") {
    const kern::TcPlan t = kern::conv2d_dgrad_tensorcore_plan(p, elem, d);
    return {t.config, t.stages, 1};
  }
  TORCH_CHECK(op == "wgrad", "_conv2d_tensorcore_plan: op must be fprop, dgrad or wgrad, got ", op);
  const kern::TcWgradPlan w = kern::conv2d_wgrad_tensorcore_plan(p, elem, d);
  return {w.tile.config, w.tile.stages, w.splits};
}

// One warp: lane l passes smem + offsets[l] (bytes) as its row address; registers to row l of out.
template <int N>
void ldmatrix_one_warp(const int32_t* words, int64_t nwords, const int64_t* offsets, int32_t* out) {
  uint32_t* smem = kern::dynamic_smem<uint32_t>();
  const int lane = int(threadIdx.x);
  for (int64_t i = lane; i < nwords; i += 32) smem[i] = uint32_t(words[i]);
  __syncthreads();
  uint32_t r[N];
  kern::ldmatrix<N>(r, reinterpret_cast<const unsigned char*>(smem) + offsets[lane]);
  for (int i = 0; i < N; ++i) out[lane * N + i] = int32_t(r[i]);
}

at::Tensor ldmatrix_sim(const at::Tensor& smem, const at::Tensor& offsets, int64_t num) {
  TORCH_CHECK(smem.device().is_cpu() && smem.scalar_type() == at::kInt && smem.dim() == 1,
              "_ldmatrix_sim: smem must be a 1-D int32 CPU tensor of 32-bit words");
  TORCH_CHECK(smem.numel() * 4 <= 48 * 1024, "_ldmatrix_sim: at most 48 KiB of shared memory");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.sizes() == at::IntArrayRef({32}),
              "_ldmatrix_sim: offsets must be int64 [32] (bytes)");
  const at::Tensor s = smem.contiguous(), o = offsets.contiguous();
  at::Tensor out = at::empty({32, num}, smem.options());
  const int32_t* ps = s.const_data_ptr<int32_t>();
  const int64_t* po = o.const_data_ptr<int64_t>();
  int32_t* pout = out.data_ptr<int32_t>();
  const size_t bytes = size_t(s.numel()) * 4;
  auto run = [&](auto kernel) {
    run_simulated("_ldmatrix_sim", [&] {
      kern::launch_kernel(kernel, dim3(1), dim3(32), bytes, nullptr, ps, s.numel(), po, pout);
    });
  };
  if (num == 1) run(&ldmatrix_one_warp<1>);
  else if (num == 2) run(&ldmatrix_one_warp<2>);
  else if (num == 4) run(&ldmatrix_one_warp<4>);
  else TORCH_CHECK(false, "_ldmatrix_sim: num must be 1, 2 or 4, got ", num);
  return out;
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
        "int[2] dilation, int groups, bool tf32, int config=-1) -> Tensor");
  m.def("_conv2d_backward_input_tensorcore(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
        "int[] padding, int[2] dilation, int groups, bool tf32, int config=-1) -> Tensor");
  m.def("_conv2d_backward_weight_tensorcore(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
        "int[] padding, int[2] dilation, int groups, bool tf32, int config=-1) -> Tensor");
  m.def("_conv2d_tensorcore_plan(Tensor input, Tensor weight, int[2] stride, int[] padding, int[2] dilation, "
        "int groups, str op) -> int[]");
  m.def("_ldmatrix_sim(Tensor smem, Tensor offsets, int num) -> Tensor");
  m.def("_mma_sync_sim(Tensor a, Tensor b, Tensor c, str kind) -> Tensor");
  m.def("_tf32_round_sim(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(cuconv, CPU, m) {
  m.impl("_conv2d_tensorcore", &cuconv::sim::conv2d_tensorcore);
  m.impl("_conv2d_backward_input_tensorcore", &cuconv::sim::conv2d_backward_input_tensorcore);
  m.impl("_conv2d_backward_weight_tensorcore", &cuconv::sim::conv2d_backward_weight_tensorcore);
  m.impl("_conv2d_tensorcore_plan", &cuconv::sim::conv2d_tensorcore_plan);
  m.impl("_ldmatrix_sim", &cuconv::sim::ldmatrix_sim);
  m.impl("_mma_sync_sim", &cuconv::sim::mma_sync_sim);
  m.impl("_tf32_round_sim", &cuconv::sim::tf32_round_sim);
}
