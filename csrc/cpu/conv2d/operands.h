#pragma once
// The operands the CPU conv strategies build for their GEMMs (shared by fprop.cpp, dgrad.cpp and
// wgrad.cpp): im2col and col2im in both layouts, reordered and packed weights, the row-interleaved
// buffer, zero-padded copies and the row pointers of each window into them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "conv2d_params.h"
#include "cpu/gemm/gemm.h"
#include "cpu/sizes.h"
#include "cpu/transpose.h"

namespace cuconv::cpu {

// Copies a short run: fixed 8-element moves (the last one overlapping) instead of a memcpy call or
// a loop with a scalar tail, since im2col runs are one output row or one pixel's channels.
template <typename T>
inline void copy_run(T* dst, const T* src, int64_t len) {
  if (len >= 8) {
    for (int64_t k = 0; k + 8 <= len; k += 8) std::memcpy(dst + k, src + k, 8 * sizeof(T));
    std::memcpy(dst + len - 8, src + len - 8, 8 * sizeof(T));
  } else {
    for (int64_t k = 0; k < len; ++k) dst[k] = src[k];
  }
}

// col[(c*R + r)*S + s][oh*Q + ow] (row pitch ldcol) from one image's Cg channels x[c][h][w].
template <typename T>
void im2col_nchw(const Conv2dParams& p, const T* x, T* col, int64_t ldcol, int64_t oh0 = 0, int64_t oh1 = -1) {
  // Output rows oh0..oh1 only (all by default): col's columns (oh - oh0) * Q + ow.
  if (oh1 < 0) oh1 = p.P;
  const int64_t Cg = p.C_per_group(), cols = (oh1 - oh0) * p.Q;
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) {
        T* row = col + ((c * p.R + r) * p.S + s) * ldcol - oh0 * p.Q;
        const int64_t woff = s * p.dil_w - p.pad_w;
        int64_t lo, hi;
        valid_range(woff, p.stride_w, p.W, p.Q, lo, hi);
        int64_t oh_lo, oh_hi;
        valid_range(r * p.dil_h - p.pad_h, p.stride_h, p.H, p.P, oh_lo, oh_hi);
        oh_lo = std::clamp(oh_lo, oh0, oh1), oh_hi = std::clamp(oh_hi, oh_lo, oh1);
        std::fill(row + oh0 * p.Q, row + oh_lo * p.Q, T(0));
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          T* dst = row + oh * p.Q;
          const T* src = x + (c * p.H + oh * p.stride_h - p.pad_h + r * p.dil_h) * p.W + woff;
          // Plain loops, not memcpy/fill calls: the runs are short (one output row).
          for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = T(0);
          if (p.stride_w == 1)
            copy_run(dst + lo, src + lo, hi - lo);
          else if (p.stride_w == 2)  // a constant stride the compiler vectorises (even-lane shuffles)
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[2 * ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * p.stride_w];
          for (int64_t ow = hi; ow < p.Q; ++ow) dst[ow] = T(0);
        }
        std::fill(row + oh_hi * p.Q, row + oh0 * p.Q + cols, T(0));
      }
}

// Adds col (laid out as im2col_nchw writes it) back into one image's Cg channels gx[c][h][w].
template <typename T>
void col2im_nchw(const Conv2dParams& p, const T* col, int64_t ldcol, T* gx) {
  const int64_t Cg = p.C_per_group();
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) {
        const T* row = col + ((c * p.R + r) * p.S + s) * ldcol;
        const int64_t woff = s * p.dil_w - p.pad_w;
        int64_t lo, hi, oh_lo, oh_hi;
        valid_range(woff, p.stride_w, p.W, p.Q, lo, hi);
        valid_range(r * p.dil_h - p.pad_h, p.stride_h, p.H, p.P, oh_lo, oh_hi);
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          const T* src = row + oh * p.Q;
          T* dst = gx + (c * p.H + oh * p.stride_h - p.pad_h + r * p.dil_h) * p.W + woff;
          if (p.stride_w == 2)
            for (int64_t ow = lo; ow < hi; ++ow) dst[2 * ow] += src[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow * p.stride_w] += src[ow];
        }
      }
}

