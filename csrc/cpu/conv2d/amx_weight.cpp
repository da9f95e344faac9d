// The weight of a bfloat16 conv packed into AMX tiles for amx_direct (amx_weight.h). From OIHW, the
// common case, without copies: for one output channel k and 32 input channels from c0 the 32 x RS
// values are contiguous, and tap t's 32 values (one per channel, RS apart) come out of the loaded
// vectors by masked two-vector permutes, from tables made once per call (ATen's copy of the weight
// into [K][R][S][C] ran at 3 GB/s: 1.5 ms for 512 x 512 x 3 x 3, as long as r18.l4's products).
// Other strides, the unfolded few-channel convs and kernels over 5 x 5 go through a [K][R][S][C]
// copy (no copy for a channels_last weight).
#include "cpu/conv2d/amx_weight.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include "cpu/amx.h"
#endif

namespace cuconv::cpu {

#if defined(__x86_64__) || defined(__i386__)

namespace {

constexpr int64_t kSlice = 32;  // input channels per tile


// The B tiles of output channels 16 k16 .. and tap rs from w_krsc, the weight as [K][R][S][C]:
// per tile, 16 output channels' runs of 32 input channels (16 pair words each) transposed in
// registers; as A tiles (as_a), the runs as they are (a row per output channel).
CUCONV_AMX void pack_weight_tap(const Conv2dParams& p, int64_t Cp, int64_t Kp, const uint16_t* w_krsc, int64_t k16,
                                int64_t rs, bool as_a, uint32_t* wp) {
  __m512i rows[16];
  for (int64_t slice = 0; slice < Cp / kSlice; ++slice) {
    const __mmask32 channels = lanes32(p.C - slice * kSlice);
    for (int64_t k = 0; k < 16; ++k) {
      const int64_t ko = k16 * 16 + k;
      rows[k] = ko < p.K ? _mm512_maskz_loadu_epi16(channels, w_krsc + (ko * p.R * p.S + rs) * p.C + slice * kSlice)
                         : _mm512_setzero_si512();
    }
    if (!as_a) transpose16x16(rows);  // rows[j]: channel pair j of the 16 output channels
    uint32_t* tile = wp + weight_tile(p, Cp, k16, rs / p.S, rs % p.S, slice);
    for (int64_t j = 0; j < 16; ++j) _mm512_storeu_si512(tile + j * 16, rows[j]);
  }
}

void pack_weight(const Conv2dParams& p, int64_t Cp, int64_t Kp, const uint16_t* w_krsc, bool as_a, uint32_t* wp) {
  const int64_t RS = p.R * p.S;
  at::parallel_for(0, Kp / 16 * RS, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) pack_weight_tap(p, Cp, Kp, w_krsc, item / RS, item % RS, as_a, wp);
  });
}

// From OIHW, [K][C][R x S]: kernels of up to kMaxDeinterleave taps.
// taps[t] = w[k][c0 + c][t] for c < 32 (zero past C), from the contiguous run of w[k][c0..].
CUCONV_AMX void channel_taps(const Deinterleave& tt, const uint16_t* w_oihw, int64_t C, int64_t k, int64_t c0,
                             __m512i* taps) {
  deinterleave(tt, w_oihw + (k * C + c0) * tt.n, std::min<int64_t>(32, C - c0) * tt.n, taps);
}

// The B tiles of output channels 16 k16 .. and 32 input channels of slice from the OIHW weight: per
// output channel its taps' channel runs, then per tap the 16 x 16 word transpose of pack_weight_tap.
CUCONV_AMX void pack_weight_oihw_block(const Conv2dParams& p, int64_t Cp, int64_t Kp, const Deinterleave& tt,
                                       const uint16_t* w_oihw, int64_t k16, int64_t slice, uint32_t* wp) {
  __m512i taps[16][kMaxDeinterleave];
  for (int64_t kk = 0; kk < 16; ++kk) {
    if (k16 * 16 + kk < p.K && slice * kSlice < p.C)
      channel_taps(tt, w_oihw, p.C, k16 * 16 + kk, slice * kSlice, taps[kk]);
    else
      for (int64_t t = 0; t < tt.n; ++t) taps[kk][t] = _mm512_setzero_si512();
  }
  __m512i rows[16];
  for (int64_t t = 0; t < tt.n; ++t) {
    for (int64_t kk = 0; kk < 16; ++kk) rows[kk] = taps[kk][t];
    transpose16x16(rows);  // rows[j]: channel pair j of the 16 output channels
    uint32_t* tile = wp + weight_tile(p, Cp, k16, t / p.S, t % p.S, slice);
    for (int64_t j = 0; j < 16; ++j) _mm512_storeu_si512(tile + j * 16, rows[j]);
  }
}

