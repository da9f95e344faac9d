// conv2d on the CPU: direct loops, the reference implementation the fast path is checked against.
// Forward and grad input split over (n, k) / (n, c); grad weight over output channels, each
// summing over batch and space in a fixed order, so every result is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "../runners.h"

namespace cuconv::cpu {

namespace {

// Element offsets of an activation tensor in either layout.
struct ActLayout {
  int64_t n, c, h, w;
  ActLayout(int64_t C, int64_t H, int64_t W, bool channels_last)
      : n(C * H * W), c(channels_last ? 1 : H * W), h(channels_last ? W * C : W), w(channels_last ? C : 1) {}
  int64_t at(int64_t n_, int64_t c_, int64_t h_, int64_t w_) const { return n_ * n + c_ * c + h_ * h + w_ * w; }
};

}  // namespace

void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cuconv_conv2d_cpu", [&] {
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* y = output.data_ptr<scalar_t>();
    const ActLayout xl(p.C, p.H, p.W, p.channels_last), yl(p.K, p.P, p.Q, p.channels_last);
    const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
    at::parallel_for(0, p.N * p.K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t nk = begin; nk < end; ++nk) {
        const int64_t n = nk / p.K, k = nk % p.K, c0 = (k / Kg) * Cg;
        for (int64_t oh = 0; oh < p.P; ++oh)
          for (int64_t ow = 0; ow < p.Q; ++ow) {
            scalar_t acc = b ? b[k] : scalar_t(0);
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t r = 0; r < p.R; ++r) {
                const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
                if (h < 0 || h >= p.H) continue;
                for (int64_t s = 0; s < p.S; ++s) {
                  const int64_t ww = ow * p.stride_w - p.pad_w + s * p.dil_w;
                  if (ww < 0 || ww >= p.W) continue;
                  acc += x[xl.at(n, c0 + c, h, ww)] * w[((k * Cg + c) * p.R + r) * p.S + s];
                }
              }
            y[yl.at(n, k, oh, ow)] = acc;
          }
      }
    });
  });
}

void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_input_cpu", [&] {
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_input.data_ptr<scalar_t>();
    const ActLayout xl(p.C, p.H, p.W, p.channels_last), yl(p.K, p.P, p.Q, p.channels_last);
    const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
    at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t n = nc / p.C, c = nc % p.C, g = c / Cg, cg = c % Cg;
        for (int64_t h = 0; h < p.H; ++h)
          for (int64_t ww = 0; ww < p.W; ++ww) {
            scalar_t acc = 0;
            // Gather over the output positions whose window covers (h, ww).
            for (int64_t r = 0; r < p.R; ++r) {
              const int64_t th = h + p.pad_h - r * p.dil_h;
              if (th < 0 || th % p.stride_h) continue;
              const int64_t oh = th / p.stride_h;
              if (oh >= p.P) continue;
              for (int64_t s = 0; s < p.S; ++s) {
                const int64_t tw = ww + p.pad_w - s * p.dil_w;
                if (tw < 0 || tw % p.stride_w) continue;
                const int64_t ow = tw / p.stride_w;
                if (ow >= p.Q) continue;
                for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k)
                  acc += gy[yl.at(n, k, oh, ow)] * w[((k * Cg + cg) * p.R + r) * p.S + s];
              }
            }
            gx[xl.at(n, c, h, ww)] = acc;
          }
      }
    });
  });
}

void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_weight_cpu", [&] {
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* gw = grad_weight.data_ptr<scalar_t>();
    const ActLayout xl(p.C, p.H, p.W, p.channels_last), yl(p.K, p.P, p.Q, p.channels_last);
    const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
    at::parallel_for(0, p.K * Cg * p.R * p.S, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t s = i % p.S, r = (i / p.S) % p.R, cg = (i / (p.S * p.R)) % Cg, k = i / (p.S * p.R * Cg);
        const int64_t c = (k / Kg) * Cg + cg;
        scalar_t acc = 0;
        for (int64_t n = 0; n < p.N; ++n)
          for (int64_t oh = 0; oh < p.P; ++oh) {
            const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
            if (h < 0 || h >= p.H) continue;
            for (int64_t ow = 0; ow < p.Q; ++ow) {
              const int64_t ww = ow * p.stride_w - p.pad_w + s * p.dil_w;
              if (ww < 0 || ww >= p.W) continue;
              acc += gy[yl.at(n, k, oh, ow)] * x[xl.at(n, c, h, ww)];
            }
          }
        gw[i] = acc;
      }
    });
  });
}

void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_bias_cpu", [&] {
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gb = grad_bias.data_ptr<scalar_t>();
    const ActLayout yl(p.K, p.P, p.Q, p.channels_last);
    at::parallel_for(0, p.K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        scalar_t acc = 0;
        for (int64_t n = 0; n < p.N; ++n)
          for (int64_t oh = 0; oh < p.P; ++oh)
            for (int64_t ow = 0; ow < p.Q; ++ow) acc += gy[yl.at(n, k, oh, ow)];
        gb[k] = acc;
      }
    });
  });
}

}  // namespace cuconv::cpu
