// conv2d on the CPU as matrix products (gemm_cpu.h).
//  - float32 3x3 stride-1 ungrouped convs with enough channels: Winograd in all three passes
//    (conv2d_winograd_cpu.cpp; use_winograd below says when).
//  - forward NCHW:  y_n[K, PQ]  = W[K, CRS] * col_n[CRS, PQ]   (+ bias per row), im2col per image;
//    where whole pixels make a kernel row's run, the NHWC GEMMs below on a transposed copy of each
//    image instead (nchw_forward_via_nhwc).
//  - forward NHWC:  y[PQ, K] = A[PQ, RSC] * Wt[RSC, K] (+ bias per column) with A's rows read in
//    place (one GEMM per kernel row) or from a row-interleaved buffer (few channels); im2col only
//    for dilated kernel rows.
//  - grad input: dcol = W^T * grad_output, then col2im adds dcol into grad_input (measured faster
//    here than a forward conv of grad_output with the flipped weight, even at stride 1; Winograd's
//    flipped correlation is faster still where it applies). NHWC strided convs instead split
//    grad_input into stride_h x stride_w phases, each a stride-1 correlation written in place
//    (backward_input_nhwc_phases).
//  - small feature maps (deep layers) join several images into one GEMM (NHWC forward and grad
//    input, NCHW grad input at 4x4 and below, grad weight), so the weight or the partial is
//    streamed once per few hundred positions instead of once per image.
//  - grad weight: per fixed batch chunk, partial[CRS, K] = sum_n col_n * grad_output_n^T, then a
//    fixed-order sum of the chunk partials. The chunking depends on the shapes only, and every
//    output element is summed by one thread in a fixed order, so all results are bitwise the
//    same for any thread count. 1x1 stride-1 unpadded convs read the input directly (no im2col).
// Workspaces come from PyTorch's allocator and are kept per thread between calls (scratch()).
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../runners.h"
#include "conv2d_rows_avx512.h"
#include "conv2d_winograd_cpu.h"
#include "gemm_cpu.h"
#include "transpose_cpu.h"
#include "workspace.h"

