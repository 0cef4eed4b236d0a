"""``flex``: FlexAttention with a block mask built analytically from the geometry.

The block mask is not found by evaluating the mask on every (query, key) pair, as
``create_block_mask`` does (9.5 s and lots of memory at 1080p in the reference code): the window is
a rectangle over all frames, so :func:`~upscale_dit.attention.layout.block_structure` derives which
blocks are empty, partial or full in milliseconds, and :meth:`BlockMask.from_kv_blocks` wraps it.
Only partial blocks evaluate ``mask_mod``, which compares the key's row/column with the query's
window bounds through small per-token lookup tables.

Defaults measured on an H200 at 1080p (``bench/RESULTS.md``): key blocks of 64 tokens (the window
is followed more tightly; 22.7% of blocks visited instead of 23.2%), Triton's TMA loads on Hopper,
and a ``mask_mod`` written as two unsigned range tests (``(row - lo) as uint32 < len``) instead of
four signed compares: together 0.36× → ~0.32× of dense SDPA time. The unsigned form only compiles
(eager CPU has no uint32 compare), so eager calls get the signed form of the same predicate.

On Hopper, when the ``flash-attn-4`` package is installed, flex runs on its FlashAttention-4 (CuTe DSL)
backend instead of Triton (``BACKEND="FLASH"``): 80 ms instead of 100 ms per 1080p call on an H100, 0.82×
dense SDPA's throughput on the useful pairs instead of 0.66. That backend cannot compile the unsigned
compare and wants the sparse key block equal to its 128-token tile, so it gets 128×128 blocks and a
signed ``mask_mod`` whose window lengths are constants. ``UDIT_FLEX_BACKEND=triton`` (or ``flash``)
overrides the choice.

On CUDA the kernel is ``torch.compile``\\ d (eager FlexAttention materialises the scores and runs
out of memory at these lengths). On the CPU it runs eagerly, for tests on small grids; there the
``sdpa_mask`` kernel is faster and ``auto`` prefers it. Use the ``tiled`` layout on the GPU: in the
natural order no block is full and about 2.4× the necessary blocks are visited.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..geometry import TokenGeometry
from ..layout import LayoutLike, TokenLayout, block_structure, resolve_layout, token_coordinates
from .registry import KernelUnavailableError, register_kernel

__all__ = [
    "FLASH_BLOCK_SIZE",
    "FLEX_BLOCK_SIZE",
    "default_kernel_options",
    "flash_attention_4_hint",
    "flex_backend",
    "flex_window_attention",
    "requested_flex_backend",
    "window_block_mask",
]

FLEX_BLOCK_SIZE: tuple[int, int] = (128, 64)
"""Default (query, key) sparse block size in tokens (Triton's BLOCK_N on Hopper is 64 anyway)."""

FLASH_BLOCK_SIZE: tuple[int, int] = (128, 128)
"""Sparse block size on the FlashAttention-4 backend: its Hopper tile for head_dim 128 (the key block must
equal the kernel's tile_n)."""

BACKEND_ENV = "UDIT_FLEX_BACKEND"
"""Environment variable that picks flex's GPU backend: ``auto`` (default), ``triton`` or ``flash``."""

MaskForm = Literal["signed", "unsigned", "flash"]

_MIN_TORCH = (2, 6)  # BlockMask.from_kv_blocks(seq_lengths=...) and CPU flex
_CPU_EAGER_MAX_SCORE_BYTES = 2**30  # eager flex materialises B·H·S² fp32 scores


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _unavailable() -> str | None:
    if _torch_version() < _MIN_TORCH:
        return f"needs torch>={_MIN_TORCH[0]}.{_MIN_TORCH[1]} for FlexAttention, found {torch.__version__}"
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the torch build
        return f"torch.nn.attention.flex_attention cannot be imported ({error})"
    return None


def _cannot_run(q: torch.Tensor, geometry: TokenGeometry) -> str | None:
    if q.device.type == "cuda":
        return None
    if q.device.type == "cpu":
        score_bytes = 4 * q.shape[0] * q.shape[2] * geometry.num_tokens**2
        if score_bytes > _CPU_EAGER_MAX_SCORE_BYTES:
            return (
                f"on the CPU it runs eagerly and would materialise {score_bytes / 2**30:.1f} GiB of scores; "
                "use `sdpa_mask` on the CPU"
            )
        return None
    return f"runs on cuda or cpu, not {q.device.type}"


def _device_key(device: torch.device | str | None) -> str:
    return str(torch.device(device) if device is not None else torch.device("cpu"))


@functools.cache
def _flash_attention_4_installed() -> bool:
    """Whether FlashAttention-4's CuTe DSL kernels (``flash_attn.cute``, package ``flash-attn-4``) import.

    Cached: every flex call asks (through :func:`default_kernel_options`), and a module search per call
    is work on the hot path, inside compiled blocks too."""
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except (ImportError, ValueError):
        return False


def requested_flex_backend() -> Literal["auto", "triton", "flash"]:
    """What ``UDIT_FLEX_BACKEND`` asks for (``auto`` when unset); a bad value is a one-line error (exit 2).

    Callers that run long before the first attention call (``generate``) ask early, so a typo fails in
    seconds rather than after the base stage."""
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "triton", "flash"):
        raise KernelUnavailableError(f"{BACKEND_ENV}={choice!r} is not a flex backend; use auto, triton or flash")
    return choice  # type: ignore[return-value]


