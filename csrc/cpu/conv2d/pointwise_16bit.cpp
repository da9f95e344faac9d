// The 16-bit 1x1 forward and grad input (pointwise_16bit.h), and the strided grad weight's input
// pixels: the float32 GEMM on chunks of the input converted where they are read, the forward's sums
// rounded into the output as the GEMM stores them (GemmOut16). The whole-tensor copies
// (float32_copies.h) would widen every input pixel (four times what a stride-2 shortcut reads) and
// narrow the output in passes of their own over memory; here only the pixels the conv reads are
// converted, and the forward and grad input make no float32 activation tensor.
//
// NHWC: output pixels are the GEMM's rows; a chunk of kRows pixels gathers its input pixels' C
// channels (widened) as A, times the packed weight, kRows x K, rounded into the output pixels.
// NCHW: per image and chunk of kCols output positions (or several images' small planes side by
// side), the weight times the chunk's C x columns input values (gathered along the stride, widened),
// K x columns, rounded into the K planes.
// Every output is one GEMM sum over the C input channels in order, then rounded once: deterministic,
// and the float32 path's sums.
#include "cpu/conv2d/pointwise_16bit.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <vector>

#include "cpu/conv2d/operands.h"
#include "cpu/float32_copies.h"
#include "cpu/gemm/gemm.h"
#include "cpu/scratch.h"
#include "cpu/transpose.h"
#include "ops/config.h"

namespace cuconv::cpu {
namespace {

constexpr int64_t kRows = 128;  // NHWC pixels per chunk: A (kRows x C) and the result (kRows x K) in L2
constexpr int64_t kCols = 256;  // NCHW positions per chunk
constexpr int64_t kImageValues = int64_t(1) << 18;  // NCHW images up to 1 MiB of float32 are widened whole

// Calls fn(i, offset) for the output pixels r0 .. r0 + m - 1 in order, with the offset of the input
// pixel each reads in an NHWC input (its channel 0): the position is stepped, not divided, per pixel.
template <class Fn>
void for_each_input_pixel(const Conv2dParams& p, int64_t r0, int64_t m, Fn fn) {
  int64_t n = r0 / (p.P * p.Q), oh = r0 % (p.P * p.Q) / p.Q, ow = r0 % p.Q;
  for (int64_t i = 0; i < m; ++i) {
    fn(i, ((n * p.H + oh * p.stride_h) * p.W + ow * p.stride_w) * p.C);
    if (++ow == p.Q) {
      ow = 0;
      if (++oh == p.P) oh = 0, ++n;
    }
  }
}

// Whether the output positions read every input pixel (stride 1, the output the input's size): the
// grad input then has no positions off the stride grid to zero, and its rows are the GEMM's.
bool reads_every_pixel(const Conv2dParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.P == p.H && p.Q == p.W;
}

template <typename H>
void fprop_nhwc(Isa isa, const Conv2dParams& p, const H* x, const float* wp, const float* bias, H* y, bool relu) {
  const int64_t rows = p.N * p.P * p.Q, chunks = ceil_div(rows, kRows);
  const bool dense = reads_every_pixel(p);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    float* a = scratch<float>(Scratch::input, kRows * p.C);
    float* c = scratch<float>(Scratch::output, kRows * p.K);  // the sums of K blocks before the last
    H* raw = dense ? nullptr : scratch<H>(Scratch::extra, kRows * p.C);  // a strided chunk's pixels
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t r0 = chunk * kRows, m = std::min(kRows, rows - r0);
      // The chunk's input pixels (contiguous where every pixel is read, else gathered raw), widened
      // in one run: a conversion call per pixel costs more than its C values' work.
      if (!dense)
        for_each_input_pixel(p, r0, m, [&](int64_t i, int64_t offset) { std::copy(x + offset, x + offset + p.C, raw + i * p.C); });
      widen_run(dense ? x + r0 * p.C : raw, a, m * p.C);
      GemmArgs<float> g{m, p.K, p.C, GemmA<float>::strided(a, p.C, 1), wp, 0, c, p.K};
      g.init = bias ? GemmInit::bias_col : GemmInit::zero;
      g.bias = bias;
      g.relu = relu;
      g.b_packed = true;
      g.c16 = {y + r0 * p.K, std::is_same_v<H, c10::BFloat16>, p.K};  // output pixels r0.. are contiguous
      gemm(isa, g);
    }
  });
}

