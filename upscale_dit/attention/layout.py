"""Token layouts: the order of the S tokens along the sequence axis, and the block sparsity it yields.

Kernels that skip work block by block (FlexAttention visits 128×128 query/key blocks) only save
what the *token order* lets them save. In the natural order (frame-major, row-major; the order the
Wan patch embedding produces) a 128-token block is one stretch of an image row, its window union is
tall and thin, and at 1088×1920 48% of the blocks must be visited although the exact mask keeps only
20%. The FreeSwim mask ignores time (every frame sees every frame), so the best blocks hold the same
few spatial positions in all frames: the ``tiled`` layout orders tokens by spatial tile, then by
position inside the tile (row-major), then by frame. A 128-token block then covers ~6 neighbouring
positions × 21 frames and only ~23% of the blocks are visited.

Measured block densities (128×128 blocks, 31×53 window, 21 frames; exact mask density in brackets):

===========================  =========  ==========  ===========  ===========
grid                         natural    tiled 3×2   tiled 2×3    8×16 per frame
===========================  =========  ==========  ===========  ===========
68×120 (1088×1920) [20.1%]   48.1%      23.2%       24.3%        32.0%
90×160 (1440×2560) [11.4%]   35.3%      13.2%       13.8%        19.1%
===========================  =========  ==========  ===========  ===========

The permutation is meant to be applied once at the transformer's input (and undone at its output),
so per-token layers never notice; kernels accept either order and must be told which one
(``layout=``). Grids not divisible by the tile get smaller tiles on the bottom/right border.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .geometry import TokenGeometry

__all__ = [
    "DEFAULT_TILE",
    "BlockStructure",
    "LayoutLike",
    "TokenLayout",
    "block_density",
    "block_structure",
    "from_layout",
    "inverse_permutation",
    "resolve_layout",
    "to_layout",
    "token_coordinates",
    "token_permutation",
]

DEFAULT_TILE: tuple[int, int] = (3, 2)
"""Tile (rows, cols) of the ``"tiled"`` layout: lowest block density of the shapes tried (table above)."""


@dataclass(frozen=True, kw_only=True)
class TokenLayout:
    """An order of the tokens of a :class:`TokenGeometry` along the sequence axis.

    ``natural`` is frame-major, row-major (``f·h·w + r·w + c``). ``tiled`` groups spatial positions
    into ``tile_rows × tile_cols`` tiles (tiles in row-major order), positions inside a tile in
    row-major order, and puts the frames of one position next to each other (frames innermost).
    """

    kind: Literal["natural", "tiled"] = field(
        default="natural", metadata={"help": "'natural' (frame, row, col) or 'tiled' (tile, position, frame)."}
    )
    tile_rows: int = field(default=1, metadata={"help": "Tile height in tokens (tiled only)."})
    tile_cols: int = field(default=1, metadata={"help": "Tile width in tokens (tiled only)."})

    def __post_init__(self) -> None:
        if self.kind not in ("natural", "tiled"):
            raise ValueError(f"`kind` must be 'natural' or 'tiled', got kind={self.kind!r}")
        for name in ("tile_rows", "tile_cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {name}={value!r}")
        if self.kind == "natural" and (self.tile_rows, self.tile_cols) != (1, 1):
            raise ValueError(
                f"a natural layout has no tiles, got tile={self.tile_rows}x{self.tile_cols}; "
                "use TokenLayout.tiled(rows, cols)"
            )

    @classmethod
    def natural(cls) -> TokenLayout:
        """Frame-major, row-major: the order diffusers produces."""
        return cls(kind="natural")

    @classmethod
    def tiled(cls, tile_rows: int = DEFAULT_TILE[0], tile_cols: int = DEFAULT_TILE[1]) -> TokenLayout:
        """Tile-major, frames innermost (see the module docstring for why)."""
        return cls(kind="tiled", tile_rows=tile_rows, tile_cols=tile_cols)

    @property
    def is_natural(self) -> bool:
        return self.kind == "natural"

    @property
    def name(self) -> str:
        """Short name for logs and cache keys: ``natural`` or ``tiled3x2``."""
        return "natural" if self.is_natural else f"tiled{self.tile_rows}x{self.tile_cols}"


LayoutLike = TokenLayout | Literal["natural", "tiled"]
"""A layout object, or ``"natural"`` / ``"tiled"`` (the latter with :data:`DEFAULT_TILE`)."""


def resolve_layout(layout: LayoutLike) -> TokenLayout:
    """Turn ``"natural"`` / ``"tiled"`` into a :class:`TokenLayout`; objects pass through."""
    if isinstance(layout, TokenLayout):
        return layout
    if layout == "natural":
        return TokenLayout.natural()
    if layout == "tiled":
        return TokenLayout.tiled()
    raise ValueError(f"`layout` must be 'natural', 'tiled' or a TokenLayout, got {layout=}")


def _device_key(device: torch.device | str | None) -> str:
    return str(torch.device(device) if device is not None else torch.device("cpu"))


def token_permutation(
    geometry: TokenGeometry, layout: LayoutLike, device: torch.device | str | None = None
) -> torch.Tensor:
    """Natural index of the token at each layout position.

    ``x_layout = x_natural[:, perm]`` and ``x_natural = x_layout[:, inverse_permutation(...)]``.
    Cached on the geometry per (layout, device).

    Returns:
        ``[S]`` int64, a permutation of ``0 .. S-1`` (the identity for the natural layout).
    """
    layout = resolve_layout(layout)
    key = ("perm", layout, _device_key(device))
    return geometry.cache.get_or_create(key, lambda: _build_permutation(geometry, layout, device))


def _build_permutation(geometry: TokenGeometry, layout: TokenLayout, device: torch.device | str | None) -> torch.Tensor:
    f_n, h, w = geometry.grid
    natural = torch.arange(geometry.num_tokens, device=device, dtype=torch.int64)
    if layout.is_natural:
        return natural
    th, tw = layout.tile_rows, layout.tile_cols
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    tiles_per_row = -(-w // tw)
    # Border tiles may be smaller; their size enters only through the ordering key, which stays
    # strictly increasing in (tile, row in tile, col in tile, frame), so the sort is a bijection.
    tile = (rows // th)[:, None] * tiles_per_row + (cols // tw)[None, :]  # [h, w]
    within = (rows % th)[:, None] * tw + (cols % tw)[None, :]  # [h, w]
    spatial_key = tile * (th * tw) + within  # unique per position
    frames = torch.arange(f_n, device=device)
    key = spatial_key[None, :, :] * f_n + frames[:, None, None]  # [F, h, w], natural order
    return natural[torch.argsort(key.reshape(-1))]


def inverse_permutation(
    geometry: TokenGeometry, layout: LayoutLike, device: torch.device | str | None = None
) -> torch.Tensor:
    """Layout position of each natural token: the inverse of :func:`token_permutation`.

    Returns:
        ``[S]`` int64.
    """
    layout = resolve_layout(layout)
    key = ("inverse_perm", layout, _device_key(device))

    def build() -> torch.Tensor:
        perm = token_permutation(geometry, layout, device)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        return inverse

    return geometry.cache.get_or_create(key, build)


def _check_seq(x: torch.Tensor, geometry: TokenGeometry, dim: int) -> None:
    if x.shape[dim] != geometry.num_tokens:
        raise ValueError(
            f"expected {geometry.num_tokens} tokens along dim {dim} for {geometry!r}, got {x.shape=}"
        )


def to_layout(x: torch.Tensor, geometry: TokenGeometry, layout: LayoutLike, *, dim: int = 1) -> torch.Tensor:
    """Reorder natural-order tokens into ``layout`` (a gather along ``dim``, e.g. ``[B, S, C]``)."""
    layout = resolve_layout(layout)
    _check_seq(x, geometry, dim)
    if layout.is_natural:
        return x
    return x.index_select(dim, token_permutation(geometry, layout, x.device))


def from_layout(x: torch.Tensor, geometry: TokenGeometry, layout: LayoutLike, *, dim: int = 1) -> torch.Tensor:
    """Undo :func:`to_layout`: tokens in ``layout`` back to the natural order along ``dim``."""
    layout = resolve_layout(layout)
    _check_seq(x, geometry, dim)
    if layout.is_natural:
        return x
    return x.index_select(dim, inverse_permutation(geometry, layout, x.device))


def token_coordinates(
    geometry: TokenGeometry, layout: LayoutLike, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(frame, row, col)`` of the token at each layout position; each ``[S]`` int64."""
    perm = token_permutation(geometry, layout, device)
    hw = geometry.tokens_per_frame
    spatial = perm % hw
    return perm // hw, spatial // geometry.cols, spatial % geometry.cols


