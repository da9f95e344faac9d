"""Launch choices made from the device's properties: under the simulator the device is a
simulated one whose properties tests can change, so every property-driven choice is exercised on
more than one device, and the results must not depend on it beyond float rounding."""
import pytest
import torch

import cuconv
from cuconv import _C


@pytest.fixture
def sim_device():
    """Set properties of the simulated device for one test; the default is restored afterwards."""
    def set_props(**props):
        _C._set_sim_device(props)
    yield set_props
    _C._set_sim_device({})


def test_default_simulated_device_is_one_sm80_sm():
    d = _C._sim_device()
    assert d["sm_count"] == 1 and (d["cc_major"], d["cc_minor"]) == (8, 0)
    assert d["smem_per_block_optin"] <= d["smem_per_sm"]


def test_setting_unknown_or_bad_property_raises(sim_device):
    with pytest.raises(RuntimeError, match="unknown simulated device property"):
        sim_device(sm_cnt=4)
    with pytest.raises(RuntimeError, match="must be positive"):
        sim_device(sm_count=0)
    sim_device(sm_count=7)
    assert _C._sim_device()["sm_count"] == 7 and _C._sim_device()["cc_major"] == 8


def _splits(x_shape, w_shape, **kw):
    x, w = torch.empty(x_shape), torch.empty(w_shape)
    with cuconv.simulate():
        return torch.ops.cuconv._gpu_conv2d_plan(x, w, kw.get("stride", [1, 1]), kw.get("padding", [0, 0]),
                                                 kw.get("dilation", [1, 1]), kw.get("groups", 1), "wgrad")[3]


def test_wgrad_split_grows_with_the_device(sim_device):
    # 64x27 weight = one output tile; reduction over 32*30*30 positions.
    shape = ((32, 3, 32, 32), (32, 3, 3, 3))
    one_sm = _splits(*shape)
    sim_device(sm_count=132)
    big = _splits(*shape)
    assert one_sm < big <= 64
    # A weight with many tiles fills a big device without splitting much.
    wide = _splits((2, 256, 8, 8), (256, 256, 3, 3))
    assert wide < big
    # Never chunks shorter than 256 positions: a reduction of 2*6*6 = 72 positions is not split.
    assert _splits((2, 3, 8, 8), (4, 3, 3, 3)) == 1


@pytest.mark.parametrize("device", [{}, {"sm_count": 132}, {"sm_count": 3, "max_threads_per_sm": 1024}])
@pytest.mark.parametrize("channels_last", [False, True])
def test_grad_weight_matches_torch_on_every_simulated_device(sim_device, device, channels_last):
    sim_device(**device)
    torch.manual_seed(0)
    x = torch.randn(6, 5, 13, 11, dtype=torch.float64)
    w = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    gy = torch.randn(6, 7, 13, 9, dtype=torch.float64)
    ref = torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [1, 0], [1, 1], False, [0, 0], 1,
                                              [False, True, False])[1]
    with cuconv.simulate():
        got = torch.ops.cuconv.conv2d_backward(gy, x, w, [1, 1], [1, 0], [1, 1], 1, [False, True, False])[1]
    assert _splits(x.shape, w.shape, padding=[1, 0]) >= (2 if device.get("sm_count", 1) > 1 else 1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", [{}, {"sm_count": 2, "max_threads_per_sm": 512, "max_blocks_per_sm": 2}])
def test_grid_stride_kernels_cover_everything_with_few_resident_blocks(sim_device, device):
    # max_pool2d and depthwise conv size their grids from the device: with a tiny device each block
    # strides over many elements, and every element must still be written (outputs are poisoned).
    sim_device(**device)
    torch.manual_seed(1)
    x = torch.randn(3, 8, 17, 19, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    with cuconv.simulate():
        y, idx = torch.ops.cuconv.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False)
        z = cuconv.ops.conv2d(x, w, None, 1, 1, 1, 8)
    ry, ridx = torch.nn.functional.max_pool2d(x, 3, 2, 1, return_indices=True)
    torch.testing.assert_close(y, ry)
    assert torch.equal(idx, ridx)
    torch.testing.assert_close(z, torch.nn.functional.conv2d(x, w, None, 1, 1, 1, 8))


def test_half_uses_simt_kernels_on_a_pre_sm80_device(sim_device):
    # Tensor cores need sm_80; on a simulated sm_75 device 16-bit convolutions take the SIMT kernel,
    # whose float accumulation without per-slice rounding gives a different (still correct) result.
    torch.manual_seed(2)
    x = torch.randn(2, 16, 9, 9).half()
    w = torch.randn(8, 16, 3, 3).half()
    ref = torch.nn.functional.conv2d(x.double(), w.double())
    with cuconv.simulate():
        tc = torch.ops.cuconv.conv2d(x, w, None, [1, 1], [0, 0], [1, 1], 1)
        sim_device(cc_major=7, cc_minor=5)
        simt = torch.ops.cuconv.conv2d(x, w, None, [1, 1], [0, 0], [1, 1], 1)
    for y in (tc, simt):
        torch.testing.assert_close(y.double(), ref, rtol=2e-2, atol=2e-2)
