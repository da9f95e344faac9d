// bfloat16 strided grad input on AMX (DgradStrategy::amx_phases): one stride-1 forward conv of
// grad_output per stride phase of grad_input, each on amx_direct.
//
// Input row h receives from output row p through tap r where h + pad_h = p * stride_h + r. The rows
// of one phase, h = h0 + i * stride_h, are reached only by the taps r = h0 + pad_h (mod stride_h),
// from p = i + (h0 + pad_h - r) / stride_h: a stride-1 correlation of grad_output with those taps,
// flipped and transposed, written into the phase's rows. A phase no tap reaches is zero. Each
// phase's products are exactly the ones the convolution has: no multiply by an inserted zero.
#include "cpu/conv2d/amx_dgrad_phases.h"

#include <ATen/ATen.h>

#include <vector>

#include <ATen/Parallel.h>

#include "cpu/conv2d/amx_direct.h"

#if defined(__x86_64__) || defined(__i386__)
#include "cpu/amx.h"
#endif

namespace cuconv::cpu {

namespace {

#if defined(__x86_64__) || defined(__i386__)

// Positions q0 .. q0 + 31 of NHWC image `src` (C channels, HW positions) into its NCHW planes:
// per 16 channels, two positions' channels joined into pair words, transposed in registers into
// 16 channels' runs of 32 positions.
CUCONV_AMX void nhwc_to_nchw_block(const uint16_t* src, int64_t C, int64_t HW, int64_t q0, uint16_t* dst) {
  __m512i r[16];
  const __mmask32 keep = lanes32(HW - q0);
  for (int64_t k0 = 0; k0 < C; k0 += 16) {
    const __mmask16 channels = lanes(C - k0);
    for (int64_t t = 0; t < 16; ++t) {
      const int64_t q = q0 + 2 * t;
      const __m512i lo = q < HW ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(channels, src + q * C + k0))
                                : _mm512_setzero_si512();
      const __m512i hi = q + 1 < HW
                             ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(channels, src + (q + 1) * C + k0))
                             : _mm512_setzero_si512();
      r[t] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
    }
    transpose16x16(r);  // r[k]: channel k0 + k at the 32 positions
    for (int64_t k = 0; k < std::min<int64_t>(16, C - k0); ++k)
      _mm512_mask_storeu_epi16(dst + (k0 + k) * HW + q0, keep, r[k]);
  }
}

// A channels_last bfloat16 tensor into a contiguous one of the same sizes (ATen's copy between the
// two layouts ran at a fifth of this).
void nhwc_to_nchw(const at::Tensor& src, const at::Tensor& dst) {
  const int64_t N = src.size(0), C = src.size(1), HW = src.size(2) * src.size(3), blocks = (HW + 31) / 32;
  const auto* s = reinterpret_cast<const uint16_t*>(src.const_data_ptr<c10::BFloat16>());
  auto* d = reinterpret_cast<uint16_t*>(dst.data_ptr<c10::BFloat16>());
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks;
      nhwc_to_nchw_block(s + n * HW * C, C, HW, item % blocks * 32, d + n * C * HW);
    }
  });
}

#else

void nhwc_to_nchw(const at::Tensor& src, const at::Tensor& dst) { dst.copy_(src); }

#endif

// One axis of a phase: its first input row (or column) and count, its taps (largest first, which
// is the flipped order) and the padding of its forward conv.
struct AxisPhase {
  int64_t first, count;
  std::vector<int64_t> taps;
  int64_t pad;
};

AxisPhase axis_phase(int64_t rho, int64_t size, int64_t pad, int64_t stride, int64_t kernel) {
  AxisPhase a;
  a.first = ((rho - pad) % stride + stride) % stride;
  a.count = a.first < size ? (size - 1 - a.first) / stride + 1 : 0;
  for (int64_t r = kernel - 1; r >= 0; --r)
    if ((a.first + pad - r) % stride == 0) a.taps.push_back(r);
  // Tap t of the forward reads grad_output row i + t - pad; the largest tap reads i + (first + pad
  // - taps[0]) / stride.
  a.pad = a.taps.empty() ? 0 : -(a.first + pad - a.taps.front()) / stride;
  return a;
}

}  // namespace

bool amx_dgrad_phases_shape(const Conv2dParams& p) {
  return (p.stride_h > 1 || p.stride_w > 1) && p.dil_h == 1 && p.dil_w == 1 && p.groups == 1 && p.C >= 16 &&
         p.K >= 16;
}

void amx_dgrad_phases(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                      const at::Tensor& grad_input) {
  // Phases write in place into an output with adjacent channels; an NCHW grad_input goes through
  // an NHWC copy.
  const bool in_place = grad_input.stride(1) == 1;
  const at::Tensor gx = in_place ? grad_input : at::empty_like(grad_input, at::MemoryFormat::ChannelsLast);
  const at::Tensor w_t = weight.transpose(0, 1);  // [C, K, R, S]
  for (int64_t rh = 0; rh < p.stride_h; ++rh)
    for (int64_t rw = 0; rw < p.stride_w; ++rw) {
      const AxisPhase a = axis_phase(rh, p.H, p.pad_h, p.stride_h, p.R);
      const AxisPhase b = axis_phase(rw, p.W, p.pad_w, p.stride_w, p.S);
      if (a.count == 0 || b.count == 0) continue;
      at::Tensor out = gx.slice(2, a.first, p.H, p.stride_h).slice(3, b.first, p.W, p.stride_w);
      if (a.taps.empty() || b.taps.empty()) {
        out.zero_();
        continue;
      }
      const auto index = [&](const std::vector<int64_t>& taps) {
        return at::tensor(taps, at::TensorOptions().dtype(at::kLong));
      };
      const at::Tensor w = w_t.index_select(2, index(a.taps)).index_select(3, index(b.taps));
      Conv2dParams q = p;
      q.C = p.K, q.H = p.P, q.W = p.Q, q.K = p.C;
      q.R = int64_t(a.taps.size()), q.S = int64_t(b.taps.size());
      q.P = a.count, q.Q = b.count;
      q.stride_h = q.stride_w = 1;
      q.pad_h = a.pad, q.pad_w = b.pad;
      amx_direct_fprop(q, grad_output, w, at::Tensor(), out, false);
    }
  if (!in_place && grad_input.is_contiguous())
    nhwc_to_nchw(gx, grad_input);
  else if (!in_place)
    grad_input.copy_(gx);
}

}  // namespace cuconv::cpu