// NCHW work items: images [n0, n0 + imgs) at positions [q0, q0 + span) each, side by side as the
// GEMM's imgs * span columns. Planes of kCols positions or more are cut into chunks of kCols, one
// image per item; smaller planes are joined, up to kCols columns (and `max_imgs`), so that a GEMM
// still has columns enough to fill its micro-kernel.
struct NchwItems {
  int64_t span, imgs, per_image, count;
  NchwItems(const Conv2dParams& p, int64_t max_imgs) {
    const int64_t PQ = p.P * p.Q;
    span = std::min(PQ, kCols);
    imgs = PQ >= kCols ? 1 : std::max<int64_t>(1, std::min({kCols / PQ, max_imgs, p.N}));
    per_image = ceil_div(PQ, span);
    count = imgs > 1 ? ceil_div(p.N, imgs) : p.N * per_image;
  }
  // Item i's first image, its image count and its first position.
  void at(const Conv2dParams& p, int64_t i, int64_t& n0, int64_t& n_imgs, int64_t& q0) const {
    n0 = imgs > 1 ? i * imgs : i / per_image;
    n_imgs = imgs > 1 ? std::min(imgs, p.N - n0) : 1;
    q0 = imgs > 1 ? 0 : i % per_image * span;
  }
};

// Calls fn(output row offset in the input plane, run, column) for each output row's stretch of the
// positions [q0, q0 + cols) (the input offset of its first pixel, its length, its first column).
template <class Fn>
void for_each_stretch(const Conv2dParams& p, int64_t q0, int64_t cols, Fn fn) {
  for (int64_t j = 0; j < cols;) {
    const int64_t oh = (q0 + j) / p.Q, ow = (q0 + j) % p.Q, run = std::min(p.Q - ow, cols - j);
    fn(oh * p.stride_h * p.W + ow * p.stride_w, run, j);
    j += run;
  }
}

template <typename H>
void fprop_nchw(Isa isa, const Conv2dParams& p, const H* x, const float* w32, const float* bias, H* y, bool relu) {
  const int64_t PQ = p.P * p.Q, HW = p.H * p.W;
  // Where every pixel is read, the item's positions are contiguous in each plane: images of up to
  // kImageValues float32 values are widened whole, in one vector pass (their planes may be too short
  // for vectors), larger ones a plane's positions at a time. A strided conv's values are gathered
  // raw, then widened in one pass over the item (a conversion call per output row of a few values
  // would cost more than the work; widening whole images, four times the values a stride-2
  // shortcut reads).
  const bool dense = reads_every_pixel(p);
  const bool whole = dense && p.C * HW <= kImageValues;
  const NchwItems items(p, whole ? kImageValues / (p.C * HW) : dense ? 1 : p.N);
  at::parallel_for(0, items.count, 1, [&](int64_t begin, int64_t end) {
    float* b = scratch<float>(Scratch::input, p.C * kCols);
    float* c = scratch<float>(Scratch::output, p.K * kCols);  // the sums of K blocks before the last
    float* images = scratch<float>(Scratch::extra, whole ? items.imgs * p.C * HW : ceil_div(p.C * kCols, int64_t(2)));
    H* raw = reinterpret_cast<H*>(images);  // a strided item's values, C x cols
    for (int64_t item = begin; item < end; ++item) {
      int64_t n0, imgs, q0;
      items.at(p, item, n0, imgs, q0);
      const int64_t span = std::min(items.span, PQ - q0), cols = imgs * span;
      if (whole) widen_run(x + n0 * p.C * HW, images, imgs * p.C * HW);
      for (int64_t t = 0; t < imgs; ++t)
        for (int64_t ci = 0; ci < p.C; ++ci) {
          const int64_t plane = ((n0 + t) * p.C + ci) * HW, at = ci * cols + t * span;
          if (whole) {
            std::copy(images + plane - n0 * p.C * HW + q0, images + plane - n0 * p.C * HW + q0 + span, b + at);
          } else if (dense) {
            widen_run(x + plane + q0, b + at, span);
          } else {
            for_each_stretch(p, q0, span, [&](int64_t offset, int64_t run, int64_t j) {
              const H* src = x + plane + offset;
              for (int64_t k = 0; k < run; ++k) raw[at + j + k] = src[k * p.stride_w];
            });
          }
        }
      if (!dense) widen_run(raw, b, p.C * cols);
      GemmArgs<float> g{p.K, cols, p.C, GemmA<float>::strided(w32, p.C, 1), b, cols, c, cols};
      g.init = bias ? GemmInit::bias_row : GemmInit::zero;
      g.bias = bias;
      g.relu = relu;
      // Rounded into the output planes as the GEMM stores them; joined images' columns are blocks
      // of a plane each, an image apart.
      g.c16 = {y + n0 * p.K * PQ + q0, std::is_same_v<H, c10::BFloat16>, PQ, imgs > 1 ? span : 0, p.K * PQ};
      gemm(isa, g);
    }
  });
}

