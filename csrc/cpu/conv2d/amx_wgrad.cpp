// bfloat16 grad weight on AMX tiles (WgradStrategy::amx_direct): no float32 copies, no im2col.
//
// Tap (r, s) of output position (p, q) reads padded input pixel (p * stride_h + r * dil_h,
// q * stride_w + s * dil_w), which is pixel (p + r * dil_h / stride_h, q + s * dil_w / stride_w) of
// phase image (r * dil_h % stride_h, s * dil_w % stride_w) (amx_direct.cpp's phase images, Hq x Wq).
// With the output positions laid on the phase width Wq, m = p * Wq + q, tap (r, s) reads position
// m + offset(r, s) of its phase image, so a tap's reduction over the positions is a product of two
// streams with fixed strides: grad_w[k][c][r][s] = sum over m of x_phase[c][m + offset] * gy[m][k].
//
// The input goes into channel-major phase images (one row of positions per channel: an A tile is
// 16 channels x 32 consecutive positions, loaded at any offset), grad_output into words of two
// consecutive positions per output channel (the B tile's pair layout, 16 position pairs x 16
// channels). Positions outside the output (q >= Q, the rows below P, the chunk's tail) hold zero
// in grad_output, so their products add nothing, provided the input values they meet are finite:
// an input with an infinity or a NaN is left to the GEMM plan (zero times infinity is NaN).
//
// Images are joined into chunks of a fixed size (their phase images back to back), so a chunk's
// copies stay in the core's L2 while every C block sums over it. A C block is 32 input channels x
// 32 output channels of one tap in four float tiles, summed over the chunks in order and within a
// chunk over its positions in order: the same sum whatever the thread count, as the GEMM paths.
// The threads split the C blocks.
#include "cpu/conv2d/amx_wgrad.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "cpu/conv2d/amx_direct.h"
#include "cpu/scratch.h"

#if defined(__x86_64__) || defined(__i386__)
#include "cpu/amx.h"
#endif

