"""``sdpa_mask``: a dense boolean mask and PyTorch SDPA — the reference kernel and test oracle.

Simple enough to trust: the mask is built from the geometry's row/column bounds and handed to
``torch.nn.functional.scaled_dot_product_attention``. It costs S² bytes of mask and dense FLOPs, so
it is meant for the CPU, tests and small grids; ``auto`` prefers it on the CPU (where FlexAttention
is never faster) and falls back to it on CUDA only when ``flex`` cannot run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import MAX_DENSE_MASK_ELEMENTS, TokenGeometry
from ..layout import LayoutLike, TokenLayout, resolve_layout, token_coordinates
from .registry import register_kernel

__all__ = ["layout_window_mask", "sdpa_mask_attention"]


def layout_window_mask(
    geometry: TokenGeometry, layout: LayoutLike = "natural", device: torch.device | str | None = None
) -> torch.Tensor:
    """The dense ``[S, S]`` bool window mask with queries and keys in ``layout`` order.

    Cached on the geometry per (layout, device). Equals
    ``window_mask(geometry)[perm][:, perm]`` with ``perm = token_permutation(geometry, layout)``.
    """
    layout = resolve_layout(layout)
    key = ("dense_mask", layout, str(torch.device(device) if device is not None else torch.device("cpu")))
    return geometry.cache.get_or_create(key, lambda: _build_mask(geometry, layout, device))


def _build_mask(geometry: TokenGeometry, layout: TokenLayout, device: torch.device | str | None) -> torch.Tensor:
    s = geometry.num_tokens
    if s * s > MAX_DENSE_MASK_ELEMENTS:
        raise ValueError(f"a dense mask for {geometry!r} needs {s * s / 2**30:.1f} GiB; use the `flex` kernel")
    _, row, col = token_coordinates(geometry, layout, device)
    r_lo, r_hi = geometry.row_bounds(device)
    c_lo, c_hi = geometry.col_bounds(device)
    return (
        (row[None, :] >= r_lo[row][:, None]) & (row[None, :] <= r_hi[row][:, None])
        & (col[None, :] >= c_lo[col][:, None]) & (col[None, :] <= c_hi[col][:, None])
    )


def _cannot_run(q: torch.Tensor, geometry: TokenGeometry) -> str | None:
    s = geometry.num_tokens
    if s * s > MAX_DENSE_MASK_ELEMENTS:
        return f"its dense mask would need {s * s / 2**30:.1f} GiB for {s} tokens (limit 2 GiB)"
    return None


@register_kernel("sdpa_mask", cannot_run=_cannot_run, priority=10, auto_devices=("cpu", "cuda", "mps"))
def sdpa_mask_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    geometry: TokenGeometry,
    *,
    scale: float | None = None,
    layout: LayoutLike = "natural",
) -> torch.Tensor:
    """Window attention through SDPA with a dense boolean mask.

    Args:
        q: ``[B, S, H, D]``; k: ``[B, S, H, D]``; v: ``[B, S, H, Dv]``, all in ``layout`` order.
        geometry: token grid and window.
        scale: softmax scale (``None``: ``1/sqrt(D)``).
        layout: token order of the inputs and output.

    Returns:
        ``[B, S, H, Dv]``.
    """
    mask = layout_window_mask(geometry, layout, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
    )
    return out.transpose(1, 2)
