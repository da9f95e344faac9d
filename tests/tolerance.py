"""The tolerance rule (as flash-attention's): in a low-precision dtype our error against a float64
reference may be at most twice torch's own error in that dtype, plus a floor for exact results."""
import torch


def assert_within_torch_error(out: torch.Tensor, torch_out: torch.Tensor, reference: torch.Tensor,
                              factor: float = 2.0, floor: float = 1e-6):
    assert out.shape == reference.shape and out.dtype == torch_out.dtype
    ours = (out.double() - reference.double()).abs().max().item() if out.numel() else 0.0
    theirs = (torch_out.double() - reference.double()).abs().max().item() if out.numel() else 0.0
    scale = reference.abs().max().item() if reference.numel() else 0.0
    assert ours <= factor * theirs + floor * max(1.0, scale), f"error {ours:.3g} vs torch's {theirs:.3g}"