namespace cuconv::cpu {

bool amx_wgrad_shape(const Conv2dParams& p) {
  return p.groups == 1 && p.K >= 16 &&
         (p.C >= 16 || (p.R * p.S * p.C <= 32 && p.dil_h == 1 && p.dil_w == 1));
}

#if defined(__x86_64__) || defined(__i386__)

namespace {

constexpr int64_t kStep = 32;   // positions per tile product (an A tile's 32 bfloat16 columns)
constexpr int64_t kBlock = 32;  // channels of a C block on each side (two 16-row tiles)
// A chunk's copies (input phase images and grad_output pairs) fit in this, the L2 share its C
// blocks stream from.
constexpr int64_t kChunkBytes = int64_t(512) << 10;
// C blocks whose sums (4 KiB each) stay in L2 while they go through every chunk.
constexpr int64_t kGroupBlocks = 64;
// Steps each block of a group takes before the next block: 8 steps of a channel pair's two copies
// are 35 KiB, under L1's 48.
constexpr int64_t kGroupSteps = 8;

struct Geometry {
  int64_t Hq, Wq, plane;  // a phase image; plane = Hq * Wq positions per image
  int64_t Cp, Kp;         // channels rounded up to whole C blocks
  std::vector<int64_t> phase_slot;  // phase a * stride_w + b -> its place in a chunk's copy, or -1
  std::vector<int64_t> slot_phase;  // the inverse: place -> phase
  int64_t phases;                   // phase images some tap reads
  std::vector<int64_t> tap_slot, tap_offset;  // per tap r * S + s: its phase's place, its offset
  int64_t imgs, chunks;   // images per chunk, chunks
  int64_t steps;          // 32-position steps per chunk
  int64_t row;            // positions per channel row of a chunk's phase image (past the farthest read)
  int64_t x_chunk, g_chunk;  // elements of a chunk's input copy; words of its grad_output copy
};

Geometry geometry(const Conv2dParams& p) {
  Geometry g;
  // An even width: every pair of positions lies in one row, so a row of grad_output packs alone.
  g.Hq = p.P + (p.R - 1) * p.dil_h / p.stride_h, g.Wq = (p.Q + (p.S - 1) * p.dil_w / p.stride_w + 1) / 2 * 2;
  g.plane = g.Hq * g.Wq;
  g.Cp = (p.C + kBlock - 1) / kBlock * kBlock, g.Kp = (p.K + kBlock - 1) / kBlock * kBlock;
  g.phase_slot.assign(size_t(p.stride_h * p.stride_w), -1);
  g.phases = 0;
  int64_t max_offset = 0;
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) {
      const int64_t phase = r * p.dil_h % p.stride_h * p.stride_w + s * p.dil_w % p.stride_w;
      if (g.phase_slot[size_t(phase)] < 0) g.phase_slot[size_t(phase)] = g.phases++, g.slot_phase.push_back(phase);
      g.tap_slot.push_back(g.phase_slot[size_t(phase)]);
      g.tap_offset.push_back(r * p.dil_h / p.stride_h * g.Wq + s * p.dil_w / p.stride_w);
      max_offset = std::max(max_offset, g.tap_offset.back());
    }
  const int64_t image_bytes = (g.phases * g.Cp + g.Kp) * g.plane * 2;
  g.imgs = std::clamp<int64_t>(kChunkBytes / image_bytes, 1, p.N);
  g.chunks = (p.N + g.imgs - 1) / g.imgs;
  g.steps = (g.imgs * g.plane + kStep - 1) / kStep;
  g.row = (g.steps * kStep + max_offset + kStep - 1) / kStep * kStep;
  g.x_chunk = g.phases * g.Cp * g.row, g.g_chunk = g.steps * kStep / 2 * g.Kp;
  return g;
}

// A lane per bfloat16 value that is an infinity or a NaN (all exponent bits set).
CUCONV_AMX inline __mmask32 non_finite(__m512i v) {
  const __m512i exponent = _mm512_set1_epi16(0x7F80);
  return _mm512_cmpeq_epi16_mask(_mm512_and_si512(v, exponent), exponent);
}

// Where row i of phase image (a, b) reads the input: row i * stride_h + a - pad_h, and columns
// j * stride_w + b - pad_w, inside the input for j0 <= j < j1 (the same for every row).
struct PhaseRow {
  int64_t h, w0, j0, j1;  // input row; input column of j = 0; the columns j0 <= j < j1 inside the input
};
PhaseRow phase_row(const Conv2dParams& p, const Geometry& g, int64_t a, int64_t b, int64_t i) {
  PhaseRow pr;
  pr.h = i * p.stride_h + a - p.pad_h, pr.w0 = b - p.pad_w;
  pr.j0 = pr.w0 >= 0 ? 0 : std::min<int64_t>((-pr.w0 + p.stride_w - 1) / p.stride_w, g.Wq);
  pr.j1 = std::clamp<int64_t>((p.W - pr.w0 + p.stride_w - 1) / p.stride_w, pr.j0, g.Wq);
  return pr;
}

// n zeros from dst: masked stores, where a call to memset would cost more than the few values of a
// row's margins.
CUCONV_AMX inline void zero_run(uint16_t* dst, int64_t n) {
  for (int64_t j = 0; j < n; j += 32)
    _mm512_mask_storeu_epi16(dst + j, lanes32(n - j), _mm512_setzero_si512());
}

// Zeros in `rows` channel rows (g.row apart) of a phase-image row: the columns outside the input,
// or the whole row when it lies outside; true for a row outside.
CUCONV_AMX bool zero_gaps(const Conv2dParams& p, const Geometry& g, const PhaseRow& pr, uint16_t* dst, int64_t rows) {
  const bool outside = pr.h < 0 || pr.h >= p.H;
  for (int64_t c = 0; c < rows; ++c) {
    uint16_t* out = dst + c * g.row;
    if (outside) {
      zero_run(out, g.Wq);
      continue;
    }
    zero_run(out, pr.j0);
    zero_run(out + pr.j1, g.Wq - pr.j1);
  }
  return outside;
}

// Zeros after a chunk's `images` phase images, in `rows` channel rows.
void zero_tail(const Geometry& g, int64_t images, uint16_t* dst, int64_t rows) {
  for (int64_t c = 0; c < rows; ++c)
    std::memset(dst + c * g.row + images * g.plane, 0, size_t(g.row - images * g.plane) * 2);
}

// Lanes 2i of two vectors (i < 16: the first's; then the second's): every other value of 64.
alignas(64) constexpr uint16_t kEvenOf64[32] = {0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                                                32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62};

// NCHW input channel c into its row of chunk `chunk`'s phase image (a, b): a copy per row. (An
// unfolded conv's row of window value (r, s, c) is the same copy with (a, b) = (r, s).)
CUCONV_AMX bool pack_input_nchw(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t chunk,
                                int64_t a, int64_t b, int64_t c, uint16_t* dst) {
  const int64_t images = std::clamp<int64_t>(p.N - chunk * g.imgs, 0, g.imgs);
  if (c >= p.C) {
    std::memset(dst, 0, size_t(g.row) * 2);
    return false;
  }
  zero_tail(g, images, dst, 1);
  PhaseRow pr = phase_row(p, g, a, b, 0);
  __mmask32 bad = 0;
  for (int64_t n = chunk * g.imgs; n < chunk * g.imgs + images; ++n)
    for (int64_t i = 0; i < g.Hq; ++i) {
      pr.h = i * p.stride_h + a - p.pad_h;
      if (zero_gaps(p, g, pr, dst + (n - chunk * g.imgs) * g.plane + i * g.Wq, 1)) continue;
      const uint16_t* src = x + ((n * p.C + c) * p.H + pr.h) * p.W + pr.w0 + pr.j0 * p.stride_w;
      uint16_t* out = dst + (n - chunk * g.imgs) * g.plane + i * g.Wq + pr.j0;
      const int64_t count = pr.j1 - pr.j0;
      if (p.stride_w == 1) {
        for (int64_t j = 0; j < count; j += 32) {
          const __mmask32 m = lanes32(count - j);
          const __m512i v = _mm512_maskz_loadu_epi16(m, src + j);
          bad |= non_finite(v);
          _mm512_mask_storeu_epi16(out + j, m, v);
        }
      } else if (p.stride_w == 2) {  // the even values of 64 loaded, by one permute
        const __m512i even = _mm512_load_si512(kEvenOf64);
        for (int64_t j = 0; j < count; j += 32) {
          const __mmask32 m = lanes32(count - j);
          const int64_t span = 2 * std::min<int64_t>(32, count - j) - 1;  // values read
          const __m512i lo = _mm512_maskz_loadu_epi16(lanes32(span), src + 2 * j);
          const __m512i hi = _mm512_maskz_loadu_epi16(lanes32(span - 32), src + 2 * j + 32);
          const __m512i v = _mm512_maskz_permutex2var_epi16(m, lo, even, hi);
          bad |= non_finite(v) & m;
          _mm512_mask_storeu_epi16(out + j, m, v);
        }
      } else {
        for (int64_t j = 0; j < count; ++j) {
          const uint16_t v = src[j * p.stride_w];
          out[j] = v;
          bad |= uint16_t(~v & 0x7F80) == 0 ? 1 : 0;
        }
      }
    }
  return bad != 0;
}

// r[e]: position e's 32 values (channels, or window values) as 16 pair words. Transposed in
// registers and stored into 32 channel rows (g.row apart) from dst, the positions of `keep`.
CUCONV_AMX inline void store_positions(const Geometry& g, __m512i* r, uint16_t* dst, __mmask16 keep) {
  transpose16x16(r);  // r[w]: values 2w, 2w + 1 of the 16 positions
  for (int64_t w = 0; w < 16; ++w) {
    _mm256_mask_storeu_epi16(dst + 2 * w * g.row, keep, _mm512_cvtepi32_epi16(r[w]));
    _mm256_mask_storeu_epi16(dst + (2 * w + 1) * g.row, keep, _mm512_cvtepi32_epi16(_mm512_srli_epi32(r[w], 16)));
  }
}

// NHWC input into the channel rows c0 .. c0 + 31 of a chunk's phase image: 16 positions x 32
// channels at a time, transposed in registers as 16 x 16 words of channel pairs.
CUCONV_AMX bool pack_input_nhwc(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t chunk,
                                int64_t phase, int64_t c0, uint16_t* dst) {
  const int64_t a = phase / p.stride_w, b = phase % p.stride_w;
  const __mmask32 channels = lanes32(p.C - c0);
  const int64_t images = std::clamp<int64_t>(p.N - chunk * g.imgs, 0, g.imgs);
  zero_tail(g, images, dst, kBlock);
  PhaseRow pr = phase_row(p, g, a, b, 0);
  __mmask32 bad = 0;
  __m512i r[16];
  for (int64_t n = chunk * g.imgs; n < chunk * g.imgs + images; ++n)
    for (int64_t i = 0; i < g.Hq; ++i) {
      pr.h = i * p.stride_h + a - p.pad_h;
      if (zero_gaps(p, g, pr, dst + (n - chunk * g.imgs) * g.plane + i * g.Wq, kBlock)) continue;
      const uint16_t* src = x + (n * p.H + pr.h) * p.W * p.C + c0;
      uint16_t* out = dst + (n - chunk * g.imgs) * g.plane + i * g.Wq;
      for (int64_t j = pr.j0; j < pr.j1; j += 16) {
        const int64_t count = std::min<int64_t>(16, pr.j1 - j);
        for (int64_t e = 0; e < 16; ++e) {
          const uint16_t* pixel = src + (pr.w0 + (j + e) * p.stride_w) * p.C;
          r[e] = e < count ? _mm512_maskz_loadu_epi16(channels, pixel) : _mm512_setzero_si512();
          bad |= non_finite(r[e]);
        }
        store_positions(g, r, out + j, lanes(count));
      }
    }
  return bad != 0;
}

// An unfolded conv's rows (its R x S x C <= 32 window values, unfolded(p)) from an NHWC input: per
// 16 positions, each position's window (a kernel row is a run of S * C adjacent input values,
// expanded into its lanes), transposed in registers into the rows.
CUCONV_AMX bool pack_unfolded_nhwc(const Conv2dParams& p, const Geometry& g, const uint16_t* x, int64_t chunk,
                                   uint16_t* dst) {
  const int64_t images = std::clamp<int64_t>(p.N - chunk * g.imgs, 0, g.imgs);
  zero_tail(g, images, dst, kBlock);
  __mmask32 bad = 0;
  __m512i r[16];
  for (int64_t n = chunk * g.imgs; n < chunk * g.imgs + images; ++n)
    for (int64_t i = 0; i < p.P; ++i) {
      uint16_t* out = dst + (n - chunk * g.imgs) * g.plane + i * g.Wq;
      for (int64_t j0 = 0; j0 < g.Wq; j0 += 16) {
        for (int64_t e = 0; e < 16; ++e) {
          r[e] = _mm512_setzero_si512();
          const int64_t q = j0 + e, w0 = q * p.stride_w - p.pad_w;
          const int64_t s0 = std::max<int64_t>(0, -w0), s1 = std::min(p.S, p.W - w0);
          for (int64_t tap_r = 0; tap_r < p.R && q < p.Q && s0 < s1; ++tap_r) {
            const int64_t h = i * p.stride_h + tap_r - p.pad_h;
            if (h < 0 || h >= p.H) continue;
            const __mmask32 m = lanes32((tap_r * p.S + s1) * p.C) & ~lanes32((tap_r * p.S + s0) * p.C);
            r[e] = _mm512_or_si512(r[e], _mm512_maskz_expandloadu_epi16(m, x + ((n * p.H + h) * p.W + w0 + s0) * p.C));
          }
          bad |= non_finite(r[e]);
        }
        store_positions(g, r, out + j0, lanes(g.Wq - j0));
      }
    }
  return bad != 0;
}

// Phase-image row `row` of a chunk's grad_output pairs: Wq / 2 words per output channel, zero past
// the output (q >= Q, rows p >= P, images past N). A row of NHWC pixels interleaves two pixels'
// channel vectors; NCHW reads 16 channels x 32 positions and transposes them as 16 x 16 words.
CUCONV_AMX void pack_grad_output_row(const Conv2dParams& p, const Geometry& g, const uint16_t* gy, int64_t chunk,
                                     int64_t row, uint32_t* dst) {
  const int64_t img = row / g.Hq, i = row % g.Hq, n = chunk * g.imgs + img, words = g.Wq / 2;
  uint32_t* out = dst + (img * g.plane + i * g.Wq) / 2 * g.Kp;
  if (n >= p.N || i >= p.P) {
    std::memset(out, 0, size_t(words * g.Kp) * 4);
    return;
  }
  if (p.channels_last) {
    const uint16_t* src = gy + (n * p.P + i) * p.Q * p.K;
    for (int64_t t = 0; t < words; ++t)
      for (int64_t k = 0; k < g.Kp; k += 16) {
        const __mmask16 m = lanes(p.K - k);
        const __m512i lo = 2 * t < p.Q ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + 2 * t * p.K + k))
                                       : _mm512_setzero_si512();
        const __m512i hi = 2 * t + 1 < p.Q
                               ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + (2 * t + 1) * p.K + k))
                               : _mm512_setzero_si512();
        _mm512_storeu_si512(out + t * g.Kp + k, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
      }
    return;
  }
  __m512i r[16];
  for (int64_t k0 = 0; k0 < g.Kp; k0 += 16)
    for (int64_t q0 = 0; q0 < g.Wq; q0 += kStep) {
      const __mmask32 valid = lanes32(p.Q - q0);
      for (int64_t e = 0; e < 16; ++e)
        r[e] = k0 + e < p.K ? _mm512_maskz_loadu_epi16(valid, gy + ((n * p.K + k0 + e) * p.P + i) * p.Q + q0)
                            : _mm512_setzero_si512();
      transpose16x16(r);  // r[e]: word q0 / 2 + e of the 16 channels
      for (int64_t e = 0; e < std::min<int64_t>(16, words - q0 / 2); ++e)
        _mm512_storeu_si512(out + (q0 / 2 + e) * g.Kp + k0, r[e]);
    }
}

