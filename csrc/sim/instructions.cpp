// Test ops that run single tensor-core instructions in the simulator on given fragments, so tests
// can check the emulation against the PTX ISA's fragment tables (schemas: ops/schemas.cpp):
//   cuconv::_mma_sync_sim    one warp's mma.sync on given per-lane fragment registers
//   cuconv::_ldmatrix_sim    one warp's ldmatrix.x1/x2/x4 (or .x4.trans) on given shared memory and row addresses
//   cuconv::_tf32_round_sim  mma::to_tf32 (cvt.rn.tf32.f32) of every element
#include <ATen/ATen.h>
#include <torch/library.h>

#include <bit>

#include "sim/adapter.h"
// after the torch headers: the kernel headers define the CUDA keywords away
#include "kernels/launch.cuh"
#include "kernels/ldmatrix.cuh"
#include "kernels/mma_sync.cuh"

namespace cuconv::sim {
namespace {

template <typename F>
void run_simulated(const char* op, F&& f) {
  SimDevice::run(op, std::forward<F>(f));
}

// One warp: lane l passes smem + offsets[l] (bytes) as its row address; registers to row l of out.
template <int N, bool TRANS>
void ldmatrix_one_warp(const int32_t* words, int64_t nwords, const int64_t* offsets, int32_t* out) {
  uint32_t* smem = kern::dynamic_smem<uint32_t>();
  const int lane = int(threadIdx.x);
  for (int64_t i = lane; i < nwords; i += 32) smem[i] = uint32_t(words[i]);
  __syncthreads();
  uint32_t r[N];
  kern::ldmatrix<N, TRANS>(r, reinterpret_cast<const unsigned char*>(smem) + offsets[lane]);
  for (int i = 0; i < N; ++i) out[lane * N + i] = int32_t(r[i]);
}

at::Tensor ldmatrix_sim(const at::Tensor& smem, const at::Tensor& offsets, int64_t num, bool trans) {
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
  TORCH_CHECK(!trans || num == 4, "_ldmatrix_sim: the transposed load takes num 4, got ", num);
  if (trans) run(&ldmatrix_one_warp<4, true>);
  else if (num == 1) run(&ldmatrix_one_warp<1, false>);
  else if (num == 2) run(&ldmatrix_one_warp<2, false>);
  else if (num == 4) run(&ldmatrix_one_warp<4, false>);
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

TORCH_LIBRARY_IMPL(cuconv, CPU, m) {
  m.impl("_ldmatrix_sim", &cuconv::sim::ldmatrix_sim);
  m.impl("_mma_sync_sim", &cuconv::sim::mma_sync_sim);
  m.impl("_tf32_round_sim", &cuconv::sim::tf32_round_sim);
}