namespace cuconv::cpu {

namespace {

// The outputs o in [lo, hi) of a count-long row whose input position o*stride + offset lies in [0, limit).
void valid_range(int64_t offset, int64_t stride, int64_t limit, int64_t count, int64_t& lo, int64_t& hi) {
  lo = offset >= 0 ? 0 : ceil_div(-offset, stride);
  hi = limit - offset <= 0 ? 0 : ceil_div(limit - offset, stride);
  lo = std::min(lo, count);
  hi = std::max(lo, std::min(hi, count));
}

bool reads_input_directly(const Conv2dParams& p) {
  return pitch_ok(p.H * p.W) && p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0 && p.P == p.H &&
         p.Q == p.W;
}

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
void im2col_nchw(const Conv2dParams& p, const T* x, T* col, int64_t ldcol) {
  const int64_t Cg = p.C_per_group(), PQ = p.P * p.Q;
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) {
        T* row = col + ((c * p.R + r) * p.S + s) * ldcol;
        const int64_t woff = s * p.dil_w - p.pad_w;
        int64_t lo, hi;
        valid_range(woff, p.stride_w, p.W, p.Q, lo, hi);
        int64_t oh_lo, oh_hi;
        valid_range(r * p.dil_h - p.pad_h, p.stride_h, p.H, p.P, oh_lo, oh_hi);
        std::fill(row, row + oh_lo * p.Q, T(0));
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
        std::fill(row + oh_hi * p.Q, row + PQ, T(0));
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
  // ld apart (a new cache line each); measured 18-20 -> 26-27 GFLOP/s on a 512-channel NHWC forward.
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

// Images joined into one GEMM when feature maps are small: about 256 positions per GEMM, so the
// weight is read once per 256 instead of once per image. Depends on the shapes only.
int64_t images_per_gemm(int64_t N, int64_t PQ) { return std::min(N, std::max<int64_t>(1, 256 / PQ)); }

// Work items for the outer parallel loop; when there are fewer than threads, the GEMMs split instead.
bool gemm_should_split(int64_t outer_items) { return outer_items < at::get_num_threads(); }

// A GEMM B operand per block b (a group, or a group and kernel row): Kd x N, element (i, k) =
// value(b, i, k). float is packed once for the micro-kernel (every GEMM of the call reads it as is);
// double (the portable kernel's other sliver width) stays dense, rows N apart.
template <typename T, class Value>
at::Tensor weight_operand(int64_t blocks, int64_t Kd, int64_t N, const at::TensorOptions& opts, int64_t& stride,
                          Value value) {
  constexpr bool packed = std::is_same_v<T, float>;
  stride = packed ? gemm_packed_b_size(Kd, N) : Kd * N;
  at::Tensor out = packed ? at::zeros({blocks * stride}, opts) : at::empty({blocks * stride}, opts);
  T* o = out.data_ptr<T>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      for (int64_t i = 0; i < Kd; ++i)
        for (int64_t k = 0; k < N; ++k)
          o[b * stride + (packed ? gemm_packed_b_offset(i, k, Kd, N) : i * N + k)] = value(b, i, k);
  });
  return out;
}
template <typename T>
void set_weight_operand(GemmArgs<T>& a, const T* block) {
  a.B = block;
  if constexpr (std::is_same_v<T, float>) a.b_packed = true;
  else a.ldb = a.N;
}

// NHWC forward without im2col, two ways (both need an undilated kernel row):
//  - in place: the S*Cg values one output position reads from input row h are one contiguous run,
//    so each kernel row r is a GEMM whose A rows point into the input (or a zero-padded copy when
//    the windows leave it). Used from 32 values per run (whole pixels per group).
//  - interleaved, for few channels (3-channel first layers): a buffer Z[oh][wb][r][c] holds, for
//    each output row and input column, the R input rows it reads; the window of position (oh, ow)
//    is then the contiguous run of S*R*Cg values from Z[oh][ow*stride_w], so one GEMM with K =
//    S*R*Cg covers it (the weight in (s, r, c) order). Z is R times one padded input row per output
//    row, where im2col would be R*S times.
bool nhwc_reads_rows_in_place(const Conv2dParams& p) {
  return p.channels_last && p.dil_w == 1 && (p.groups == 1 || p.S == 1) && p.S * p.C_per_group() >= 32;
}
bool nhwc_interleaved(const Conv2dParams& p) { return p.channels_last && p.dil_w == 1 && !nhwc_reads_rows_in_place(p); }

// Winograd F(2x2, 3x3) for float32 3x3 stride-1 ungrouped convs (conv2d_winograd_cpu.cpp): 2.25x
// fewer FLOPs. Automatic when the correlation has at least 16 input and output channels and 32 on
// one side: below that the transforms cost about what the products save (measured on Zen 3, batch
// 32: 16 -> 16 at 32x32 was 0.89-1.32x the GEMM's speed, 16 -> 32 and up 0.94-1.63x).
// CUCONV_CPU_CONV_ALGO forces either way.
bool winograd_shape(const Conv2dParams& p) {
  return p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && p.groups == 1;
}
template <typename T>
bool use_winograd(const Conv2dParams& p, int64_t c_in, int64_t c_out) {
  const WinogradAlgo algo = winograd_algo();  // first: a bad setting is an error for every conv
  if (!std::is_same_v<T, float> || !winograd_shape(p)) return false;
  return algo == WinogradAlgo::always ||
         (algo == WinogradAlgo::automatic && std::min(c_in, c_out) >= 16 && std::max(c_in, c_out) >= 32);
}

// Element strides (n, c, h, w) of a contiguous activation in the conv's memory format.
void activation_strides(bool channels_last, int64_t C, int64_t H, int64_t W, int64_t (&st)[4]) {
  if (channels_last) st[0] = H * W * C, st[1] = 1, st[2] = W * C, st[3] = C;
  else st[0] = C * H * W, st[1] = H * W, st[2] = W, st[3] = 1;
}

void winograd_forward(Isa isa, const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y,
                      bool relu) {
  WinogradConv s{p.N, p.C, p.H, p.W, p.K, p.P, p.Q, p.pad_h, p.pad_w, {}, {}, {p.C * 9, 9, 3, 1}};
  activation_strides(p.channels_last, p.C, p.H, p.W, s.xs);
  activation_strides(p.channels_last, p.K, p.P, p.Q, s.ys);
  winograd_conv3x3(isa, s, x, w, bias, y, relu);
}

// grad_input(n,c,h,w) = sum_{k,r,s} grad_output(n, k, h - (2 - pad_h) + r, ...) w(k, c, 2 - r, 2 - s):
// a correlation with the filter turned 180 degrees and its channel axes swapped.
void winograd_backward_input(Isa isa, const Conv2dParams& p, const float* gy, const float* w, float* gx) {
  WinogradConv s{p.N, p.K, p.P, p.Q, p.C, p.H, p.W, 2 - p.pad_h, 2 - p.pad_w, {}, {}, {9, p.C * 9, -3, -1}};
  activation_strides(p.channels_last, p.K, p.P, p.Q, s.xs);
  activation_strides(p.channels_last, p.C, p.H, p.W, s.ys);
  winograd_conv3x3(isa, s, gy, w + 8, nullptr, gx, false);
}

void winograd_backward_weight(Isa isa, const Conv2dParams& p, const float* gy, const float* x, float* gw) {
  WinogradConv s{p.N, p.C, p.H, p.W, p.K, p.P, p.Q, p.pad_h, p.pad_w, {}, {}, {}};
  activation_strides(p.channels_last, p.C, p.H, p.W, s.xs);
  activation_strides(p.channels_last, p.K, p.P, p.Q, s.ys);
  winograd_conv3x3_backward_weight(isa, s, gy, x, gw);
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
void window_extent(const Conv2dParams& p, int64_t& Hb, int64_t& Wb) {
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

// The weight as forward_nhwc_rows' GEMMs read it, per (g, pass): [s*Cg + c][k] for kernel row
// r = pass in place, [(s*R + r)*Cg + c][k] interleaved.
template <typename T>
at::Tensor nhwc_rows_weight(const Conv2dParams& p, const T* w, const at::TensorOptions& opts, int64_t& wstride) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), RS = p.R * p.S, RC = p.R * Cg;
  const bool in_place = nhwc_reads_rows_in_place(p);
  const int64_t passes = in_place ? p.R : 1, Kd = in_place ? p.S * Cg : p.S * RC;
  return weight_operand<T>(p.groups * passes, Kd, Kg, opts, wstride, [&](int64_t b, int64_t i, int64_t k) {
    const int64_t g = b / passes, c = i % Cg;
    const int64_t r = in_place ? b % passes : (i / Cg) % p.R, s = in_place ? i / Cg : i / RC;
    return w[((g * Kg + k) * Cg + c) * RS + r * p.S + s];
  });
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
  // apart for 32 x 32 maps) measured as slow as im2col.
  const int64_t h_end = std::min(p.H, Hb - p.pad_h);  // the rows read
  if (hi > lo)
    for (int64_t c0 = 0; c0 < C; c0 += 16)
      for (int64_t h = 0; h < h_end; ++h)
        transpose(isa, x + c0 * HW + h * p.W + lo - p.pad_w, HW, dst + ((h + p.pad_h) * Wb + lo) * C + c0, C,
                  std::min<int64_t>(16, C - c0), hi - lo);
}

// The NHWC forward of nhwc_reads_rows_in_place / nhwc_interleaved: GEMMs whose A rows are pointers,
// one per kernel row into the input in place, or one over the row-interleaved buffer.
template <typename T>
void forward_nhwc_rows(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                       const at::TensorOptions& opts) {
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t RC = p.R * Cg;
  const bool in_place = nhwc_reads_rows_in_place(p);
  const int64_t passes = in_place ? p.R : 1, Kd = in_place ? p.S * Cg : p.S * RC;  // GEMMs per item, their K
  // The input rows and columns the windows cover, from -pad; in place needs a padded copy only when
  // they leave the image.
  int64_t Hp = 0, Wp = 0;
  window_extent(p, Hp, Wp);
  const bool padded = in_place && (p.pad_h > 0 || p.pad_w > 0 || Hp > p.H || Wp > p.W);
  const int64_t Hb = padded ? Hp : p.H, Wb = padded ? Wp : p.W;
  int64_t wstride = 0;
  const at::Tensor wop = nhwc_rows_weight(p, w, opts, wstride);
  const int64_t per = images_per_gemm(p.N, PQ);
  const int64_t blocks = ceil_div(p.N, per);
  const bool split = gemm_should_split(blocks * G);
  at::parallel_for(0, blocks * G, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> rows;
    rows.resize(per * PQ);
    T* buf = !in_place ? scratch<T>(0, per * p.P * Wp * RC)
             : padded  ? scratch<T>(0, per * Hb * Wb * p.C)
                       : nullptr;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n0 = (item / G) * per, nb = std::min(per, p.N - n0), g = item % G;
      const T* base = x + n0 * HW * p.C;
      if (!in_place) interleave_rows(p, base, nb, g, buf, rows.data());
      if (padded) pad_nhwc(p, base, nb, Hb, Wb, buf), base = buf;
      for (int64_t r = 0; r < passes; ++r) {
        if (in_place) window_row_starts(p, base, nb, Hb, Wb, r, g * Cg, rows.data());
        GemmArgs<T> a;
        a.M = nb * PQ, a.N = Kg, a.K = Kd;
        a.a_rows = rows.data();
        set_weight_operand(a, wop.const_data_ptr<T>() + (g * passes + r) * wstride);
        a.C = y + n0 * PQ * p.K + g * Kg, a.ldc = p.K;
        a.init = r > 0 ? GemmInit::accumulate : bias ? GemmInit::bias_col : GemmInit::zero;
        a.bias = bias ? bias + g * Kg : nullptr;
        a.relu = relu && r == passes - 1;  // only the final sums are clamped
        a.parallel = split;
        gemm(isa, a);
      }
    }
  });
}

