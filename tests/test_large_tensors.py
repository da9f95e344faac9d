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
@needs(18)
def test_max_pool2d_plane_past_2_31_elements():
    side = 46342                                   # one plane of 2,147,580,964 > 2^31 elements
    x = torch.arange(side, dtype=torch.float32).expand(1, 1, side, side).contiguous()  # distinct per column
    x[0, 0, -2, 5] = 1e9                            # a maximum whose flat index is past 2^31
    out, idx = cuconv.max_pool2d(x, 2, return_indices=True)
    assert out.shape == (1, 1, side // 2, side // 2)
    flat = (side - 2) * side + 5
    assert flat > 2**31
    assert out[0, 0, -1, 2].item() == 1e9 and idx[0, 0, -1, 2].item() == flat
    for rows in (slice(0, 4), slice(side - 4, side)):   # first and last bands against torch
        band = x[:, :, rows]
        ref, ridx = F.max_pool2d(band, 2, return_indices=True)
        p0 = rows.start // 2
        assert torch.equal(out[:, :, p0:p0 + 2], ref)
        assert torch.equal(idx[:, :, p0:p0 + 2], ridx + rows.start * side)


@pytest.mark.slow
@needs(16)
def test_conv2d_output_past_2_31_elements():
    side = 32768                                    # input 2^30 elements, output 2^31
    x = (torch.arange(side, dtype=torch.float32) / side).expand(1, 1, side, side).contiguous()
    w = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    b = torch.tensor([0.5, 0.25])
    y = cuconv.conv2d(x, w, b)
    assert y.numel() == 2**31
    for rows in (slice(0, 2), slice(side - 2, side)):
        torch.testing.assert_close(y[:, :, rows], F.conv2d(x[:, :, rows], w, b))
