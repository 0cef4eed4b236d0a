"""FreeSwim window attention: token geometry, token layouts and interchangeable kernels.

``geometry`` defines which keys each query sees (one definition for every mask and kernel),
``layout`` the order of tokens along the sequence (and the block sparsity that order gives),
``kernels`` the registered implementations behind :func:`window_attention`.

Example:
    >>> import torch
    >>> from upscale_dit.attention import build_token_geometry, window_attention
    >>> geometry = build_token_geometry(9, 128, 192, native_height=64, native_width=96)
    >>> geometry
    TokenGeometry(grid=3x8x12, window=5x7, inward=True)
    >>> q = k = v = torch.randn(1, geometry.num_tokens, 2, 16)
    >>> window_attention(q, k, v, geometry, kernel="sdpa_mask").shape
    torch.Size([1, 288, 2, 16])
"""

from .geometry import (
    GeometryCache,
    TokenGeometry,
    WindowSpec,
    attended_pairs,
    attention_flops,
    axis_bounds,
    build_token_geometry,
    freeswim_attention_scale,
    mask_density,
    window_from_native,
    window_mask,
)
from .kernels import (
    FLASH_BLOCK_SIZE,
    FLEX_BLOCK_SIZE,
    KernelSpec,
    KernelUnavailableError,
    check_qkv,
    choose_kernel,
    default_kernel_options,
    flash_attention_4_hint,
    flex_backend,
    flex_window_attention,
    get_kernel,
    kernel_rejections,
    layout_window_mask,
    list_kernels,
    register_kernel,
    requested_flex_backend,
    sdpa_mask_attention,
    window_attention,
    window_block_mask,
)
from .layout import (
    DEFAULT_TILE,
    BlockStructure,
    LayoutLike,
    TokenLayout,
    block_density,
    block_structure,
    from_layout,
    inverse_permutation,
    resolve_layout,
    to_layout,
    token_coordinates,
    token_permutation,
)

__all__ = [
    "DEFAULT_TILE",
    "FLASH_BLOCK_SIZE",
    "FLEX_BLOCK_SIZE",
    "BlockStructure",
    "GeometryCache",
    "KernelSpec",
    "KernelUnavailableError",
    "LayoutLike",
    "TokenGeometry",
    "TokenLayout",
    "WindowSpec",
    "attended_pairs",
    "attention_flops",
    "axis_bounds",
    "block_density",
    "block_structure",
    "build_token_geometry",
    "check_qkv",
    "choose_kernel",
    "default_kernel_options",
    "flash_attention_4_hint",
    "flex_backend",
    "flex_window_attention",
    "freeswim_attention_scale",
    "from_layout",
    "get_kernel",
    "inverse_permutation",
    "kernel_rejections",
    "layout_window_mask",
    "list_kernels",
    "mask_density",
    "register_kernel",
    "requested_flex_backend",
    "resolve_layout",
    "sdpa_mask_attention",
    "to_layout",
    "token_coordinates",
    "token_permutation",
    "window_attention",
    "window_block_mask",
    "window_from_native",
    "window_mask",
]