// A C block's sums rounded into grad_weight[k][c][tap].
CUCONV_AMX void store_block(const Conv2dParams& p, const float* sums, int64_t tap, int64_t c0, int64_t k0,
                            uint16_t* gw) {
  const int64_t taps = p.R * p.S;
  alignas(64) uint16_t v[16];
  for (int64_t c = 0; c < std::min(kBlock, p.C - c0); ++c)
    for (int64_t h = 0; h < 2; ++h) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(v), to_bfloat16(_mm512_load_ps(sums + c * kBlock + 16 * h)));
      uint16_t* out = gw + ((k0 + 16 * h) * p.C + c0 + c) * taps + tap;
      for (int64_t k = 0; k < std::min<int64_t>(16, p.K - k0 - 16 * h); ++k) out[k * p.C * taps] = v[k];
    }
}

// The C blocks begin .. end (tap fastest, then 32 output channels, then 32 input channels), each
// summed over every chunk, into grad_weight. A group of blocks keeps its sums in the worker's
// buffer (in L2) and goes through the chunks a few steps at a time: the group's taps of one channel
// pair then read the same few KiB of both copies, from L1.
CUCONV_AMX void run_blocks(const Conv2dParams& p, const Geometry& g, const uint16_t* xt, const uint32_t* gv,
                           uint16_t* gw, int64_t begin, int64_t end, int64_t chunk0, int64_t chunk1, float* partial) {
  float* sums = scratch<float>(Scratch::output, kGroupBlocks * kBlock * kBlock);
  amx_configure();
  const int64_t taps = p.R * p.S, kblocks = g.Kp / kBlock, lda = g.row * 2, ldb = g.Kp * 4, ldc = kBlock * 4;
  for (int64_t group = begin; group < end; group += kGroupBlocks) {
    const int64_t group_end = std::min(end, group + kGroupBlocks);
    for (int64_t chunk = chunk0; chunk < chunk1; ++chunk)
      for (int64_t step0 = 0; step0 < g.steps; step0 += kGroupSteps)
        for (int64_t block = group; block < group_end; ++block) {
          const int64_t tap = block % taps, k0 = block / taps % kblocks * kBlock;
          const int64_t c0 = block / taps / kblocks * kBlock;
          float* c = (partial ? partial : sums) + (block - group) * kBlock * kBlock;
          if (chunk == chunk0 && step0 == 0) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
          } else {
            _tile_loadd(0, c, ldc);
            _tile_loadd(1, c + 16, ldc);
            _tile_loadd(2, c + 16 * kBlock, ldc);
            _tile_loadd(3, c + 16 * kBlock + 16, ldc);
          }
          const uint16_t* a = xt + chunk * g.x_chunk + (g.tap_slot[size_t(tap)] * g.Cp + c0) * g.row +
                              g.tap_offset[size_t(tap)];
          const uint32_t* b = gv + chunk * g.g_chunk + k0;
          for (int64_t step = step0; step < std::min(g.steps, step0 + kGroupSteps); ++step) {
            _tile_loadd(4, a + step * kStep, lda);
            _tile_loadd(5, a + 16 * g.row + step * kStep, lda);
            _tile_loadd(6, b + step * kStep / 2 * g.Kp, ldb);
            _tile_loadd(7, b + step * kStep / 2 * g.Kp + 16, ldb);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
          _tile_stored(0, c, ldc);
          _tile_stored(1, c + 16, ldc);
          _tile_stored(2, c + 16 * kBlock, ldc);
          _tile_stored(3, c + 16 * kBlock + 16, ldc);
        }
    for (int64_t block = group; block < group_end && !partial; ++block)
      store_block(p, sums + (block - group) * kBlock * kBlock, block % taps, block / taps / kblocks * kBlock,
                  block / taps % kblocks * kBlock, gw);
  }
  amx_release();
}

