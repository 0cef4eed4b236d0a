"""Token geometry of FreeSwim's inward sliding window.

One frozen object, :class:`TokenGeometry`, describes the token grid of the *target* video and the
window every query sees. Every mask, block mask, density figure and kernel in udit derives from it,
so there is exactly one definition of "which keys does this query attend to".

The window rule, per spatial axis of ``n`` tokens with a window of ``k`` tokens (rows and columns
independently; time is never restricted, every query sees all latent frames):

* ``k >= n``: the axis is full attention (every query sees all ``n`` tokens), for both window modes.
* inward (FreeSwim): the window is ``k`` tokens starting at
  ``start(i) = clamp(i - (k - 1) // 2, 0, n - k)``, i.e. tokens ``start .. start + k - 1``. Border
  queries are pushed inward and keep a full-size window (NATTEN's neighbourhood semantics).
* not inward (the "w/o inward" ablation): the same centred window ``i - (k - 1) // 2 .. i + k // 2``
  clipped to the grid, so a corner query sees about a quarter of the window.

For odd ``k = 2d + 1`` the window is centred (``d`` tokens each side). For even ``k`` the query sits
just above/left of the centre: ``k/2 - 1`` tokens before it and ``k/2`` after it.

The reference code's window is ``2*floor(n_native/2) + 1`` tokens (native + 1 for even native grids);
``window="native"`` gives exactly the native grid instead (spec §8.1).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = [
    "MAX_DENSE_MASK_ELEMENTS",
    "GeometryCache",
    "TokenGeometry",
    "WindowSpec",
    "attended_pairs",
    "attention_flops",
    "axis_bounds",
    "build_token_geometry",
    "freeswim_attention_scale",
    "mask_density",
    "window_mask",
    "window_from_native",
]

WindowSpec = Literal["reference", "native"] | tuple[int, int]
"""How the window is derived from the native token grid: ``"reference"`` (2⌊n/2⌋+1, the released
code), ``"native"`` (exactly the native grid) or an explicit ``(rows, cols)`` in tokens."""

# A dense boolean mask above this many elements is refused (2**31 bytes = 2 GiB).
MAX_DENSE_MASK_ELEMENTS = 2**31


class GeometryCache:
    """A small LRU cache of derived objects (masks, block masks) owned by one geometry.

    Why an object on the geometry rather than a module-level ``lru_cache``: the masks live exactly
    as long as the geometry that the engine hands to its processors, nothing leaks between tests or
    resolutions, and there is no hidden process-wide state. Why bounded: one geometry may be used
    with several devices, layouts or block sizes over a session; the oldest entry is dropped first.

    Args:
        max_entries: how many derived objects to keep; a full-size 1080p block mask is ~15 MiB, a
            dense boolean mask is S² bytes, so keep this small.
    """

    def __init__(self, max_entries: int = 8) -> None:
        if max_entries < 1:
            raise ValueError(f"GeometryCache needs room for at least one entry, got {max_entries=}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get_or_create(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        """Return the entry for ``key``, building it with ``factory()`` on a miss."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = factory()
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Drop every cached object (frees GPU memory held by block masks)."""
        self._entries.clear()

    def keys(self) -> list[Hashable]:
        """The keys currently held, oldest first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"GeometryCache({len(self)}/{self.max_entries} entries)"


