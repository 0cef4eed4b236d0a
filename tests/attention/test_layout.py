"""Token layouts: permutations round-trip, and block sparsity matches a brute-force count."""

from __future__ import annotations

import pytest
import torch

from upscale_dit.attention import (
    TokenGeometry,
    TokenLayout,
    block_density,
    block_structure,
    build_token_geometry,
    from_layout,
    inverse_permutation,
    mask_density,
    resolve_layout,
    to_layout,
    token_coordinates,
    token_permutation,
    window_mask,
)


def geom(frames: int, rows: int, cols: int, wr: int, wc: int, inward: bool = True) -> TokenGeometry:
    return TokenGeometry(frames=frames, rows=rows, cols=cols, window_rows=wr, window_cols=wc, inward=inward)


LAYOUTS = [TokenLayout.natural(), TokenLayout.tiled(), TokenLayout.tiled(2, 5), TokenLayout.tiled(4, 4)]
GRIDS = [geom(3, 7, 11, 3, 5), geom(2, 9, 8, 4, 6), geom(1, 5, 5, 9, 9), geom(4, 6, 10, 5, 3, inward=False)]


def brute_force_blocks(g: TokenGeometry, layout: TokenLayout, bq: int, bk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Visited / full blocks counted on the dense mask permuted into ``layout``."""
    perm = token_permutation(g, layout)
    mask = window_mask(g)[perm][:, perm]
    s = mask.shape[0]
    nq, nk = -(-s // bq), -(-s // bk)
    padded = torch.zeros(nq * bq, nk * bk, dtype=torch.bool)
    padded[:s, :s] = mask
    real = torch.zeros_like(padded)
    real[:s, :s] = True
    blocks = padded.view(nq, bq, nk, bk)
    complete = real.view(nq, bq, nk, bk).all(3).all(1)
    return blocks.any(3).any(1), blocks.all(3).all(1) & complete


@pytest.mark.parametrize("g", GRIDS, ids=repr)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_permutation_round_trips(g: TokenGeometry, layout: TokenLayout) -> None:
    perm = token_permutation(g, layout)
    assert torch.equal(perm.sort().values, torch.arange(g.num_tokens))
    inverse = inverse_permutation(g, layout)
    assert torch.equal(perm[inverse], torch.arange(g.num_tokens))
    x = torch.randn(2, g.num_tokens, 3, 4)
    assert torch.equal(from_layout(to_layout(x, g, layout), g, layout), x)
    y = torch.randn(g.num_tokens, 5)  # any dim can be the sequence
    assert torch.equal(from_layout(to_layout(y, g, layout, dim=0), g, layout, dim=0), y)


def test_natural_layout_is_the_identity_and_tiled_puts_frames_innermost() -> None:
    g = geom(3, 7, 11, 3, 5)
    assert torch.equal(token_permutation(g, "natural"), torch.arange(g.num_tokens))
    f, r, c = token_coordinates(g, "tiled")
    # Frames are innermost: each run of F consecutive tokens is one spatial position, frames 0..F-1.
    assert torch.equal(f.view(-1, 3), torch.arange(3).expand(g.rows * g.cols, 3))
    assert torch.all(r.view(-1, 3) == r.view(-1, 3)[:, :1]) and torch.all(c.view(-1, 3) == c.view(-1, 3)[:, :1])
    # The first tile (3x2 by default) comes first, row-major inside it.
    positions = list(zip(r[::3].tolist(), c[::3].tolist()))
    assert positions[:6] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    # 11 columns are not divisible by 2: the last tile of the first tile-row is 3x1.
    assert positions[30:33] == [(0, 10), (1, 10), (2, 10)]


@pytest.mark.parametrize("g", GRIDS, ids=repr)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@pytest.mark.parametrize("block", [(16, 16), (32, 8), (7, 13)])
def test_block_structure_matches_brute_force(g: TokenGeometry, layout: TokenLayout, block: tuple[int, int]) -> None:
    structure = block_structure(g, layout, block)
    visited, full = brute_force_blocks(g, layout, *block)
    assert torch.equal(structure.visited, visited)
    assert torch.equal(structure.full, full)


def test_tiled_layout_lowers_block_density_vs_row_major() -> None:
    # A 1080p-like shape scaled down: window ~45% of rows and columns, a block of 64 tokens holds
    # 8 frames of 8 positions (at 1080p: 128 tokens, 21 frames of ~6 positions).
    g = geom(8, 24, 40, 11, 19)
    natural, _ = brute_force_blocks(g, TokenLayout.natural(), 64, 64)
    tiled, _ = brute_force_blocks(g, TokenLayout.tiled(), 64, 64)
    assert block_density(g, "natural", 64) == pytest.approx(natural.float().mean().item())
    assert block_density(g, "tiled", 64) == pytest.approx(tiled.float().mean().item())
    assert tiled.float().mean() < 0.8 * natural.float().mean()
    assert tiled.float().mean() > mask_density(g)  # blocks can only over-cover the exact mask


def test_block_density_at_1080p() -> None:
    """The numbers the layout docstring quotes (Wan2.1-1.3B, 1088x1920, 31x53 window, 128 blocks)."""
    g = build_token_geometry(81, 1088, 1920, native_height=480, native_width=832)
    natural = block_structure(g, "natural")
    tiled = block_structure(g, "tiled")
    assert natural.density == pytest.approx(0.481, abs=5e-4)
    assert natural.full_fraction == 0.0  # a row-major block never lies inside every window
    assert tiled.density == pytest.approx(0.232, abs=5e-4)
    assert tiled.full_fraction == pytest.approx(0.164, abs=5e-4)


def test_layout_validation() -> None:
    assert resolve_layout("tiled") == TokenLayout.tiled()
    assert resolve_layout("natural").is_natural
    assert TokenLayout.tiled(3, 2).name == "tiled3x2"
    with pytest.raises(ValueError, match="layout='diagonal'"):
        resolve_layout("diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tile_rows=0"):
        TokenLayout.tiled(0, 2)
    with pytest.raises(ValueError, match="natural layout has no tiles"):
        TokenLayout(kind="natural", tile_rows=2)
    with pytest.raises(ValueError, match="expected 42 tokens"):
        to_layout(torch.zeros(1, 41, 2), geom(2, 3, 7, 3, 3), "tiled")
