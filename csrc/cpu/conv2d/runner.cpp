// The CPU runner's conv2d entry points (ops/runner.h): the ISA path and dtype of the call, its plan
// (plan.h), then the pass.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include "cpu/conv2d/amx_dgrad_phases.h"
#include "cpu/conv2d/amx_direct.h"
#include "cpu/conv2d/amx_wgrad.h"
#include "cpu/conv2d/passes.h"
#include "cpu/conv2d/pointwise_16bit.h"
#include "cpu/conv2d/rows_avx512.h"
#include "cpu/conv2d/winograd.h"
#include "cpu/convert16.h"
#include "cpu/float32_copies.h"
#include "cpu/max_pool2d/plan.h"
#include "cpu/scratch.h"
#include "cpu/transpose.h"
#include "ops/runner.h"

namespace cuconv::cpu {
namespace {

// A 16-bit strided 1x1 grad weight runs as the unstrided one on the pixels it reads (pointwise_16bit.h).
bool strided_pointwise_16bit(const Conv2dParams& p, at::ScalarType dtype) {
  return use_pointwise_16bit(p, dtype) && (p.stride_h > 1 || p.stride_w > 1);
}

// nchw_as_nhwc's copies: an NCHW tensor's channels-last copy, and a channels-last result into an NCHW
// tensor, one C x HW transpose per image on transpose.cpp's register kernels (ATen's strided copy of
// a ResNeXt layer's input and output took twice its grouped kernel's time), in scratch slots (fresh
// tensors were page-faulted in on some calls and not others: the same call 0.6 or 1.5 ms).
bool nchw_contiguous(const at::Tensor& t) { return t.dim() == 4 && t.is_contiguous(); }

// A channels-last tensor shaped as t in the scratch slot.
at::Tensor channels_last_scratch(const at::Tensor& t, Scratch slot) {
  const int64_t N = t.size(0), C = t.size(1), H = t.size(2), W = t.size(3);
  void* data = nullptr;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "cuconv_channels_last_scratch",
                             [&] { data = scratch<scalar_t>(slot, std::max<int64_t>(1, t.numel())); });
  return at::from_blob(data, {N, C, H, W}, {H * W * C, 1, W * C, C}, t.options());
}

// dst's image n = src's image n (rows x cols) transposed, the images split over the threads.
void transpose_images(Isa isa, const at::Tensor& src, const at::Tensor& dst, int64_t rows, int64_t cols) {
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "cuconv_transpose_images", [&] {
    const scalar_t* from = src.const_data_ptr<scalar_t>();
    scalar_t* to = dst.data_ptr<scalar_t>();
    at::parallel_for(0, src.size(0), 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) transpose(isa, from + n * rows * cols, cols, to + n * rows * cols, rows, rows, cols);
    });
  });
}

at::Tensor channels_last_copy(Isa isa, const at::Tensor& t, Scratch slot) {
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t;
  if (!nchw_contiguous(t)) return t.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor out = channels_last_scratch(t, slot);
  transpose_images(isa, t, out, t.size(1), t.size(2) * t.size(3));
  return out;
}

void copy_channels_last_into(Isa isa, const at::Tensor& nhwc, const at::Tensor& out) {
  if (!nchw_contiguous(out) || !nhwc.is_contiguous(at::MemoryFormat::ChannelsLast) ||
      out.is_contiguous(at::MemoryFormat::ChannelsLast))
    return void(out.copy_(nhwc));
  transpose_images(isa, nhwc, out, out.size(2) * out.size(3), out.size(1));
}

// The weight that grad_input_as_forward's conv (plan.h) reads: flipped in R and S, [C, K, R, S] (one group).
at::Tensor flipped_weight(const at::Tensor& weight) { return weight.flip({2, 3}).transpose(0, 1).contiguous(); }

// The passes on float32 or float64 tensors, on the ISA path `isa`; 16-bit tensors come here as
// float32 copies, a bfloat16 call with conv_isa's path (its GEMMs may then run bfloat16 dot products).
void forward(Isa isa, const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
             const at::Tensor& output, bool relu) {
  const FpropPlan plan = plan_fprop(p, isa, input.scalar_type());
  if (plan.strategy == FpropStrategy::nchw_as_nhwc) {
    const at::Tensor y = channels_last_scratch(output, Scratch::nhwc_b);
    forward(isa, as_nhwc(p), channels_last_copy(isa, input, Scratch::nhwc_a), weight, bias, y, relu);
    copy_channels_last_into(isa, y, output);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cuconv_conv2d_cpu", [&] {
    conv2d_fprop<scalar_t>(isa, plan, p, input.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                           bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, output.data_ptr<scalar_t>(),
                           relu, input.options());
  });
}

