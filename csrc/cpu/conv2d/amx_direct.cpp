// bfloat16 forward conv on AMX tiles, the A tiles loaded straight from a zero-padded NHWC bfloat16
// copy of the input: no float32 copy, no im2col and no packing of the input (FpropStrategy::
// amx_direct; also the stride-1 grad input, as a forward conv of grad_output).
//
// The padded input is split into stride_h x stride_w phase images: phase (a, b) holds padded pixel
// (i * stride_h + a, j * stride_w + b) at (i, j), Hq x Wq of them. Tap (r, s) of output (p, q)
// reads pixel (p + r / stride_h, q + s / stride_w) of phase (r % stride_h, s % stride_w), so with
// the outputs laid on the phase width Wq instead of Q, output m = p * Wq + q reads pixel
// m + (r / stride_h) * Wq + s / stride_w: consecutive outputs read consecutive pixels, across
// output rows too, and the A tile of 16 outputs x 32 channels of one tap is one tileloadd with a
// row stride of Cp values. Outputs with q >= Q (windows that wrap into the next row) are computed
// and dropped. At stride 1 there is one phase, the padded image itself.
//
// A C block is 32 outputs x 32 output channels in four float tiles, summed over the taps and
// 32-channel slices in a fixed order, then bias, ReLU and one rounding to bfloat16 on the way out:
// as deterministic as the GEMM paths. The weight is packed once per call into B tiles: per 16
// output channels, tap and 32 input channels, 16 channel pairs x 16 output channels of bfloat16
// pair words (1 KiB).
#include "cpu/conv2d/amx_direct.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "cpu/scratch.h"

#if defined(__x86_64__) || defined(__i386__)
#include "cpu/amx.h"
#endif

namespace cuconv::cpu {

bool amx_direct_shape(const Conv2dParams& p) {
  return p.dil_h == 1 && p.dil_w == 1 && p.groups == 1 && p.C >= 16 && p.K >= 16;
}

#if defined(__x86_64__) || defined(__i386__)

namespace {

constexpr int64_t kPix = 32, kOut = 32, kSlice = 32;  // a C block's outputs and channels; channels per A tile

struct Geometry {
  int64_t Hq, Wq;  // a phase image: every window's pixels of that phase inside it
  int64_t Cp, Kp;  // channels rounded up to whole slices / C blocks
  int64_t img;     // elements per phase image, with room for the last block's reads past it
  int64_t blocks;  // C blocks of outputs per image
};

Geometry geometry(const Conv2dParams& p) {
  Geometry g;
  g.Hq = p.P + (p.R - 1) / p.stride_h, g.Wq = p.Q + (p.S - 1) / p.stride_w;
  g.Cp = (p.C + kSlice - 1) / kSlice * kSlice, g.Kp = (p.K + kOut - 1) / kOut * kOut;
  g.blocks = (p.P * g.Wq + kPix - 1) / kPix;
  // The last block reads up to output blocks * 32 - 1 plus the last tap's offset.
  g.img = (g.blocks * kPix + (p.R - 1) / p.stride_h * g.Wq + (p.S - 1) / p.stride_w) * g.Cp;
  return g;
}

// Phase image (a, b) of image n: stride_h x stride_w of them per image, the taps' phases only.
int64_t phase_offset(const Conv2dParams& p, const Geometry& g, int64_t n, int64_t a, int64_t b) {
  return ((n * p.stride_h + a) * p.stride_w + b) * g.img;
}

// x (NHWC, bfloat16 bits) into the phase images: pixel (i, j) of phase (a, b) is input pixel
// (i * stride_h + a - pad_h, j * stride_w + b - pad_w); channels past C and pixels outside the
// input are zero. Phases no tap reads (a >= R or b >= S: a 1x1 strided conv reads one) are skipped.
void pad_input(const Conv2dParams& p, const Geometry& g, const uint16_t* x, uint16_t* xp) {
  const int64_t A = std::min(p.stride_h, p.R), B = std::min(p.stride_w, p.S);
  at::parallel_for(0, p.N * A * B * g.Hq, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item % g.Hq, b = item / g.Hq % B, a = item / g.Hq / B % A, n = item / g.Hq / B / A;
      uint16_t* image = xp + phase_offset(p, g, n, a, b);
      uint16_t* row = image + i * g.Wq * g.Cp;
      const int64_t h = i * p.stride_h + a - p.pad_h;
      if (h < 0 || h >= p.H) {
        std::memset(row, 0, size_t(g.Wq * g.Cp) * 2);
      } else {
        for (int64_t j = 0; j < g.Wq; ++j) {
          const int64_t w = j * p.stride_w + b - p.pad_w;
          uint16_t* dst = row + j * g.Cp;
          if (w < 0 || w >= p.W) {
            std::memset(dst, 0, size_t(g.Cp) * 2);
            continue;
          }
          std::memcpy(dst, x + ((n * p.H + h) * p.W + w) * p.C, size_t(p.C) * 2);
          std::memset(dst + p.C, 0, size_t(g.Cp - p.C) * 2);
        }
      }
      if (i == g.Hq - 1)  // the room after the phase image's last row
        std::memset(image + g.Hq * g.Wq * g.Cp, 0, size_t(g.img - g.Hq * g.Wq * g.Cp) * 2);
    }
  });
}