// The grad input as a forward conv (p: its geometry, C = the weight's K) reads the weight flipped and
// transposed: its B tile (16 output channels = the weight's input channels c, tap (r, s), 32 input
// channels = the weight's output channels k) has rows of pairs of k, words w[k][c][R-1-r][S-1-s]. Per
// 32 k and 32 c, each k's taps (channel_taps), then per tap and 16 c the rows are two k's runs
// joined: no transpose of the tile.
CUCONV_AMX void pack_weight_flipped_block(const Conv2dParams& p, int64_t Cp, int64_t Kp, const Deinterleave& tt,
                                          const uint16_t* w_oihw, int64_t c32, int64_t slice, uint32_t* wp) {
  const int64_t K = p.C, C = p.K;  // the weight's output and input channels
  __m512i taps[kSlice][kMaxDeinterleave];
  for (int64_t kk = 0; kk < kSlice; ++kk) {
    if (slice * kSlice + kk < K && c32 * 32 < C)
      channel_taps(tt, w_oihw, C, slice * kSlice + kk, c32 * 32, taps[kk]);
    else
      for (int64_t t = 0; t < tt.n; ++t) taps[kk][t] = _mm512_setzero_si512();
  }
  const __m512i join[2] = {_mm512_load_si512(kJoinLow), _mm512_load_si512(kJoinHigh)};
  for (int64_t t = 0; t < tt.n; ++t) {
    const int64_t flipped = tt.n - 1 - t;  // the weight's tap read by the forward's tap t
    for (int64_t h = 0; h < 2 && c32 * 2 + h < Kp / 16; ++h) {
      uint32_t* tile = wp + weight_tile(p, Cp, c32 * 2 + h, t / p.S, t % p.S, slice);
      for (int64_t j = 0; j < 16; ++j)
        _mm512_storeu_si512(tile + j * 16, _mm512_permutex2var_epi16(taps[2 * j][flipped], join[h], taps[2 * j + 1][flipped]));
    }
  }
}

// Weight packing from OIHW (flipped: as the grad input's forward conv reads it) where R x S fits the
// tables; false otherwise (the caller packs from a [K][R][S][C] copy).
bool pack_weight_oihw(const Conv2dParams& p, int64_t Cp, int64_t Kp, const uint16_t* w_oihw, bool flipped, uint32_t* wp) {
  if (p.R * p.S > kMaxDeinterleave) return false;
  const Deinterleave tt = deinterleave_tables(p.R * p.S);
  const int64_t slices = Cp / kSlice, blocks = flipped ? (Kp + 31) / 32 : Kp / 16;
  at::parallel_for(0, blocks * slices, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item)
      if (flipped)
        pack_weight_flipped_block(p, Cp, Kp, tt, w_oihw, item / slices, item % slices, wp);
      else
        pack_weight_oihw_block(p, Cp, Kp, tt, w_oihw, item / slices, item % slices, wp);
  });
  return true;
}

}  // namespace

void pack_amx_weight(const Conv2dParams& p, int64_t Cp, int64_t Kp, const at::Tensor& w, bool flipped, bool as_a,
                     uint32_t* wp) {
  // In place where w has p's shape (not an unfolded conv's original weight) and is not channels_last.
  const std::vector<int64_t> shape = flipped ? std::vector<int64_t>{p.C, p.K, p.R, p.S}
                                             : std::vector<int64_t>{p.K, p.C, p.R, p.S};
  if (!as_a && w.sizes() == at::IntArrayRef(shape) && (flipped || !w.is_contiguous(at::MemoryFormat::ChannelsLast))) {
    const at::Tensor w_oihw = w.contiguous();
    if (pack_weight_oihw(p, Cp, Kp, reinterpret_cast<const uint16_t*>(w_oihw.const_data_ptr<c10::BFloat16>()),
                         flipped, wp))
      return;
  }
  const at::Tensor w_krsc = (flipped ? w.flip({2, 3}).transpose(0, 1) : w).permute({0, 2, 3, 1}).contiguous();
  pack_weight(p, Cp, Kp, reinterpret_cast<const uint16_t*>(w_krsc.const_data_ptr<c10::BFloat16>()), as_a, wp);
}

#else  // not x86: amx_direct never runs (no AMX)

void pack_amx_weight(const Conv2dParams&, int64_t, int64_t, const at::Tensor&, bool, bool, uint32_t*) {
  TORCH_CHECK(false, "cuconv: the AMX weight packing needs AMX");
}

#endif

}  // namespace cuconv::cpu