void backward_input(Isa isa, const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                    const at::Tensor& grad_input) {
  const DgradPlan plan = plan_dgrad(p, isa, grad_output.scalar_type());
  if (plan.strategy == DgradStrategy::nchw_as_nhwc) {
    const at::Tensor gx = channels_last_scratch(grad_input, Scratch::nhwc_b);
    backward_input(isa, as_nhwc(p), channels_last_copy(isa, grad_output, Scratch::nhwc_a), weight, gx);
    copy_channels_last_into(isa, gx, grad_input);
    return;
  }
  if (plan.strategy == DgradStrategy::as_forward)
    return forward(isa, grad_input_as_forward(p), grad_output, flipped_weight(weight), at::Tensor(),
                   grad_input, false);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_input_cpu", [&] {
    conv2d_dgrad<scalar_t>(isa, plan, p, grad_output.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                           grad_input.data_ptr<scalar_t>(), grad_output.options());
  });
}

void backward_weight(Isa isa, const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                     const at::Tensor& grad_weight) {
  const WgradPlan plan = plan_wgrad(p, isa, grad_output.scalar_type(), at::get_num_threads());
  if (plan.strategy == WgradStrategy::nchw_as_nhwc)
    return backward_weight(isa, as_nhwc(p), channels_last_copy(isa, grad_output, Scratch::nhwc_a),
                           channels_last_copy(isa, input, Scratch::nhwc_b), grad_weight);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_weight_cpu", [&] {
    conv2d_wgrad<scalar_t>(isa, plan, p, grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                           grad_weight.data_ptr<scalar_t>());
  });
}

Isa isa_of(at::ScalarType t) { return conv_isa(t == at::kBFloat16); }


}  // namespace

void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output, bool relu) {
  const Isa isa = isa_of(input.scalar_type());
  if (use_amx_direct(p, isa, input.scalar_type())) return amx_direct_fprop(p, input, weight, bias, output, relu);
  if (use_pointwise_16bit(p, input.scalar_type())) return pointwise_16bit_fprop(isa, p, input, weight, bias, output, relu);
  if (!is_16bit(input.scalar_type())) return forward(isa, p, input, weight, bias, output, relu);
  const at::Tensor b32 = float32_copy(bias, Scratch::wide_c);
  const FpropPlan plan = plan_fprop(p, isa, at::kFloat);
  if (plan.strategy == FpropStrategy::winograd)
    return with_16bit_type(input.scalar_type(), [&](auto type) {
      using A = decltype(type);
      winograd_conv2d_fprop<A>(isa, p, input.const_data_ptr<A>(), weight.const_data_ptr<A>(),
                               b32.defined() ? b32.const_data_ptr<float>() : nullptr, output.data_ptr<A>(), relu);
    });
  const at::Tensor w32 = float32_copy(weight, Scratch::wide_b);
  if (plan.strategy == FpropStrategy::rows_avx512)  // the input widened per image, the sums rounded as stored
    return with_16bit_type(input.scalar_type(), [&](auto type) {
      using A = decltype(type);
      conv2d_fprop_rows_avx512<A>(p, input.const_data_ptr<A>(), w32.const_data_ptr<float>(),
                                  b32.defined() ? b32.const_data_ptr<float>() : nullptr, output.data_ptr<A>(), relu);
    });
  const at::Tensor x32 = float32_copy(input, Scratch::wide_a);
  if (takes_blocks16(plan.strategy))  // the sums rounded into output a block at a time
    return conv2d_fprop<float>(isa, plan, p, x32.const_data_ptr<float>(), w32.const_data_ptr<float>(),
                               b32.defined() ? b32.const_data_ptr<float>() : nullptr, nullptr, relu, x32.options(),
                               blocks16(output));
  const at::Tensor out32 = float32_like(output, Scratch::wide_out);
  forward(isa, p, x32, w32, b32, out32, relu);
  round_into(output, out32);
}

void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input) {
  const Isa isa = isa_of(grad_output.scalar_type());
  if (plan_dgrad(p, isa, at::kFloat).strategy == DgradStrategy::as_forward &&
      use_amx_direct(grad_input_as_forward(p), isa, grad_output.scalar_type()))
    return amx_direct_fprop(grad_input_as_forward(p), grad_output, weight, at::Tensor(), grad_input, false,
                            /*flipped=*/true);
  if (use_amx_dgrad_phases(p, isa, grad_output.scalar_type()))
    return amx_dgrad_phases(p, grad_output, weight, grad_input);
  if (use_pointwise_16bit(p, grad_output.scalar_type())) return pointwise_16bit_dgrad(isa, p, grad_output, weight, grad_input);
  if (!is_16bit(grad_output.scalar_type())) return backward_input(isa, p, grad_output, weight, grad_input);
  const DgradPlan plan = plan_dgrad(p, isa, at::kFloat);
  if (plan.strategy == DgradStrategy::winograd)
    return with_16bit_type(grad_output.scalar_type(), [&](auto type) {
      using A = decltype(type);
      winograd_conv2d_dgrad<A>(isa, p, grad_output.const_data_ptr<A>(), weight.const_data_ptr<A>(),
                               grad_input.data_ptr<A>());
    });
  const at::Tensor w32 = float32_copy(weight, Scratch::wide_b);
  const at::Tensor gx32 = float32_like(grad_input, Scratch::wide_out);
  if (takes_blocks16(plan.strategy))  // grad_output widened a block at a time
    conv2d_dgrad<float>(isa, plan, p, nullptr, w32.const_data_ptr<float>(), gx32.data_ptr<float>(), w32.options(),
                        blocks16(grad_output));
  else
    backward_input(isa, p, float32_copy(grad_output, Scratch::wide_a), w32, gx32);
  round_into(grad_input, gx32);
}

