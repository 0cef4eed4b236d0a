"""Window-attention kernels: one signature, a registry, and the kernels registered in it.

Importing this package registers every kernel (``sdpa_mask``, ``flex``).
"""

from .registry import (
    KernelSpec,
    KernelUnavailableError,
    check_qkv,
    choose_kernel,
    get_kernel,
    kernel_rejections,
    list_kernels,
    register_kernel,
    window_attention,
)
from .sdpa_mask import layout_window_mask, sdpa_mask_attention  # registers "sdpa_mask"
from .flex import (  # registers "flex"
    FLASH_BLOCK_SIZE,
    FLEX_BLOCK_SIZE,
    default_kernel_options,
    flash_attention_4_hint,
    flex_backend,
    flex_window_attention,
    requested_flex_backend,
    window_block_mask,
)

__all__ = [
    "FLASH_BLOCK_SIZE",
    "FLEX_BLOCK_SIZE",
    "KernelSpec",
    "KernelUnavailableError",
    "check_qkv",
    "choose_kernel",
    "default_kernel_options",
    "flash_attention_4_hint",
    "flex_backend",
    "flex_window_attention",
    "get_kernel",
    "kernel_rejections",
    "layout_window_mask",
    "list_kernels",
    "register_kernel",
    "requested_flex_backend",
    "sdpa_mask_attention",
    "window_attention",
    "window_block_mask",
]