template <typename H>
void fprop(Isa isa, const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
           const at::Tensor& output, bool relu) {
  // The weight (K x C) and bias in float32, once per call: small next to the activations.
  float* w32 = scratch<float>(Scratch::wide_b, p.K * p.C);
  widen_run(weight.const_data_ptr<H>(), w32, p.K * p.C);
  float* b32 = nullptr;
  if (bias.defined()) {
    b32 = scratch<float>(Scratch::wide_c, p.K);
    widen_run(bias.const_data_ptr<H>(), b32, p.K);
  }
  const H* x = input.const_data_ptr<H>();
  H* y = output.data_ptr<H>();
  if (!p.channels_last) return fprop_nchw(isa, p, x, w32, b32, y, relu);
  // B = W^T (C x K), packed once for the micro-kernel: element (c, k) = w32[k * C + c].
  int64_t stride = 0;
  const at::Tensor wp = weight_operand<float>(1, p.C, p.K, input.options().dtype(at::kFloat), stride,
                                              [&](int64_t, int64_t ci) { return std::make_pair(w32 + ci, p.C); });
  fprop_nhwc(isa, p, x, wp.const_data_ptr<float>(), b32, y, relu);
}

// Grad input, NHWC: chunks of grad_output pixels (contiguous rows, widened in one run) times the
// weight (K x C, packed once), each row rounded into its input pixel on the stride grid; the pixels
// off the grid (no output reads them) are zeros.
template <typename H>
void dgrad_nhwc(Isa isa, const Conv2dParams& p, const H* gy, const float* wp, H* gx) {
  const int64_t rows = p.N * p.P * p.Q, chunks = ceil_div(rows, kRows);
  const bool dense = reads_every_pixel(p);
  if (!dense) {
    at::parallel_for(0, p.N * p.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t nh = begin; nh < end; ++nh) {
        const int64_t h = nh % p.H;
        H* row = gx + nh * p.W * p.C;
        if (h % p.stride_h || h / p.stride_h >= p.P) {
          std::fill(row, row + p.W * p.C, H(0.f));
          continue;
        }
        for (int64_t w = 0; w < p.W; ++w)
          if (w % p.stride_w || w / p.stride_w >= p.Q) std::fill(row + w * p.C, row + (w + 1) * p.C, H(0.f));
      }
    });
  }
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    float* a = scratch<float>(Scratch::input, kRows * p.K);
    float* c = scratch<float>(Scratch::output, kRows * p.C);  // the sums of K blocks before the last
    H* raw = dense ? nullptr : scratch<H>(Scratch::extra, kRows * p.C);  // a strided chunk's pixels
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t r0 = chunk * kRows, m = std::min(kRows, rows - r0);
      widen_run(gy + r0 * p.K, a, m * p.K);
      GemmArgs<float> g{m, p.C, p.K, GemmA<float>::strided(a, p.K, 1), wp, 0, c, p.C};
      g.b_packed = true;
      // Rounded as stored: into grad_input where its pixels are the chunk's rows, else into `raw`,
      // then copied to the pixels on the stride grid (a rounding call per pixel costs more than its
      // C values' work).
      g.c16 = {dense ? gx + r0 * p.C : raw, std::is_same_v<H, c10::BFloat16>, p.C};
      gemm(isa, g);
      if (!dense)
        for_each_input_pixel(p, r0, m, [&](int64_t i, int64_t offset) { std::copy(raw + i * p.C, raw + (i + 1) * p.C, gx + offset); });
    }
  });
}

