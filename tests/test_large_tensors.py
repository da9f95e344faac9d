"""64-bit indexing: tensors past 2^31 elements on the CPU, checked against torch on bands of rows
(a whole-tensor torch reference would not fit beside ours in 24 GiB). They run wherever the memory
they need is free (CI's 24 GiB machine included) and are skipped, saying so, where it is not."""
import pytest
import torch
import torch.nn.functional as F

import cuconv


def available_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def needs(gib):
    return pytest.mark.skipif(available_gib() < gib, reason=f"needs {gib} GiB of free memory")


@pytest.mark.slow
@needs(14)  # input 8.6 GB, output and indices 1.6 GB, with room to spare
def test_max_pool2d_plane_past_2_31_elements():
    side = 46342                                   # one plane of 2,147,580,964 > 2^31 elements
    x = torch.arange(side, dtype=torch.float32).expand(1, 1, side, side).contiguous()  # distinct per column
    x[0, 0, -2, 5] = 1e9                            # a maximum whose flat index is past 2^31
    out, idx = cuconv.max_pool2d(x, 4, 3, return_indices=True)   # overlapping 4x4 windows, stride 3
    last = (side - 4) // 3
    assert out.shape == (1, 1, last + 1, last + 1)
    flat = (side - 2) * side + 5
    assert flat > 2**31
    assert out[0, 0, -1, 1].item() == 1e9 and idx[0, 0, -1, 1].item() == flat
    for p0 in (0, last - 1):                           # first and last bands of rows against torch
        band = x[:, :, 3 * p0:3 * p0 + 7]
        ref, ridx = F.max_pool2d(band, 4, 3, return_indices=True)
        assert torch.equal(out[:, :, p0:p0 + 2], ref)
        assert torch.equal(idx[:, :, p0:p0 + 2], ridx + 3 * p0 * side)


@pytest.mark.slow
@needs(15)  # input 8.6 GB, output 4.3 GB
def test_conv2d_input_past_2_31_elements():
    side = 46342                                    # one input plane past 2^31 elements
    x = (torch.arange(side, dtype=torch.float32) / side).expand(1, 1, side, side).contiguous()
    x[0, 0, -2, -1] = 100.0                         # read at flat index (side-2)*side + side-1 > 2^31
    w = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    b = torch.tensor([0.5, 0.25])
    y = cuconv.conv2d(x, w, b, stride=2, padding=(0, 1))
    assert y[0, 1, -1, -1].item() == -199.75
    for rows in (slice(0, 2), slice(side - 2, side)):
        torch.testing.assert_close(y[:, :, rows.start // 2:rows.start // 2 + 1],
                                   F.conv2d(x[:, :, rows], w, b, stride=2, padding=(0, 1)))