@dataclass(frozen=True)
class BlockStructure:
    """Which (query block, key block) tiles of the mask are empty, partial or full.

    Attributes:
        visited: ``[num_q_blocks, num_kv_blocks]`` bool, True where at least one pair is allowed.
        full: ``[num_q_blocks, num_kv_blocks]`` bool, True where every pair is allowed (and both
            blocks are complete, i.e. not the ragged last block); ``full`` implies ``visited``.
        block_size: ``(q_block, kv_block)`` in tokens.
    """

    visited: torch.Tensor
    full: torch.Tensor
    block_size: tuple[int, int]

    @property
    def density(self) -> float:
        """Fraction of blocks a block-sparse kernel must visit."""
        return float(self.visited.float().mean())

    @property
    def full_fraction(self) -> float:
        """Fraction of blocks that need no per-element mask."""
        return float(self.full.float().mean())


def _pad_blocks(x: torch.Tensor, block: int, fill: int) -> torch.Tensor:
    n = -(-x.numel() // block)
    out = x.new_full((n * block,), fill)
    out[: x.numel()] = x
    return out.view(n, block)


def block_structure(
    geometry: TokenGeometry,
    layout: LayoutLike = "natural",
    block_size: int | tuple[int, int] = 128,
    device: torch.device | str | None = None,
) -> BlockStructure:
    """Exact block sparsity of the window mask in ``layout``, without building the S×S mask.

    Only spatial positions matter (all frames are visible). A key block is *full* for a query
    block iff its row/column bounding box lies inside the intersection of the query windows
    (the window is a rectangle). It is *visited* iff one of its positions lies in the union of the
    query windows: that union is a ``[rows, cols]`` coverage map per query block, built as a
    product of per-query row and column indicators, then read at the key block's positions.
    Cost ~ ``blocks² · distinct positions per block``: milliseconds on a GPU at 1080p.

    Args:
        geometry: the token grid and window.
        layout: token order of both queries and keys.
        block_size: ``q_block`` or ``(q_block, kv_block)`` in tokens (FlexAttention's default 128).
        device: where to compute (the result lives there).

    Returns:
        The :class:`BlockStructure`.
    """
    layout = resolve_layout(layout)
    bq, bk = (block_size, block_size) if isinstance(block_size, int) else block_size
    if min(bq, bk) < 1:
        raise ValueError(f"block sizes must be positive, got {block_size=}")
    s = geometry.num_tokens
    _, row, col = token_coordinates(geometry, layout, device)
    r_lo, r_hi = geometry.row_bounds(device)
    c_lo, c_hi = geometry.col_bounds(device)
    big = max(geometry.rows, geometry.cols) + 1  # neutral fill for min/max reductions

    # Query side: per block, the intersection of the windows (for "full") ...
    q_rlo = _pad_blocks(r_lo[row], bq, -big)
    q_clo = _pad_blocks(c_lo[col], bq, -big)
    q_rhi = _pad_blocks(r_hi[row], bq, big)
    q_chi = _pad_blocks(c_hi[col], bq, big)
    inter = (q_rlo.amax(1), q_rhi.amin(1), q_clo.amax(1), q_chi.amin(1))
    # ... and the union of the windows as a coverage map (for "visited"). Padding rows get an empty
    # row interval (lo > hi), so they cover nothing.
    rr = torch.arange(geometry.rows, device=device)
    cc = torch.arange(geometry.cols, device=device)
    q_rlo_u = _pad_blocks(r_lo[row], bq, 1)
    q_rhi_u = _pad_blocks(r_hi[row], bq, 0)

    # Key side: bounding boxes, and the distinct positions of each block.
    pos = row * geometry.cols + col
    k_pos = _pad_blocks(pos, bk, -1)
    k_valid = k_pos >= 0
    k_row = _pad_blocks(row, bk, -1)
    k_col = _pad_blocks(col, bk, -1)
    k_rmin = k_row.masked_fill(~k_valid, big).amin(1)
    k_cmin = k_col.masked_fill(~k_valid, big).amin(1)
    k_rmax, k_cmax = k_row.amax(1), k_col.amax(1)
    k_distinct = _distinct_positions(k_pos)  # [nk, m], -1 padded

    full = (
        (k_rmin[None, :] >= inter[0][:, None]) & (k_rmax[None, :] <= inter[1][:, None])
        & (k_cmin[None, :] >= inter[2][:, None]) & (k_cmax[None, :] <= inter[3][:, None])
    )
    # A ragged last block is never "full": its missing tokens are not pairs of the mask.
    if s % bq:
        full[-1, :] = False
    if s % bk:
        full[:, -1] = False

    nq, nk = q_rlo.shape[0], k_pos.shape[0]
    visited = torch.empty(nq, nk, dtype=torch.bool, device=full.device)
    gather_idx = k_distinct.clamp(min=0).reshape(-1)
    gather_ok = k_distinct >= 0
    per_block = nk * k_distinct.shape[1] + geometry.tokens_per_frame + bq * (geometry.rows + geometry.cols)
    chunk = max(1, 2**26 // per_block)  # bounds the temporaries below to ~2**26 elements
    for start in range(0, nq, chunk):
        stop = min(nq, start + chunk)
        lo, hi = q_rlo_u[start:stop, :, None], q_rhi_u[start:stop, :, None]
        row_ind = ((rr >= lo) & (rr <= hi)).float()  # [c, bq, rows]
        lo, hi = q_clo[start:stop, :, None], q_chi[start:stop, :, None]
        col_ind = ((cc >= lo) & (cc <= hi)).float()  # [c, bq, cols]
        coverage = torch.bmm(row_ind.transpose(1, 2), col_ind) > 0  # [c, rows, cols]: union of windows
        hits = coverage.reshape(stop - start, -1)[:, gather_idx].view(stop - start, nk, -1)
        visited[start:stop] = (hits & gather_ok).any(-1)
    return BlockStructure(visited=visited, full=full & visited, block_size=(bq, bk))


def _distinct_positions(blocks: torch.Tensor) -> torch.Tensor:
    """Per row of ``blocks`` (``[n, b]``, -1 = padding), its distinct values, -1 padded to the max count."""
    ordered, _ = blocks.sort(dim=1)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    new &= ordered >= 0
    width = max(1, int(new.sum(1).max()))
    # Stable sort moves the first occurrences (True) to the front, keeping their order.
    order = torch.sort((~new).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    picked = ordered.gather(1, order)
    return picked.masked_fill(~new.gather(1, order), -1)


def block_density(
    geometry: TokenGeometry, layout: LayoutLike = "natural", block_size: int | tuple[int, int] = 128
) -> float:
    """Fraction of (query block, key block) pairs a block-sparse kernel visits in ``layout``.

    Compare with :func:`~upscale_dit.attention.geometry.mask_density` (the exact fraction): their
    ratio is the work wasted on masked-out pairs inside visited blocks.
    """
    return block_structure(geometry, layout, block_size).density
