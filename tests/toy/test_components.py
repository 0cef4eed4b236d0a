"""Connected components: agree with a plain flood fill; fast on 512x512 frames."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pytest

from upscale_dit.toy.components import label_components


def _flood_fill(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    count = 0
    for i in range(h):
        for j in range(w):
            if mask[i, j] and not labels[i, j]:
                count += 1
                labels[i, j] = count
                queue = deque([(i, j)])
                while queue:
                    y, x = queue.popleft()
                    for dy, dx in steps:
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not labels[yy, xx]:
                            labels[yy, xx] = count
                            queue.append((yy, xx))
    return labels, count


@pytest.mark.parametrize("connectivity", [4, 8])
def test_matches_flood_fill_on_random_masks(connectivity: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = rng.integers(1, 25, size=2)
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        got, n = label_components(mask, connectivity=connectivity)
        want, m = _flood_fill(mask, connectivity)
        assert n == m
        assert np.array_equal(got, want)  # same raster numbering


def test_diagonal_touch_depends_on_connectivity() -> None:
    mask = np.eye(4, dtype=bool)
    assert label_components(mask, connectivity=8)[1] == 1
    assert label_components(mask, connectivity=4)[1] == 4


def test_empty_full_and_spiral() -> None:
    assert label_components(np.zeros((5, 7), bool))[1] == 0
    labels, n = label_components(np.ones((5, 7), bool))
    assert n == 1 and (labels == 1).all()
    snake = np.zeros((41, 41), bool)  # one long serpentine component
    snake[::2] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    assert label_components(snake, connectivity=4)[1] == 1


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        label_components(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError):
        label_components(np.zeros((2, 2), bool), connectivity=6)


def test_fast_on_512_noise() -> None:
    mask = np.random.default_rng(1).random((512, 512)) < 0.5  # ~1e5 runs, worst-ish case
    start = time.perf_counter()
    _, n = label_components(mask)
    assert time.perf_counter() - start < 0.5
    assert n > 100