// The B tiles: word (j, k) of tile (k16, r, s, slice) = w[16 k16 + k][32 slice + 2j (low), +1 (high)][r][s].
int64_t b_tile(const Conv2dParams& p, const Geometry& g, int64_t k16, int64_t r, int64_t s, int64_t slice) {
  return (((k16 * p.R + r) * p.S + s) * (g.Cp / kSlice) + slice) * 256;
}

void pack_weight(const Conv2dParams& p, const Geometry& g, const uint16_t* w, uint32_t* wp) {
  const int64_t RS = p.R * p.S;
  at::parallel_for(0, g.Kp / 16, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k16 = begin; k16 < end; ++k16)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s)
          for (int64_t slice = 0; slice < g.Cp / kSlice; ++slice) {
            uint32_t* tile = wp + b_tile(p, g, k16, r, s, slice);
            for (int64_t j = 0; j < 16; ++j)
              for (int64_t k = 0; k < 16; ++k) {
                const int64_t ko = k16 * 16 + k, c = slice * kSlice + 2 * j;
                auto at = [&](int64_t ci) -> uint32_t {
                  return ko < p.K && ci < p.C ? w[(ko * p.C + ci) * RS + r * p.S + s] : 0;
                };
                tile[j * 16 + k] = at(c) | at(c + 1) << 16;
              }
          }
  });
}