// Grad input, NCHW: per item (NchwItems) the transposed weight times the item's grad_output (K runs
// per image, widened), C x columns, rounded into the input planes at the item's positions on the
// stride grid (rounded whole into a buffer, then spread along the stride); planes zeroed first where
// the grid leaves positions out.
template <typename H>
void dgrad_nchw(Isa isa, const Conv2dParams& p, const H* gy, const float* wt, H* gx) {
  const int64_t PQ = p.P * p.Q, HW = p.H * p.W;
  const bool dense = reads_every_pixel(p);
  const NchwItems items(p, p.N);
  if (!dense) {
    at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
      std::fill(gx + begin * HW, gx + end * HW, H(0.f));
    });
  }
  at::parallel_for(0, items.count, 1, [&](int64_t begin, int64_t end) {
    float* b = scratch<float>(Scratch::input, p.K * kCols);
    float* c = scratch<float>(Scratch::output, p.C * kCols);  // the sums of K blocks before the last
    // grad_output widened an image at a time (one vector run of K x span), and the result rounded
    // whole: per-row conversions of a few values would cost more in calls than in work
    float* wide = scratch<float>(Scratch::extra, p.K * items.span + ceil_div(p.C * kCols, int64_t(2)));
    H* narrow = reinterpret_cast<H*>(wide + p.K * items.span);  // the same worker buffer, after `wide`
    for (int64_t item = begin; item < end; ++item) {
      int64_t n0, imgs, q0;
      items.at(p, item, n0, imgs, q0);
      const int64_t span = std::min(items.span, PQ - q0), cols = imgs * span;
      for (int64_t t = 0; t < imgs; ++t) {
        const H* src = gy + (n0 + t) * p.K * PQ + q0;
        if (span == PQ) widen_run(src, wide, p.K * PQ);
        for (int64_t k = 0; k < p.K; ++k) {
          if (span == PQ) std::copy(wide + k * PQ, wide + (k + 1) * PQ, b + k * cols + t * span);
          else widen_run(src + k * PQ, b + k * cols + t * span, span);
        }
      }
      GemmArgs<float> g{p.C, cols, p.K, GemmA<float>::strided(wt, p.K, 1), b, cols, c, cols};
      // Rounded as stored: straight into the input planes where every pixel is read (joined images'
      // columns a plane each), else into `narrow`, then spread along the stride.
      constexpr bool bf16 = std::is_same_v<H, c10::BFloat16>;
      if (dense) g.c16 = {gx + n0 * p.C * HW + q0, bf16, HW, imgs > 1 ? span : 0, p.C * HW};
      else g.c16 = {narrow, bf16, cols};
      gemm(isa, g);
      if (dense) continue;
      for (int64_t t = 0; t < imgs; ++t)
        for (int64_t ci = 0; ci < p.C; ++ci) {
          const H* src = narrow + ci * cols + t * span;
          H* plane = gx + ((n0 + t) * p.C + ci) * HW;
          for_each_stretch(p, q0, span, [&](int64_t offset, int64_t run, int64_t j) {
            for (int64_t k = 0; k < run; ++k) plane[offset + k * p.stride_w] = src[j + k];
          });
        }
    }
  });
}