// col[oh*Q + ow][(r*S + s)*Cg + c] from one image x[h][w][C], channels g*Cg.. of group g.
template <typename T>
void im2col_nhwc(const Conv2dParams& p, const T* x, int64_t g, T* col) {
  const int64_t Cg = p.C_per_group(), RSC = p.R * p.S * Cg;
  for (int64_t oh = 0; oh < p.P; ++oh)
    for (int64_t ow = 0; ow < p.Q; ++ow) {
      T* dst = col + (oh * p.Q + ow) * RSC;
      const int64_t w0 = ow * p.stride_w - p.pad_w;
      // Ungrouped, undilated and inside the input: a kernel row's S pixels are one contiguous run.
      const bool row_runs = Cg == p.C && p.dil_w == 1 && w0 >= 0 && w0 + p.S <= p.W;
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
        if (row_runs && h >= 0 && h < p.H) {
          copy_run(dst, x + (h * p.W + w0) * p.C, p.S * p.C);
          dst += p.S * p.C;
          continue;
        }
        for (int64_t s = 0; s < p.S; ++s, dst += Cg) {
          const int64_t w = w0 + s * p.dil_w;
          // Plain loops, not memcpy/fill calls: Cg is often tiny (3 channels in a first layer).
          if (h < 0 || h >= p.H || w < 0 || w >= p.W) {
            for (int64_t c = 0; c < Cg; ++c) dst[c] = T(0);
          } else {
            const T* src = x + (h * p.W + w) * p.C + g * Cg;
            copy_run(dst, src, Cg);
          }
        }
      }
    }
}

template <typename T>
void col2im_nhwc(const Conv2dParams& p, const T* col, int64_t g, T* gx) {
  const int64_t Cg = p.C_per_group(), RSC = p.R * p.S * Cg;
  for (int64_t oh = 0; oh < p.P; ++oh)
    for (int64_t ow = 0; ow < p.Q; ++ow) {
      const T* src = col + (oh * p.Q + ow) * RSC;
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
        for (int64_t s = 0; s < p.S; ++s, src += Cg) {
          const int64_t w = ow * p.stride_w - p.pad_w + s * p.dil_w;
          if (h < 0 || h >= p.H || w < 0 || w >= p.W) continue;
          T* dst = gx + (h * p.W + w) * p.C + g * Cg;
          for (int64_t c = 0; c < Cg; ++c) dst[c] += src[c];
        }
      }
    }
}

// Weight OIHW reordered per group to [g][(r*S + s)*Cg + c][k] (k_major=false) or [g][k][(r*S + s)*Cg + c],
// rows ld apart.
template <typename T>
at::Tensor weight_rsc(const Conv2dParams& p, const T* w, bool k_major, int64_t ld, const at::TensorOptions& opts) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), RSC = p.R * p.S * Cg;
  const int64_t group = k_major ? Kg * ld : RSC * ld;  // rows of length ld
  at::Tensor out = at::empty({p.groups * group}, opts);
  T* o = out.data_ptr<T>();
  const int64_t RS = p.R * p.S;
  if (k_major) {
    for (int64_t g = 0; g < p.groups; ++g)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t rs = 0; rs < RS; ++rs) o[g * group + k * ld + rs * Cg + c] = w[((g * Kg + k) * Cg + c) * RS + rs];
    return out;
  }
  // (r, s, c) x k: blocks of 16 k, so each output row gets 16 contiguous writes instead of 16 writes
  // ld apart (a new cache line each).
  constexpr int64_t kBlock = 16;
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t k0 = 0; k0 < Kg; k0 += kBlock) {
      const int64_t k1 = std::min(k0 + kBlock, Kg);
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t rs = 0; rs < RS; ++rs) {
          const T* src = w + ((g * Kg) * Cg + c) * RS + rs;
          T* dst = o + g * group + (rs * Cg + c) * ld;
          for (int64_t k = k0; k < k1; ++k) dst[k] = src[k * Cg * RS];
        }
    }
  return out;
}

