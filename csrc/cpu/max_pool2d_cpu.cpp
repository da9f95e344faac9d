// max_pool2d on the CPU: forward scans each window (NaN wins, first maximum wins ties, padding is
// -inf); backward scatters each output gradient to its index, one (n, c) plane per task, so the
// accumulation order is fixed and the result deterministic.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "../runners.h"

namespace cuconv::cpu {

namespace {

// Index and value of the maximum of one window; index -1 when the window holds no input element.
template <typename T>
inline void window_max(const MaxPool2dParams& p, const T* plane, int64_t h_step, int64_t w_step, int64_t oh,
                       int64_t ow, T& best, int64_t& best_idx) {
  best = -std::numeric_limits<T>::infinity();
  best_idx = -1;
  const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    const int64_t h = h0 + i * p.dil_h;
    if (h < 0 || h >= p.H) continue;
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t w = w0 + j * p.dil_w;
      if (w < 0 || w >= p.W) continue;
      const T v = plane[h * h_step + w * w_step];
      // strict > keeps the first maximum; every NaN replaces, so the last NaN is reported, as torch
      if (best_idx < 0 || v > best || std::isnan(v)) {
        best = v;
        best_idx = h * p.W + w;
      }
    }
  }
}

}  // namespace

void max_pool2d_forward(const MaxPool2dParams& p, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& indices) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cuconv_max_pool2d_cpu", [&] {
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    scalar_t* y = output.data_ptr<scalar_t>();
    int64_t* idx = indices.data_ptr<int64_t>();
    if (!p.channels_last) {
      at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t nc = begin; nc < end; ++nc) {
          const scalar_t* plane = x + nc * p.H * p.W;
          for (int64_t oh = 0; oh < p.P; ++oh)
            for (int64_t ow = 0; ow < p.Q; ++ow) {
              const int64_t o = (nc * p.P + oh) * p.Q + ow;
              window_max(p, plane, p.W, 1, oh, ow, y[o], idx[o]);
            }
        }
      });
    } else {
      at::parallel_for(0, p.N * p.P * p.Q, 1, [&](int64_t begin, int64_t end) {
        for (int64_t npq = begin; npq < end; ++npq) {
          const int64_t n = npq / (p.P * p.Q), oh = (npq / p.Q) % p.P, ow = npq % p.Q;
          for (int64_t c = 0; c < p.C; ++c) {
            const scalar_t* plane = x + n * p.H * p.W * p.C + c;
            window_max(p, plane, p.W * p.C, p.C, oh, ow, y[npq * p.C + c], idx[npq * p.C + c]);
          }
        }
      });
    }
  });
}

void max_pool2d_backward(const MaxPool2dParams& p, const at::Tensor& grad_output, const at::Tensor& indices,
                         const at::Tensor& grad_input) {
  grad_input.zero_();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_max_pool2d_backward_cpu", [&] {
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    const int64_t* idx = indices.const_data_ptr<int64_t>();
    scalar_t* gx = grad_input.data_ptr<scalar_t>();
    const int64_t plane = p.H * p.W;
    if (!p.channels_last) {
      at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t nc = begin; nc < end; ++nc)
          for (int64_t o = nc * p.P * p.Q; o < (nc + 1) * p.P * p.Q; ++o)
            if (idx[o] >= 0 && idx[o] < plane) gx[nc * plane + idx[o]] += gy[o];
      });
    } else {
      at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
          for (int64_t o = n * p.P * p.Q * p.C; o < (n + 1) * p.P * p.Q * p.C; ++o) {
            const int64_t c = o % p.C;
            if (idx[o] >= 0 && idx[o] < plane) gx[(n * plane + idx[o]) * p.C + c] += gy[o];
          }
      });
    }
  });
}

}  // namespace cuconv::cpu
