"""Window geometry: sizes from pixels, the inward window rule, densities, the FreeSwim scale."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from upscale_dit.attention import (
    GeometryCache,
    TokenGeometry,
    attended_pairs,
    attention_flops,
    axis_bounds,
    build_token_geometry,
    freeswim_attention_scale,
    mask_density,
    window_from_native,
    window_mask,
)


def geom(frames: int, rows: int, cols: int, wr: int, wc: int, inward: bool = True) -> TokenGeometry:
    return TokenGeometry(frames=frames, rows=rows, cols=cols, window_rows=wr, window_cols=wc, inward=inward)


def loop_bounds(n: int, k: int, inward: bool) -> list[tuple[int, int]]:
    """The window rule written out with plain integers, independently of ``axis_bounds``."""
    out = []
    for i in range(n):
        if k >= n:
            out.append((0, n - 1))
        elif inward:
            start = min(max(i - (k - 1) // 2, 0), n - k)
            out.append((start, start + k - 1))
        else:
            out.append((max(0, i - (k - 1) // 2), min(n - 1, i + k // 2)))
    return out


def key_window(g: TokenGeometry, f: int, r: int, c: int) -> set[tuple[int, int, int]]:
    """(frame, row, col) of every key the query at (f, r, c) attends to, read off the dense mask."""
    m = window_mask(g)
    q = f * g.rows * g.cols + r * g.cols + c
    keys = m[q].nonzero().flatten().tolist()
    hw = g.rows * g.cols
    return {(k // hw, (k % hw) // g.cols, k % g.cols) for k in keys}


# --------------------------------------------------------------------------- building from pixels


def test_wan_1p3b_1080p_reference_window() -> None:
    g = build_token_geometry(81, 1088, 1920, native_height=480, native_width=832)
    assert g.grid == (21, 68, 120)
    assert g.window == (31, 53)
    assert g.num_tokens == 171_360
    assert g.inward


def test_wan_14b_reference_and_native_windows() -> None:
    g = build_token_geometry(81, 2160, 3840, native_height=720, native_width=1280)
    assert g.grid == (21, 135, 240)
    assert g.window == (45, 81)
    native = build_token_geometry(81, 2160, 3840, native_height=720, native_width=1280, window="native")
    assert native.window == (45, 80)
    assert window_from_native(30, 52, "native") == (30, 52)
    assert window_from_native(30, 52) == (31, 53)
    explicit = build_token_geometry(81, 1088, 1920, native_height=480, native_width=832, window=(8, 9), inward=False)
    assert explicit.window == (8, 9) and not explicit.inward


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"height": 1080}, "height=1080; use 1088"),
        ({"width": 1900}, "width=1900; use 1904"),
        ({"frames": 80}, "frames=80; use 77"),
        ({"native_height": 470}, "native_height=470"),
        ({"window": "wide"}, "window='wide'"),
        ({"window": (0, 5)}, "window_rows=0"),
        ({"patch_size": (1, 2)}, "patch_size=(1, 2)"),
    ],
)
def test_build_rejects_with_values_and_fix(kwargs: dict, needle: str) -> None:
    args = {"frames": 81, "height": 1088, "width": 1920, "native_height": 480, "native_width": 832}
    args.update(kwargs)
    frames, height, width = args.pop("frames"), args.pop("height"), args.pop("width")
    with pytest.raises(ValueError) as info:
        build_token_geometry(frames, height, width, **args)
    assert needle in str(info.value)


@pytest.mark.parametrize("bad", [{"rows": 0}, {"window_cols": -3}, {"frames": 2.0}, {"inward": 1}])
def test_geometry_validates_fields(bad: dict) -> None:
    fields = {"frames": 2, "rows": 4, "cols": 5, "window_rows": 3, "window_cols": 3, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        TokenGeometry(**fields)


# --------------------------------------------------------------------------- the window rule


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8, 13, 20])
@pytest.mark.parametrize("inward", [True, False])
def test_axis_bounds_match_the_rule_written_out(n: int, k: int, inward: bool) -> None:
    lo, hi = axis_bounds(n, k, inward=inward)
    assert list(zip(lo.tolist(), hi.tolist())) == loop_bounds(n, k, inward)


GRIDS = [
    geom(2, 9, 13, 5, 7),  # odd window, interior + borders
    geom(3, 8, 10, 4, 6),  # even window
    geom(1, 7, 11, 7, 4),  # window rows == grid rows
    geom(2, 4, 6, 9, 3),  # grid rows smaller than the window
    geom(2, 3, 4, 3, 4),  # window == grid
]


@pytest.mark.parametrize("g", GRIDS, ids=repr)
def test_inward_every_query_sees_exactly_frames_times_window(g: TokenGeometry) -> None:
    wr, wc = g.effective_window
    counts = window_mask(g).sum(1)
    assert torch.all(counts == g.frames * wr * wc)


def test_clamping_at_all_borders_and_corners() -> None:
    g = geom(2, 9, 13, 5, 7)  # d = (2, 3)
    frames = set(range(g.frames))

    def expected(rows: range, cols: range) -> set[tuple[int, int, int]]:
        return {(f, r, c) for f in frames for r in rows for c in cols}

    cases = {
        (0, 0): (range(0, 5), range(0, 7)),  # top-left corner: pushed down and right
        (0, 12): (range(0, 5), range(6, 13)),  # top-right
        (8, 0): (range(4, 9), range(0, 7)),  # bottom-left
        (8, 12): (range(4, 9), range(6, 13)),  # bottom-right
        (0, 6): (range(0, 5), range(3, 10)),  # top edge, centred in columns
        (4, 0): (range(2, 7), range(0, 7)),  # left edge
        (8, 6): (range(4, 9), range(3, 10)),  # bottom edge
        (4, 12): (range(2, 7), range(6, 13)),  # right edge
        (4, 6): (range(2, 7), range(3, 10)),  # interior: centred
        (1, 11): (range(0, 5), range(6, 13)),  # one in from a corner: still clamped
    }
    for (r, c), (rows, cols) in cases.items():
        for f in range(g.frames):  # every frame sees all frames
            assert key_window(g, f, r, c) == expected(rows, cols), (r, c)


def test_even_window_convention() -> None:
    # k = 4: one token before the query, two after (query just above/left of the centre).
    g = geom(1, 10, 10, 4, 4)
    assert key_window(g, 0, 5, 5) == {(0, r, c) for r in range(4, 8) for c in range(4, 8)}
    assert key_window(g, 0, 9, 0) == {(0, r, c) for r in range(6, 10) for c in range(0, 4)}


def test_grid_smaller_than_window_is_full_along_that_axis() -> None:
    for inward in (True, False):
        g = geom(2, 4, 12, 9, 5, inward=inward)
        seen = key_window(g, 1, 3, 6)
        assert {r for _, r, _ in seen} == set(range(4))  # all rows
        assert {c for _, _, c in seen} == set(range(4, 9))  # a 5-wide column window


def test_window_equal_to_grid_is_full_attention() -> None:
    for inward in (True, False):
        g = geom(2, 5, 7, 5, 7, inward=inward)
        assert g.is_full
        assert window_mask(g).all()
        assert mask_density(g) == 1.0


def test_without_inward_corners_see_fewer_keys() -> None:
    g = geom(2, 9, 13, 5, 7, inward=False)
    assert key_window(g, 0, 0, 0) == {(f, r, c) for f in range(2) for r in range(3) for c in range(4)}
    assert len(key_window(g, 0, 4, 6)) == 2 * 5 * 7  # the interior keeps the full window
    counts = window_mask(g).sum(1)
    assert counts.min() == 2 * 3 * 4 and counts.max() == 2 * 5 * 7
    assert mask_density(g) < mask_density(geom(2, 9, 13, 5, 7))


@pytest.mark.parametrize(
    ("rows", "cols", "dh", "dw"),
    [(9, 13, 2, 3), (20, 30, 4, 6), (5, 6, 4, 6), (3, 40, 4, 6), (7, 7, 3, 3), (1, 1, 0, 0)],
)
def test_spec_predicate_forms_agree(rows: int, cols: int, dh: int, dw: int) -> None:
    """freeswim.md §2: the extension form and the clamped-start form give the same mask."""
    g = geom(2, rows, cols, 2 * dh + 1, 2 * dw + 1)
    r = torch.arange(rows)
    c = torch.arange(cols)
    # Extension form: e_down = max(0, d - r_q), e_up = max(0, d + r_q - (h - 1)).
    e_down, e_up = (dh - r).clamp(min=0), (dh + r - (rows - 1)).clamp(min=0)
    e_right, e_left = (dw - c).clamp(min=0), (dw + c - (cols - 1)).clamp(min=0)
    row_ok = (r[None, :] >= (r - dh - e_up)[:, None]) & (r[None, :] <= (r + dh + e_down)[:, None])
    col_ok = (c[None, :] >= (c - dw - e_left)[:, None]) & (c[None, :] <= (c + dw + e_right)[:, None])
    spatial = (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(rows * cols, rows * cols)
    assert torch.equal(spatial.repeat(2, 2), window_mask(g))
    # The spec's check on a 3x20x30 grid with d = (4, 6): every query attends to 351 keys.
    if (rows, cols, dh, dw) == (20, 30, 4, 6):
        g3 = geom(3, 20, 30, 9, 13)
        assert torch.all(window_mask(g3).sum(1) == 351)


# --------------------------------------------------------------------------- densities, FLOPs, scale


@pytest.mark.parametrize("g", [*GRIDS, geom(2, 9, 13, 5, 7, inward=False), geom(3, 8, 10, 4, 6, inward=False)], ids=repr)
def test_attended_pairs_and_density_match_the_dense_mask(g: TokenGeometry) -> None:
    m = window_mask(g)
    assert attended_pairs(g) == int(m.sum())
    assert mask_density(g) == pytest.approx(float(m.double().mean()), abs=1e-12)
    assert attention_flops(g, num_heads=3, head_dim=8, batch=2) == 4 * int(m.sum()) * 8 * 3 * 2


def test_mask_density_at_1080p_is_the_spec_value() -> None:
    g = build_token_geometry(81, 1088, 1920, native_height=480, native_width=832)
    assert mask_density(g) == pytest.approx(0.2013, abs=5e-5)  # "20.1%" in freeswim.md §2
    assert attended_pairs(g) == 171_360 * 21 * 31 * 53


def test_freeswim_scale() -> None:
    assert freeswim_attention_scale(128, 1560) == pytest.approx(0.092461, abs=5e-7)
    assert freeswim_attention_scale(128, 1560) * math.sqrt(128) == pytest.approx(1.04608, abs=1e-5)
    assert freeswim_attention_scale(128, 3600) * math.sqrt(128) == pytest.approx(1.0415, abs=1e-4)
    with pytest.raises(ValueError, match="native_tokens_per_frame=1"):
        freeswim_attention_scale(128, 1)
    with pytest.raises(ValueError, match="head_dim=0"):
        freeswim_attention_scale(0, 1560)


def test_dense_mask_is_refused_when_huge() -> None:
    g = build_token_geometry(81, 1088, 1920, native_height=480, native_width=832)
    with pytest.raises(ValueError, match="flex"):
        window_mask(g)


# --------------------------------------------------------------------------- the per-geometry cache


def test_cache_is_not_part_of_identity_and_is_bounded() -> None:
    a, b = geom(2, 4, 5, 3, 3), geom(2, 4, 5, 3, 3)
    a.cache.get_or_create("x", lambda: 1)
    assert a == b and hash(a) == hash(b) and len(b.cache) == 0
    assert "cache" not in repr(a)
    changed = dataclasses.replace(a, window_rows=1)
    assert changed.cache is not a.cache and len(changed.cache) == 0  # never serves a's masks
    cache = GeometryCache(max_entries=2)
    built = []
    for key in ["p", "q", "p", "r"]:
        cache.get_or_create(key, lambda key=key: built.append(key) or key)
    assert built == ["p", "q", "r"]  # "p" was a hit the second time
    assert cache.keys() == ["p", "r"]  # "q" was least recently used
    cache.clear()
    assert len(cache) == 0