// A GEMM B operand per block b (a group, or a group and kernel row): Kd x N, element (i, k) =
// row(b, i).first[k * row(b, i).second] (a weight row's start and its output-channel stride). float is packed once for the micro-kernel (every GEMM of the call reads it as is);
// double (the portable kernel's other sliver width) stays dense, rows N apart.
template <typename T, class Row>
at::Tensor weight_operand(int64_t blocks, int64_t Kd, int64_t N, const at::TensorOptions& opts, int64_t& stride,
                          Row row) {
  constexpr bool packed = std::is_same_v<T, float>;
  constexpr int64_t kSliver = kGemmNR;
  const int64_t n_pad = packed ? ceil_div(N, kSliver) * kSliver : N, slivers = ceil_div(n_pad, kSliver);
  stride = packed ? gemm_packed_b_size(Kd, N) : Kd * N;
  at::Tensor out = at::empty({blocks * stride}, opts);
  T* o = out.data_ptr<T>();
  std::vector<std::pair<const T*, int64_t>> rows(blocks * Kd);  // row(b, i) once, not once per sliver
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t i = 0; i < Kd; ++i) rows[b * Kd + i] = row(b, i);
  // Sliver by sliver: the weight is K-major, so a sliver's 16 output channels read 16 runs of the
  // weight while i walks, where element order (k innermost) would stride over the whole weight for
  // every i. Every element is written once, the packed padding columns with zeros.
  // float, where rows share one output-channel stride and start within a span of at most 4 values
  // per row: the sliver's 16 runs over that span are transposed (8x8 in registers) into
  // [span][16], and each row is one 64-byte copy from it. (Value by value, each read strides by a
  // whole filter: packing a pointwise layer's weight took as long as its GEMM on 2x2 maps.) One
  // span for all blocks where they share it (kernel rows or taps of one filter), else one per block
  // (groups).
  struct Slab {
    const T* lo;
    int64_t len, b0, b1;  // blocks [b0, b1) read from [lo, lo + len); len 0: value by value
  };
  auto slab_of = [&](int64_t b0, int64_t b1) {
    Slab slab{nullptr, 0, b0, b1};
    if (!packed || b1 == b0 || Kd == 0) return slab;
    const int64_t ld = rows[b0 * Kd].second;
    const T *lo = rows[b0 * Kd].first, *hi = lo;
    for (int64_t r = b0 * Kd; r < b1 * Kd; ++r) {
      if (rows[r].second != ld) return slab;
      lo = std::min(lo, rows[r].first), hi = std::max(hi, rows[r].first);
    }
    if (ld > 0 && hi - lo + 1 <= 4 * (b1 - b0) * Kd) slab.lo = lo, slab.len = hi - lo + 1;
    return slab;
  };
  std::vector<Slab> slabs{slab_of(0, blocks)};
  if (slabs[0].len == 0 && blocks > 1) {
    slabs.clear();
    for (int64_t b = 0; b < blocks; ++b) slabs.push_back(slab_of(b, b + 1));
  }
  const Isa isa = active_isa();
  at::parallel_for(0, int64_t(slabs.size()) * slivers, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<T> stage;
    for (int64_t item = begin; item < end; ++item) {
      const Slab& slab = slabs[item / slivers];
      const int64_t k0 = item % slivers * kSliver, k1 = std::min(k0 + kSliver, n_pad), kn = std::min(k1, N);
      if (slab.len > 0) {
        const int64_t ld = rows[slab.b0 * Kd].second;
        stage.assign(slab.len * kSliver, T(0));
        transpose(isa, slab.lo + k0 * ld, ld, stage.data(), kSliver, kn - k0, slab.len);
        for (int64_t b = slab.b0; b < slab.b1; ++b)
          for (int64_t i = 0; i < Kd; ++i)
            std::memcpy(o + b * stride + gemm_packed_b_offset(i, k0, Kd, N),
                        stage.data() + (rows[b * Kd + i].first - slab.lo) * kSliver, kSliver * sizeof(T));
        continue;
      }
      for (int64_t b = slab.b0; b < slab.b1; ++b)
        for (int64_t i = 0; i < Kd; ++i) {
          T* dst = packed ? o + b * stride + gemm_packed_b_offset(i, k0, Kd, N) : o + b * stride + i * N + k0;
          const auto [src, ld] = rows[b * Kd + i];
          for (int64_t k = k0; k < kn; ++k) dst[k - k0] = src[k * ld];
          for (int64_t k = kn; k < k1; ++k) dst[k - k0] = T(0);
        }
    }
  });
  return out;
}
template <typename T>
void set_weight_operand(GemmArgs<T>& a, const T* block) {
  a.B = block;
  if constexpr (std::is_same_v<T, float>) a.b_packed = true;
  else a.ldb = a.N;
}