template <typename H>
void dgrad(Isa isa, const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
           const at::Tensor& grad_input) {
  const H* gy = grad_output.const_data_ptr<H>();
  H* gx = grad_input.data_ptr<H>();
  if (!p.channels_last) {
    // A = the weight transposed and widened (C x K, rows contiguous along the reduction), once per
    // call rather than packed again by every image's GEMM
    float* wt = scratch<float>(Scratch::wide_c, p.C * p.K);
    transpose(isa, weight.const_data_ptr<H>(), p.C, wt, p.K, p.K, p.C);
    return dgrad_nchw(isa, p, gy, wt, gx);
  }
  float* w32 = scratch<float>(Scratch::wide_b, p.K * p.C);
  widen_run(weight.const_data_ptr<H>(), w32, p.K * p.C);
  // B = W (K x C), packed once: element (k, c) = w32[k * C + c].
  int64_t stride = 0;
  const at::Tensor wp = weight_operand<float>(1, p.K, p.C, grad_output.options().dtype(at::kFloat), stride,
                                              [&](int64_t, int64_t k) { return std::make_pair(w32 + k * p.C, int64_t(1)); });
  dgrad_nhwc(isa, p, gy, wp.const_data_ptr<float>(), gx);
}

// The input pixels a strided 1x1 conv reads, widened: [N][C][P][Q] in the input's layout.
template <typename H>
void strided_pixels(const Conv2dParams& p, const H* x, float* out) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  if (p.channels_last) {
    at::parallel_for(0, p.N * PQ, 64, [&](int64_t begin, int64_t end) {
      for_each_input_pixel(p, begin, end - begin,
                           [&](int64_t i, int64_t offset) { widen_run(x + offset, out + (begin + i) * p.C, p.C); });
    });
    return;
  }
  at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    float* plane = scratch<float>(Scratch::input, HW);
    for (int64_t nc = begin; nc < end; ++nc) {
      widen_run(x + nc * HW, plane, HW);  // whole: a plane's rows may be too short for vectors
      float* dst = out + nc * PQ;
      for (int64_t oh = 0; oh < p.P; ++oh)
        for (int64_t ow = 0; ow < p.Q; ++ow) dst[oh * p.Q + ow] = plane[oh * p.stride_h * p.W + ow * p.stride_w];
    }
  });
}

}  // namespace

Conv2dParams pointwise_unstrided(const Conv2dParams& p) {
  Conv2dParams q = p;
  q.H = p.P, q.W = p.Q, q.stride_h = q.stride_w = 1;
  return q;
}

at::Tensor float32_strided_pixels(const Conv2dParams& p, const at::Tensor& input, Scratch slot) {
  const std::vector<int64_t> strides = p.channels_last ? std::vector<int64_t>{p.P * p.Q * p.C, 1, p.Q * p.C, p.C}
                                                      : std::vector<int64_t>{p.C * p.P * p.Q, p.P * p.Q, p.Q, 1};
  const at::Tensor out = at::from_blob(scratch<float>(slot, p.N * p.C * p.P * p.Q), {p.N, p.C, p.P, p.Q}, strides,
                                       input.options().dtype(at::kFloat));
  if (input.scalar_type() == at::kBFloat16) strided_pixels(p, input.const_data_ptr<c10::BFloat16>(), out.data_ptr<float>());
  else strided_pixels(p, input.const_data_ptr<c10::Half>(), out.data_ptr<float>());
  return out;
}

bool use_pointwise_16bit(const Conv2dParams& p, at::ScalarType dtype) {
  // every output position reads an input pixel (no padding on any side)
  const bool inside = p.pad_h == 0 && p.pad_w == 0 && (p.P - 1) * p.stride_h < p.H && (p.Q - 1) * p.stride_w < p.W;
  return (dtype == at::kHalf || dtype == at::kBFloat16) && p.R == 1 && p.S == 1 && inside && p.groups == 1 &&
         p.N * p.P * p.Q > 0 && p.C > 0 && p.K > 0 && config::cpu_conv_algo() == config::CpuConvAlgo::automatic;
}

void pointwise_16bit_fprop(Isa isa, const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias, const at::Tensor& output, bool relu) {
  if (input.scalar_type() == at::kBFloat16) fprop<c10::BFloat16>(isa, p, input, weight, bias, output, relu);
  else fprop<c10::Half>(isa, p, input, weight, bias, output, relu);
}

void pointwise_16bit_dgrad(Isa isa, const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input) {
  if (grad_output.scalar_type() == at::kBFloat16) dgrad<c10::BFloat16>(isa, p, grad_output, weight, grad_input);
  else dgrad<c10::Half>(isa, p, grad_output, weight, grad_input);
}

}  // namespace cuconv::cpu