// The sums of `splits` partial sums of each block, added in split order, rounded into grad_weight.
CUCONV_AMX void store_split_blocks(const Conv2dParams& p, const Geometry& g, const float* partials, int64_t splits,
                                   int64_t blocks, uint16_t* gw) {
  alignas(64) float sums[kBlock * kBlock];
  const int64_t taps = p.R * p.S, kblocks = g.Kp / kBlock;
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t e = 0; e < kBlock * kBlock; e += 16) {
      __m512 v = _mm512_loadu_ps(partials + block * kBlock * kBlock + e);
      for (int64_t split = 1; split < splits; ++split)
        v = _mm512_add_ps(v, _mm512_loadu_ps(partials + (split * blocks + block) * kBlock * kBlock + e));
      _mm512_store_ps(sums + e, v);
    }
    store_block(p, sums, block % taps, block / taps / kblocks * kBlock, block / taps % kblocks * kBlock, gw);
  }
}

// An unfolded conv at stride 1 (a first layer) runs without the chunks' copies, image by image: its
// grad weight [K][t] (t the window values) sums grad_output times the unfolded input over the
// positions m = p * Q + q of each image. The unfolded input is made per image as 32 rows of
// positions (window value t's row: a run of an input row per output row it crosses; an NHWC image
// is first split into its channel planes). NCHW runs turned around: grad_output's channel planes
// are the A tiles, read in place (16 channels x 32 consecutive positions), and per 32 positions a
// 16 x 16 word transpose of the unfolded rows gives the B tiles (pairs of positions). NHWC: the
// unfolded rows are the A tiles, and two grad_output pixels' channel vectors joined give each B
// row. Past an image's last position the unfolded rows are zero and grad_output's tiles come from
// zero-padded copies (an NCHW plane beyond is another channel's), so every product the tiles add
// is one the convolution has, or zero times zero: no check of the input values is needed.
struct WindowValues {
  int32_t c[kStep], r[kStep], s[kStep];  // per window value t < R x S x C (at most 32)
};

