"""Attention cost: keys per query for each kind of self-attention, block-level density, and attention FLOPs.

Everything here is expressed as *keys per query* (the mean number of keys a query's softmax runs over), because
that single number turns any mask into FLOPs: ``attention_flops = 4 · batch · queries · keys · heads · head_dim``.
A ``KeyCounter`` maps a token grid to that number, so the attention-geometry module (``upscale_dit.attention``,
which owns token layouts and block masks) can feed the cost model without this package knowing its layout:

- exact: the keys the mask allows (what an ideal kernel computes);
- block-level: what a block-sparse kernel such as FlexAttention computes — every visited (query block, key block)
  pair costs block_q × block_kv, padding included — divided by the real query count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .dims import TokenGrid

__all__ = [
    "KeyCounter",
    "attention_flops",
    "exact_window_keys",
    "gclf_keys",
    "inward_window_keys",
    "keys_from_block_density",
]

KeyCounter = Callable[[TokenGrid], float]
"""Mean number of keys each query attends (exact or kernel-effective) for a given token grid."""


def attention_flops(queries: int, keys_per_query: float, heads: int, head_dim: int, batch: int = 1) -> int:
    """Matmul FLOPs of softmax attention: QKᵀ is a head_dim dot product per (query, key, head), 2·head_dim FLOPs;
    P·V costs the same again, hence 4·head_dim per pair. Softmax, scaling and masking (a few FLOPs per score against
    512 per score at head_dim 128) are not counted, as ``torch.utils.flop_counter`` does not count them either."""
    return round(4 * batch * queries * keys_per_query * heads * head_dim)


def _span(window: int, axis: int) -> int:
    # A window larger than the grid covers the whole axis (full attention along it).
    return min(window, axis)


def inward_window_keys(grid: TokenGrid, window: tuple[int, int]) -> int:
    """Keys per query of FreeSwim's inward window (all frames × a ``win_h × win_w`` spatial window, start clamped
    inside the grid): every query sees exactly ``F · min(win_h, h) · min(win_w, w)`` keys, borders included."""
    win_h, win_w = window
    if win_h < 1 or win_w < 1:
        raise ValueError(f"`window` must be positive (win_h, win_w) in tokens, got {window}")
    return grid.frames * _span(win_h, grid.rows) * _span(win_w, grid.cols)


def gclf_keys(grid: TokenGrid, window: tuple[int, int], pool: int) -> int:
    """Keys per query of ViBe's GCLF attention: fine keys inside the local window (all frames; a quadrant partition
    of an h/2 × w/2 window sees the same count) plus every frame average-pooled by ``pool × pool``, one softmax."""
    if pool < 1:
        raise ValueError(f"`pool` must be ≥ 1, got {pool}")
    # AvgPool without ceil_mode: h // pool × w // pool coarse keys per frame.
    return inward_window_keys(grid, window) + grid.frames * (grid.rows // pool) * (grid.cols // pool)


def exact_window_keys(window: tuple[int, int]) -> KeyCounter:
    """A ``KeyCounter`` for the inward window's exact key count (the ideal-kernel cost)."""
    return lambda grid: float(inward_window_keys(grid, window))


def keys_from_block_density(
    density: float | Callable[[TokenGrid], float], block_size: int | tuple[int, int] = 128
) -> KeyCounter:
    """A ``KeyCounter`` for a block-sparse kernel (FlexAttention), from the fraction of (query block, key block)
    pairs it visits — e.g. ``upscale_dit.attention.layout.block_density(geometry, layout, block_size)``.

    A visited pair costs a full block_q × block_kv tile, padding of the ragged last block included, so the keys per
    real query are ``density · ⌈N/Bq⌉·Bq · ⌈N/Bk⌉·Bk / N``. At 1088×1920 on Wan2.1-1.3B's window, row-major
    order visits 48.1 % of blocks against an exact density of 20.1 % (specs/freeswim.md §2).
    """
    bq, bk = (block_size, block_size) if isinstance(block_size, int) else block_size

    def count(grid: TokenGrid) -> float:
        n = grid.num_tokens
        fraction = density(grid) if callable(density) else density
        return fraction * math.ceil(n / bq) * bq * math.ceil(n / bk) * bk / n

    return count
