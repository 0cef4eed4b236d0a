"""GCLF (Global-Coarse-Local-Fine) self-attention of ViBe's Relay LoRA, and its diffusers processor.

Every query attends, in **one softmax**, to

* the *fine* keys inside its inward window (the window of a :class:`TokenGeometry`, built with
  ``window="native"``: the base model's native token grid, clamped inside the frame, all frames), and
* *all* keys average-pooled by ``pool × pool`` over (rows, columns), per latent frame, after RoPE
  (values pooled the same way): the coarse, global context.

Why this reading (spec ``vibe.md`` §5, §11 A8): the window keeps the receptive field the model was trained
with (at 2× native it is exactly one quadrant's size) and the pooled tokens carry everything else. Grids not
divisible by ``pool`` pool their last row/column over the tokens that exist (``ceil_mode``), so every size works.

Two implementations with one signature ``fn(q, k, v, geometry, *, pool, scale) -> out``, tensors
``[B, S, H, D]``: ``sdpa`` (dense boolean mask over ``[S, S + S_pooled]`` and SDPA, the reference) and
``flex`` (FlexAttention with a block mask derived from the window geometry; compiled on CUDA). Tests hold
them equal against an independent float64 softmax.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .geometry import MAX_DENSE_MASK_ELEMENTS, TokenGeometry, window_mask
from .layout import LayoutLike, block_structure, from_layout, resolve_layout, to_layout, token_coordinates
from .plan import AttentionPlanHandle, install_plan
from .projections import check_text_only, project_keys_values, project_out, project_queries

__all__ = [
    "GCLF_KERNELS",
    "GCLFAttnProcessor",
    "apply_gclf",
    "choose_gclf_kernel",
    "gclf_attention",
    "gclf_attention_flex",
    "gclf_attention_sdpa",
    "gclf_dense_mask",
    "pool_tokens",
    "pooled_grid",
]

GCLFKernel = Literal["auto", "sdpa", "flex"]
GCLF_KERNELS: tuple[str, ...] = ("auto", "sdpa", "flex")
FLEX_BLOCK = 128  # FlexAttention's sparse block (query and key)
_NOWHERE = -(2**30)  # key row/column of padding and pooled keys: outside every window


def pooled_grid(geometry: TokenGeometry, pool: int) -> tuple[int, int, int]:
    """``(F, ceil(rows/pool), ceil(cols/pool))``: the grid of the pooled (coarse) tokens."""
    _check_pool(pool)
    return geometry.frames, -(-geometry.rows // pool), -(-geometry.cols // pool)


def _check_pool(pool: int) -> None:
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ConfigError(f"GCLF `pool` must be a positive integer, got {pool!r}")


def pool_tokens(x: torch.Tensor, geometry: TokenGeometry, pool: int) -> torch.Tensor:
    """Average ``x`` ``[B, S, H, D]`` (natural order) over ``pool × pool`` spatial cells of each frame.

    Returns:
        ``[B, S_pooled, H, D]`` in natural (frame, row, col) order of :func:`pooled_grid`.
    """
    b, s, h, d = x.shape
    f, rows, cols = geometry.grid
    if rows % pool == 0 and cols % pool == 0:  # a reshape and one reduction, no copy of x
        cells = x.reshape(b, f, rows // pool, pool, cols // pool, pool, h, d)
        return cells.mean(dim=(3, 5)).reshape(b, -1, h, d)
    # Ragged border cells: avg_pool2d with ceil_mode averages what exists. Channels-last strides, so no copy either.
    grid = x.reshape(b * f, rows, cols, h * d).permute(0, 3, 1, 2)
    pooled = F.avg_pool2d(grid, pool, stride=pool, ceil_mode=True).permute(0, 2, 3, 1)
    return pooled.reshape(b, -1, h, d)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry: TokenGeometry) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"GCLF attention takes [B, S, H, D] q, k, v of one shape, got {q.shape=}, {k.shape=}, {v.shape=}")
    if q.shape[1] != geometry.num_tokens:
        raise ValueError(f"sequence length {q.shape[1]} does not match {geometry!r} ({geometry.num_tokens} tokens); "
                         "build the geometry from the latents being denoised")


def gclf_dense_mask(geometry: TokenGeometry, pool: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[S, S + S_pooled]`` bool: the window over the fine keys, then every pooled key. Cached on the geometry."""
    f, pr, pc = pooled_grid(geometry, pool)
    s, sp = geometry.num_tokens, f * pr * pc
    if s * (s + sp) > MAX_DENSE_MASK_ELEMENTS:
        raise ValueError(f"a dense GCLF mask for {geometry!r} needs {s * (s + sp) / 2**30:.1f} GiB; use the flex kernel")
    key = ("gclf_dense", pool, str(torch.device(device) if device is not None else torch.device("cpu")))

    def build() -> torch.Tensor:
        return torch.cat([window_mask(geometry, device), torch.ones(s, sp, dtype=torch.bool, device=device)], dim=1)

    return geometry.cache.get_or_create(key, build)