bool unfolded_turned_shape(const Conv2dParams& conv) {
  return conv.C < 16 && conv.R * conv.S * conv.C <= kStep && conv.stride_h == 1 &&
         conv.stride_w == 1 && conv.dil_h == 1 && conv.dil_w == 1;
}

// Image n unfolded into 32 rows (window values t; zero rows past R x S x C) of `row` positions each
// (m = p * Q + q, zeros past the last): row t's output row p is a run of Q values of input row
// p + r - pad_h (stride 1), from column s - pad_w; columns outside the input give zeros. Each run is
// stored as whole 32-lane vectors in position order, so a vector's lanes past the run are written
// over by the next run.
CUCONV_AMX void unfold_rows_turned(const Conv2dParams& p, const WindowValues& wv, const uint16_t* x, int64_t n,
                                   int64_t row, uint16_t* rows) {
  const int64_t values = p.R * p.S * p.C, PQ = p.P * p.Q;
  for (int64_t t = 0; t < kStep; ++t) {
    uint16_t* dst = rows + t * row;
    if (t >= values) {
      zero_run(dst, row);
      continue;
    }
    const int64_t c = wv.c[t], tap_r = wv.r[t], tap_s = wv.s[t];
    const uint16_t* plane = x + (n * p.C + c) * p.H * p.W;
    // columns q0 <= q < q1 of an output row read inside the input
    const int64_t q0 = std::clamp<int64_t>(p.pad_w - tap_s, 0, p.Q), q1 = std::clamp<int64_t>(p.W + p.pad_w - tap_s, q0, p.Q);
    for (int64_t op = 0; op < p.P; ++op) {
      const int64_t h = op + tap_r - p.pad_h;
      const bool inside = h >= 0 && h < p.H;
      // lane L of the vector at q: column q + L + s - pad_w of row h
      const uintptr_t col0 = inside ? reinterpret_cast<uintptr_t>(plane + h * p.W) + uintptr_t((tap_s - p.pad_w) * 2) : 0;
      for (int64_t q = 0; q < p.Q; q += kStep) {
        const __mmask32 m = inside ? lanes32(q1 - q) & ~lanes32(q0 - q) : 0;
        _mm512_storeu_si512(dst + op * p.Q + q,
                            _mm512_maskz_loadu_epi16(m, reinterpret_cast<const void*>(col0 + uintptr_t(q * 2))));
      }
    }
    zero_run(dst + PQ, row - PQ);
  }
}