def _check_positive_int(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {name}={value!r}")


@dataclass(frozen=True, kw_only=True)
class TokenGeometry:
    """The target token grid ``(F, rows, cols)`` and the spatial window every query attends to.

    Tokens are numbered frame-major then row-major in the *natural* order:
    ``index = f * rows * cols + r * cols + c`` (the order diffusers' Wan patch embedding produces).
    The window restricts rows and columns only; every query sees all ``frames`` latent frames, and
    the mask is the same for every batch element and head. See the module docstring for the exact
    window rule (inward clamping, even windows, grids smaller than the window).

    Masks and block masks derived from a geometry are cached on it (:attr:`cache`, keyed by device
    and layout); the cache takes no part in equality, hashing or ``repr``.
    """

    frames: int = field(metadata={"help": "Latent frames F (81 video frames -> 21 for Wan2.1)."})
    rows: int = field(metadata={"help": "Token rows h of the target grid (pixel height / 16 for Wan)."})
    cols: int = field(metadata={"help": "Token columns w of the target grid (pixel width / 16 for Wan)."})
    window_rows: int = field(metadata={"help": "Window height in tokens; >= rows means full rows."})
    window_cols: int = field(metadata={"help": "Window width in tokens; >= cols means full columns."})
    inward: bool = field(
        default=True,
        metadata={"help": "Clamp the window inside the grid (FreeSwim); False clips it (ablation)."},
    )
    cache: GeometryCache = field(  # init=False: dataclasses.replace() must not share derived masks
        default_factory=GeometryCache, init=False, compare=False, hash=False, repr=False,
        metadata={"help": "Derived masks, keyed by device/layout; not part of the geometry's identity."},
    )

    def __post_init__(self) -> None:
        _check_positive_int(
            frames=self.frames, rows=self.rows, cols=self.cols,
            window_rows=self.window_rows, window_cols=self.window_cols,
        )
        if not isinstance(self.inward, bool):
            raise ValueError(f"`inward` must be a bool, got inward={self.inward!r}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """``(F, rows, cols)`` in tokens."""
        return (self.frames, self.rows, self.cols)

    @property
    def window(self) -> tuple[int, int]:
        """``(window_rows, window_cols)`` as requested (may exceed the grid)."""
        return (self.window_rows, self.window_cols)

    @property
    def effective_window(self) -> tuple[int, int]:
        """The window clipped to the grid: what an inward query actually sees per frame."""
        return (min(self.window_rows, self.rows), min(self.window_cols, self.cols))

    @property
    def tokens_per_frame(self) -> int:
        return self.rows * self.cols

    @property
    def num_tokens(self) -> int:
        """Sequence length S = F * rows * cols."""
        return self.frames * self.rows * self.cols

    @property
    def is_full(self) -> bool:
        """True when the window covers the whole grid, i.e. the mask is plain full attention."""
        return self.window_rows >= self.rows and self.window_cols >= self.cols

    def row_bounds(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inclusive key-row bounds ``(lo, hi)`` for each query row; each ``[rows]`` int64."""
        return axis_bounds(self.rows, self.window_rows, inward=self.inward, device=device)

    def col_bounds(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inclusive key-column bounds ``(lo, hi)`` for each query column; each ``[cols]`` int64."""
        return axis_bounds(self.cols, self.window_cols, inward=self.inward, device=device)

    def __repr__(self) -> str:
        return (
            f"TokenGeometry(grid={self.frames}x{self.rows}x{self.cols}, "
            f"window={self.window_rows}x{self.window_cols}, inward={self.inward})"
        )


def axis_bounds(
    size: int, window: int, *, inward: bool = True, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive window bounds along one axis, for every query position on it.

    Args:
        size: number of tokens ``n`` on the axis.
        window: window length ``k`` in tokens; ``k >= n`` makes the axis full attention.
        inward: clamp the start into ``[0, n - k]`` (FreeSwim) instead of clipping the window.
        device: where to build the tensors.

    Returns:
        ``(lo, hi)``, each ``[size]`` int64: query ``i`` sees keys ``lo[i] <= j <= hi[i]``.
    """
    _check_positive_int(size=size, window=window)
    pos = torch.arange(size, device=device, dtype=torch.int64)
    if window >= size:
        return torch.zeros_like(pos), torch.full_like(pos, size - 1)
    before = (window - 1) // 2
    if inward:
        lo = (pos - before).clamp(0, size - window)
        return lo, lo + (window - 1)
    return (pos - before).clamp(min=0), (pos - before + window - 1).clamp(max=size - 1)


def window_mask(geometry: TokenGeometry, device: torch.device | str | None = None) -> torch.Tensor:
    """The dense boolean mask in the natural token order: ``mask[q, k]`` is True if q attends to k.

    Args:
        geometry: the token grid and window.
        device: where to build the mask.

    Returns:
        ``[S, S]`` bool, S = ``geometry.num_tokens``. Costs S² bytes, so it is refused above 2 GiB
        (use the ``flex`` kernel, whose block mask never materialises it).
    """
    s = geometry.num_tokens
    if s * s > MAX_DENSE_MASK_ELEMENTS:
        raise ValueError(
            f"a dense window mask for {geometry!r} would need {s * s / 2**30:.1f} GiB ({s=} tokens); "
            "use the `flex` kernel (block-sparse) for grids this large"
        )
    r_lo, r_hi = geometry.row_bounds(device)
    c_lo, c_hi = geometry.col_bounds(device)
    rows = torch.arange(geometry.rows, device=device)
    cols = torch.arange(geometry.cols, device=device)
    row_ok = (rows[None, :] >= r_lo[:, None]) & (rows[None, :] <= r_hi[:, None])  # [rows_q, rows_k]
    col_ok = (cols[None, :] >= c_lo[:, None]) & (cols[None, :] <= c_hi[:, None])  # [cols_q, cols_k]
    spatial = (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(
        geometry.tokens_per_frame, geometry.tokens_per_frame
    )
    # Every frame sees every frame: tile the per-frame mask F x F times.
    return spatial.repeat(geometry.frames, geometry.frames)


def attended_pairs(geometry: TokenGeometry) -> int:
    """Exact number of allowed (query, key) pairs: ``F² · Σ_r rows_seen(r) · Σ_c cols_seen(c)``.

    The mask factorises into a row test, a column test and "all frames", so the count is exact
    without building it. Multiply by ``4 · heads · head_dim`` for the useful FLOPs of one forward.
    """
    r_lo, r_hi = geometry.row_bounds()
    c_lo, c_hi = geometry.col_bounds()
    rows_seen = int((r_hi - r_lo + 1).sum())
    cols_seen = int((c_hi - c_lo + 1).sum())
    return geometry.frames**2 * rows_seen * cols_seen


def mask_density(geometry: TokenGeometry) -> float:
    """Fraction of the S×S score matrix the window keeps (exact); 1.0 means full attention."""
    return attended_pairs(geometry) / geometry.num_tokens**2


def attention_flops(geometry: TokenGeometry, *, num_heads: int, head_dim: int, batch: int = 1) -> int:
    """Useful forward FLOPs of window attention: ``4 · pairs · head_dim · heads · batch``.

    Two matmuls (QKᵀ and PV) of 2 FLOPs per multiply-add over the allowed pairs only; softmax and
    masked-out work are not counted, so this is the number to divide by time for "useful TFLOP/s".
    """
    _check_positive_int(num_heads=num_heads, head_dim=head_dim, batch=batch)
    return 4 * attended_pairs(geometry) * head_dim * num_heads * batch


def freeswim_attention_scale(head_dim: int, native_tokens_per_frame: int) -> float:
    """FreeSwim's self-attention scale ``sqrt(log_N(2N) / head_dim)``.

    The released code applies this entropy-invariance style scale to both self-attention branches
    with N hard-wired to 30·52 = 1560 (Wan2.1-1.3B at 480×832): 0.092461 for head_dim 128, i.e. the
    logits are multiplied by 1.0943 relative to the default ``1/sqrt(head_dim)``. udit derives N from
    the base model's native grid instead (3600 for Wan2.1-14B at 720×1280, spec §8.2).

    Args:
        head_dim: per-head channel count d.
        native_tokens_per_frame: N, tokens per latent frame at the native resolution (>= 2).
    """
    _check_positive_int(head_dim=head_dim)
    if isinstance(native_tokens_per_frame, bool) or not isinstance(native_tokens_per_frame, int) or (
        native_tokens_per_frame < 2
    ):
        raise ValueError(
            f"`native_tokens_per_frame` must be an integer >= 2 (log base N), got {native_tokens_per_frame=}"
        )
    n = native_tokens_per_frame
    return math.sqrt(math.log(2 * n) / math.log(n) / head_dim)


def window_from_native(native_rows: int, native_cols: int, window: WindowSpec = "reference") -> tuple[int, int]:
    """Window size in tokens from the native token grid.

    Args:
        native_rows: token rows at the native resolution (30 for 480 px on Wan2.1).
        native_cols: token columns at the native resolution (52 for 832 px).
        window: ``"reference"`` gives ``2⌊n/2⌋+1`` (31×53 for 30×52, as the released code),
            ``"native"`` gives exactly ``native_rows × native_cols``, a ``(rows, cols)`` tuple is
            taken as is.

    Returns:
        ``(window_rows, window_cols)``.
    """
    _check_positive_int(native_rows=native_rows, native_cols=native_cols)
    if window == "reference":
        return (2 * (native_rows // 2) + 1, 2 * (native_cols // 2) + 1)
    if window == "native":
        return (native_rows, native_cols)
    if isinstance(window, tuple) and len(window) == 2:
        _check_positive_int(window_rows=window[0], window_cols=window[1])
        return (window[0], window[1])
    raise ValueError(
        f"`window` must be 'reference', 'native' or a (rows, cols) tuple of positive ints, got {window=}"
    )


def _latent_size(pixels: int, factor: int, name: str, hint: str) -> int:
    if pixels % factor:
        fixed = max(factor, round(pixels / factor) * factor)
        raise ValueError(
            f"`{name}` must be divisible by {factor} (VAE factor × patch size), got {name}={pixels}; "
            f"use {fixed}{hint}"
        )
    return pixels // factor


def build_token_geometry(
    frames: int,
    height: int,
    width: int,
    *,
    native_height: int,
    native_width: int,
    vae_scale_spatial: int = 8,
    vae_scale_temporal: int = 4,
    patch_size: tuple[int, int, int] = (1, 2, 2),
    window: WindowSpec = "reference",
    inward: bool = True,
) -> TokenGeometry:
    """Build the target token geometry from pixel sizes and the model's compression factors.

    Args:
        frames: video frames; must be ``vae_scale_temporal · k + 1`` (81 -> 21 latent frames).
        height: target height in pixels, divisible by ``vae_scale_spatial · patch_h`` (16 for Wan).
        width: target width in pixels, same rule.
        native_height: the base model's training height in pixels (480 for Wan2.1-1.3B).
        native_width: the base model's training width in pixels (832 for Wan2.1-1.3B).
        vae_scale_spatial: VAE spatial downsampling (8 for Wan2.1).
        vae_scale_temporal: VAE temporal downsampling (4 for Wan2.1).
        patch_size: transformer patch ``(t, h, w)`` ((1, 2, 2) for Wan2.1).
        window: ``"reference"`` (2⌊n/2⌋+1 of the native grid, 31×53 for 1.3B), ``"native"``
            (exactly the native grid, 30×52) or ``(rows, cols)`` in tokens. Larger windows cost
            proportionally more attention FLOPs.
        inward: clamp border windows inside the grid (FreeSwim); False is the "w/o inward" ablation.

    Returns:
        The :class:`TokenGeometry`; e.g. ``(81, 1088, 1920)`` with native 480×832 gives
        21×68×120 tokens and a 31×53 window.
    """
    _check_positive_int(
        frames=frames, height=height, width=width, native_height=native_height, native_width=native_width,
        vae_scale_spatial=vae_scale_spatial, vae_scale_temporal=vae_scale_temporal,
    )
    if len(patch_size) != 3:
        raise ValueError(f"`patch_size` must be (t, h, w), got {patch_size=}")
    pt, ph, pw = patch_size
    _check_positive_int(patch_t=pt, patch_h=ph, patch_w=pw)
    if (frames - 1) % vae_scale_temporal:
        fixed = (frames - 1) // vae_scale_temporal * vae_scale_temporal + 1
        raise ValueError(
            f"`frames` must be {vae_scale_temporal}·k + 1 for a VAE with temporal factor "
            f"{vae_scale_temporal}, got {frames=}; use {fixed}"
        )
    latent_frames = (frames - 1) // vae_scale_temporal + 1
    if latent_frames % pt:
        raise ValueError(f"{latent_frames=} latent frames are not divisible by the temporal patch {pt=}")
    rows = _latent_size(height, vae_scale_spatial * ph, "height", " (e.g. 1088 instead of 1080)")
    cols = _latent_size(width, vae_scale_spatial * pw, "width", "")
    native_rows = _latent_size(native_height, vae_scale_spatial * ph, "native_height", "")
    native_cols = _latent_size(native_width, vae_scale_spatial * pw, "native_width", "")
    window_rows, window_cols = window_from_native(native_rows, native_cols, window)
    return TokenGeometry(
        frames=latent_frames // pt, rows=rows, cols=cols,
        window_rows=window_rows, window_cols=window_cols, inward=inward,
    )