def gclf_attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry: TokenGeometry, *,
                        pool: int = 2, scale: float | None = None) -> torch.Tensor:
    """Reference GCLF: keys ``[k ; pool(k)]`` under a dense boolean mask, one SDPA call. ``[B, S, H, D]`` in and out."""
    _check_inputs(q, k, v, geometry)
    keys = torch.cat([k, pool_tokens(k, geometry, pool)], dim=1)
    values = torch.cat([v, pool_tokens(v, geometry, pool)], dim=1)
    mask = gclf_dense_mask(geometry, pool, q.device)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                                         attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


def _block_lists(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query block, how many key blocks are selected and their indices first (int32, ``[1, 1, ...]``)."""
    counts = selected.sum(dim=1, dtype=torch.int32)
    indices = torch.argsort((~selected).to(torch.int8), dim=1, stable=True).to(torch.int32)
    return counts[None, None].contiguous(), indices[None, None].contiguous()


def _pad_to(x: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    return torch.cat([x, x.new_full((length - x.numel(),), fill)]) if length > x.numel() else x


def gclf_block_mask(geometry: TokenGeometry, pool: int, layout: LayoutLike = "natural",
                    device: torch.device | str | None = None) -> Any:
    """FlexAttention ``BlockMask`` over keys ``[fine (padded to a block multiple) ; pooled]``. Cached on the geometry.

    Fine key blocks come from the window's exact block structure; pooled key blocks are full for every query
    (the last one partial when ragged); padding keys match nothing.
    """
    from torch.nn.attention.flex_attention import BlockMask

    layout = resolve_layout(layout)
    dev = str(torch.device(device) if device is not None else torch.device("cpu"))

    def build() -> Any:
        s, b = geometry.num_tokens, FLEX_BLOCK
        f, pr, pc = pooled_grid(geometry, pool)
        sp, s_pad = f * pr * pc, -(-s // b) * b
        total = s_pad + sp
        fine = block_structure(geometry, layout, (b, b), device)
        n_q, n_pool = fine.visited.shape[0], -(-sp // b)
        pooled_full = torch.ones(n_q, n_pool, dtype=torch.bool, device=device)
        if sp % b:
            pooled_full[:, -1] = False
        if s % b:
            pooled_full[-1, :] = False
        visited = torch.cat([fine.visited, torch.ones_like(pooled_full)], dim=1)
        full = torch.cat([fine.full, pooled_full], dim=1)
        partial_num, partial_idx = _block_lists(visited & ~full)
        full_num, full_idx = _block_lists(full)

        _, row, col = token_coordinates(geometry, layout, device)
        r_lo, r_hi = geometry.row_bounds(device)
        c_lo, c_hi = geometry.col_bounds(device)
        kv_len, q_len = -(-total // b) * b, s_pad
        key_row = _pad_to(_pad_to(row, s_pad, _NOWHERE), kv_len, _NOWHERE).to(torch.int32)
        key_col = _pad_to(_pad_to(col, s_pad, _NOWHERE), kv_len, _NOWHERE).to(torch.int32)
        is_pooled = torch.zeros(kv_len, dtype=torch.bool, device=device)
        is_pooled[s_pad:total] = True
        q_r_lo, q_r_hi = (_pad_to(x[row], q_len, 0).to(torch.int32) for x in (r_lo, r_hi))
        q_c_lo, q_c_hi = (_pad_to(x[col], q_len, 0).to(torch.int32) for x in (c_lo, c_hi))

        def gclf_mask_mod(batch: Any, head: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            r, c = key_row[kv_idx], key_col[kv_idx]
            fine_ok = (r >= q_r_lo[q_idx]) & (r <= q_r_hi[q_idx]) & (c >= q_c_lo[q_idx]) & (c <= q_c_hi[q_idx])
            return fine_ok | is_pooled[kv_idx]

        return BlockMask.from_kv_blocks(partial_num, partial_idx, full_num, full_idx, BLOCK_SIZE=(b, b),
                                        mask_mod=gclf_mask_mod, seq_lengths=(s, total))

    return geometry.cache.get_or_create(("gclf_block_mask", pool, layout, dev), build)


@functools.cache
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def gclf_attention_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry: TokenGeometry, *,
                        pool: int = 2, scale: float | None = None, layout: LayoutLike = "natural",
                        compile: bool | None = None) -> torch.Tensor:
    """Fast GCLF through block-sparse FlexAttention; inputs and output in natural order ``[B, S, H, D]``.

    Args:
        layout: token order used *inside* the kernel; ``"tiled"`` makes window blocks denser on large grids.
        compile: ``None`` compiles on CUDA (eager flex materialises all scores) and runs eagerly elsewhere.
    """
    from torch.nn.attention.flex_attention import flex_attention

    _check_inputs(q, k, v, geometry)
    layout = resolve_layout(layout)
    s = geometry.num_tokens
    pad = -(-s // FLEX_BLOCK) * FLEX_BLOCK - s
    k_pool, v_pool = pool_tokens(k, geometry, pool), pool_tokens(v, geometry, pool)
    q, k, v = (to_layout(x, geometry, layout) for x in (q, k, v))
    keys = torch.cat([k, k.new_zeros(k.shape[0], pad, *k.shape[2:]), k_pool], dim=1).transpose(1, 2)
    values = torch.cat([v, v.new_zeros(v.shape[0], pad, *v.shape[2:]), v_pool], dim=1).transpose(1, 2)
    block_mask = gclf_block_mask(geometry, pool, layout, q.device)
    use_compiled = q.device.type == "cuda" if compile is None else compile
    if use_compiled:
        out = _compiled_flex()(q.transpose(1, 2), keys, values, block_mask=block_mask, scale=scale)
    else:
        with warnings.catch_warnings():  # eager flex warns that it is unfused; on the CPU that is expected
            warnings.filterwarnings("ignore", message=".*flex_attention.*", category=UserWarning)
            out = flex_attention(q.transpose(1, 2), keys, values, block_mask=block_mask, scale=scale)
    return from_layout(out.transpose(1, 2), geometry, layout)


def choose_gclf_kernel(q: torch.Tensor, geometry: TokenGeometry, pool: int, preference: str = "auto") -> str:
    """``auto``: ``flex`` on CUDA, else ``sdpa`` while its dense mask stays under 2 GiB, else ``flex``."""
    if preference not in GCLF_KERNELS:
        raise ConfigError(f"GCLF kernel must be one of {', '.join(GCLF_KERNELS)}, got {preference!r}")
    if preference != "auto":
        return preference
    f, pr, pc = pooled_grid(geometry, pool)
    s = geometry.num_tokens
    dense_fits = s * (s + f * pr * pc) <= MAX_DENSE_MASK_ELEMENTS
    return "sdpa" if q.device.type != "cuda" and dense_fits else "flex"


def gclf_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry: TokenGeometry, *,
                   pool: int = 2, scale: float | None = None, kernel: str = "auto") -> torch.Tensor:
    """GCLF self-attention ``[B, S, H, D] → [B, S, H, D]`` by the kernel ``kernel`` (``auto``/``sdpa``/``flex``)."""
    name = choose_gclf_kernel(q, geometry, pool, kernel)
    if name == "sdpa":
        return gclf_attention_sdpa(q, k, v, geometry, pool=pool, scale=scale)
    # Tiles of neighbouring positions x all frames make window blocks dense on videos; a single frame (training)
    # gains nothing from the permutation (measured on an H200: 6.3 ms natural vs 7.1 ms tiled, fwd + bwd).
    layout = "tiled" if q.device.type == "cuda" and geometry.frames > 1 else "natural"
    return gclf_attention_flex(q, k, v, geometry, pool=pool, scale=scale, layout=layout)


class GCLFAttnProcessor:
    """Wan self-attention (``attn1``) with GCLF instead of full attention; weights all come from ``attn``.

    Args:
        geometry: token grid of the latents being denoised, window = the native grid (``window="native"``).
        pool: pooling factor ``d`` of the coarse keys (ViBe trains with 2; 4 is cheaper at 4K).
        kernel: ``auto``, ``sdpa`` or ``flex``.
    """

    def __init__(self, geometry: TokenGeometry, *, pool: int = 2, kernel: str = "auto") -> None:
        _check_pool(pool)
        if kernel not in GCLF_KERNELS:
            raise ConfigError(f"GCLF kernel must be one of {', '.join(GCLF_KERNELS)}, got {kernel!r}")
        self.geometry, self.pool, self.kernel = geometry, pool, kernel

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        check_text_only(attn)
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("GCLFAttnProcessor is for self-attention (attn1) without a mask; keep attn2 stock")
        query = project_queries(attn, hidden_states, rotary_emb)
        key, value = project_keys_values(attn, hidden_states, rotary_emb)
        out = gclf_attention(query, key, value, self.geometry, pool=self.pool, kernel=self.kernel)
        return project_out(attn, out.type_as(query))

    def __repr__(self) -> str:
        return f"GCLFAttnProcessor({self.geometry!r}, pool={self.pool}, kernel={self.kernel!r})"


def apply_gclf(transformer: Any, geometry: TokenGeometry, *, pool: int = 2, kernel: str = "auto") -> AttentionPlanHandle:
    """Install :class:`GCLFAttnProcessor` on every self-attention (``attn1``) of a Wan transformer.

    Cross-attention keeps its processor. Refused while another attention plan (GCLF, FreeSwim) is applied.
    Returns the handle whose ``remove()`` (or leaving a ``with`` block) restores the previous processors.

    Example:
        >>> from upscale_dit.engine.tiny import build_tiny_components
        >>> from upscale_dit.attention import build_token_geometry
        >>> t = build_tiny_components()["transformer"]
        >>> g = build_token_geometry(1, 192, 320, native_height=96, native_width=160, window="native")
        >>> with apply_gclf(t, g):
        ...     pass
    """
    current = transformer.attn_processors
    processor = GCLFAttnProcessor(geometry, pool=pool, kernel=kernel)
    installed = {name: (processor if "attn1" in name.split(".") else p) for name, p in current.items()}
    if installed == current:
        raise ValueError("found no self-attention (`attn1`) layer to install GCLF attention on")
    return install_plan(transformer, "gclf", installed)