// The B tiles of positions m0 .. m0 + 31 from the unfolded rows: tile h holds window values 16 h ..
// 16 h + 15, row i the words of positions m0 + 2i and m0 + 2i + 1 (a 16 x 16 word transpose).
CUCONV_AMX void pack_window_pairs(const uint16_t* rows, int64_t row, int64_t m0, uint32_t* b) {
  __m512i r[16];
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t j = 0; j < 16; ++j) r[j] = _mm512_loadu_si512(rows + (16 * h + j) * row + m0);
    transpose16x16(r);
    for (int64_t i = 0; i < 16; ++i) _mm512_store_si512(b + h * 256 + i * 16, r[i]);
  }
}

// Image n of an NHWC input as C channel planes (H x W each) in `planes`.
CUCONV_AMX void split_channels(const Conv2dParams& p, const Deinterleave& d, const uint16_t* x, int64_t n,
                               uint16_t* planes) {
  const int64_t HW = p.H * p.W;
  const uint16_t* image = x + n * HW * p.C;
  __m512i v[kMaxDeinterleave];
  for (int64_t e0 = 0; e0 < HW; e0 += 32) {  // 32 pixels: C vectors of one channel each
    deinterleave(d, image + e0 * p.C, std::min<int64_t>(32, HW - e0) * p.C, v);
    for (int64_t c = 0; c < p.C; ++c) _mm512_mask_storeu_epi16(planes + c * HW + e0, lanes32(HW - e0), v[c]);
  }
}

// The B tiles of NHWC grad_output's positions m0 .. m0 + 31 of image n, output channels k0 .. k0 + 31:
// tile h holds channels k0 + 16 h.., row i the words of positions m0 + 2i and m0 + 2i + 1 (zero past
// the image's last position and past K).
CUCONV_AMX void pack_pixel_pairs(const Conv2dParams& p, const uint16_t* gy, int64_t n, int64_t m0, int64_t k0,
                                 uint32_t* b) {
  const int64_t PQ = p.P * p.Q;
  const __m512i join = _mm512_load_si512(kJoinLow);
  const uint16_t* pixels = gy + (n * PQ + m0) * p.K;
  for (int64_t h = 0; h < 2; ++h) {
    const __mmask32 channels = lanes32(p.K - k0 - 16 * h) & 0xFFFF;
    for (int64_t i = 0; i < 16; ++i) {
      const bool first = m0 + 2 * i < PQ, second = m0 + 2 * i + 1 < PQ;
      const __m512i lo = _mm512_maskz_loadu_epi16(first ? channels : 0, pixels + 2 * i * p.K + k0 + 16 * h);
      const __m512i hi = _mm512_maskz_loadu_epi16(second ? channels : 0, pixels + (2 * i + 1) * p.K + k0 + 16 * h);
      _mm512_store_si512(b + h * 256 + i * 16, _mm512_permutex2var_epi16(lo, join, hi));
    }
  }
}