constexpr int64_t kMaxInterleaveRows = 16;  // kernel rows of interleave_rows' three-channel path

// The row-interleaved buffer of nb images x (group g; NHWC, or NCHW for a grad weight):
// z[i][oh][wb][r][c] = x(i, oh*stride_h - pad_h + r*dil_h, wb - pad_w, g*Cg + c), zero outside the
// image, wb < (Q-1)*stride_w + S; and rows[(i*P + oh)*Q + ow] = the start of position (oh, ow)'s
// window, S*R*Cg contiguous values.
template <typename T>
void interleave_rows(const Conv2dParams& p, const T* x, int64_t nb, int64_t g, T* z, const T** rows) {
  const int64_t Cg = p.C_per_group(), RC = p.R * Cg, HW = p.H * p.W;
  const int64_t Wp = (p.Q - 1) * p.stride_w + p.S;
  // Element strides of a channel and of a pixel.
  const int64_t cs = p.channels_last ? 1 : HW, ps = p.channels_last ? p.C : 1;
  // Columns wb = w + pad_w inside the image: [lo, hi).
  const int64_t lo = std::min(p.pad_w, Wp), hi = std::max(lo, std::min(Wp, p.pad_w + p.W));
  // Three channels, NHWC (first layers): position by position, each kernel row's 3 values as one
  // 4-value move whose 4th value lands on the next slot of the same buffer row and is overwritten
  // by the move that fills it. The last pixel of an input row is copied value by value, so no read
  // passes the input's end and no write passes the row's last slot.
  const bool three = Cg == 3 && p.channels_last && p.R <= kMaxInterleaveRows;
  for (int64_t i = 0; i < nb; ++i) {
    const T* xi = x + i * HW * p.C + g * Cg * cs;
    for (int64_t oh = 0; oh < p.P; ++oh) {
      T* zrow = z + (i * p.P + oh) * Wp * RC;
      if (three) {
        // Column lo's pixel of each kernel row's input row, or null outside the image (the
        // geometry in locals: the byte copies below could otherwise alias p and force reloads).
        const T* src[kMaxInterleaveRows];
        const int64_t R = p.R;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
          src[r] = h >= 0 && h < p.H && hi > lo ? xi + (h * p.W + lo - p.pad_w) * ps : nullptr;
        }
        std::fill(zrow, zrow + lo * RC, T(0));
        for (int64_t wb = lo; wb < hi; ++wb) {
          T* dst = zrow + wb * RC;
          const int64_t off = (wb - lo) * ps;
          for (int64_t r = 0; r < R; ++r, dst += 3) {
            if (!src[r]) {
              dst[0] = dst[1] = dst[2] = T(0);
            } else if (wb + 1 < hi) {
              T v[4];
              std::memcpy(v, src[r] + off, sizeof(v));
              std::memcpy(dst, v, sizeof(v));
            } else {
              dst[0] = src[r][off], dst[1] = src[r][off + 1], dst[2] = src[r][off + 2];
            }
          }
        }
        std::fill(zrow + hi * RC, zrow + Wp * RC, T(0));
        for (int64_t ow = 0; ow < p.Q; ++ow) rows[(i * p.P + oh) * p.Q + ow] = zrow + ow * p.stride_w * RC;
        continue;
      }
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = oh * p.stride_h - p.pad_h + r * p.dil_h;
        const bool inside = h >= 0 && h < p.H;
        const T* src = inside ? xi + (h * p.W + lo - p.pad_w) * ps : xi;  // column lo's pixel
        T* dst = zrow + r * Cg;
        for (int64_t wb = 0; wb < Wp; ++wb, dst += RC) {
          if (!inside || wb < lo || wb >= hi) {
            for (int64_t c = 0; c < Cg; ++c) dst[c] = T(0);
          } else if (Cg == 3) {  // first layers: a fixed-size copy the compiler unrolls
            const T* px = src + (wb - lo) * ps;
            dst[0] = px[0], dst[1] = px[cs], dst[2] = px[2 * cs];
          } else {
            const T* px = src + (wb - lo) * ps;
            for (int64_t c = 0; c < Cg; ++c) dst[c] = px[c * cs];
          }
        }
      }
      for (int64_t ow = 0; ow < p.Q; ++ow) rows[(i * p.P + oh) * p.Q + ow] = zrow + ow * p.stride_w * RC;
    }
  }
}