// NCHW convs with whole pixels per kernel row and no Winograd (r18.l2.down: 64 -> 128, 3x3,
// stride 2) through forward_nhwc_rows' GEMMs, one image at a time: the image is transposed into a
// zero-padded NHWC copy (279 KB for r18.l2.down, where im2col wrote 590 KB that the GEMM then
// packed again), each kernel row is a GEMM whose A rows point into it, and the PQ x K result, still
// in L2, is transposed into y. Measured against im2col (batch 32, interleaved): r18.l2.down 1.10-1.19x;
// forced off Winograd, 3x3 stride 1 at 32x32 to 8x8 1.09-1.23x, 5x5 16 -> 32 1.43x (float64
// 1.03-1.22x). Not for 4x4 maps (PQ 16: 0.80x, the GEMMs too short; NCHW does not join images),
// 1x1 strided convs (0.72-0.82x: the transposes cost what the GEMM does), or padded images past
// 1 MiB (float64 at 56x56: 0.98x). The choice depends on the shapes only, never the thread count.
bool nchw_forward_via_nhwc(const Conv2dParams& p, int64_t elem_size) {
  Conv2dParams q = p;
  q.channels_last = true;
  int64_t Hb = 0, Wb = 0;
  window_extent(p, Hb, Wb);
  return !p.channels_last && p.groups == 1 && p.dil_h == 1 && p.R * p.S > 1 && p.P * p.Q >= 64 &&
         nhwc_reads_rows_in_place(q) && Hb * Wb * p.C * elem_size <= (int64_t(1) << 20);
}

template <typename T>
void forward_nchw_via_nhwc(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                           const at::TensorOptions& opts) {
  Conv2dParams q = p;
  q.channels_last = true;
  const int64_t C = p.C, K = p.K, PQ = p.P * p.Q, HW = p.H * p.W;
  int64_t Hb = 0, Wb = 0;
  window_extent(p, Hb, Wb);
  int64_t wstride = 0;
  const at::Tensor wop = nhwc_rows_weight(q, w, opts, wstride);
  const int64_t ldo = pitch(K);
  const bool split = gemm_should_split(p.N);  // same bits: every C element is one thread's FMA chain
  at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> rows;
    rows.resize(PQ);
    T* in = scratch<T>(0, Hb * Wb * C);
    T* out = scratch<T>(1, PQ * ldo);
    for (int64_t n = begin; n < end; ++n) {
      pad_nchw_to_nhwc(isa, p, x + n * C * HW, Hb, Wb, in);
      for (int64_t r = 0; r < p.R; ++r) {
        window_row_starts(p, in, 1, Hb, Wb, r, 0, rows.data());
        GemmArgs<T> a;
        a.M = PQ, a.N = K, a.K = p.S * C;
        a.a_rows = rows.data();
        set_weight_operand(a, wop.const_data_ptr<T>() + r * wstride);
        a.C = out, a.ldc = ldo;
        a.init = r > 0 ? GemmInit::accumulate : bias ? GemmInit::bias_col : GemmInit::zero;
        a.bias = bias;
        a.relu = relu && r == p.R - 1;  // only the final sums are clamped
        a.parallel = split;
        gemm(isa, a);
      }
      transpose(isa, out, ldo, y + n * K * PQ, PQ, PQ, K);
    }
  });
}