// Images n0 .. n1 of output channels k0 .. k0 + 31 into sums (four 16 x 16 tiles; NCHW: channels
// k0.. with values 0..15, with 16..31, then channels k0 + 16.. with each; NHWC: values 0..15 with
// channels k0.., with k0 + 16.., then values 16..31 with each), summed in image and position order.
CUCONV_AMX void turned_sums(const Conv2dParams& p, const WindowValues& wv, const uint16_t* gy, const uint16_t* x,
                            int64_t n0, int64_t n1, int64_t k0, float* sums) {
  const int64_t PQ = p.P * p.Q, row = (PQ + kStep - 1) / kStep * kStep + kStep;
  uint16_t* rows = scratch<uint16_t>(Scratch::input, kStep * row);
  uint16_t* planes = p.channels_last ? scratch<uint16_t>(Scratch::output, p.C * p.H * p.W) : nullptr;
  const Deinterleave split = deinterleave_tables(p.channels_last ? p.C : 1);
  alignas(64) uint32_t b[512];
  alignas(64) uint16_t a_pad[2][16 * kStep];  // A tiles past the plane or the channels: zero-padded copies
  amx_configure();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t n = n0; n < n1; ++n) {
    if (p.channels_last) {
      split_channels(p, split, x, n, planes);
      unfold_rows_turned(p, wv, planes, 0, row, rows);
      for (int64_t m0 = 0; m0 < PQ; m0 += kStep) {
        pack_pixel_pairs(p, gy, n, m0, k0, b);
        tile_products_2x2(rows + m0, row * 2, rows + 16 * row + m0, row * 2, b, b + 256);
      }
      continue;
    }
    unfold_rows_turned(p, wv, x, n, row, rows);
    for (int64_t m0 = 0; m0 < PQ; m0 += kStep) {
      pack_window_pairs(rows, row, m0, b);
      const uint16_t* a[2];
      for (int64_t h = 0; h < 2; ++h) {
        const int64_t k = k0 + 16 * h;
        const uint16_t* plane = gy + (n * p.K + k) * PQ + m0;
        if (m0 + kStep <= PQ && k + 16 <= p.K) {
          a[h] = plane;
          continue;
        }
        const __mmask32 inside = lanes32(PQ - m0);
        for (int64_t e = 0; e < 16; ++e)
          _mm512_store_si512(a_pad[h] + e * kStep,
                             k + e < p.K ? _mm512_maskz_loadu_epi16(inside, plane + e * PQ) : _mm512_setzero_si512());
        a[h] = a_pad[h];
      }
      tile_products_2x2(a[0], a[0] == a_pad[0] ? kStep * 2 : PQ * 2, a[1], a[1] == a_pad[1] ? kStep * 2 : PQ * 2, b,
                        b + 256);
    }
  }
  _tile_stored(0, sums, 64);
  _tile_stored(1, sums + 256, 64);
  _tile_stored(2, sums + 512, 64);
  _tile_stored(3, sums + 768, 64);
  amx_release();
}

// The turned-around grad weight, [K][t] into out: the images in up to 4 fixed ranges (summed apart,
// then in order: the same bits at every thread count), per range and 32 output channels one item.
void turned_grad_weight(const Conv2dParams& conv, const uint16_t* gy, const uint16_t* x, uint16_t* out) {
  WindowValues wv{};
  for (int64_t t = 0; t < conv.R * conv.S * conv.C; ++t)
    wv.c[t] = int32_t(t % conv.C), wv.r[t] = int32_t(t / conv.C / conv.S), wv.s[t] = int32_t(t / conv.C % conv.S);
  const int64_t splits = std::min<int64_t>(4, conv.N), kblocks = (conv.K + kBlock - 1) / kBlock;
  float* partials = scratch<float>(Scratch::wide_c, splits * kblocks * 1024);
  at::parallel_for(0, splits * kblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t split = item / kblocks, kb = item % kblocks;
      turned_sums(conv, wv, gy, x, split * conv.N / splits, (split + 1) * conv.N / splits, kb * kBlock,
                  partials + item * 1024);
    }
  });
  const int64_t values = conv.R * conv.S * conv.C;
  for (int64_t kb = 0; kb < kblocks; ++kb)
    for (int64_t e = 0; e < 1024; ++e) {
      const int64_t tile = e / 256, row = e % 256 / 16, col = e % 16;  // NCHW: row k, column t; NHWC: t, k
      const int64_t k = kb * kBlock + (conv.channels_last ? tile % 2 * 16 + col : tile / 2 * 16 + row);
      const int64_t t = conv.channels_last ? tile / 2 * 16 + row : tile % 2 * 16 + col;
      if (k >= conv.K || t >= values) continue;
      float sum = partials[kb * 1024 + e];
      for (int64_t split = 1; split < splits; ++split) sum += partials[(split * kblocks + kb) * 1024 + e];
      out[k * values + t] = c10::BFloat16(sum).x;
    }
}

}  // namespace