def flex_backend(device: torch.device | str) -> Literal["FLASH", "TRITON"] | None:
    """The compiled flex backend for ``device``; ``None`` off CUDA (flex runs eagerly there).

    ``auto`` picks FlashAttention-4 on Hopper (compute capability 9.x) when ``flash-attn-4`` is installed,
    the only card it was measured on, and Triton everywhere else. ``UDIT_FLEX_BACKEND`` overrides it.
    """
    device = torch.device(device)
    choice = requested_flex_backend()
    if device.type != "cuda":
        return None
    if choice == "triton":
        return "TRITON"
    installed = _flash_attention_4_installed()
    if choice == "flash":
        if not installed:
            raise KernelUnavailableError(
                f"{BACKEND_ENV}=flash needs FlashAttention-4: pip install 'upscale-dit[flash4]' "
                f"(or unset {BACKEND_ENV})"
            )
        return "FLASH"
    return "FLASH" if installed and torch.cuda.get_device_capability(device)[0] == 9 else "TRITON"


def flash_attention_4_hint(device: torch.device | str) -> str | None:
    """A one-line note for a Hopper GPU that runs flex on Triton only because ``flash-attn-4`` is missing."""
    device = torch.device(device)
    if device.type != "cuda" or requested_flex_backend() != "auto":
        return None
    if torch.cuda.get_device_capability(device)[0] != 9 or _flash_attention_4_installed():
        return None
    return (
        "window attention runs ~1.27x faster on this GPU with FlashAttention-4 (measured on an H100): "
        "pip install 'upscale-dit[flash4]'"
    )


def default_kernel_options(device: torch.device | str) -> dict[str, Any]:
    """Options used when ``kernel_options=None``: FlashAttention-4 where :func:`flex_backend` picks it,
    else Triton with TMA loads on Hopper and newer (+3% at 1080p)."""
    device = torch.device(device)
    backend = flex_backend(device)
    if backend == "FLASH":
        return {"BACKEND": "FLASH"}
    if backend == "TRITON" and torch.cuda.get_device_capability(device) >= (9, 0):
        return {"USE_TMA": True}
    return {}


def _uses_flash(kernel_options: dict[str, Any]) -> bool:
    return str(kernel_options.get("BACKEND", "")).upper() == "FLASH"


def _constant_or_table(lengths: torch.Tensor, index: torch.Tensor) -> int | torch.Tensor:
    """One Python int when every window has the same length on this axis (always so for inward
    windows), else the int32 per-token table."""
    if bool((lengths == lengths[0]).all()):
        return int(lengths[0])
    return lengths[index].to(torch.int32)