// The C block of outputs m0.. and output channels k0.. of image n, into sums (32 x 32 floats).
CUCONV_AMX void block_sums(const Conv2dParams& p, const Geometry& g, const uint16_t* xp, int64_t n,
                           const uint32_t* wp, int64_t m0, int64_t k0, float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t lda = g.Cp * 2, slices = g.Cp / kSlice;
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) {
      const uint16_t* a = xp + phase_offset(p, g, n, r % p.stride_h, s % p.stride_w) +
                          (m0 + r / p.stride_h * g.Wq + s / p.stride_w) * g.Cp;
      const uint32_t* b0 = wp + b_tile(p, g, k0 / 16, r, s, 0);
      const uint32_t* b1 = wp + b_tile(p, g, k0 / 16 + 1, r, s, 0);
      for (int64_t slice = 0; slice < slices; ++slice) {
        _tile_loadd(4, a + slice * kSlice, lda);
        _tile_loadd(5, a + 16 * g.Cp + slice * kSlice, lda);
        _tile_loadd(6, b0 + slice * 256, 64);
        _tile_loadd(7, b1 + slice * 256, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
  _tile_stored(0, sums, kOut * 4);
  _tile_stored(1, sums + 16, kOut * 4);
  _tile_stored(2, sums + 16 * kOut, kOut * 4);
  _tile_stored(3, sums + 16 * kOut + 16, kOut * 4);
}

// Bias, ReLU and rounding of a C block into the NHWC output (image n), skipping the dropped outputs.
CUCONV_AMX void store_block(const Conv2dParams& p, const Geometry& g, const float* sums, const float* bias, bool relu,
                            int64_t n, int64_t m0, int64_t k0, uint16_t* y) {
  const __mmask16 m[2] = {lanes(p.K - k0), lanes(p.K - k0 - 16)};
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < kPix; ++i) {
    const int64_t o = m0 + i, op = o / g.Wq, oq = o % g.Wq;
    if (op >= p.P || oq >= p.Q) continue;
    uint16_t* out = y + ((n * p.P + op) * p.Q + oq) * p.K + k0;
    for (int h = 0; h < 2; ++h) {
      if (!m[h]) continue;
      __m512 v = _mm512_load_ps(sums + i * kOut + 16 * h);
      if (bias) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m[h], bias + k0 + 16 * h), v);
      if (relu) v = _mm512_max_ps(zero, v);  // a NaN sum stays NaN, as torch.relu
      _mm256_mask_storeu_epi16(out + 16 * h, m[h], to_bfloat16(v));
    }
  }
}

CUCONV_AMX void run_blocks(const Conv2dParams& p, const Geometry& g, const uint16_t* xp, const uint32_t* wp,
                           const float* bias, bool relu, uint16_t* y, int64_t begin, int64_t end) {
  amx_configure();
  alignas(64) float sums[kPix * kOut];
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / g.blocks, m0 = item % g.blocks * kPix;
    for (int64_t k0 = 0; k0 < g.Kp; k0 += kOut) {
      block_sums(p, g, xp, n, wp, m0, k0, sums);
      store_block(p, g, sums, bias, relu, n, m0, k0, y);
    }
  }
  amx_release();
}

}  // namespace

void amx_direct_fprop(const Conv2dParams& p, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                      const at::Tensor& y, bool relu) {
  const Geometry g = geometry(p);
  const at::Tensor xh = x.contiguous(at::MemoryFormat::ChannelsLast);
  const bool nhwc_out = y.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor yh = nhwc_out ? y : at::empty_like(y, at::MemoryFormat::ChannelsLast);
  uint16_t* xp = scratch<uint16_t>(Scratch::wide_a, p.N * p.stride_h * p.stride_w * g.img);
  uint32_t* wp = scratch<uint32_t>(Scratch::wide_b, g.Kp / 16 * p.R * p.S * (g.Cp / kSlice) * 256);
  float* b = bias.defined() ? scratch<float>(Scratch::wide_c, p.K) : nullptr;
  if (b)
    for (int64_t k = 0; k < p.K; ++k) b[k] = float(bias.const_data_ptr<c10::BFloat16>()[k]);
  pad_input(p, g, reinterpret_cast<const uint16_t*>(xh.const_data_ptr<c10::BFloat16>()), xp);
  pack_weight(p, g, reinterpret_cast<const uint16_t*>(w.const_data_ptr<c10::BFloat16>()), wp);
  uint16_t* out = reinterpret_cast<uint16_t*>(yh.data_ptr<c10::BFloat16>());
  at::parallel_for(0, p.N * g.blocks, 1,
                   [&](int64_t begin, int64_t end) { run_blocks(p, g, xp, wp, b, relu, out, begin, end); });
  if (!nhwc_out) y.copy_(yh);
}

#else  // not x86: the plan never picks it (no AMX)

void amx_direct_fprop(const Conv2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      bool) {
  TORCH_CHECK(false, "cuconv: amx_direct needs AMX");
}

#endif

}  // namespace cuconv::cpu