void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight) {
  const Isa isa = isa_of(grad_output.scalar_type());
  // amx_wgrad declines (writing nothing) an input with an infinity or a NaN: the GEMM plan below.
  if (use_amx_wgrad(p, isa, grad_output.scalar_type()) && amx_wgrad(p, grad_output, input, grad_weight)) return;
  if (!is_16bit(grad_output.scalar_type())) return backward_weight(isa, p, grad_output, input, grad_weight);
  const at::Tensor gw32 = float32_like(grad_weight, Scratch::wide_out);
  const WgradStrategy float_strategy = plan_wgrad(p, isa, at::kFloat, at::get_num_threads()).strategy;
  if (float_strategy == WgradStrategy::winograd || float_strategy == WgradStrategy::rows_avx512) {
    with_16bit_type(grad_output.scalar_type(), [&](auto type) {  // both widen their activations themselves
      using A = decltype(type);
      const A *gy = grad_output.const_data_ptr<A>(), *x = input.const_data_ptr<A>();
      if (float_strategy == WgradStrategy::winograd) winograd_conv2d_wgrad<A>(isa, p, gy, x, gw32.data_ptr<float>());
      else conv2d_wgrad_rows_avx512<A>(p, gy, x, gw32.data_ptr<float>());
    });
    return round_into(grad_weight, gw32);
  }
  const bool strided = strided_pointwise_16bit(p, grad_output.scalar_type());
  const Conv2dParams q = strided ? pointwise_unstrided(p) : p;
  const at::Tensor x32 =
      strided ? float32_strided_pixels(p, input, Scratch::wide_b) : float32_copy(input, Scratch::wide_b);
  const WgradPlan plan = plan_wgrad(q, isa, at::kFloat, at::get_num_threads());
  if (takes_blocks16(plan.strategy))  // grad_output widened a block at a time
    conv2d_wgrad<float>(isa, plan, q, nullptr, x32.const_data_ptr<float>(), gw32.data_ptr<float>(),
                        blocks16(grad_output));
  else
    backward_weight(isa, q, float32_copy(grad_output, Scratch::wide_a), x32, gw32);
  round_into(grad_weight, gw32);
}

void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias) {
  if (is_16bit(grad_output.scalar_type())) {
    if (conv2d_bias_grad_16bit(p, grad_output, grad_bias)) return;
    const at::Tensor gb32 = float32_like(grad_bias, Scratch::wide_out);
    conv2d_backward_bias(p, float32_copy(grad_output, Scratch::wide_a), gb32);
    return round_into(grad_bias, gb32);
  }
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_bias_cpu", [&] {
    conv2d_bias_grad<scalar_t>(p, grad_output.const_data_ptr<scalar_t>(), grad_bias.data_ptr<scalar_t>());
  });
}

std::vector<std::string> conv2d_plan(const Conv2dParams& p, const at::Tensor& input) {
  const Isa isa = isa_of(input.scalar_type());
  const at::ScalarType t = is_16bit(input.scalar_type()) ? at::kFloat : input.scalar_type();  // float32_copies.h
  const FpropStrategy fprop = use_amx_direct(p, isa, input.scalar_type())        ? FpropStrategy::amx_direct
                              : use_pointwise_16bit(p, input.scalar_type()) ? FpropStrategy::pointwise_16bit
                                                                            : plan_fprop(p, isa, t).strategy;
  const WgradStrategy wgrad =
      use_amx_wgrad(p, isa, input.scalar_type()) ? WgradStrategy::amx_direct
      : strided_pointwise_16bit(p, input.scalar_type())
          ? plan_wgrad(pointwise_unstrided(p), isa, t, at::get_num_threads()).strategy
          : plan_wgrad(p, isa, t, at::get_num_threads()).strategy;
  // conv2d_backward_input's order: AMX's forward of grad_output first, as it runs
  const DgradStrategy planned = plan_dgrad(p, isa, t).strategy;
  const bool amx_as_forward = planned == DgradStrategy::as_forward &&
                              use_amx_direct(grad_input_as_forward(p), isa, input.scalar_type());
  const DgradStrategy dgrad = amx_as_forward                                     ? planned
                              : use_amx_dgrad_phases(p, isa, input.scalar_type()) ? DgradStrategy::amx_phases
                              : use_pointwise_16bit(p, input.scalar_type())       ? DgradStrategy::pointwise_16bit
                                                                                  : planned;
  return {name(fprop), name(dgrad), name(wgrad)};
}

std::vector<std::string> plan_strategies() {
  std::vector<std::string> out;
  for (const std::string& s : all_conv2d_strategies()) out.push_back("conv2d." + s);
  for (const std::string& s : all_max_pool2d_strategies()) out.push_back("max_pool2d." + s);
  return out;
}

}  // namespace cuconv::cpu