// Zero-padded copy of nb NHWC images: dst[i][hb][wb][c] = x(i, hb - pad_h, wb - pad_w, c), Hb x Wb.
template <typename T>
void pad_nhwc(const Conv2dParams& p, const T* x, int64_t nb, int64_t Hb, int64_t Wb, T* dst) {
  // Columns wb = w + pad_w inside the image: [lo, hi).
  const int64_t lo = std::min(p.pad_w, Wb), hi = std::max(lo, std::min(Wb, p.pad_w + p.W));
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t hb = 0; hb < Hb; ++hb, dst += Wb * p.C) {
      const int64_t h = hb - p.pad_h;
      if (h < 0 || h >= p.H) {
        std::fill(dst, dst + Wb * p.C, T(0));
        continue;
      }
      std::fill(dst, dst + lo * p.C, T(0));
      if (hi > lo) std::memcpy(dst + lo * p.C, x + ((i * p.H + h) * p.W + lo - p.pad_w) * p.C, (hi - lo) * p.C * sizeof(T));
      std::fill(dst + hi * p.C, dst + Wb * p.C, T(0));
    }
}

// The input rows and columns the windows cover, from -pad (undilated kernel rows): the size of a
// zero-padded copy inside which every window reads.
inline void window_extent(const Conv2dParams& p, int64_t& Hb, int64_t& Wb) {
  Hb = (p.P - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1;
  Wb = (p.Q - 1) * p.stride_w + p.S;
}

// Where kernel row r of every window starts in nb NHWC images of Hb x Wb pixels (zero-padded copies,
// or the input itself when no window leaves it), from channel c0: out[(i*P + oh)*Q + ow].
template <typename T>
void window_row_starts(const Conv2dParams& p, const T* img, int64_t nb, int64_t Hb, int64_t Wb, int64_t r,
                       int64_t c0, const T** out) {
  for (int64_t i = 0, m = 0; i < nb; ++i)
    for (int64_t oh = 0; oh < p.P; ++oh) {
      const T* row = img + ((i * Hb + oh * p.stride_h + r * p.dil_h) * Wb) * p.C + c0;
      for (int64_t ow = 0; ow < p.Q; ++ow, ++m) out[m] = row + ow * p.stride_w * p.C;
    }
}

// pad_nhwc from one NCHW image (C planes of H x W): dst[hb][wb][c] = x(c, hb - pad_h, wb - pad_w).
template <typename T>
void pad_nchw_to_nhwc(Isa isa, const Conv2dParams& p, const T* x, int64_t Hb, int64_t Wb, T* dst) {
  const int64_t C = p.C, HW = p.H * p.W;
  int64_t lo = 0, hi = 0;  // columns wb inside the image
  valid_range(-p.pad_w, 1, p.W, Wb, lo, hi);
  for (int64_t hb = 0; hb < Hb; ++hb) {
    T* row = dst + hb * Wb * C;
    const int64_t h = hb - p.pad_h;
    if (h < 0 || h >= p.H) {
      std::fill(row, row + Wb * C, T(0));
      continue;
    }
    std::fill(row, row + lo * C, T(0));
    std::fill(row + hi * C, row + Wb * C, T(0));
  }
  // 16 channel planes at a time, row after row: 16 input streams, where all C planes at once (4 KiB
  // apart for 32 x 32 maps) thrash the L1 sets.
  const int64_t h_end = std::min(p.H, Hb - p.pad_h);  // the rows read
  if (hi > lo)
    for (int64_t c0 = 0; c0 < C; c0 += 16)
      for (int64_t h = 0; h < h_end; ++h)
        transpose(isa, x + c0 * HW + h * p.W + lo - p.pad_w, HW, dst + ((h + p.pad_h) * Wb + lo) * C + c0, C,
                  std::min<int64_t>(16, C - c0), hi - lo);
}

}  // namespace cuconv::cpu