template <typename T>
void forward_impl(Isa isa, const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y, bool relu,
                  const at::TensorOptions& opts) {
  if constexpr (std::is_same_v<T, float>) {
    if (use_winograd<T>(p, p.C, p.K)) return winograd_forward(isa, p, x, w, bias, y, relu);
    if (rows_avx512_eligible(isa, p)) return conv2d_fprop_rows_avx512(p, x, w, bias, y, relu);
  }
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t CRS = Cg * p.R * p.S;
  const bool direct = reads_input_directly(p);
  if (nchw_forward_via_nhwc(p, sizeof(T))) {
    forward_nchw_via_nhwc(isa, p, x, w, bias, y, relu, opts);
  } else if (!p.channels_last) {
    // One image per GEMM: joining small maps side by side (as NHWC does) measured slower here.
    const int64_t ldcol = pitch(PQ);
    const bool split = gemm_should_split(p.N * G);
    at::parallel_for(0, p.N * G, 1, [&](int64_t begin, int64_t end) {
      // Columns past PQ are never read (the GEMM masks its edge tiles), so no zeroing is needed.
      T* col = direct ? nullptr : scratch<T>(0, CRS * ldcol);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / G, g = item % G;
        const T* xg = x + (n * p.C + g * Cg) * HW;
        if (!direct) im2col_nchw(p, xg, col, ldcol);
        GemmArgs<T> a;
        a.M = Kg, a.N = PQ, a.K = CRS;
        a.A = w + g * Kg * CRS, a.rsA = CRS, a.csA = 1;
        a.B = direct ? xg : col, a.ldb = direct ? HW : ldcol;
        a.C = y + (n * p.K + g * Kg) * PQ, a.ldc = PQ;
        a.init = bias ? GemmInit::bias_row : GemmInit::zero;
        a.bias = bias ? bias + g * Kg : nullptr;
        a.relu = relu;  // applied in the micro-kernel's final store
        a.parallel = split;
        gemm(isa, a);
      }
    });
  } else if (nhwc_reads_rows_in_place(p) || nhwc_interleaved(p)) {
    forward_nhwc_rows(isa, p, x, w, bias, y, relu, opts);
  } else {
    const int64_t ldw = pitch(Kg);
    const at::Tensor wt = weight_rsc(p, w, /*k_major=*/false, ldw, opts);
    const T* wt_ptr = wt.const_data_ptr<T>();
    // Images per GEMM: NHWC rows of consecutive images are consecutive, so small feature maps
    // (deep layers) join images until a GEMM has ~256 rows and the weight is read once for all.
    const int64_t per = images_per_gemm(p.N, PQ);
    const int64_t blocks = ceil_div(p.N, per);
    const bool split_b = gemm_should_split(blocks * G);
    at::parallel_for(0, blocks * G, 1, [&](int64_t begin, int64_t end) {
      T* col = direct ? nullptr : scratch<T>(0, per * PQ * CRS);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n0 = (item / G) * per, nb = std::min(per, p.N - n0), g = item % G;
        const T* xn = x + n0 * HW * p.C;
        if (!direct)
          for (int64_t i = 0; i < nb; ++i) im2col_nhwc(p, xn + i * HW * p.C, g, col + i * PQ * CRS);
        GemmArgs<T> a;
        a.M = nb * PQ, a.N = Kg, a.K = CRS;
        a.A = direct ? xn + g * Cg : col, a.rsA = direct ? p.C : CRS, a.csA = 1;
        a.B = wt_ptr + g * CRS * ldw, a.ldb = ldw;
        a.C = y + n0 * PQ * p.K + g * Kg, a.ldc = p.K;
        a.init = bias ? GemmInit::bias_col : GemmInit::zero;
        a.bias = bias ? bias + g * Kg : nullptr;
        a.relu = relu;
        a.parallel = split_b;
        gemm(isa, a);
      }
    });
  }
}

// NHWC grad input of a strided conv by phases (one group, no dilation), with no col2im: the
// grad_input pixels (h, w) with (h + pad_h) % stride_h == a and (w + pad_w) % stride_w == b receive
// only the taps r = a + j*stride_h, s = b + i*stride_w, each from grad_output pixel (u - j, v - i)
// where u = (h + pad_h) / stride_h, v = (w + pad_w) / stride_w. So each phase (a, b) is a stride-1
// correlation of grad_output with its sub-kernel: per j one GEMM whose A rows are runs of Sb whole
// pixels of a zero-padded grad_output copy (read in place, as the NHWC forward reads its input) and
// whose C rows are the phase's pixels of grad_input (row pointers). col2im instead wrote R*S values
// per position and added them back (r18.l2.down: 590 KB per image).
bool backward_input_by_phases(const Conv2dParams& p) {
  return p.channels_last && (p.stride_h > 1 || p.stride_w > 1) && p.dil_h == 1 && p.dil_w == 1 && p.groups == 1;
}

