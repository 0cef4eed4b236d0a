"""Keys per query against brute-force masks on small grids, and the block-density adapter."""

import itertools
import math

import numpy as np
import pytest

from upscale_dit.profiling import (
    TokenGrid,
    exact_window_keys,
    gclf_keys,
    inward_window_keys,
    keys_from_block_density,
)


def _inward_mask(grid: TokenGrid, window: tuple[int, int]) -> np.ndarray:
    """Dense [N, N] mask of the inward window built the slow way: clamp each query's window start into the grid."""
    f, h, w = grid.frames, grid.rows, grid.cols
    coords = list(itertools.product(range(f), range(h), range(w)))
    mask = np.zeros((len(coords), len(coords)), dtype=bool)
    for q, (_, rq, cq) in enumerate(coords):
        eh, ew = min(window[0], h), min(window[1], w)
        r0 = min(max(rq - (eh - 1) // 2, 0), h - eh)
        c0 = min(max(cq - (ew - 1) // 2, 0), w - ew)
        for k, (_, rk, ck) in enumerate(coords):
            mask[q, k] = r0 <= rk < r0 + eh and c0 <= ck < c0 + ew
    return mask


GRIDS = [
    (TokenGrid(2, 7, 9), (3, 5)),  # fits: borders clamp inward
    (TokenGrid(3, 6, 8), (4, 6)),  # even window
    (TokenGrid(2, 4, 9), (7, 3)),  # taller than the grid: full rows
    (TokenGrid(1, 3, 4), (9, 9)),  # larger than the grid: full attention
]


@pytest.mark.parametrize(("grid", "window"), GRIDS)
def test_inward_keys_match_brute_force(grid, window):
    per_query = _inward_mask(grid, window).sum(axis=1)
    # Every query, border and corner ones included, sees the same number of keys.
    assert set(per_query.tolist()) == {inward_window_keys(grid, window)}
    assert exact_window_keys(window)(grid) == inward_window_keys(grid, window)


@pytest.mark.parametrize(("grid", "window"), GRIDS)
def test_inward_keys_match_geometry_module(grid, window):
    geometry = pytest.importorskip("upscale_dit.attention.geometry")
    g = geometry.TokenGeometry(frames=grid.frames, rows=grid.rows, cols=grid.cols,
                               window_rows=window[0], window_cols=window[1])
    assert geometry.attended_pairs(g) == grid.num_tokens * inward_window_keys(grid, window)


def test_gclf_keys_quadrants_plus_pooled():
    # Quadrant partition of an 8 × 12 grid (window 4 × 6) and 2 × 2 average pooling, 3 frames, brute force.
    grid, pool = TokenGrid(3, 8, 12), 2
    fine = np.array([[r // 4 == rk // 4 and c // 6 == ck // 6 for rk in range(8) for ck in range(12)]
                     for r in range(8) for c in range(12)]).sum(axis=1) * grid.frames
    coarse = grid.frames * (8 // pool) * (12 // pool)
    assert set((fine + coarse).tolist()) == {gclf_keys(grid, (4, 6), pool)}
    # With d = 2 a query sees N/4 + N/4 keys (specs/vibe.md §5); with d = 4, N/4 + N/16.
    assert gclf_keys(grid, (4, 6), 2) == grid.num_tokens // 2
    assert gclf_keys(grid, (4, 6), 4) == grid.num_tokens // 4 + grid.num_tokens // 16
    with pytest.raises(ValueError, match="`pool`"):
        gclf_keys(grid, (4, 6), 0)
    with pytest.raises(ValueError, match="`window`"):
        inward_window_keys(grid, (0, 6))


@pytest.mark.parametrize("block", [8, 16, 13])
def test_block_density_adapter_counts_visited_tiles(block):
    grid, window = TokenGrid(2, 7, 9), (3, 5)
    n = grid.num_tokens
    mask = np.zeros((math.ceil(n / block) * block,) * 2, dtype=bool)
    mask[:n, :n] = _inward_mask(grid, window)
    nb = mask.shape[0] // block
    visited = mask.reshape(nb, block, nb, block).any(axis=(1, 3))
    # A block-sparse kernel computes every element of every visited tile.
    computed = visited.sum() * block * block
    assert keys_from_block_density(visited.mean(), block)(grid) == pytest.approx(computed / n)
    assert keys_from_block_density(lambda g: visited.mean(), (block, block))(grid) == pytest.approx(computed / n)
    assert computed / n >= inward_window_keys(grid, window)


def test_block_density_from_geometry_module_at_1080p():
    # specs/freeswim.md §2: row-major order at 128-token blocks visits 48.1 % of blocks for the 1.3B window at
    # 1088×1920, against an exact density of 20.1 % — a block-sparse kernel does ≈ 2.4× the ideal work.
    geometry = pytest.importorskip("upscale_dit.attention.geometry")
    layout = pytest.importorskip("upscale_dit.attention.layout")
    grid = TokenGrid(21, 68, 120)
    g = geometry.TokenGeometry(frames=21, rows=68, cols=120, window_rows=31, window_cols=53)
    keys = keys_from_block_density(lambda _: layout.block_density(g, "natural", 128))(grid)
    exact = inward_window_keys(grid, (31, 53))
    assert exact / grid.num_tokens == pytest.approx(0.201, abs=5e-4)
    assert keys / grid.num_tokens == pytest.approx(0.481 * (1339 * 128) ** 2 / grid.num_tokens**2, abs=1e-3)
    assert keys / exact == pytest.approx(2.4, abs=0.05)
