"""The one tolerance rule of r1core's kernel tests.

A kernel is compared with a float64 computation of the same specification on the same
(dtype-rounded) inputs, and may be at most twice as far from it as PyTorch's own
computation in the kernel's dtype, plus a noise floor (flash-attention's rule):

    max |kernel - ref64| <= 2 * max |torch_same_dtype - ref64| + floor * scale

``scale`` is ``max(1, max |ref64|)``, so the floor is relative for large values and absolute
for values below one; with ``elementwise=True`` it is ``|ref64|`` per element (plus 1e-12),
for outputs whose entries span orders of magnitude. Both errors are measured against the
same float64 truth, so the bound follows the processor's actual rounding instead of a
hand-picked constant that one machine's instruction paths happen to meet.
"""

from __future__ import annotations

import torch

# Noise floors per output dtype, in units of that dtype's machine epsilon. float32 results
# here are sums of up to ~1e3 products whose rounding does not cancel: 168 eps = 2e-5.
# 16-bit outputs carry one rounding of their own (half an epsilon) on top of PyTorch's
# float32 arithmetic: one epsilon covers it.
FLOOR_EPS = {torch.float64: 4.5e4, torch.float32: 168.0, torch.bfloat16: 1.0, torch.float16: 1.0}


def default_floor(dtype: torch.dtype) -> float:
    """The noise floor of ``dtype``: ``FLOOR_EPS[dtype] * torch.finfo(dtype).eps``
    (1e-11 for float64, 2e-5 for float32, 7.8e-3 for bfloat16, 9.8e-4 for float16)."""
    return FLOOR_EPS.get(dtype, FLOOR_EPS[torch.float32]) * torch.finfo(dtype).eps


def reference_error_bound(
    reference: torch.Tensor,
    torch_same: torch.Tensor | None,
    *,
    floor: float,
    elementwise: bool = False,
) -> torch.Tensor:
    """The bound of the rule above, a 0-d tensor (or one per element with ``elementwise``)."""
    ref = reference.detach().double().cpu()
    base = torch.zeros((), dtype=torch.float64)
    if torch_same is not None:
        same = torch_same.detach().double().cpu()
        if same.shape != ref.shape:
            raise ValueError(f"torch_same has shape {tuple(same.shape)}, the reference {tuple(ref.shape)}")
        if same.numel():
            base = (same - ref).abs().max()
    if elementwise:
        return 2 * base + floor * ref.abs() + 1e-12
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    return 2 * base + floor * scale


def assert_close_to_reference(
    actual: torch.Tensor,
    reference: torch.Tensor,
    torch_same: torch.Tensor | None = None,
    *,
    floor: float | None = None,
    elementwise: bool = False,
    name: str = "value",
) -> None:
    """Assert the rule of this module.

    Args:
        actual: the kernel's output, any dtype and device.
        reference: the specification computed in float64 (``AssertionError`` otherwise, so a
            float32 "reference" cannot sneak in).
        torch_same: the specification computed by PyTorch in the kernel's dtype, or None to
            allow only the floor.
        floor: absolute noise floor at unit scale; default :func:`default_floor` of
            ``actual.dtype``.
        elementwise: scale the floor by each element's magnitude instead of the largest.
        name: what is compared, for the message.
    """
    if reference.dtype != torch.float64:
        raise AssertionError(f"{name}: the reference must be float64, got {reference.dtype}")
    if actual.shape != reference.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != reference shape {tuple(reference.shape)}")
    floor = default_floor(actual.dtype) if floor is None else floor
    ref = reference.detach().double().cpu()
    error = (actual.detach().double().cpu() - ref).abs()
    bound = reference_error_bound(ref, torch_same, floor=floor, elementwise=elementwise)
    if error.numel() == 0:
        return
    if not torch.isfinite(error).all():
        raise AssertionError(f"{name}: non-finite values where the reference has {ref[~torch.isfinite(error)][:4].tolist()}")
    excess = error - bound
    if excess.max() > 0:
        worst = int(excess.argmax())
        torch_error = None if torch_same is None else (torch_same.detach().double().cpu() - ref).abs().max().item()
        raise AssertionError(
            f"{name}: max error {error.max().item():.3g} exceeds the bound "
            f"(at flat index {worst}: error {error.flatten()[worst].item():.3g} > {bound.flatten()[0 if bound.dim() == 0 else worst].item():.3g}; "
            f"PyTorch's own error in {actual.dtype if torch_same is None else torch_same.dtype}: {torch_error}, floor {floor:.3g})"
        )