template <typename T>
void backward_input_nhwc_phases(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx,
                                const at::TensorOptions& opts) {
  const int64_t sh = p.stride_h, sw = p.stride_w, PQ = p.P * p.Q;
  const int64_t Rm = ceil_div(p.R, sh), Sm = ceil_div(p.S, sw);  // taps per phase, at most
  // Phase a's taps along one axis (0 when a >= R). Its pixels are u in [0, U) (phase 0 has the
  // most) with h = u*stride + a - pad inside the image: valid_range.
  auto taps = [](int64_t a, int64_t R, int64_t s) { return a < R ? ceil_div(R - a, s) : int64_t(0); };
  const int64_t Uh = (p.H - 1 + p.pad_h) / sh + 1, Uw = (p.W - 1 + p.pad_w) / sw + 1;
  // grad_output zero-padded by Rm - 1 rows on top and Sm - 1 columns on the left, and down and to the
  // right as far as the phases' last pixels read.
  Conv2dParams q = p;
  q.H = p.P, q.W = p.Q, q.C = p.K, q.pad_h = Rm - 1, q.pad_w = Sm - 1;
  const int64_t Hb = Rm - 1 + std::max(p.P, Uh), Wb = Sm - 1 + std::max(p.Q, Uw);
  const bool padded = Hb != p.P || Wb != p.Q;  // else grad_output is read in place (1x1 shortcuts)
  const bool untapped = p.R < sh || p.S < sw;
  // The weight per phase, one block per j: [i*K + k][c] = w(k, c, a + j*sh, b + (Sb - 1 - i)*sw), so
  // the Sb pixels of an A row (leftmost first) meet their taps.
  std::vector<at::Tensor> wops(sh * sw);
  std::vector<int64_t> wstrides(sh * sw);
  for (int64_t a = 0; a < sh; ++a)
    for (int64_t b = 0; b < sw; ++b) {
      const int64_t Ra = taps(a, p.R, sh), Sb = taps(b, p.S, sw);
      if (Ra == 0 || Sb == 0) continue;
      auto value = [&](int64_t j, int64_t i, int64_t c) {
        const int64_t k = i % p.K, s = b + (Sb - 1 - i / p.K) * sw;
        return w[((k * p.C + c) * p.R + a + j * sh) * p.S + s];
      };
      wops[a * sw + b] = weight_operand<T>(Ra, Sb * p.K, p.C, opts, wstrides[a * sw + b], value);
    }
  const int64_t per = images_per_gemm(p.N, PQ);
  const int64_t blocks = ceil_div(p.N, per);
  const bool split = gemm_should_split(blocks);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> arows;
    thread_local std::vector<T*> crows;
    T* buf = padded ? scratch<T>(0, per * Hb * Wb * p.K) : nullptr;
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t n0 = blk * per, nb = std::min(per, p.N - n0);
      const T* gyb = gy + n0 * PQ * p.K;
      if (padded) pad_nhwc(q, gyb, nb, Hb, Wb, buf), gyb = buf;
      // Phases without taps (stride > kernel: the 1x1 shortcuts' odd rows and columns) are zeros;
      // one fill of the images, since a fill per pixel (256 B) costs a memset call each.
      if (untapped) std::fill(gx + n0 * p.H * p.W * p.C, gx + (n0 + nb) * p.H * p.W * p.C, T(0));
      for (int64_t a = 0; a < sh; ++a)
        for (int64_t b = 0; b < sw; ++b) {
          const int64_t Ra = taps(a, p.R, sh), Sb = taps(b, p.S, sw);
          int64_t u0, u1, v0, v1;
          valid_range(a - p.pad_h, sh, p.H, Uh, u0, u1);
          valid_range(b - p.pad_w, sw, p.W, Uw, v0, v1);
          if (u1 <= u0 || v1 <= v0) continue;
          const int64_t M = nb * (u1 - u0) * (v1 - v0);
          crows.resize(M);
          for (int64_t i = 0, m = 0; i < nb; ++i)
            for (int64_t u = u0; u < u1; ++u)
              for (int64_t v = v0; v < v1; ++v, ++m)
                crows[m] = gx + (((n0 + i) * p.H + u * sh + a - p.pad_h) * p.W + v * sw + b - p.pad_w) * p.C;
          if (Ra == 0 || Sb == 0) continue;  // no tap lands on these pixels: zeroed above
          arows.resize(M);
          for (int64_t j = 0; j < Ra; ++j) {
            for (int64_t i = 0, m = 0; i < nb; ++i)
              for (int64_t u = u0; u < u1; ++u)
                for (int64_t v = v0; v < v1; ++v, ++m)
                  arows[m] = gyb + ((i * Hb + u - j + Rm - 1) * Wb + v - (Sb - 1) + Sm - 1) * p.K;
            GemmArgs<T> g;
            g.M = M, g.N = p.C, g.K = Sb * p.K;
            g.a_rows = arows.data();
            set_weight_operand(g, wops[a * sw + b].template const_data_ptr<T>() + j * wstrides[a * sw + b]);
            g.c_rows = crows.data();
            g.init = j == 0 ? GemmInit::zero : GemmInit::accumulate;
            g.parallel = split;
            gemm(isa, g);
          }
        }
    }
  });
}