bool amx_wgrad(const Conv2dParams& conv, const at::Tensor& grad_output, const at::Tensor& x,
               const at::Tensor& grad_weight) {
  // Under 16 channels: the grad weight of the 1x1 conv over the unfolded input, [K][RSC].
  const bool unfold = conv.C < 16;
  const Conv2dParams p = unfold ? unfolded(conv) : conv;
  const at::MemoryFormat layout = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor xc = x.contiguous(layout), gyc = grad_output.contiguous(layout);
  const auto* xs = reinterpret_cast<const uint16_t*>(xc.const_data_ptr<c10::BFloat16>());
  const auto* gys = reinterpret_cast<const uint16_t*>(gyc.const_data_ptr<c10::BFloat16>());
  if (unfold && unfolded_turned_shape(conv)) {
    const at::Tensor gw = at::empty({p.K, p.C}, grad_weight.options());
    turned_grad_weight(conv, gys, xs, reinterpret_cast<uint16_t*>(gw.data_ptr<c10::BFloat16>()));
    grad_weight.copy_(gw.view({conv.K, conv.R, conv.S, conv.C}).permute({0, 3, 1, 2}));
    return true;
  }
  const Geometry g = geometry(p);
  uint16_t* xt = scratch<uint16_t>(Scratch::wide_a, g.chunks * g.x_chunk);
  uint32_t* gv = scratch<uint32_t>(Scratch::wide_b, g.chunks * g.g_chunk);

  // The input first: a non-finite value sends the call to the GEMM plan before anything else runs.
  std::atomic<bool> bad{false};
  const int64_t rows_per_item = p.channels_last ? kBlock : 1;
  const int64_t row_items = g.Cp / rows_per_item;
  at::parallel_for(0, g.chunks * g.phases * row_items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t c = item % row_items * rows_per_item, slot = item / row_items % g.phases;
      const int64_t chunk = item / row_items / g.phases;
      const int64_t phase = g.slot_phase[size_t(slot)];
      uint16_t* dst = xt + chunk * g.x_chunk + (slot * g.Cp + c) * g.row;
      bool found;
      if (unfold && p.channels_last)
        found = pack_unfolded_nhwc(conv, g, xs, chunk, dst);
      else if (unfold)  // window value c = (r * S + s) * C + ci: input channel ci at phase (r, s)
        found = pack_input_nchw(conv, g, xs, chunk, c / conv.C / conv.S, c / conv.C % conv.S,
                                c < p.C ? c % conv.C : conv.C, dst);
      else if (p.channels_last)
        found = pack_input_nhwc(p, g, xs, chunk, phase, c, dst);
      else
        found = pack_input_nchw(p, g, xs, chunk, phase / p.stride_w, phase % p.stride_w, c, dst);
      if (found) bad.store(true, std::memory_order_relaxed);
    }
  });
  if (bad.load()) return false;

  // Per chunk its images' rows, then the tail of its last step.
  const int64_t rows = g.imgs * g.Hq;
  at::parallel_for(0, g.chunks * (rows + 1), 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t chunk = item / (rows + 1), row = item % (rows + 1);
      uint32_t* dst = gv + chunk * g.g_chunk;
      if (row < rows) {
        pack_grad_output_row(p, g, gys, chunk, row, dst);
      } else {
        const int64_t tail = g.imgs * g.plane / 2 * g.Kp;
        std::memset(dst + tail, 0, size_t(g.g_chunk - tail) * 4);
      }
    }
  });
  const int64_t blocks = p.R * p.S * (g.Cp / kBlock) * (g.Kp / kBlock);
  const at::Tensor gw = unfold ? at::empty({p.K, p.C}, grad_weight.options()) : grad_weight;
  auto* out = reinterpret_cast<uint16_t*>(gw.data_ptr<c10::BFloat16>());
  // Fewer C blocks than 4 (a first layer's grad weight is one): the chunks split in up to 4 fixed
  // ranges, summed apart and then in order, so more threads than blocks have work and the sums
  // stay the same at every thread count.
  const int64_t splits = blocks < 4 ? std::min<int64_t>(4, g.chunks) : 1;
  if (splits == 1) {
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      run_blocks(p, g, xt, gv, out, begin, end, 0, g.chunks, nullptr);
    });
  } else {
    float* partials = scratch<float>(Scratch::wide_c, splits * blocks * kBlock * kBlock);
    at::parallel_for(0, splits * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t split = item / blocks, block = item % blocks;
        run_blocks(p, g, xt, gv, out, block, block + 1, split * g.chunks / splits, (split + 1) * g.chunks / splits,
                   partials + item * kBlock * kBlock);
      }
    });
    store_split_blocks(p, g, partials, splits, blocks, out);
  }
  if (unfold)  // [K][R][S][C] into [K][C][R][S]
    grad_weight.copy_(gw.view({conv.K, conv.R, conv.S, conv.C}).permute({0, 3, 1, 2}));
  return true;
}

#else  // not x86: the plan never picks it (no AMX)

bool amx_wgrad(const Conv2dParams&, const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, "cuconv: amx_wgrad needs AMX");
}

#endif

}  // namespace cuconv::cpu
