"""Connected-component labelling in numpy (scipy is not a dependency).

Works on horizontal runs rather than pixels: a 512x512 mask has at most a few thousand
runs for blob-like content, runs of adjacent rows are matched with ``searchsorted``, and
the run graph is merged by vectorised hooking + pointer jumping.  No Python loop runs
per pixel or per run.
"""

from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start column and end column (exclusive) of every horizontal run, row-major."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)  # (h, w + 1): +1 at run starts, -1 after run ends
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _run_edges(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, diagonal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of touching runs, a in the row above b."""
    stride = width + 2  # keys row * stride + column never collide across rows
    start_key = rows * stride + starts
    end_key = rows * stride + ends
    off = 1 if diagonal else 0
    above = (rows - 1) * stride
    # Runs a of the row above touch b iff start_a < end_b + off and end_a > start_b - off;
    # both conditions select a contiguous index range because runs are sorted and disjoint.
    lo = np.searchsorted(end_key, above + starts - off, side="right")
    hi = np.searchsorted(start_key, above + ends + off, side="left")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    b = np.repeat(np.arange(len(rows)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    a = np.repeat(lo, counts) + (np.arange(total) - first)
    return a, b


def _merge(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest member index) of each node's component in the graph (a, b)."""
    parent = np.arange(n)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        lo = np.minimum(pa[differ], pb[differ])
        hi = np.maximum(pa[differ], pb[differ])
        np.minimum.at(parent, hi, lo)  # hook roots onto smaller roots: no cycles
        while True:  # pointer jumping until every node points at a root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


def label_components(mask: np.ndarray, *, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label the connected components of a 2-D boolean mask.

    Returns ``(labels, count)``: ``labels`` is int32 with 0 for background and
    ``1..count`` for components, numbered in raster order of their first pixel.
    ``connectivity`` is 4 or 8.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    h, w = mask.shape
    labels = np.zeros(h * w, dtype=np.int32)
    rows, starts, ends = _runs(mask.astype(bool, copy=False))
    if len(rows) == 0:
        return labels.reshape(h, w), 0
    a, b = _run_edges(rows, starts, ends, w, diagonal=connectivity == 8)
    roots = _merge(len(rows), a, b)
    _, run_label = np.unique(roots, return_inverse=True)  # roots ascend in raster order
    lengths = ends - starts
    offsets = np.repeat(rows * w + starts - (np.cumsum(lengths) - lengths), lengths)
    labels[offsets + np.arange(int(lengths.sum()))] = np.repeat(run_label + 1, lengths)
    return labels.reshape(h, w), int(run_label.max()) + 1