template <typename T>
void backward_input_impl(Isa isa, const Conv2dParams& p, const T* gy, const T* w, T* gx,
                         const at::TensorOptions& opts) {
  if constexpr (std::is_same_v<T, float>) {
    if (use_winograd<T>(p, p.K, p.C)) return winograd_backward_input(isa, p, gy, w, gx);
  }
  if (backward_input_by_phases(p)) return backward_input_nhwc_phases(isa, p, gy, w, gx, opts);
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t CRS = Cg * p.R * p.S;
  // Several images per GEMM when feature maps are small (see images_per_gemm); NCHW only for the
  // smallest maps and real windows (measured: a gain for 3x3 at 4x4, a loss at 8x8 and for 1x1).
  const int64_t per = p.channels_last || (PQ < 64 && p.R * p.S > 1) ? images_per_gemm(p.N, PQ) : 1;
  const int64_t blocks = ceil_div(p.N, per);
  if (!p.channels_last) {
    // W^T per group, [g][c*R*S + rs][k]: the GEMM's A then runs along K in memory (no per-call packing).
    at::Tensor wt_t = at::empty({G * CRS * Kg}, opts);
    T* wt = wt_t.data_ptr<T>();
    // In 16 x 16 blocks, so both the reads and the writes stay within a few cache lines.
    const int64_t iblocks = ceil_div(CRS, 16);
    at::parallel_for(0, G * iblocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t g = item / iblocks, i0 = (item % iblocks) * 16, i1 = std::min(i0 + 16, CRS);
        for (int64_t k0 = 0; k0 < Kg; k0 += 16)
          for (int64_t i = i0; i < i1; ++i)
            for (int64_t k = k0; k < std::min(k0 + 16, Kg); ++k)
              wt[(g * CRS + i) * Kg + k] = w[(g * Kg + k) * CRS + i];
      }
    });
    const bool split = gemm_should_split(blocks * G);
    at::parallel_for(0, blocks * G, 1, [&](int64_t begin, int64_t end) {
      T* dcol = scratch<T>(1, CRS * per * PQ);
      T* gyb = per > 1 ? scratch<T>(2, Kg * per * PQ) : nullptr;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n0 = (item / G) * per, nb = std::min(per, p.N - n0), g = item % G;
        const T* gyg = gy + (n0 * p.K + g * Kg) * PQ;
        if (per > 1)  // the images' [Kg][PQ] blocks side by side: gyb[k][i*PQ + j]
          for (int64_t k = 0; k < Kg; ++k)
            for (int64_t i = 0; i < nb; ++i)
              std::memcpy(gyb + k * nb * PQ + i * PQ, gyg + (i * p.K + k) * PQ, PQ * sizeof(T));
        GemmArgs<T> a;
        a.M = CRS, a.N = nb * PQ, a.K = Kg;
        a.A = wt + g * CRS * Kg, a.rsA = Kg, a.csA = 1;
        a.B = per > 1 ? gyb : gyg, a.ldb = nb * PQ;
        a.C = dcol, a.ldc = nb * PQ;
        a.parallel = split;
        gemm(isa, a);
        for (int64_t i = 0; i < nb; ++i) {
          T* gxg = gx + ((n0 + i) * p.C + g * Cg) * HW;
          std::fill(gxg, gxg + Cg * HW, T(0));
          col2im_nchw(p, dcol + i * PQ, nb * PQ, gxg);
        }
      }
    });
  } else {
    const int64_t ldw = pitch(CRS);
    const at::Tensor wk = weight_rsc(p, w, /*k_major=*/true, ldw, opts);
    const T* wk_ptr = wk.const_data_ptr<T>();
    const bool split = gemm_should_split(blocks);
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      T* dcol = scratch<T>(1, per * PQ * CRS);
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t n0 = blk * per, nb = std::min(per, p.N - n0);
        T* gxn = gx + n0 * HW * p.C;
        std::fill(gxn, gxn + nb * HW * p.C, T(0));
        for (int64_t g = 0; g < G; ++g) {
          GemmArgs<T> a;
          a.M = nb * PQ, a.N = CRS, a.K = Kg;
          a.A = gy + n0 * PQ * p.K + g * Kg, a.rsA = p.K, a.csA = 1;
          a.B = wk_ptr + g * Kg * ldw, a.ldb = ldw;
          a.C = dcol, a.ldc = CRS;
          a.parallel = split;
          gemm(isa, a);
          for (int64_t i = 0; i < nb; ++i) col2im_nhwc(p, dcol + i * PQ * CRS, g, gxn + i * HW * p.C);
        }
      }
    });
  }
}