def _window_mask_mod(
    geometry: TokenGeometry, layout: TokenLayout, device: torch.device | str | None, form: MaskForm
) -> Callable:
    """``mask_mod(b, h, q_idx, kv_idx)`` for ``layout``, reading int32 per-token lookup tables.

    Every form computes "key row in [lo, lo + len) and key column likewise" for the query's window.
    ``unsigned`` writes each range test as one unsigned compare (negative differences wrap to huge
    values), which saves a third of Triton's per-element work in partial blocks but needs compilation;
    ``signed`` is the eager form; ``flash`` is the signed form with the window lengths as constants
    where they are (FlashAttention-4's code generator has no unsigned cast, and each table read is a
    per-element load there).
    """
    _, row, col = token_coordinates(geometry, layout, device)
    r_lo, r_hi = geometry.row_bounds(device)
    c_lo, c_hi = geometry.col_bounds(device)
    key_row, key_col = row.to(torch.int32), col.to(torch.int32)
    q_r_lo, q_c_lo = r_lo[row].to(torch.int32), c_lo[col].to(torch.int32)
    if form == "flash":
        r_len = _constant_or_table(r_hi - r_lo + 1, row)
        c_len = _constant_or_table(c_hi - c_lo + 1, col)

        def window_mask_mod_flash(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            dr = key_row[kv_idx] - q_r_lo[q_idx]
            dc = key_col[kv_idx] - q_c_lo[q_idx]
            row_len = r_len if isinstance(r_len, int) else r_len[q_idx]
            col_len = c_len if isinstance(c_len, int) else c_len[q_idx]
            return (dr >= 0) & (dr < row_len) & (dc >= 0) & (dc < col_len)

        return window_mask_mod_flash
    q_r_len, q_c_len = (r_hi - r_lo + 1)[row].to(torch.int32), (c_hi - c_lo + 1)[col].to(torch.int32)

    def window_mask_mod_unsigned(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        dr = (key_row[kv_idx] - q_r_lo[q_idx]).to(torch.uint32)
        dc = (key_col[kv_idx] - q_c_lo[q_idx]).to(torch.uint32)
        return (dr < q_r_len[q_idx].to(torch.uint32)) & (dc < q_c_len[q_idx].to(torch.uint32))

    def window_mask_mod(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        dr = key_row[kv_idx] - q_r_lo[q_idx]
        dc = key_col[kv_idx] - q_c_lo[q_idx]
        return (dr >= 0) & (dr < q_r_len[q_idx]) & (dc >= 0) & (dc < q_c_len[q_idx])

    return window_mask_mod_unsigned if form == "unsigned" else window_mask_mod


def _indices(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block counts ``[1, 1, nq]`` and ascending block indices ``[1, 1, nq, nk]`` (int32) of a bool map."""
    counts = selected.sum(1, dtype=torch.int32)
    order = torch.sort((~selected).to(torch.uint8), dim=1, stable=True).indices.to(torch.int32)
    return counts[None, None].contiguous(), order[None, None].contiguous()


def window_block_mask(
    geometry: TokenGeometry,
    layout: LayoutLike = "tiled",
    block_size: int | tuple[int, int] = FLEX_BLOCK_SIZE,
    device: torch.device | str | None = None,
    *,
    compiled: bool | None = None,
    mask_form: MaskForm | None = None,
) -> Any:
    """The FlexAttention ``BlockMask`` of the window in ``layout``, cached on the geometry.

    Args:
        geometry: token grid and window.
        layout: token order of queries and keys.
        block_size: ``(q_block, kv_block)`` in tokens (or one int for both).
        device: where the mask lives (the attention inputs' device).
        compiled: whether it will be used by compiled flex (picks the faster ``mask_mod`` form,
            which eager flex cannot run); ``None`` means "compiled on CUDA".
        mask_form: the ``mask_mod`` form (see :func:`_window_mask_mod`); ``None`` derives it from
            ``compiled`` (``unsigned`` compiled, ``signed`` eager). Use ``flash`` for that backend.

    Returns:
        A ``torch.nn.attention.flex_attention.BlockMask`` for ``B = H = 1`` (broadcast over both).
    """
    layout = resolve_layout(layout)
    bq, bk = (block_size, block_size) if isinstance(block_size, int) else block_size
    device_key = _device_key(device)
    if mask_form is None:
        unsigned = torch.device(device_key).type == "cuda" if compiled is None else compiled
        mask_form = "unsigned" if unsigned else "signed"
    key = ("block_mask", layout, (bq, bk), device_key, mask_form)

    def build() -> Any:
        from torch.nn.attention.flex_attention import BlockMask

        blocks = block_structure(geometry, layout, (bq, bk), device)
        kv_num, kv_idx = _indices(blocks.visited & ~blocks.full)
        full_num, full_idx = _indices(blocks.full)
        s = geometry.num_tokens
        return BlockMask.from_kv_blocks(
            kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(bq, bk),
            mask_mod=_window_mask_mod(geometry, layout, device, mask_form), seq_lengths=(s, s),
        )

    return geometry.cache.get_or_create(key, build)


@functools.cache
def _compiled_flex() -> Callable:
    """The process-wide compiled ``flex_attention`` (a compiled function, not mask state)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@register_kernel("flex", unavailable=_unavailable, cannot_run=_cannot_run, priority=20, auto_devices=("cuda",))
def flex_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    geometry: TokenGeometry,
    *,
    scale: float | None = None,
    layout: LayoutLike = "natural",
    block_size: int | tuple[int, int] | None = None,
    kernel_options: dict[str, Any] | None = None,
    compile: bool | None = None,
) -> torch.Tensor:
    """Window attention through block-sparse FlexAttention.

    Args:
        q: ``[B, S, H, D]``; k: ``[B, S, H, D]``; v: ``[B, S, H, Dv]``, all in ``layout`` order.
        geometry: token grid and window.
        scale: softmax scale (``None``: ``1/sqrt(D)``).
        layout: token order of inputs and output; ``"tiled"`` visits ~2× fewer blocks at 1080p.
        block_size: sparse block ``(q, kv)`` in tokens; ``None``: :data:`FLEX_BLOCK_SIZE` on Triton,
            :data:`FLASH_BLOCK_SIZE` on FlashAttention-4. Smaller key blocks follow the window more
            tightly but give the kernel shorter inner loops; 64 must stay a multiple of Triton's
            ``BLOCK_N``.
        kernel_options: passed to ``flex_attention`` (``BACKEND``, Triton tile sizes, warps, stages,
            TMA); ``None`` uses :func:`default_kernel_options`, ``{}`` none. ``ROWS_GUARANTEED_SAFE``
            gives NaNs here (a row can be fully masked inside the first block visited).
        compile: use the compiled kernel; ``None`` compiles on CUDA and runs eagerly elsewhere.

    Returns:
        ``[B, S, H, Dv]``.
    """
    if geometry.is_full:  # the window covers the grid: exactly full attention, let SDPA do it
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)
    from torch.nn.attention.flex_attention import flex_attention

    use_compiled = q.device.type == "cuda" if compile is None else compile
    if kernel_options is None:
        kernel_options = default_kernel_options(q.device)
    flash = _uses_flash(kernel_options)
    if block_size is None:
        block_size = FLASH_BLOCK_SIZE if flash else FLEX_BLOCK_SIZE
    mask_form: MaskForm = "flash" if flash else ("unsigned" if use_compiled else "signed")
    block_mask = window_block_mask(geometry, layout, block_size, q.device, mask_form=mask_form)
    args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    if use_compiled:
        out = _compiled_flex()(*args, block_mask=block_mask, scale=scale, kernel_options=kernel_options)
    else:
        with warnings.catch_warnings():  # eager flex says it is unfused; on the CPU that is the point
            warnings.filterwarnings("ignore", message=".*flex_attention.*", category=UserWarning)
            out = flex_attention(*args, block_mask=block_mask, scale=scale, kernel_options=kernel_options)
    return out.transpose(1, 2)
