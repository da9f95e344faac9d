"""The shared cases of the behaviour tests: conv2d and max_pool2d geometries, each in a layout and
tagged with the CPU plan it reaches (the strategy of each pass, as `_cpu_conv2d_plan` and
`_cpu_max_pool2d_plan` report it) on a stated ISA path with cuconv.config's cpu_conv_algo, at 2
threads. tests/test_plans.py checks every tag and that every strategy is reached by some case;
the behaviour tests run every case on every runner (tests/conftest.py: the CPU fallback on each ISA
path this machine has, the simulator, CUDA when present).

A layout given for a tensor whose layouts coincide (one channel, or an empty batch) is the one
torch reports: such an "nhwc" case runs as NCHW, and its tag says so."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch


@dataclass(frozen=True)
class ConvCase:
    id: str
    x: Tuple[int, int, int, int]       # N, C, H, W
    w: Tuple[int, int, int]            # K, R, S (the weight is K x C/groups x R x S)
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    channels_last: bool = False
    isa: str = "avx2"                  # the ISA path the plan tag is for
    algo: str = "auto"                 # cuconv.config's cpu_conv_algo for this case
    plan: Tuple[str, str, str] = ("", "", "")  # forward, grad input, grad weight
    note: str = ""

    @property
    def name(self):
        return f"{self.id}-{'nhwc' if self.channels_last else 'nchw'}"

    @property
    def macs(self):
        N, C, H, W = self.x
        K, R, S = self.w
        P = (H + self.padding[0] + self.padding[2] - self.dilation[0] * (R - 1) - 1) // self.stride[0] + 1
        Q = (W + self.padding[1] + self.padding[3] - self.dilation[1] * (S - 1) - 1) // self.stride[1] + 1
        return N * K * P * Q * (C // self.groups) * R * S

    def tensors(self, dtype=torch.float32, device="cpu", bias=True):
        """Random input, weight and bias for this case, the input in the case's layout."""
        N, C, H, W = self.x
        K, R, S = self.w
        x = torch.randn(N, C, H, W, dtype=dtype, device=device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(K, C // self.groups, R, S, dtype=dtype, device=device)
        b = torch.randn(K, dtype=dtype, device=device) if bias else None
        return x, w, b

    def args(self):
        """The operators' geometry arguments: stride, padding, dilation, groups."""
        return list(self.stride), list(self.padding), list(self.dilation), self.groups


@dataclass(frozen=True)
class PoolCase:
    id: str
    x: Tuple[int, int, int, int]
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    channels_last: bool = False
    isa: str = "avx2"
    plan: Tuple[str, str] = ("", "")   # forward, backward
    note: str = ""

    @property
    def name(self):
        return f"{self.id}-{'nhwc' if self.channels_last else 'nchw'}"

    def input(self, dtype=torch.float32, device="cpu"):
        x = torch.randn(*self.x, dtype=dtype, device=device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def args(self):
        return list(self.kernel), list(self.stride), list(self.padding), list(self.dilation), self.ceil_mode


def layout(t: torch.Tensor):
    """The memory format torch suggests for t (channels_last only where it differs from NCHW)."""
    cl = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def special_values(x: torch.Tensor) -> torch.Tensor:
    """x with ties (rounded values), -inf and NaNs scattered over it, for max-pool's rules."""
    x = (x * 2).round()
    flat = x.view(-1)
    flat[torch.randperm(flat.numel())[: flat.numel() // 10]] = float("-inf")
    flat[torch.randperm(flat.numel())[: flat.numel() // 20]] = float("nan")
    return x


DW = 'depthwise depthwise depthwise'  # the plan of every depthwise conv (groups == channels)
GR = 'grouped grouped grouped'  # groups of at most 16 channels (not depthwise), grad input at stride 1


def conv(id, x, w, nchw=None, nhwc=None, **options):
    """One ConvCase per layout given, each with its plan tag ("forward grad-input grad-weight")."""
    return [ConvCase(id, x, w, channels_last=layout == "nhwc", plan=tuple(tag.split()), **options)
            for layout, tag in (("nchw", nchw), ("nhwc", nhwc)) if tag]


def pool(id, x, nchw=None, nhwc=None, **options):
    """One PoolCase per layout given, each with its plan tag ("forward backward")."""
    return [PoolCase(id, x, channels_last=layout == "nhwc", plan=tuple(tag.split()), **options)
            for layout, tag in (("nchw", nchw), ("nhwc", nhwc)) if tag]


CONV = [
    *conv('odd', (2, 3, 11, 13), (7, 3, 3),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='odd sizes, partial tiles'),
    *conv('asym_pad_stride_dil', (1, 5, 9, 10), (17, 3, 2), stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2),
          nchw='nchw_as_nhwc nchw_col2im im2col', nhwc='nhwc_im2col nhwc_col2im im2col',
          note='asymmetric padding, stride, dilation'),
    *conv('1x1', (3, 8, 7, 7), (20, 1, 1),
          nchw='nchw_direct nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im direct',
          note='1x1 read in place'),
    *conv('1x1_stride2', (2, 17, 9, 9), (12, 1, 1), stride=(2, 2),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_phases pixel_cols',
          note='1x1 stride 2 (shortcut)'),
    *conv('groups_stride2', (2, 6, 10, 9), (9, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=3,
          nchw='grouped nchw_col2im grouped', nhwc='grouped nhwc_col2im grouped',
          note='groups, stride 2'),
    *conv('depthwise_x2_dil', (2, 6, 8, 8), (12, 3, 3), padding=(2, 2, 2, 2), dilation=(2, 2), groups=6,
          nchw=DW, nhwc=DW,
          note='depthwise multiplier 2, dilation'),
    *conv('depthwise_5x5', (1, 4, 6, 6), (4, 5, 5), stride=(3, 2), padding=(2, 1, 0, 3), groups=4,
          nchw=DW, nhwc=DW,
          note='depthwise, kernel > stride'),
    *conv('pad_past_kernel', (2, 3, 5, 5), (4, 3, 3), padding=(4, 4, 4, 4),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='padding larger than the kernel'),
    *conv('tiles_both_ways', (4, 19, 12, 11), (33, 3, 3), padding=(1, 1, 1, 1), algo='gemm',
          nchw='nchw_via_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='more than one tile both ways'),
    *conv('phases', (2, 19, 13, 11), (21, 3, 3), stride=(2, 2), padding=(1, 0, 2, 1),
          nchw='nchw_as_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_phases window_runs',
          note='stride 2: phases of 2x2/2x1/1x2/1x1 taps, odd sizes'),
    *conv('phases_5x4', (2, 17, 13, 10), (5, 5, 4), stride=(3, 2), padding=(2, 1, 0, 3),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_phases window_runs',
          note='2 or 1 taps per phase row, 2 per column'),
    *conv('phases_untapped', (2, 17, 10, 8), (6, 2, 2), stride=(3, 3), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_phases window_runs',
          note='kernel < stride: untapped phases'),
    *conv('phases_many_images', (20, 17, 8, 8), (12, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_phases window_runs',
          note='4x4 maps, 16 images per GEMM'),
    *conv('one_row_input', (2, 17, 1, 5), (5, 1, 3), stride=(2, 2), padding=(0, 1, 0, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_phases window_runs',
          note='a one-row input: phases with no pixels'),
    *conv('via_nhwc_padded', (3, 13, 17, 19), (21, 3, 3), stride=(2, 2), padding=(1, 0, 2, 1),
          nchw='nchw_via_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='NCHW on a padded NHWC copy; NHWC grad input of few channels by col2im'),
    *conv('via_nhwc_short', (2, 11, 18, 20), (9, 3, 3), stride=(2, 2),
          nchw='nchw_via_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='windows stop short of the last row/column'),
    *conv('via_nhwc_2x1', (2, 16, 15, 10), (18, 3, 2), stride=(2, 1), padding=(0, 1, 1, 0),
          nchw='nchw_via_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_phases window_runs',
          note='stride (2, 1), 2-wide kernel'),
    *conv('5x5_one_image', (1, 7, 12, 13), (10, 5, 5), padding=(2, 2, 2, 2),
          nchw='nchw_via_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='5x5 stride 1, one image (split GEMMs)'),
    *conv('gemm_k301', (1, 301, 17, 19), (101, 1, 1),
          nchw='nchw_direct nchw_col2im direct', nhwc='nhwc_rows nhwc_col2im direct',
          note='K = 256 + 45, 101 rows, 323 columns, batch 1'),
    *conv('gemm_4rows', (3, 5, 7, 9), (4, 1, 1),
          nchw='nchw_direct nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im direct',
          note='4-row GEMMs (B unpacked), K = 5'),
    *conv('gemm_6rows', (1, 33, 5, 5), (6, 1, 1),
          nchw='nchw_direct nchw_col2im im2col', nhwc='nhwc_rows nhwc_col2im direct',
          note='one 6-row tile, K = 33'),
    *conv('gemm_k63', (2, 7, 13, 11), (23, 3, 3), padding=(1, 1, 1, 1), algo='gemm',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='K = 63, 23 rows, 143-column maps'),
    *conv('gemm_k360', (2, 40, 6, 6), (17, 3, 3), padding=(1, 1, 1, 1), algo='gemm',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='K = 360 (two K blocks), 17 columns; NCHW onto 36 positions as NHWC'),
    *conv('gemm_k360_dilated', (2, 40, 10, 8), (17, 3, 3), padding=(2, 1, 2, 1), dilation=(2, 1), algo='gemm',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_rows nhwc_col2im im2col',
          note='K = 360 (two K blocks) through NCHW im2col: 80 positions, dilated rows'),
    *conv('rows_padded_s2', (3, 16, 11, 11), (20, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_phases window_runs',
          note='rows in place, padded copy, stride 2'),
    *conv('rows_s2_1x1', (2, 40, 9, 8), (33, 1, 1), stride=(2, 2),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_rows nhwc_phases pixel_cols',
          note='1x1 stride 2: rows read straight'),
    *conv('rows_asym_dil', (2, 12, 10, 9), (7, 3, 3), padding=(0, 2, 3, 1), dilation=(2, 1),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_rows nhwc_col2im im2col',
          note='asymmetric padding past bottom/right, dilation_h'),
    *conv('rows_grouped_1x1', (2, 64, 5, 8), (10, 1, 1), stride=(1, 2), groups=2,
          nchw='nchw_im2col nchw_as_nhwc im2col', nhwc='nhwc_rows grouped_taps pixel_cols',
          note='grouped 1x1, 32 channels per group (the grad input by phases on grouped_taps)'),
    *conv('rows_5x3', (1, 11, 7, 9), (5, 5, 3), padding=(2, 1, 2, 1),
          nchw='nchw_as_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='5x3 kernel'),
    *conv('rows_two_kblocks', (1, 100, 6, 7), (9, 3, 3), padding=(1, 1, 1, 1), algo='gemm',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='300 values per kernel row: two K blocks'),
    *conv('rows_many_images', (13, 16, 3, 3), (18, 3, 3), algo='gemm',
          nchw='nchw_as_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_col2im window_runs',
          note='1x1 outputs: many images per GEMM'),
    # Small NHWC maps with padding (nhwc_taps): one GEMM per tap over the outputs that have it inside
    # the input; the grad input gathers the same pairs of pixel and position.
    *conv('taps_3x3_map', (4, 20, 3, 3), (24, 3, 3), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc window_runs', nhwc='nhwc_taps nhwc_taps window_runs',
          note='3x3 map, padding 1: 49 of 81 products inside; the centre tap covers every output'),
    *conv('taps_wino_3x3_map', (3, 40, 3, 3), (36, 3, 3), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc winograd', nhwc='nhwc_taps nhwc_taps winograd',
          note='a Winograd shape where the taps need fewer products (49 against 64)'),
    *conv('taps_stride2', (2, 17, 4, 5), (19, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_taps nhwc_taps window_runs',
          note='stride 2 onto a 2x3 map, odd channels; grad input pixels no tap reaches are zero'),
    *conv('taps_dilated_asym', (2, 16, 6, 7), (18, 3, 3), padding=(2, 1, 1, 2), dilation=(2, 2),
          nchw='nchw_as_nhwc nchw_as_nhwc im2col', nhwc='nhwc_taps nhwc_taps im2col',
          note='dilation 2, asymmetric padding: no tap covers every output (sums start from the bias)'),
    *conv('taps_5x5_7x7', (2, 24, 7, 7), (20, 5, 5), padding=(2, 2, 2, 2),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_taps nhwc_taps window_runs',
          note="AlexNet's 5x5 at 7x7 (841 of 1225 products), K = 16 + 4"),
    *conv('taps_k_blocks', (2, 300, 3, 3), (33, 3, 3), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc winograd', nhwc='nhwc_taps nhwc_taps winograd',
          note='the reduction over two 256-row K blocks of the packed taps, K = 32 + 1'),
    *conv('taps_stride21', (3, 32, 5, 4), (48, 3, 2), stride=(2, 1), padding=(1, 0, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_taps nhwc_taps window_runs',
          note='3x2 kernel, strides 2 and 1, padding on three sides'),
    *conv('interleaved_s23', (2, 3, 13, 12), (8, 3, 3), stride=(2, 3), padding=(1, 2, 0, 1), dilation=(2, 1),
          nchw='nchw_as_nhwc nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='interleaved: 3 channels, strides, dilation_h'),
    *conv('interleaved_groups', (2, 6, 9, 9), (4, 3, 3), padding=(1, 1, 1, 1), groups=2,
          nchw='grouped grouped grouped', nhwc='grouped grouped grouped',
          note='interleaved per group'),
    *conv('seed_conv1', (3, 3, 32, 32), (32, 3, 3),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note="the seed CNN's first layer"),
    *conv('sim_partial_m', (2, 4, 9, 7), (6, 3, 3),
          nchw='nchw_as_nhwc nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='partial M tile, small reduction'),
    *conv('sim_two_n_tiles', (1, 3, 11, 10), (70, 3, 2), padding=(1, 1, 1, 1),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='two N tiles, non-square kernel'),
    *conv('sim_stride2', (2, 20, 5, 6), (8, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_phases window_runs',
          note='reduction past one k-slice, stride 2'),
    *conv('sim_groups_mixed', (1, 4, 12, 9), (6, 3, 3), stride=(2, 1), padding=(2, 1, 2, 1), dilation=(2, 3), groups=2,
          nchw='grouped nchw_col2im grouped', nhwc='grouped nhwc_col2im grouped',
          note='groups, mixed stride/pad/dilation'),
    *conv('sim_split_k', (1, 2, 41, 40), (3, 3, 3), padding=(1, 1, 1, 1),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='N*P*Q > 1024: split-K over 2 chunks'),
    *conv('depthwise', (1, 5, 7, 7), (5, 3, 3), padding=(1, 1, 1, 1), groups=5,
          nchw=DW, nhwc=DW,
          note='depthwise'),
    *conv('depthwise_x2', (2, 3, 8, 6), (6, 3, 2), stride=(2, 2), padding=(1, 0, 1, 0), dilation=(1, 2), groups=3,
          nchw=DW, nhwc=DW,
          note='depthwise with channel multiplier 2'),
    *conv('dw_3x3', (2, 32, 9, 9), (32, 3, 3), padding=(1, 1, 1, 1), groups=32,
          nchw=DW, nhwc=DW,
          note='depthwise 3x3: two full channel blocks, NHWC in place with border taps clipped'),
    *conv('dw_3x3_s2_partial', (2, 20, 11, 9), (20, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=20,
          nchw=DW, nhwc=DW,
          note='depthwise stride 2, 16 + 4 channels (a partial block), odd sizes'),
    *conv('dw_5x5', (2, 24, 10, 10), (24, 5, 5), padding=(2, 2, 2, 2), groups=24,
          nchw=DW, nhwc=DW,
          note='depthwise 5x5: the row kernel on runs of interior pixels'),
    *conv('dw_7x7', (1, 17, 12, 11), (17, 7, 7), padding=(3, 3, 3, 3), groups=17,
          nchw=DW, nhwc=DW,
          note='depthwise 7x7 (ConvNeXt): batch 1 split in bands, 16 + 1 channels'),
    *conv('dw_5x5_s2', (2, 16, 13, 12), (16, 5, 5), stride=(2, 2), padding=(2, 2, 2, 2), groups=16,
          nchw=DW, nhwc=DW,
          note='depthwise 5x5 stride 2: grad input phases of 3 and 2 taps'),
    *conv('dw_dil_asym', (2, 18, 10, 9), (18, 3, 3), stride=(2, 1), padding=(0, 2, 1, 0), dilation=(2, 2), groups=18,
          nchw=DW, nhwc=DW,
          note='depthwise dilation 2, asymmetric padding, stride (2, 1)'),
    *conv('dw_s3_5x4', (2, 16, 13, 11), (16, 5, 4), stride=(3, 2), padding=(2, 1, 0, 3), dilation=(1, 2), groups=16,
          nchw=DW, nhwc=DW,
          note='depthwise 5x4, stride (3, 2), dilation_w 2: phases of 2 or 1 taps'),
    *conv('dw_pad_past_kernel', (2, 16, 5, 5), (16, 3, 3), stride=(3, 3), padding=(4, 4, 4, 4), groups=16,
          nchw=DW, nhwc=DW,
          note='depthwise, padding past the kernel: windows wholly in the padding, untapped phases'),
    *conv('dw_1x1', (2, 16, 6, 7), (16, 1, 1), groups=16,
          nchw=DW, nhwc=DW,
          note='depthwise 1x1: a per-channel scale'),
    *conv('dw_x3', (2, 7, 8, 8), (21, 3, 3), padding=(1, 1, 1, 1), groups=7,
          nchw=DW, nhwc=DW,
          note='depthwise multiplier 3: lanes gather input channel k / 3; three grad_output copies'),
    *conv('dw_x2_16', (2, 16, 7, 9), (32, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=16,
          nchw=DW, nhwc=DW,
          note='depthwise multiplier 2, stride 2, whole blocks'),
    *conv('dw_4x4_maps', (3, 48, 4, 4), (48, 3, 3), padding=(1, 1, 1, 1), groups=48,
          nchw=DW, nhwc=DW,
          note='depthwise on 4x4 maps (MobileNet tail): every pixel a border pixel but 4'),
    *conv('dw_batch0', (0, 16, 8, 8), (16, 3, 3), padding=(1, 1, 1, 1), groups=16,
          nchw=DW, nhwc=DW,
          note='depthwise, batch 0'),
    *conv('dw_avx512_7x7', (2, 40, 13, 14), (40, 7, 7), padding=(3, 3, 3, 3), groups=40, isa='avx512',
          nchw=DW, nhwc=DW,
          note='depthwise 7x7 on AVX-512: row kernels of all three passes, 32 + 8 channels'),
    *conv('dw_avx512_s2', (3, 32, 12, 11), (32, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=32, isa='avx512',
          nchw=DW, nhwc=DW,
          note='depthwise stride 2 on AVX-512: the row kernels at step 2, grad input phases'),
    *conv('dw_avx512_x2', (2, 8, 9, 9), (16, 5, 5), padding=(2, 2, 2, 2), groups=8, isa='avx512',
          nchw=DW, nhwc=DW,
          note='depthwise multiplier 2, 5x5, on AVX-512'),
    *conv('1x1_small', (1, 3, 4, 5), (4, 1, 1),
          nchw='nchw_direct nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im direct',
          note='1x1 on a small map'),
    *conv('1x1_2x2_maps', (5, 40, 2, 2), (33, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_col2im direct',
          note='1x1 on 2x2 maps: NCHW as one NHWC GEMM over the batch; NHWC grad input written by the GEMM'),
    *conv('1x1_wide_4x4_maps', (2, 512, 4, 4), (512, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_rows nhwc_col2im direct',
          note='1x1 with 512 channels on both sides onto 4x4 maps: NCHW as one NHWC GEMM over the batch'),
    *conv('1x1_narrow_4x4_maps', (2, 512, 4, 4), (64, 1, 1),
          nchw='nchw_direct nchw_col2im im2col', nhwc='nhwc_rows nhwc_col2im direct',
          note='1x1 with 64 output channels onto 4x4 maps: NCHW per image (the transposes would cost more)'),
    *conv('pointwise_4x4_dgrad', (3, 136, 4, 4), (144, 1, 1),
          nchw='nchw_direct nchw_as_nhwc im2col', nhwc='nhwc_rows nhwc_col2im direct',
          note='NCHW pointwise at 16 positions, 128+ channels: the grad input as NHWC over the batch'),
    *conv('1x1_stride2_3x3_maps', (3, 17, 5, 5), (7, 1, 1), stride=(2, 2),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_interleaved nhwc_phases pixel_cols',
          note='1x1 stride 2 onto 3x3 maps'),
    *conv('1x1_padded_small', (2, 6, 2, 1), (5, 1, 1), padding=(1, 1, 1, 1),
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='padded 1x1 on a 2x1 map'),
    *conv('1x1_groups', (2, 64, 4, 5), (40, 1, 1), groups=2,
          nchw='nchw_direct nchw_as_nhwc im2col', nhwc='nhwc_rows grouped_taps direct',
          note='grouped 1x1: per-group GEMMs; the grad input (32 channels per group) as grouped_taps'),
    *conv('groups_wide_small_map', (3, 64, 3, 3), (40, 3, 3), padding=(1, 0, 1, 1), groups=2,
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nhwc_interleaved grouped_taps interleaved',
          note='32-channel groups onto a 3x2 map: NCHW as one NHWC GEMM per group over the batch'),
    *conv('1x1_dilated', (2, 6, 5, 7), (9, 1, 1), dilation=(2, 2),
          nchw='nchw_direct nchw_col2im im2col', nhwc='nhwc_direct nhwc_col2im direct',
          note="1x1 with dilation: NHWC reads the input as the GEMM's A"),
    *conv('small_output_nchw_interleaved', (16, 3, 12, 12), (16, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), isa='avx512',
          nchw='nchw_as_nhwc nchw_col2im interleaved',
          note='NCHW first layer, stride 2: the small-output GEMM over the row-interleaved buffer'),
    *conv('small_output_27x32', (2, 3, 32, 32), (32, 3, 3), isa='avx512',
          nchw='rows_avx512 nchw_col2im rows_avx512', nhwc='nhwc_interleaved nhwc_col2im window_runs',
          note='27 x 32 small-output grad weight'),
    *conv('small_output_27x64', (3, 3, 17, 19), (64, 3, 3), padding=(1, 1, 1, 1), isa='avx512',
          nchw='rows_avx512 nchw_col2im rows_avx512', nhwc='nhwc_interleaved nhwc_col2im window_runs',
          note='ResNet stem: 27 x 64'),
    *conv('small_output_1x5', (2, 1, 12, 13), (5, 1, 1), isa='avx512',
          nchw='nchw_direct nchw_col2im im2col', nhwc='nchw_direct nchw_col2im im2col',
          note='1 x 5'),
    *conv('small_output_18x17', (2, 2, 11, 9), (17, 3, 3), padding=(1, 0, 1, 2), isa='avx512',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='18 x 17: 14 + 4 rows, 16 + 1 columns'),
    *conv('small_output_27x33', (2, 3, 14, 15), (33, 3, 3), stride=(2, 1), padding=(1, 1, 0, 0), dilation=(2, 1), isa='avx512',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_interleaved nhwc_col2im interleaved',
          note='27 x 33: columns past one vector pair'),
    *conv('small_output_32x15', (2, 32, 9, 9), (15, 1, 1), isa='avx512',
          nchw='nchw_direct nchw_col2im im2col', nhwc='nhwc_rows nhwc_col2im direct',
          note='32 x 15, read in place'),
    *conv('small_output_groups', (2, 4, 10, 10), (12, 3, 3), padding=(1, 1, 1, 1), groups=2, isa='avx512',
          nchw='grouped grouped grouped', nhwc='grouped grouped grouped',
          note='groups of 2 channels on AVX-512: the grouped kernels'),
    *conv('avx512_partial_tiles', (2, 19, 12, 11), (33, 3, 3), padding=(1, 1, 1, 1), isa='avx512', algo='gemm',
          nchw='nchw_via_nhwc nchw_col2im window_runs', nhwc='nhwc_rows as_forward window_runs',
          note='8-row tiles, partial both ways; the NHWC grad input as the forward of grad_output'),
    *conv('avx512_winograd', (2, 32, 9, 10), (40, 3, 3), padding=(1, 1, 1, 1), isa='avx512',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='Winograd, blocks of 8 tiles'),
    *conv('avx512_winograd_lanes', (3, 20, 7, 9), (36, 3, 3), padding=(1, 0, 2, 1), isa='avx512',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='Winograd: 16 + 4 channel lanes'),
    *conv('avx512_winograd_48x72', (2, 48, 6, 7), (72, 3, 3), padding=(1, 1, 1, 1), isa='avx512',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='Winograd grad weight 48 x 72: small-output GEMM'),
    *conv('avx512_stride2', (2, 17, 11, 11), (21, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), isa='avx512',
          nchw='nchw_as_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_phases window_runs',
          note='stride 2: im2col GEMMs, NHWC phases'),
    *conv('small_output_shortcut', (3, 40, 12, 10), (100, 1, 1), stride=(2, 2), isa='avx512',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_rows nhwc_phases pixel_cols',
          note='1x1 shortcut: 40 x 100 small-output grad weight'),
    *conv('avx512_phases_images', (17, 18, 8, 8), (20, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), isa='avx512',
          nchw='nchw_as_nhwc nchw_col2im window_runs', nhwc='nhwc_rows nhwc_phases window_runs',
          note='phases over several images: uneven C rows'),
    *conv('batch0', (0, 3, 8, 8), (16, 3, 3), padding=(1, 1, 1, 1), isa='avx512',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nchw_im2col nchw_col2im im2col',
          note='batch 0'),
    *conv('rows512_q16', (1, 1, 16, 16), (1, 1, 1), isa='avx512', nchw='rows_avx512 nchw_col2im rows_avx512',
          note='Q = 16, one tap, one channel'),
    *conv('rows512_q11', (2, 1, 9, 17), (5, 1, 7), isa='avx512', nchw='nchw_im2col nchw_col2im im2col',
          note='7 taps in one row, Q = 11: not row kernels'),
    *conv('rows512_q17', (2, 1, 9, 23), (5, 1, 7), isa='avx512', nchw='rows_avx512 nchw_col2im rows_avx512',
          note='Q = 17'),
    *conv('rows512_32taps', (3, 2, 12, 33), (33, 4, 4), isa='avx512', nchw='rows_avx512 nchw_col2im rows_avx512',
          note='32 taps, K = 33, Q = 30'),
    *conv('rows512_q31', (2, 3, 10, 31), (17, 3, 3), padding=(1, 0, 0, 2), isa='avx512',
          nchw='rows_avx512 nchw_col2im rows_avx512',
          note='padding bottom/left only, Q = 31'),
    *conv('rows512_q32', (2, 3, 10, 32), (9, 3, 3), padding=(0, 1, 2, 1), isa='avx512',
          nchw='rows_avx512 nchw_col2im rows_avx512',
          note='Q = 32'),
    *conv('rows512_q33', (2, 3, 11, 33), (4, 3, 3), padding=(1, 1, 1, 1), isa='avx512',
          nchw='rows_avx512 nchw_col2im rows_avx512',
          note='Q = 33: two vectors and one lane'),
    *conv('rows512_q45', (1, 3, 9, 47), (13, 3, 3), padding=(1, 0, 1, 0), isa='avx512',
          nchw='rows_avx512 nchw_col2im rows_avx512',
          note='Q = 45: 32 + 13, K = 12 + 1'),
    *conv('wino_whole_tiles', (2, 16, 8, 8), (16, 3, 3), padding=(1, 1, 1, 1), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='whole tiles'),
    *conv('wino_odd', (3, 17, 13, 11), (19, 3, 3), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='odd output sizes, channels off the 8 lanes'),
    *conv('wino_pad2', (2, 20, 5, 6), (24, 3, 3), padding=(2, 2, 2, 2), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='padding 2: grad input reads with padding 0'),
    *conv('wino_pad3', (2, 9, 5, 6), (7, 3, 3), padding=(3, 3, 3, 3), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note="padding 3: grad input's padding is negative"),
    *conv('wino_asym', (1, 12, 9, 10), (10, 3, 3), padding=(1, 0, 2, 1), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='asymmetric padding'),
    *conv('wino_1x1_out', (4, 8, 3, 3), (5, 3, 3), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='a 1x1 output: three quarters of the tile past the edge'),
    *conv('wino_tiny', (1, 3, 2, 2), (1, 3, 3), padding=(1, 1, 1, 1), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='one output channel, map smaller than a tile'),
    *conv('wino_k_blocks', (2, 300, 4, 5), (33, 3, 3), padding=(1, 1, 1, 1), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='reduction over two 256-row K blocks'),
    *conv('wino_270_out', (2, 40, 6, 6), (270, 3, 3), padding=(1, 1, 1, 1), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='output channels over 256'),
    *conv('wino_many_images', (37, 8, 4, 4), (8, 3, 3), padding=(1, 1, 1, 1), algo='winograd',
          nchw='winograd winograd winograd', nhwc='winograd winograd winograd',
          note='tile blocks and chunks cross images'),
    # Grouped convs (2..64 groups of at most 16 channels, not depthwise): the grouped kernels (output
    # pixels in vector lanes over zero-padded, phase-split planes); strided grad inputs stay on
    # col2im; dilated single-group convs stay on the GEMMs.
    *conv('grp_c4', (2, 32, 9, 11), (32, 3, 3), padding=(1, 1, 1, 1), groups=8,
          nchw=GR, nhwc='grouped grouped grouped_taps',
          note='8 groups of 4 channels (ResNeXt 32x4d), odd sizes, partial pixel blocks (the AVX2 NHWC '
               'grad weight two groups per vector)'),
    *conv('grp_c4_odd_groups', (2, 20, 7, 9), (20, 3, 3), stride=(2, 1), padding=(1, 0, 1, 2), groups=5,
          nchw='grouped nchw_col2im grouped', nhwc='grouped nhwc_col2im grouped_taps',
          note='5 groups of 4: the AVX2 NHWC grad weight pairs four and runs the fifth alone'),
    *conv('grp_c8_s2', (3, 48, 13, 10), (48, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=6,
          nchw='grouped nchw_col2im grouped', nhwc='grouped_taps grouped_taps grouped_taps',
          note='6 groups of 8 (RegNet), stride 2: four phase planes per channel (NHWC: grouped_taps, '
               'the grad input one forward per phase)'),
    *conv('grp_c16_kg16', (2, 32, 7, 7), (32, 3, 3), padding=(1, 0, 2, 1), groups=2,
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='2 groups of 16 channels, asymmetric padding: grouped_taps, NCHW through the transposes'),
    *conv('grp_64', (1, 128, 6, 5), (128, 3, 3), padding=(1, 1, 1, 1), groups=64,
          nchw=GR, nhwc=GR,
          note='64 groups of 2'),
    *conv('grp_1x1_kg2', (2, 12, 8, 8), (6, 1, 1), groups=3,
          nchw=GR, nhwc=GR,
          note='grouped 1x1, 4 -> 2 channels per group'),
    *conv('grp_5x3_s21', (2, 20, 12, 11), (30, 5, 3), stride=(2, 1), padding=(2, 1, 2, 1), groups=5,
          nchw='grouped nchw_col2im grouped', nhwc='grouped nhwc_col2im grouped',
          note='5x3 kernel, stride (2, 1): 4 -> 6 channels per group'),
    *conv('dil2', (2, 16, 12, 10), (24, 3, 3), padding=(2, 2, 2, 2), dilation=(2, 2),
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_im2col nhwc_col2im im2col',
          note='dilation 2, one group (DeepLab): the GEMM paths'),
    *conv('dil_grp_asym', (2, 16, 11, 9), (16, 3, 3), padding=(2, 3, 1, 3), dilation=(2, 3), groups=4,
          nchw=GR, nhwc='grouped grouped grouped_taps',
          note='groups with dilation (2, 3), asymmetric padding'),
    *conv('dil_s2', (2, 8, 13, 12), (8, 3, 3), stride=(2, 2), padding=(2, 2, 2, 2), dilation=(2, 2),
          nchw='nchw_as_nhwc nchw_col2im im2col', nhwc='nhwc_im2col nhwc_col2im im2col',
          note='dilation 2, stride 2, one group'),
    *conv('grp_pad_past', (2, 8, 6, 6), (8, 3, 3), padding=(3, 3, 3, 3), groups=2,
          nchw='grouped nchw_col2im grouped', nhwc='grouped nhwc_col2im grouped_taps',
          note='padding past the kernel: the grad input through col2im'),
    *conv('grp_batch0', (0, 16, 8, 8), (16, 3, 3), padding=(1, 1, 1, 1), groups=4,
          nchw=GR, nhwc=GR,
          note='grouped, batch 0'),
    # Groups of 16k output channels on AVX-512 (float32): grouped_taps, a group's channels in vector
    # lanes over a zero-padded copy per group, all three passes (grad input at stride 1); NCHW
    # through it only onto at most 16 positions.
    *conv('taps_c16', (3, 32, 4, 3), (32, 3, 3), padding=(1, 1, 1, 1), groups=2, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='2 groups of 16 onto a 4x3 map: 12 pixels, one partial tile of the batch'),
    *conv('taps_tiny', (1, 32, 3, 3), (32, 3, 3), padding=(1, 1, 1, 1), groups=2, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='grouped_taps small enough for the 16-bit and simulator runs'),
    *conv('taps_c16_big_map', (2, 32, 5, 7), (32, 3, 3), padding=(1, 1, 1, 1), groups=2, isa='avx512',
          nchw='grouped grouped grouped', nhwc='grouped_taps grouped_taps grouped_taps',
          note='2 groups of 16 onto 5x7: NCHW stays on the pixel-lane kernels'),
    *conv('taps_kg32_s2', (2, 48, 9, 8), (96, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=3, isa='avx512',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='grouped_taps grouped_taps grouped_taps',
          note='16 -> 32 channels per group (two vectors), stride 2: the grad input by phases'),
    *conv('taps_kg48_dil_asym', (1, 64, 7, 6), (96, 3, 3), padding=(2, 1, 1, 2), dilation=(2, 1), groups=2,
          isa='avx512', nchw='nchw_im2col nchw_col2im im2col', nhwc='grouped_taps grouped_taps grouped_taps',
          note='32 -> 48 channels per group (two vectors and one), dilation (2, 1), asymmetric padding'),
    *conv('taps_c8_2x2', (2, 24, 2, 2), (24, 3, 3), padding=(1, 1, 1, 1), groups=3, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='groups of 8 onto 2x2 maps: half-used vectors (RegNet stages at small inputs)'),
    *conv('taps_kg24_2x1', (3, 48, 2, 1), (72, 3, 1), padding=(1, 0, 1, 0), groups=3, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='16 -> 24 channels per group onto a 2x1 map: a full vector and a half one'),
    # AVX-512 grouped_taps on row runs (stride along the rows 1x or 2x the dilation, 2 or 3 taps per
    # kernel row): runs of 8, 4 or 2 pixels, a map's last run partial, one broadcast per input pixel
    # for every tap reaching it.
    *conv('runs_s2_dil2', (2, 32, 9, 10), (32, 3, 3), stride=(2, 2), padding=(2, 2, 2, 2), dilation=(2, 2),
          groups=2, isa='avx512', nchw='grouped nchw_col2im grouped',
          nhwc='grouped_taps nhwc_col2im grouped_taps',
          note='stride 2 = dilation 2: runs of 2 over a 5-wide map, the last one partial'),
    *conv('runs_sw4_dil2', (2, 32, 6, 17), (64, 3, 3), stride=(1, 4), padding=(1, 2, 1, 2), dilation=(1, 2),
          groups=2, isa='avx512', nchw='nchw_im2col nchw_col2im im2col',
          nhwc='grouped_taps nhwc_col2im grouped_taps',
          note='stride 4 = twice dilation 2 along the rows, 16 -> 32 channels per group'),
    *conv('runs_3x2_q17', (1, 32, 5, 17), (32, 3, 2), padding=(1, 0, 1, 1), groups=2, isa='avx512',
          nchw='grouped grouped grouped',
          nhwc='grouped_taps grouped_taps grouped_taps',
          note='16 channels per group, 2 taps per kernel row, a 17-wide map: runs of 2, the last partial'),
    *conv('runs_q1_kg32', (3, 32, 4, 1), (64, 3, 3), padding=(1, 1, 1, 1), groups=2, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc',
          nhwc='grouped_taps grouped_taps grouped_taps',
          note='a 1-wide map: runs of one valid pixel, two vectors of channels'),
    # AVX2's grouped_taps: groups of 8k output channels (8-lane vectors), NCHW through the transposes
    # onto at most 64 positions; 16 channels as two halves of 6 pixels, 8 as one tile of 12.
    *conv('taps_avx2_c8', (1, 24, 5, 7), (24, 3, 3), padding=(1, 1, 1, 1), groups=3,
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='3 groups of 8 (RegNet) onto 5x7: 35 pixels, the last tile 11 of 12'),
    *conv('taps_avx2_kg24_s2_dil', (1, 32, 13, 13), (48, 3, 3), stride=(2, 2), padding=(2, 1, 2, 1), dilation=(2, 1),
          groups=2, nchw='nchw_im2col nchw_col2im im2col', nhwc='grouped_taps nhwc_col2im grouped_taps',
          note='16 -> 24 channels per group (a 16-channel tile and an 8), stride 2, dilation (2, 1): 49 pixels'),
    *conv('taps_avx2_phases_s32', (2, 16, 10, 9), (32, 5, 3), stride=(3, 2), padding=(2, 1, 2, 1), groups=2,
          nchw='grouped nchw_col2im grouped', nhwc='grouped_taps grouped_taps grouped_taps',
          note='strided grad input by phases: stride (3, 2), 5x3 kernel, phases of 2 and 1 taps per axis'),
    *conv('taps_avx2_phases_1x1', (2, 16, 7, 8), (16, 1, 1), stride=(2, 2), groups=2,
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='grouped 1x1, stride 2: three of the four grad-input phases no tap reaches (zeros)'),
    *conv('taps_avx2_pad_past', (2, 16, 9, 9), (16, 3, 3), stride=(2, 2), padding=(3, 3, 3, 3), groups=2,
          nchw='grouped nchw_col2im grouped', nhwc='grouped_taps nhwc_col2im grouped_taps',
          note='padding past the kernel: a phase would start before grad_output, so col2im'),
    *conv('taps_avx2_c12_5x7', (1, 24, 9, 13), (16, 5, 7), stride=(1, 2), padding=(2, 3, 1, 4), dilation=(1, 2),
          groups=2, nchw='grouped nchw_col2im grouped', nhwc='grouped_taps nhwc_col2im grouped_taps',
          note='12 -> 8 channels per group (the grad weight reads a full 8-channel block and a masked 4), '
               'a 7-wide kernel row in taps of 3, 3 and 1, stride (1, 2), dilation (1, 2), asymmetric padding'),
    *conv('taps_avx2_c4_s21', (3, 16, 7, 6), (32, 3, 3), stride=(2, 1), padding=(1, 1, 1, 1), groups=4,
          nchw='nchw_as_nhwc nchw_col2im nchw_as_nhwc', nhwc='grouped_taps nhwc_col2im grouped_taps',
          note='4 -> 8 channels per group: the grad weight on 4 of its 8 lanes'),
    *conv('taps_avx2_batch0', (0, 32, 4, 4), (32, 3, 3), padding=(1, 1, 1, 1), groups=2,
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc',
          note='grouped_taps, batch 0 (an empty batch is NCHW as torch reports it)'),
    *conv('grp_c8_4x4', (2, 24, 4, 4), (24, 3, 3), padding=(1, 1, 1, 1), groups=3, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='3 groups of 8 onto 4x4 maps: packed two to a vector, the second pack half empty; NCHW '
               'through the transposes'),
    *conv('taps_5x5_batch0', (0, 64, 4, 4), (64, 5, 5), padding=(2, 2, 2, 2), groups=4, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc',
          note='grouped_taps, batch 0 (an empty batch is NCHW as torch reports it)'),
    *conv('grp_avx512', (3, 64, 10, 9), (64, 3, 3), padding=(1, 1, 1, 1), groups=16, isa='avx512',
          nchw=GR, nhwc='grouped_taps grouped_taps grouped_taps',
          note='16 groups of 4 on AVX-512: NCHW the same bits as AVX2; NHWC packed four to a vector'),
    *conv('pack_c8_odd_s2', (2, 40, 11, 9), (40, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1), groups=5, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc nchw_as_nhwc', nhwc='grouped_taps grouped_taps grouped_taps',
          note='5 groups of 8 (RegNet-like), stride 2: two packs and a half-empty one, the grad input by '
               'phases, the grad weight two input pixels per output pixel; NCHW (30 positions) through '
               'the transposes'),
    *conv('pack_c4_1x1', (2, 64, 7, 9), (64, 1, 1), groups=16, isa='avx512',
          nchw='nchw_as_nhwc nchw_as_nhwc grouped', nhwc='grouped_taps grouped_taps grouped',
          note='16 groups of 4, 1x1: packed pixel tiles (one tap per kernel row); NCHW (63 positions) '
               'through the transposes'),
    *conv('dil_avx512', (2, 24, 9, 13), (20, 3, 3), padding=(2, 2, 2, 2), dilation=(2, 2), isa='avx512',
          nchw='nchw_im2col nchw_col2im im2col', nhwc='nhwc_im2col nhwc_col2im im2col',
          note='dilation 2, one group, on AVX-512'),
]

POOL = [
    *pool('seed_pool1', (2, 3, 30, 30), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 windows_2x2_avx2', nhwc='pixels_avx2 scatter',
          note="the seed CNN's first pool (C = 3)"),
    *pool('odd_ceil', (2, 5, 13, 13), kernel=(2, 2), stride=(2, 2), ceil_mode=True,
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='odd size, ceil mode: partial windows'),
    *pool('overlap_padded', (1, 4, 11, 17), kernel=(3, 3), stride=(2, 2), padding=(1, 1),
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note="overlapping, padded (ResNet's 3x3 stride 2)"),
    *pool('stride3_dil', (2, 3, 9, 10), kernel=(3, 2), stride=(1, 3), padding=(1, 0), dilation=(2, 1), ceil_mode=True,
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='stride 3, dilation, ceil mode'),
    *pool('stride1_many_channels', (1, 19, 8, 7), kernel=(2, 3), stride=(1, 1), padding=(0, 1), dilation=(1, 2),
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='stride 1, many channels'),
    *pool('two_by_two_c16', (2, 16, 30, 30), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 windows_2x2_avx2', nhwc='pixels_2x2_avx2 windows_2x2_avx2',
          note='2x2/2: NCHW rows of 15, NHWC C % 8 == 0'),
    *pool('two_by_two_odd', (1, 24, 13, 13), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 scatter', nhwc='pixels_2x2_avx2 windows_2x2_avx2',
          note='odd input, rows of 6'),
    *pool('ceil_even_inside', (1, 8, 12, 34), kernel=(2, 2), stride=(2, 2), ceil_mode=True,
          nchw='planes_2x2_avx2 windows_2x2_avx2', nhwc='pixels_2x2_avx2 windows_2x2_avx2',
          note='ceil mode on even sizes: windows still inside'),
    *pool('ceil_odd_partial', (1, 8, 9, 11), kernel=(2, 2), stride=(2, 2), ceil_mode=True,
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='ceil mode, odd: partial windows'),
    *pool('two_by_two_c8_odd', (1, 8, 17, 35), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 windows_2x2_avx2', nhwc='pixels_2x2_avx2 windows_2x2_avx2',
          note='odd sizes: the uncovered last row and column'),
    *pool('ceil_even_c24', (1, 24, 16, 20), kernel=(2, 2), stride=(2, 2), ceil_mode=True,
          nchw='planes_2x2_avx2 windows_2x2_avx2', nhwc='pixels_2x2_avx2 windows_2x2_avx2',
          note='ceil mode on even sizes, C = 24'),
    *pool('one_output_column', (3, 8, 4, 2), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 scatter', nhwc='pixels_2x2_avx2 windows_2x2_avx2',
          note='one output column'),
    *pool('seed_pool2', (2, 64, 13, 13), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 scatter', nhwc='pixels_2x2_avx2 windows_2x2_avx2',
          note="the seed CNN's second pool: rows of 6"),
    *pool('c12_rows9', (2, 12, 19, 18), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 windows_2x2_avx2', nhwc='pixels_avx2 scatter',
          note='rows of 9, C % 8 != 0'),
    *pool('avx512_c16', (2, 16, 30, 30), kernel=(2, 2), stride=(2, 2), isa='avx512',
          nhwc='pixels_2x2_avx512 windows_2x2_avx2',
          note='C % 16 == 0 on AVX-512'),
    *pool('overlap_c24_avx512', (2, 24, 17, 19), kernel=(3, 3), stride=(2, 2), padding=(1, 1), isa='avx512',
          nhwc='pixels_avx512 scatter',
          note="3x3 stride 2 padded on AVX-512: a 16-channel step and a masked 8-channel one"),
    *pool('sim_2x2', (2, 3, 9, 8), kernel=(2, 2), stride=(2, 2),
          nchw='planes_2x2_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='2x2, odd width'),
    *pool('sim_3x3_s2', (2, 3, 9, 8), kernel=(3, 3), stride=(2, 2), padding=(1, 1),
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='3x3 stride 2 padded'),
    *pool('sim_3x3_s1', (2, 3, 9, 8), kernel=(3, 3), stride=(1, 1), padding=(1, 1),
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='heavily overlapping windows'),
    *pool('sim_dil_ceil', (2, 3, 9, 8), kernel=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(2, 2), ceil_mode=True,
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='dilation, ceil mode'),
    *pool('sim_s3_ceil', (2, 3, 9, 8), kernel=(2, 2), stride=(3, 3), ceil_mode=True,
          nchw='planes_as_pixels_avx2 scatter', nhwc='pixels_avx2 scatter',
          note='stride past the kernel, ceil mode'),
    *pool('portable_2x2', (2, 16, 12, 12), kernel=(2, 2), stride=(2, 2), isa='portable',
          nchw='planes scatter', nhwc='pixels scatter',
          note='the portable loops'),
]