template <typename T>
void backward_weight_impl(Isa isa, const Conv2dParams& p, const T* gy, const T* x, T* gw,
                          const at::TensorOptions& opts) {
  if constexpr (std::is_same_v<T, float>) {
    if (use_winograd<T>(p, p.C, p.K)) return winograd_backward_weight(isa, p, gy, x, gw);
    if (rows_avx512_eligible(isa, p)) return conv2d_wgrad_rows_avx512(p, gy, x, gw);
  }
  const int64_t G = p.groups, Cg = p.C_per_group(), Kg = p.K_per_group(), PQ = p.P * p.Q, HW = p.H * p.W;
  const int64_t CRS = Cg * p.R * p.S, RS = p.R * p.S;
  // Images per GEMM: their positions are concatenated along the GEMM's K, so small feature maps
  // sum ~512 positions per pass over the partial instead of one image's few. Fixed by the shapes.
  // Fewer when the GEMM's A block (CRS x positions) would pass 512 KiB, half a Zen 4 core's L2:
  // with one image instead of two, r18.l2.down's NCHW im2col block (576 x 256, not 1.2 MB) ran 1.01-1.03x.
  int64_t per = std::max<int64_t>(1, 512 / PQ);
  while (per > 1 && CRS * per * PQ * int64_t(sizeof(T)) > (int64_t(512) << 10)) per /= 2;
  // NCHW images are not adjacent along K, so joined images go through im2col (a copy for 1x1).
  const bool direct = reads_input_directly(p) && (p.channels_last || per == 1);
  // Fixed split of the batch into 8, 4, 2 or 1 chunks (even work for 2, 4 or 8 threads), fewer when
  // the partials would be large or a chunk would sum fewer than 256 positions (each partial is
  // written, then read by the final sum: with 16 positions per image, 8 chunks of 4 images moved
  // more partial bytes than the products needed; measured 0.65x -> see BENCHMARKS.md, r18.sc4).
  int64_t chunks = 8;
  while (chunks > 1 &&
         (chunks > p.N || chunks * G * CRS * Kg > (int64_t(1) << 23) || p.N / chunks * PQ < 256))
    chunks /= 2;
  T* part = scratch<T>(3, chunks * G * CRS * Kg);  // slot 3: the parallel chunks use 0 and 1
  const bool split = gemm_should_split(chunks);
  const int64_t most = std::min(per, ceil_div(p.N, chunks));  // images in one GEMM at most
  const int64_t ldcol = pitch(most * PQ), ldg = pitch(Kg);
  // NHWC: grad_output rows are K apart; copy them to a better pitch when K is a bad one for the
  // packed GEMM (the small-output path reads them row by row, in place).
  bool small_output = false;
  if constexpr (std::is_same_v<T, float>) {
    GemmArgs<float> probe;
    probe.M = CRS, probe.N = Kg, probe.K = most * PQ, probe.rsA = 1, probe.parallel = split;
    small_output = gemm_small_output(isa, probe);
  }
  const bool copy_gy = p.channels_last && !pitch_ok(p.K) && !small_output;
  // The row-interleaved buffer (R copies of the input, not R*S) as the GEMM's A columns, for NHWC
  // with few channels, and for NCHW where the small-output GEMM runs (which reads A by columns);
  // its rows are then in (s, r, c) order instead of im2col's (r, s, c).
  // NHWC 1x1 without padding but strided (ResNet shortcuts): each position's Cg values are one
  // run of the input, so the GEMM's A columns point into it (no im2col copy).
  const bool pixel_cols = !direct && p.channels_last && p.R == 1 && p.S == 1 && p.pad_h == 0 && p.pad_w == 0;
  // (NCHW only for a first layer's few rows: at 64 x 128, a 1x1 shortcut, the buffer ran 0.44x.)
  // NHWC where the small-output GEMM runs (few channels: the first layers): its A columns point at
  // each window in a zero-padded copy, the kernel rows as runs of S*C values (GemmArgs::a_run), so
  // nothing is interleaved. Same products in the same order as from the row-interleaved buffer:
  // measured (batch 32, interleaved) seed.conv1 1.06x (batch 128: 1.06x), r18.conv1 1.03x.
  const bool col_runs = p.channels_last && !direct && !pixel_cols && small_output && G == 1 && p.dil_h == 1 &&
                        p.dil_w == 1 && p.R > 1;
  const bool interleaved = !direct && !pixel_cols && !col_runs &&
                           (nhwc_interleaved(p) ||
                            (!p.channels_last && small_output && CRS <= 32 && Kg <= 64 && p.dil_w == 1));
  // Whole pixels per kernel row (S*C values in a row of a zero-padded NHWC copy, transposed from
  // NCHW; or of the NHWC input when no window leaves it): as col_runs, but for the blocked GEMM, whose
  // A packing copies the runs (8 rows of a run per vector copy). Partial rows ((r*S + s)*C + c),
  // NHWC's im2col order; same products in the same order as im2col's GEMM, without writing R*S
  // values per position: measured (batch 32, interleaved) r18.l2.down 1.03x in both layouts; forced
  // off Winograd, 3x3 and 5x5 float32 0.97-1.15x (most 1.02-1.07x), float64 NCHW 1.39-1.45x, NHWC
  // 0.97-1.07x. (Round 9 ran one GEMM per kernel row; one GEMM over all R runs packs grad_output
  // once instead of R times: r18.l2.down 1.02x, AVX-512 and AVX2.)
  int64_t Hb = 0, Wb = 0;  // the zero-padded copy of row_cols and col_runs (undilated)
  window_extent(p, Hb, Wb);
  const bool row_cols = !direct && !pixel_cols && !interleaved && !small_output && G == 1 && p.dil_h == 1 &&
                        p.dil_w == 1 && p.R * p.S > 1 && p.S * p.C >= 32;
  // Both read each window's R kernel rows as runs of S*C values (of a zero-padded copy, or of the
  // NHWC input in place), in one GEMM; they differ in which GEMM path runs (small_output).
  const bool window_runs = row_cols || col_runs;
  const bool nhwc_order = p.channels_last || row_cols;  // the partial's row order
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<const T*> pos;
    if (interleaved || pixel_cols || window_runs) pos.resize(most * PQ);
    T* col = direct || pixel_cols ? nullptr
             : interleaved        ? scratch<T>(0, most * p.P * Wb * p.R * Cg)
             : window_runs        ? scratch<T>(0, most * Hb * Wb * p.C)
                                  : scratch<T>(0, CRS * (p.channels_last ? most * PQ : ldcol));
    T* gyt = p.channels_last && !copy_gy ? nullptr : scratch<T>(1, most * PQ * ldg);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t n0 = chunk * p.N / chunks, n1 = (chunk + 1) * p.N / chunks;
      for (int64_t n = n0; n < n1; n += per)
        for (int64_t g = 0; g < G; ++g) {
          const int64_t nb = std::min(per, n1 - n);
          GemmArgs<T> a;
          a.M = CRS, a.N = Kg, a.K = nb * PQ;
          a.C = part + (chunk * G + g) * CRS * Kg, a.ldc = Kg;
          a.init = n == n0 ? GemmInit::zero : GemmInit::accumulate;
          a.parallel = split;
          // B: grad_output as [positions][Kg], NCHW transposed (8x8 register blocks), NHWC in place
          // or copied to a better pitch.
          if (!p.channels_last) {
            const T* gyg = gy + (n * p.K + g * Kg) * PQ;  // [nb][K][PQ] -> gyt[nb*PQ][Kg]
            for (int64_t i = 0; i < nb; ++i)
              transpose(isa, gyg + i * p.K * PQ, PQ, gyt + i * PQ * ldg, ldg, Kg, PQ);
            a.B = gyt, a.ldb = ldg;
          } else {
            const T* gyg = gy + n * PQ * p.K + g * Kg;
            if (copy_gy) {
              for (int64_t i = 0; i < nb * PQ; ++i)
                for (int64_t k = 0; k < Kg; ++k) gyt[i * ldg + k] = gyg[i * p.K + k];
            }
            a.B = copy_gy ? gyt : gyg, a.ldb = copy_gy ? ldg : p.K;
          }
          if (window_runs) {
            // NHWC reads its input in place when no window leaves it, as the forward does.
            const bool copy = !p.channels_last || p.pad_h > 0 || p.pad_w > 0 || Hb > p.H || Wb > p.W;
            const int64_t ih = copy ? Hb : p.H, iw = copy ? Wb : p.W;
            const T* imgs = copy ? col : x + n * HW * p.C;
            for (int64_t i = 0; i < nb && copy; ++i) {
              T* img = col + i * Hb * Wb * p.C;
              if (p.channels_last) pad_nhwc(p, x + (n + i) * HW * p.C, 1, Hb, Wb, img);
              else pad_nchw_to_nhwc(isa, p, x + (n + i) * p.C * HW, Hb, Wb, img);
            }
            // One GEMM, each A column the window's R runs of S*C values.
            window_row_starts(p, imgs, nb, ih, iw, 0, 0, pos.data());
            a.a_cols = pos.data(), a.a_run = p.S * p.C, a.a_run_stride = iw * p.C;
            gemm(isa, a);
            continue;
          }
          if (!p.channels_last) {
            const T* xg = x + (n * p.C + g * Cg) * HW;
            if (interleaved) {
              interleave_rows(p, x + n * p.C * HW, nb, g, col, pos.data());
              a.a_cols = pos.data();
            } else {
              for (int64_t i = 0; i < nb && !direct; ++i) im2col_nchw(p, xg + i * p.C * HW, col + i * PQ, ldcol);
              a.A = direct ? xg : col, a.rsA = direct ? HW : ldcol, a.csA = 1;
            }
          } else {
            const T* xn = x + n * HW * p.C;
            if (interleaved) {
              interleave_rows(p, xn, nb, g, col, pos.data());
              a.a_cols = pos.data();
            } else if (pixel_cols) {
              for (int64_t i = 0, m = 0; i < nb; ++i)
                for (int64_t oh = 0; oh < p.P; ++oh)
                  for (int64_t ow = 0; ow < p.Q; ++ow, ++m)
                    pos[m] = xn + ((i * p.H + oh * p.stride_h) * p.W + ow * p.stride_w) * p.C + g * Cg;
              a.a_cols = pos.data();
            } else {
              if (!direct)
                for (int64_t i = 0; i < nb; ++i) im2col_nhwc(p, xn + i * HW * p.C, g, col + i * PQ * CRS);
              a.A = direct ? xn + g * Cg : col, a.rsA = 1, a.csA = direct ? p.C : CRS;
            }
          }
          gemm(isa, a);
        }
    }
  });
  // gw[g*Kg + k][c][r][s] = sum over chunks in order of partial[chunk][g][i][k]. Walked in blocks of
  // kBlock k's down all rows i, so each partial is read in contiguous runs (not one line per element)
  // and the kBlock output rows being written stay in cache.
  constexpr int64_t kBlock = 16;
  const int64_t kblocks = ceil_div(Kg, kBlock);
  at::parallel_for(0, G * kblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / kblocks, k0 = (item % kblocks) * kBlock, kn = std::min(kBlock, Kg - k0);
      const T* part_g = part + g * CRS * Kg + k0;
      T* gw_g = gw + (g * Kg + k0) * CRS;
      for (int64_t i = 0; i < CRS; ++i) {
        T acc[kBlock];
        for (int64_t k = 0; k < kn; ++k) acc[k] = part_g[i * Kg + k];
        for (int64_t chunk = 1; chunk < chunks; ++chunk) {
          const T* src = part_g + chunk * G * CRS * Kg + i * Kg;
          for (int64_t k = 0; k < kn; ++k) acc[k] += src[k];
        }
        // Row i is (c, rs) = (i / RS, i % RS) in NCHW's im2col order, (i % Cg, i / Cg) in NHWC's
        // (and row_cols'), and (c, r, s) = (i % Cg, (i / Cg) % R, i / (R*Cg)) in the row-interleaved order.
        const int64_t o = interleaved ? (i % Cg) * RS + ((i / Cg) % p.R) * p.S + i / (p.R * Cg)
                          : nhwc_order ? (i % Cg) * RS + i / Cg
                                       : i;
        for (int64_t k = 0; k < kn; ++k) gw_g[k * CRS + o] = acc[k];
      }
    }
  });
}

// Sums in 16 fixed lanes then folds them in a fixed order: vectorisable and deterministic.
template <typename T>
T sum_fixed_order(const T* v, int64_t n) {
  T lanes[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lanes[j] += v[i + j];
  for (int j = 0; i < n; ++i, ++j) lanes[j] += v[i];
  T acc = 0;
  for (int j = 0; j < 16; ++j) acc += lanes[j];
  return acc;
}

}  // namespace

void conv2d_forward(const Conv2dParams& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& output, bool relu) {
  const Isa isa = active_isa();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cuconv_conv2d_cpu", [&] {
    forward_impl<scalar_t>(isa, p, input.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                           bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, output.data_ptr<scalar_t>(),
                           relu, input.options());
  });
}

void conv2d_backward_input(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& weight,
                           const at::Tensor& grad_input) {
  const Isa isa = active_isa();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_input_cpu", [&] {
    backward_input_impl<scalar_t>(isa, p, grad_output.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                  grad_input.data_ptr<scalar_t>(), grad_output.options());
  });
}

void conv2d_backward_weight(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& grad_weight) {
  const Isa isa = active_isa();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_weight_cpu", [&] {
    backward_weight_impl<scalar_t>(isa, p, grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                                   grad_weight.data_ptr<scalar_t>(), grad_output.options());
  });
}

void conv2d_backward_bias(const Conv2dParams& p, const at::Tensor& grad_output, const at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "cuconv_conv2d_backward_bias_cpu", [&] {
    const scalar_t* gy = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gb = grad_bias.data_ptr<scalar_t>();
    const int64_t PQ = p.P * p.Q;
    if (!p.channels_last) {
      at::parallel_for(0, p.K, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          scalar_t acc = 0;
          for (int64_t n = 0; n < p.N; ++n) acc += sum_fixed_order(gy + (n * p.K + k) * PQ, PQ);
          gb[k] = acc;
        }
      });
    } else {
      // Channels are contiguous: each thread owns a fixed block of channels and adds rows in order.
      constexpr int64_t kBlock = 64;
      at::parallel_for(0, ceil_div(p.K, kBlock), 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          const int64_t k0 = b * kBlock, kn = std::min(kBlock, p.K - k0);
          scalar_t acc[kBlock] = {};
          for (int64_t row = 0; row < p.N * PQ; ++row) {
            const scalar_t* v = gy + row * p.K + k0;
            for (int64_t k = 0; k < kn; ++k) acc[k] += v[k];
          }
          for (int64_t k = 0; k < kn; ++k) gb[k0 + k] = acc[k];
        }
      });
    }
  });
}

}  // namespace cuconv::cpu
